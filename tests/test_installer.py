"""The workstation installer, installer/install.sh: a real install into a temporary HOME and prefix,
the launcher, the desktop entry and icon, then an uninstall that must leave both trees as they were.

The install reuses this interpreter's packages (--reuse-site-packages, a developer option) so that
torch is not copied again; Sensiscope itself is built from this source tree and installed into the
new environment. The torch choice and the uninstaller's refusals are checked with --dry-run and
hand-made manifests, which take a fraction of a second each.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shlex
import shutil
import stat
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(platform.system() != "Linux", reason="install.sh writes a freedesktop entry; these checks are for Linux")

ROOT = Path(__file__).resolve().parent.parent
INSTALLER = ROOT / "installer" / "install.sh"
ICON_SOURCE = ROOT / "resources" / "icons" / "sensiscope.svg"


def snapshot(*roots: Path) -> dict[str, str]:
    """Every path under the roots with its kind, mode and (for files) content hash."""
    found: dict[str, str] = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                path = Path(dirpath) / name
                info = path.lstat()
                if stat.S_ISREG(info.st_mode):
                    found[str(path)] = f"file {oct(info.st_mode)} {hashlib.sha256(path.read_bytes()).hexdigest()}"
                else:
                    found[str(path)] = f"{'link' if path.is_symlink() else 'dir'} {oct(info.st_mode)}"
    return found


class Sandbox:
    def __init__(self, tmp_path: Path) -> None:
        self.home = tmp_path / "home"
        self.data_home = self.home / ".local" / "share"
        self.prefix = tmp_path / "my apps" / "sensiscope"  # a space, as in macOS's Application Support
        self.fakes = tmp_path / "fake-bin"
        self.elsewhere = tmp_path / "elsewhere"
        for folder in (self.home, self.fakes, self.elsewhere):
            folder.mkdir(parents=True)
        self.launcher = self.home / ".local" / "bin" / "sensiscope"
        self.desktop = self.data_home / "applications" / "sensiscope.desktop"
        self.icon = self.data_home / "icons" / "hicolor" / "scalable" / "apps" / "sensiscope.svg"

    def run(self, *args: str, timeout: float = 600, cwd: Path | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(INSTALLER), *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, cwd=cwd)

    def fake(self, name: str, script: str) -> None:
        path = self.fakes / name
        path.write_text("#!/bin/sh\n" + script + "\n")
        path.chmod(0o755)


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    box = Sandbox(tmp_path)
    real_home = Path.home()
    monkeypatch.setenv("HOME", str(box.home))
    monkeypatch.setenv("XDG_DATA_HOME", str(box.data_home))
    # Tools the installer runs keep state under HOME (pip's cache; pip asks rustc for its version,
    # and a rustup proxy then writes ~/.rustup): point those elsewhere, so that HOME holds only what
    # the installer itself writes.
    monkeypatch.setenv("XDG_CACHE_HOME", str(box.elsewhere / "cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(box.elsewhere / "config"))
    monkeypatch.setenv("RUSTUP_HOME", os.environ.get("RUSTUP_HOME", str(real_home / ".rustup")))
    monkeypatch.setenv("CARGO_HOME", os.environ.get("CARGO_HOME", str(real_home / ".cargo")))
    monkeypatch.setenv("PATH", os.pathsep.join([str(box.fakes), str(box.home / ".local" / "bin"), os.environ.get("PATH", "/usr/bin:/bin")]))
    return box


def desktop_entry(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    assert lines[0] == "[Desktop Entry]"
    return dict(line.split("=", 1) for line in lines[1:] if line and not line.startswith("#"))


def test_install_run_and_uninstall_leave_nothing_behind(sandbox: Sandbox) -> None:
    # Something of the user's in a folder the installer also writes to: it and its folder must survive.
    theirs = sandbox.data_home / "applications" / "someone-else.desktop"
    theirs.parent.mkdir(parents=True)
    theirs.write_text("[Desktop Entry]\nName=Other\n")
    before = snapshot(sandbox.home, sandbox.prefix.parent)

    site_packages = sysconfig.get_paths()["purelib"]
    done = sandbox.run("--prefix", str(sandbox.prefix), "--python", sys.executable, "--reuse-site-packages", site_packages)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"running: {sandbox.launcher} --self-check" in done.stdout
    assert "self-check passed" in done.stdout

    # Sensiscope itself lives in the new environment, resources included, not in the reused packages.
    venv_python = sandbox.prefix / "venv" / "bin" / "python"
    where = subprocess.run(
        [str(venv_python), "-I", "-c", "import importlib.util as u; print(u.find_spec('engine').origin); print(u.find_spec('main').origin); print(u.find_spec('resources').origin)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    for origin in where:
        assert Path(origin).is_relative_to(sandbox.prefix / "venv"), where
    installed_resources = Path(where[2]).parent
    assert (installed_resources / "data" / "pima.csv").is_file()

    # The launcher on PATH runs the installed program.
    assert os.access(sandbox.launcher, os.X_OK)
    check = subprocess.run(["sensiscope", "--self-check"], capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "self-check passed" in check.stdout

    # The desktop entry starts the installed program and shows the installed icon.
    entry = desktop_entry(sandbox.desktop)
    assert entry["Type"] == "Application" and entry["Name"] == "Sensiscope"
    executable = Path(shlex.split(entry["Exec"])[0])
    assert executable == sandbox.prefix / "venv" / "bin" / "sensiscope" and os.access(executable, os.X_OK)
    assert Path(entry["TryExec"]) == executable
    # Files given by the desktop ("Open with Sensiscope") reach the window: `sensiscope gui FILE...`.
    assert shlex.split(entry["Exec"])[1:] == ["gui", "%F"]
    assert {"image/png", "text/csv", "application/zip", "inode/directory"} <= set(entry["MimeType"].strip(";").split(";"))
    assert Path(entry["Icon"]) == sandbox.icon and sandbox.icon.read_bytes() == ICON_SOURCE.read_bytes()
    assert "<svg" in sandbox.icon.read_text()
    if shutil.which("desktop-file-validate"):  # desktop-file-utils, where it is installed
        valid = subprocess.run(["desktop-file-validate", str(sandbox.desktop)], capture_output=True, text=True)
        assert valid.returncode == 0 and not valid.stdout.strip(), valid.stdout + valid.stderr

    # The manifest lists what was written; the uninstaller (the copy kept in the prefix) removes exactly that.
    manifest = (sandbox.prefix / "install-manifest.txt").read_text()
    for path in (sandbox.launcher, sandbox.desktop, sandbox.icon, sandbox.prefix / "venv", sandbox.prefix.parent):
        assert f"\t{path}\n" in manifest
    assert f"\t{sandbox.data_home / 'applications'}\n" not in manifest  # it was there before
    gone = subprocess.run(["bash", str(sandbox.prefix / "install.sh"), "--uninstall"], capture_output=True, text=True, timeout=120)
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert snapshot(sandbox.home, sandbox.prefix.parent) == before
    assert not sandbox.prefix.parent.exists()


def plan(sandbox: Sandbox, *args: str) -> str:
    done = sandbox.run("--dry-run", "--python", sys.executable, *args, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Dry run: nothing was changed" in done.stdout
    return done.stdout


def test_torch_build_follows_the_machine_and_the_override(sandbox: Sandbox) -> None:
    before = snapshot(sandbox.home)
    sandbox.fake("nvidia-smi", 'echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)"')
    assert "torch build: cuda (nvidia-smi sees: GPU 0: NVIDIA H100" in plan(sandbox)
    assert "torch source: the default package index" in plan(sandbox)
    # The CUDA build follows the newest CUDA the driver runs, as nvidia-smi's header says.
    for driver, build in (("13.1", "cu130"), ("12.8", "cu128"), ("12.4", "cu126")):
        sandbox.fake("nvidia-smi", f'case "$1" in -L) echo "GPU 0: NVIDIA A100 (UUID: GPU-0)" ;; *) echo "| NVIDIA-SMI 570.00  Driver Version: 570.00  CUDA Version: {driver} |" ;; esac')
        assert f"torch source: extra index https://download.pytorch.org/whl/{build}" in plan(sandbox)
    sandbox.fake("nvidia-smi", 'case "$1" in -L) echo "GPU 0: Tesla K80 (UUID: GPU-0)" ;; *) echo "| Driver Version: 470.00  CUDA Version: 11.4 |" ;; esac')
    old_driver = sandbox.run("--dry-run", "--python", sys.executable, timeout=60)
    assert "older than any current torch CUDA build" in old_driver.stderr and "torch source: the default package index" in old_driver.stdout
    forced = plan(sandbox, "--torch", "cpu")
    assert "torch build: cpu (asked for with --torch cpu)" in forced and "extra index https://download.pytorch.org/whl/cpu" in forced

    sandbox.fake("nvidia-smi", "echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.'; exit 9")
    assert "torch build: cpu (nvidia-smi is present but lists no GPU" in plan(sandbox)
    (sandbox.fakes / "nvidia-smi").unlink()
    without = plan(sandbox, "--torch-index", "file:///wheels/cpu")
    assert "torch build: cpu (no NVIDIA driver" in without and "torch source: extra index file:///wheels/cpu" in without
    assert f"application folder: {sandbox.data_home / 'sensiscope'}" in without
    assert f"desktop entry: {sandbox.desktop}" in without
    skip = plan(sandbox, "--torch", "skip")
    assert "torch build: skip" in skip and "no torch-specific index" in skip

    sandbox.fake("uname", 'case "$1" in -m) echo arm64 ;; *) echo Darwin ;; esac')
    mac = plan(sandbox)
    assert "torch build: mps (Apple silicon" in mac and "torch source: the default package index" in mac
    assert f"application folder: {sandbox.home / 'Library' / 'Application Support' / 'Sensiscope'}" in mac
    assert "desktop entry" not in mac
    refused = sandbox.run("--dry-run", "--torch", "cuda")
    assert refused.returncode != 0 and "no CUDA build of torch for macOS" in refused.stderr
    assert snapshot(sandbox.home) == before


def test_refuses_bad_options_and_foreign_files(sandbox: Sandbox) -> None:
    done = sandbox.run("--torch", "gpu")
    assert done.returncode != 0 and "--torch takes auto, cpu, cuda or skip" in done.stderr
    done = sandbox.run("--wheel", str(sandbox.home / "missing.whl"), "--dry-run")
    assert done.returncode != 0 and "needs an existing .whl file" in done.stderr
    # Relative paths are made absolute and normalised, as the manifest needs them.
    done = sandbox.run("--dry-run", "--prefix", "a/../b/./c/", cwd=sandbox.home)
    assert done.returncode == 0 and f"application folder: {sandbox.home / 'b' / 'c'}\n" in done.stdout, done.stdout + done.stderr
    # A `sensiscope` command that this installer did not write is never overwritten.
    sandbox.launcher.parent.mkdir(parents=True)
    sandbox.launcher.write_text("#!/bin/sh\necho mine\n")
    done = sandbox.run("--dry-run")
    assert done.returncode != 0 and f"{sandbox.launcher} already exists and was not written by this installer" in done.stderr


def write_manifest(prefix: Path, *entries: str) -> None:
    prefix.mkdir(parents=True, exist_ok=True)
    lines = ["# sensiscope install manifest v1", *entries]
    (prefix / "install-manifest.txt").write_text("\n".join(lines) + "\n")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_uninstall_removes_only_what_the_manifest_lists(sandbox: Sandbox) -> None:
    nothing = sandbox.run("--uninstall", "--prefix", str(sandbox.prefix))
    assert nothing.returncode != 0 and "nothing was removed" in nothing.stderr

    sandbox.launcher.parent.mkdir(parents=True)
    sandbox.launcher.write_text("#!/bin/sh\n")
    victim = sandbox.home / "notes.txt"
    victim.write_text("precious")
    for foreign in (f"file\t{sha256(victim)}\t{victim}", f"dir\t{sandbox.home / 'Documents'}", f"venv\t{sandbox.home}", f"file\tx\t{sandbox.home}/../etc/sensiscope", "rm\t/"):
        write_manifest(sandbox.prefix, f"file\t{sha256(sandbox.launcher)}\t{sandbox.launcher}", foreign)
        before = snapshot(sandbox.home, sandbox.prefix)
        refused = sandbox.run("--uninstall", "--prefix", str(sandbox.prefix))
        assert refused.returncode != 0 and "nothing was removed" in refused.stderr, foreign
        assert snapshot(sandbox.home, sandbox.prefix) == before

    # A listed file changed since it was installed stays; a listed folder that is not empty stays.
    desktop = sandbox.desktop
    desktop.parent.mkdir(parents=True)
    desktop.write_text("[Desktop Entry]\n")
    listed_hash = sha256(desktop)
    desktop.write_text("[Desktop Entry]\nName=edited by the user\n")
    (sandbox.launcher.parent / "other-tool").write_text("")
    write_manifest(
        sandbox.prefix,
        f"dir\t{sandbox.launcher.parent}",
        f"file\t{sha256(sandbox.launcher)}\t{sandbox.launcher}",
        f"file\t{listed_hash}\t{desktop}",
    )
    done = sandbox.run("--uninstall", "--prefix", str(sandbox.prefix))
    assert done.returncode == 0, done.stdout + done.stderr
    assert not sandbox.launcher.exists() and not (sandbox.prefix / "install-manifest.txt").exists()
    assert desktop.exists() and "changed since it was installed" in done.stderr
    assert (sandbox.launcher.parent / "other-tool").exists() and victim.read_text() == "precious"
