"""Safe file handling for everything Sensiscope reads and writes.

Reading: only regular files are opened (a FIFO would block forever, ``/dev/zero`` would be read
until memory runs out), and text files (labels, metadata, sessions' JSON) have a size limit.

Writing: every file is written to a temporary name in the same folder and renamed over the target,
so a crash or a full disk never leaves a half-written file where a good one was. A file that exists
is replaced only when Sensiscope wrote it (a per-folder ledger, ``.sensiscope-files.json``, records
each file's size and modification time when written) or when the user said ``overwrite``.
Written files get the permissions a plain ``open()`` gives (0666 less the umask), so colleagues on
a shared server read results as they read any other file of the user's.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from engine.core.errors import UserError

MAX_TEXT_BYTES = 16 * 2**20  # labels, metadata and other small text files
LEDGER = ".sensiscope-files.json"


class OutputExists(UserError):
    """An output would replace a file that Sensiscope did not write."""

    def __init__(self, path: str | Path, message: str) -> None:
        super().__init__(message)
        self.path = Path(path)


def regular_file(path: str | Path, what: str = "file") -> Path:
    """``path`` when it names an existing regular file; otherwise a UserError saying what it is."""
    path = Path(path).expanduser()
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(mode):
        raise UserError(f"{path}: is a folder, not {with_article(what)}")
    if not stat.S_ISREG(mode):
        raise UserError(f"{path}: is not a regular file (a pipe, socket or device); Sensiscope reads only files on disk")
    return path


def with_article(noun: str) -> str:
    """``noun`` with "a" or "an" before it, by its first letter ("an image", "a .npy file")."""
    return f"{'an' if noun[:1].lower() in 'aeiou' and noun[:1] else 'a'} {noun}"


def read_text(path: str | Path, what: str = "file", limit: int = MAX_TEXT_BYTES) -> str:
    """The UTF-8 text of a regular file of at most ``limit`` bytes."""
    path = regular_file(path, what)
    size = path.stat().st_size
    if size > limit:
        raise UserError(f"{path}: {size / 2**20:.1f} MiB is too large for {with_article(what)} (the limit is {limit / 2**20:.0f} MiB)")
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def _ledger_path(path: Path) -> Path:
    return path.parent / LEDGER


def _read_ledger(folder_file: Path) -> dict:
    try:
        data = json.loads(folder_file.read_text(encoding="utf-8")) if folder_file.is_file() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _fingerprint(path: Path) -> list[int]:
    info = path.stat()
    return [info.st_size, info.st_mtime_ns]


def written_by_us(path: str | Path) -> bool:
    """Whether ``path`` is a file Sensiscope wrote and nobody changed since."""
    path = Path(path)
    try:
        return _read_ledger(_ledger_path(path)).get(path.name) == _fingerprint(path)
    except OSError:
        return False


def check_output(path: str | Path, overwrite: bool = False) -> Path:
    """Refuse (before any work) an output that would replace a file Sensiscope did not write.

    Also refuses a folder where a file is expected and a parent that is a file or cannot be made.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise UserError(f"{path}: is a folder; give a file name")
    if path.exists() and not overwrite and not written_by_us(path):
        raise OutputExists(path, f"{path}: exists and was not written by Sensiscope; refusing to replace it (choose another name, or pass --overwrite)")
    parent = path.parent
    if parent.exists() and not parent.is_dir():
        raise UserError(f"{parent}: is a file, not a folder")
    if parent.exists() and not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{parent}: is not writable")
    return path


def check_output_folder(folder: str | Path) -> Path:
    """A folder that exists (or can be made) and is writable, checked before any work."""
    folder = Path(folder).expanduser()
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"{probe}: is a file, so {folder} cannot be a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{probe}: is not writable, so {folder} cannot be written")
    return folder


def new_file_mode() -> int:
    """The permissions ``open()`` gives a new file: 0666 less the process's umask (read from
    /proc where it can be, since ``os.umask`` can only be read by setting it)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/self/status", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _set_new_file_mode(path: Path) -> None:
    """mkstemp makes a file 0600 whatever the umask (and some writers replace the temporary file
    with their own, as private): a result gets the permissions any file the user makes gets."""
    with contextlib.suppress(OSError):  # a file system without Unix permissions keeps its own
        if path.is_file():
            os.chmod(path, new_file_mode())


def _record(path: Path) -> None:
    ledger = _ledger_path(path)
    entries = _read_ledger(ledger)
    entries[path.name] = _fingerprint(path)
    with contextlib.suppress(OSError):  # the ledger is a convenience; losing it only makes later writes ask
        fd, temporary = tempfile.mkstemp(prefix=".ledger-", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(entries, handle)
        _set_new_file_mode(Path(temporary))
        os.replace(temporary, ledger)


@contextlib.contextmanager
def atomic_path(path: str | Path, overwrite: bool = False, record: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without error it is renamed to
    ``path`` (replacing it only as :func:`check_output` allows), else it is removed.

    ``record=False`` leaves the folder's ledger alone, for writers of many files that keep their
    own record (the phantom's manifest)."""
    path = check_output(path, overwrite)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part" + path.suffix, dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    temporary = Path(name)
    try:
        yield temporary
        _set_new_file_mode(temporary)
        os.replace(temporary, path)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    if record:
        _record(path)


def write_bytes(path: str | Path, data: bytes, overwrite: bool = False) -> Path:
    with atomic_path(path, overwrite) as temporary:
        temporary.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str, overwrite: bool = False) -> Path:
    return write_bytes(path, text.encode("utf-8"), overwrite)


def read_json_object(path: str | Path, what: str = "file") -> dict:
    """The JSON object in a regular text file (see :func:`read_text`); one line when it is not."""
    import json

    try:
        data = json.loads(read_text(path, what))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: the {what} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: the {what} must hold a JSON object")
    return data
