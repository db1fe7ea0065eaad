"""engine.runtime's memory figures come from psutil (Linux, Windows and macOS alike), never from
/proc/meminfo; the CPU's name falls back to the platform module off Linux; the benchmarks' peak RSS."""

from __future__ import annotations

import builtins
import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
import torch

from engine.runtime import device as device_module
from engine.runtime.batching import available_memory_bytes, batch_for_budget, default_budget_bytes
from engine.runtime.device import cpu_memory_bytes, cpu_name, describe_device, list_devices

GIB = 2**30
CPU = torch.device("cpu")


@pytest.fixture
def fake_memory(monkeypatch):
    """psutil reports 16 GiB of RAM with 6 GiB available, whatever this machine has."""
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(total=16 * GIB, available=6 * GIB, percent=62.5))


@pytest.fixture
def opened(monkeypatch):
    """The paths passed to open() while the test runs."""
    paths: list[str] = []
    real_open = builtins.open

    def spy(file, *args, **kwargs):
        paths.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy)
    return paths


def test_cpu_memory_figures_are_psutils(fake_memory):
    assert cpu_memory_bytes() == (16 * GIB, 6 * GIB)
    info = describe_device(CPU)
    assert (info.total_memory_bytes, info.free_memory_bytes) == (16 * GIB, 6 * GIB)
    assert info.label().endswith("(16.0 GiB, 6.0 GiB free)")


def test_the_cpu_memory_budget_is_a_quarter_of_what_psutil_calls_available(fake_memory, monkeypatch):
    assert available_memory_bytes(CPU) == 6 * GIB
    assert default_budget_bytes(CPU) == 6 * GIB // 4
    # The budget follows psutil's figure, not a cached or /proc one.
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(total=16 * GIB, available=2 * GIB, percent=87.5))
    assert default_budget_bytes(CPU) == GIB // 2
    assert batch_for_budget(64, 32 * 2**20, default_budget_bytes(CPU)) == 16  # 512 MiB / 32 MiB per image


def test_unknown_memory_gives_no_budget(monkeypatch):
    def hidden():
        raise PermissionError("no access to the memory figures")

    monkeypatch.setattr(psutil, "virtual_memory", hidden)
    assert cpu_memory_bytes() == (None, None)
    assert default_budget_bytes(CPU) is None
    assert batch_for_budget(64, 32 * 2**20, None) == 64


def test_nothing_reads_proc_meminfo(fake_memory, opened):
    describe_device(CPU)
    list_devices()
    available_memory_bytes(CPU)
    default_budget_bytes(CPU)
    assert not [path for path in opened if "meminfo" in path]


def test_cpu_name_off_linux_comes_from_the_platform_module(monkeypatch, opened):
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(device_module.platform, "processor", lambda: "Intel64 Family 6 Model 154")
    assert cpu_name() == "Intel64 Family 6 Model 154"
    monkeypatch.setattr(device_module.platform, "processor", lambda: "")
    monkeypatch.setattr(device_module.platform, "machine", lambda: "arm64")
    assert cpu_name() == "arm64"
    assert opened == []  # /proc/cpuinfo is only tried on Linux


def _benchmarks_common(monkeypatch):
    """benchmarks/common.py, which the benchmarks import as a top-level module (not a package)."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "common.py"
    spec = importlib.util.spec_from_file_location("benchmarks_common_under_test", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_benchmark_peak_rss_uses_psutils_peak_where_it_has_one(monkeypatch):
    common = _benchmarks_common(monkeypatch)
    # Windows: psutil's memory_info has the peak working set.
    monkeypatch.setattr(psutil, "Process", lambda: SimpleNamespace(memory_info=lambda: SimpleNamespace(rss=1, peak_wset=300 * 2**20)))
    assert common.read_peak_rss_mb() == 300.0
    # Linux and macOS: no peak in psutil, so getrusage's ru_maxrss (KiB on Linux, bytes on macOS).
    resource = pytest.importorskip("resource")
    monkeypatch.setattr(psutil, "Process", lambda: SimpleNamespace(memory_info=lambda: SimpleNamespace(rss=1)))
    monkeypatch.setattr(resource, "getrusage", lambda who: SimpleNamespace(ru_maxrss=204800))
    monkeypatch.setattr(sys, "platform", "linux")
    assert common.read_peak_rss_mb() == 200.0
    monkeypatch.setattr(sys, "platform", "darwin")
    assert common.read_peak_rss_mb() == 204800 / 2**20
