"""Choosing and describing torch devices."""

from __future__ import annotations

import platform
import re
import sys
from dataclasses import asdict, dataclass

import psutil
import torch

from engine.core.errors import UserError

_CUDA_RE = re.compile(r"^cuda(?::(\d+))?$")


@dataclass(frozen=True)
class DeviceInfo:
    """What the user needs to know to choose a device."""

    spec: str  # what to pass to select_device, e.g. "cuda:0"
    kind: str  # cpu, cuda or mps
    name: str
    total_memory_bytes: int | None = None
    free_memory_bytes: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def label(self) -> str:
        """One line for menus and logs, e.g. 'cuda:0 - NVIDIA H100 (79.1 GiB, 78.0 GiB free)'."""
        text = f"{self.spec} - {self.name}"
        if self.total_memory_bytes:
            text += f" ({self.total_memory_bytes / 2**30:.1f} GiB"
            if self.free_memory_bytes is not None:
                text += f", {self.free_memory_bytes / 2**30:.1f} GiB free"
            text += ")"
        return text


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def select_device(spec: str | torch.device | None = "auto") -> torch.device:
    """Turn 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps' into a torch.device that exists here."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not _mps_available():
            raise UserError("device 'mps' was asked for, but Apple's MPS backend is not available here")
        return torch.device("mps")
    match = _CUDA_RE.match(spec)
    if match:
        if not torch.cuda.is_available():
            raise UserError(f"device '{spec}' was asked for, but no CUDA GPU is available here (use 'cpu' or 'auto')")
        index = int(match.group(1) or torch.cuda.current_device())
        count = torch.cuda.device_count()
        if index >= count:
            raise UserError(f"device '{spec}' does not exist: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
        return torch.device("cuda", index)
    raise UserError(f"unknown device '{spec}': use auto, cpu, cuda, cuda:N or mps")


def cpu_name() -> str:
    """The processor's model name: /proc/cpuinfo on Linux (best effort), else what ``platform`` knows."""
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as handle:
                for line in handle:
                    if line.startswith("model name"):
                        return line.split(":", 1)[1].strip()
        except OSError:
            pass  # a container may hide /proc; the platform module still knows the architecture
    return platform.processor() or platform.machine() or "CPU"


def cpu_memory_bytes() -> tuple[int | None, int | None]:
    """(total, available) RAM from psutil, which knows it on Linux, Windows and macOS alike."""
    try:
        memory = psutil.virtual_memory()
    except (OSError, RuntimeError):  # a sandbox that hides the figures: report them as unknown
        return None, None
    return int(memory.total), int(memory.available)


def describe_device(device: torch.device) -> DeviceInfo:
    """Name and memory of one device."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        try:
            free, total = torch.cuda.mem_get_info(index)
        except RuntimeError:
            free, total = None, props.total_memory
        return DeviceInfo(f"cuda:{index}", "cuda", props.name, total, free)
    if device.type == "mps":
        return DeviceInfo("mps", "mps", "Apple MPS")
    total, free = cpu_memory_bytes()
    return DeviceInfo("cpu", "cpu", cpu_name(), total, free)


def list_devices() -> list[DeviceInfo]:
    """Every device this machine offers, CPU first."""
    devices = [describe_device(torch.device("cpu"))]
    if torch.cuda.is_available():
        devices += [describe_device(torch.device("cuda", i)) for i in range(torch.cuda.device_count())]
    if _mps_available():
        devices.append(describe_device(torch.device("mps")))
    return devices
