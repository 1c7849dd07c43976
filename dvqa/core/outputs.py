"""Every file dvqa creates is created here: exclusively, privately, atomically.

dvqa's outputs carry patient data (DICOM files, reports, audit logs and exports, files a simulated
PACS received), and they are often written into folders other local users can write to. So:

- a new file is never opened by a name someone could have planted beforehand: temporary files
  are created with O_CREAT|O_EXCL under an unpredictable name (mkstemp/mkdtemp), then renamed onto
  the path the user named. A rename replaces a planted symlink at that path; it never writes
  through it. Without --force the rename is a hard link, which fails if anything is there;
- an existing file that is appended to (the audit log) is opened with O_NOFOLLOW and must be a
  regular file;
- files are created with mode 0600 - or the group-readable mode a site asks for with
  DVQA_FILE_MODE (0640 or 0660) - and dvqa never widens a mode;
- temporary names carry the creating process's id and a host/boot tag, so the next run in that
  folder can tell a stale leftover of a dead dvqa process (a SIGKILL, a power cut) from the work
  of a live one, and remove it.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import os
import re
import secrets
import shutil
import socket
import stat
import tempfile
import threading
from pathlib import Path
from typing import IO, Callable, Iterator

from dvqa.core import signals
from dvqa.core.errors import EnvironmentProblem, UsageError

MODE_VARIABLE = "DVQA_FILE_MODE"
ALLOWED_MODES = (0o600, 0o640, 0o660)  # never readable by "other": these files hold PHI


def file_mode() -> int:
    """The mode of every file dvqa creates: 0600, or DVQA_FILE_MODE for sites that need group access."""
    raw = os.environ.get(MODE_VARIABLE, "").strip()
    if not raw:
        return 0o600
    try:
        mode = int(raw, 8)
    except ValueError:
        mode = -1
    if mode not in ALLOWED_MODES:
        raise UsageError(f"{MODE_VARIABLE}={raw}: use 0600, 0640 or 0660 (dvqa's files hold patient data and "
                         "are never readable by other users).")
    return mode


@functools.lru_cache(maxsize=1)
def _host_tag() -> str:
    """This host and this boot: a leftover with another tag belongs to another machine or an earlier boot."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return hashlib.sha256(f"{socket.gethostname()}/{boot}".encode()).hexdigest()[:8]


def _prefix(name: str) -> str:
    return f".{name}.dvqa-{os.getpid()}-{_host_tag()}-"


_LEFTOVER = re.compile(r"^\..+\.dvqa-(\d+)-([0-9a-f]{8})-[^/]+$")


def require_folder(folder: Path) -> None:
    """Every output goes into a folder the user made: a missing one is their fix, said in one sentence."""
    if not Path(folder).is_dir():
        raise UsageError(f"{folder}: the output folder does not exist; create it first.")


def temp_file(folder: Path, name: str, suffix: str = "") -> tuple[int, Path]:
    """A new private file in `folder` for the eventual file `name`: (descriptor, path), O_EXCL, dvqa's mode."""
    require_folder(folder)
    fd, path = tempfile.mkstemp(prefix=_prefix(name), suffix=suffix, dir=folder)
    os.fchmod(fd, file_mode())
    return fd, Path(path)


def temp_dir(folder: Path, name: str) -> Path:
    """A new private folder (0700) in `folder` for the work on the eventual file `name`."""
    require_folder(folder)
    return Path(tempfile.mkdtemp(prefix=_prefix(name), dir=folder))


def stage_prefix(target: Path) -> str:
    """The name prefix of files other processes (cluster workers) prepare for `target` on this process's
    behalf: they carry this process's id and host, so once it is gone `sweep` removes what is left."""
    return _prefix(target.name) + "staged-"


class BackgroundSync:
    """fsync(path) in a thread of its own: the disk writes a large file out (seconds for a 500 MB video on some
    disks) while its bytes are still checked from the page cache; `wait` before the file is placed or changed,
    so a placed file is on disk as before. An error of the fsync is raised by `wait`."""

    def __init__(self, path: Path) -> None:
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._sync, args=(path,), name=f"fsync {path.name}", daemon=True)
        self._thread.start()

    def _sync(self, path: Path) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)  # the file's own dirty pages, whichever descriptor wrote them
            finally:
                os.close(fd)
        except OSError as exc:
            self._error = exc

    def wait(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error


def place(tmp: Path, target: Path, replace: bool) -> None:
    """Move a finished temporary file onto `target` (same folder).

    With `replace`, whatever is at `target` - a file, or a symlink someone planted - is replaced by
    the file itself (rename never follows a link at the destination). Without it, a hard link is
    made, which fails if anything at all is at `target`, so nothing is ever clobbered.
    """
    if replace:
        if target.is_dir() and not target.is_symlink():
            raise UsageError(f"{target}: is a directory; give a file name.")
        os.replace(tmp, target)
        return
    try:
        os.link(tmp, target, follow_symlinks=False)
    except FileExistsError:
        raise UsageError(f"{target}: already exists; pass --force to replace it.") from None
    os.unlink(tmp)


def commit(tmp: Path, target: Path, replace: bool, record: Callable[[], object] | None = None) -> None:
    """Place `tmp` at `target` and then `record()` it (the audit append), as one step that cannot be cut.

    If `record` fails (a full disk under the audit log), the placing is undone - the file that was
    at `target` before comes back, or `target` is removed - so an output never exists without its
    record. Signals are held back for the duration (dvqa.core.signals.deferred).
    """
    with signals.deferred():
        previous = None
        if replace and os.path.lexists(target) and not target.is_dir():
            previous = target.with_name(f"{_prefix(target.name)}{secrets.token_hex(6)}.previous")
            os.link(target, previous, follow_symlinks=False)
        try:
            place(tmp, target, replace)
            if record is not None:
                try:
                    record()
                except BaseException:
                    if previous is not None:
                        os.replace(previous, target)
                        previous = None
                    else:
                        target.unlink(missing_ok=True)
                    raise
        finally:
            if previous is not None:
                previous.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_file(target: Path, replace: bool = True, binary: bool = True) -> Iterator[IO]:
    """Write `target` all or nothing: a private temporary file beside it, fsync'd, then placed."""
    fd, tmp = temp_file(target.parent, target.name)
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        place(tmp, target, replace)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(target: Path, data: bytes | str, replace: bool = True) -> None:
    with atomic_file(target, replace, binary=isinstance(data, bytes)) as handle:
        handle.write(data)


def sync_folder(folder: Path) -> None:
    """fsync a folder, so that a file just created or renamed in it survives a power cut, not only a crash."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_append(path: Path) -> tuple[int, list[str]]:
    """Open (or create, privately) a log to append to, never through a symlink; (fd, warnings).

    A log that others can read is still appended to - refusing would lose the record - but the
    caller is warned, because the log holds patient identifiers.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, file_mode())
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UsageError(f"{path}: is a symbolic link; dvqa appends to an audit log only at its real path "
                             f"({os.path.realpath(path)}), never through a link.") from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise UsageError(f"{path}: is not a regular file; give a file for the audit log.")
    warnings = []
    if info.st_mode & 0o007:
        warnings.append(f"{path}: the audit log is readable or writable by other users (mode "
                        f"{stat.S_IMODE(info.st_mode):04o}) and holds patient identifiers; run "
                        f"chmod 600 {path}")
    return fd, warnings


def sweep(folder: Path) -> list[str]:
    """Remove leftovers of dead dvqa processes on this host in `folder`; say what was removed.

    Only names dvqa makes (see _prefix), owned by this user, whose process is gone. A leftover of
    another host or an earlier boot cannot be checked from here and is reported, not removed.
    """
    notes: list[str] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return notes
    tag, uid = _host_tag(), os.getuid()
    for entry in entries:
        found = _LEFTOVER.match(entry.name)
        if not found:
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if info.st_uid != uid or stat.S_ISLNK(info.st_mode):
            continue
        pid, their_tag = int(found.group(1)), found.group(2)
        if their_tag != tag:
            notes.append(f"{entry.path}: left by dvqa process {pid} on another host or before a reboot; "
                         "remove it if no conversion is running there")
            continue
        if process_alive(pid):
            continue
        if stat.S_ISDIR(info.st_mode):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            os.unlink(entry.path)
        notes.append(f"removed {entry.path}, left by dvqa process {pid}, which is gone")
    return notes


def process_alive(pid: int) -> bool:
    """Whether process `pid` exists (one of another user counts: signalling it is only refused)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


FIXES = {
    errno.ENOSPC: "no space left on the device; free space or write elsewhere",
    errno.EDQUOT: "the disk quota is exceeded; free space or write elsewhere",
    errno.EROFS: "the file system is read-only; write elsewhere",
    errno.EACCES: "permission denied; check the folder's permissions or write elsewhere",
    errno.EPERM: "operation not permitted; check the folder's permissions or write elsewhere",
    errno.EIO: "an input/output error from the device; check the disk",
    errno.EFBIG: "the file is too large for this file system; write elsewhere",
}


def _root(exc: OSError) -> OSError:
    """pydicom re-raises a write error as a new OSError without its errno (its message carries a
    traceback); the original is its __cause__, so the chain is followed to the error that has one."""
    while exc.errno is None and isinstance(exc.__cause__, OSError):
        exc = exc.__cause__
    return exc


def machine_fault(exc: OSError) -> str | None:
    """What the machine did wrong and the fix, in words (full disk, quota, read-only, permissions), or None."""
    return FIXES.get(_root(exc).errno or 0)


def environment_error(exc: OSError, path: Path | str | None = None) -> EnvironmentProblem | None:
    """An OSError that is the machine's doing, as one sentence naming the path; None for any other."""
    fix = machine_fault(exc)
    where = _root(exc).filename or path or "a file dvqa writes"
    return EnvironmentProblem(f"{where}: {fix}.") if fix else None


def identity(path: Path) -> tuple:
    """What makes two paths the same file: device and inode when it exists (so a symlink, a `..` or a
    hard link to it is the same file), else the real path of its folder and its name."""
    try:
        info = os.stat(path)
        return ("inode", info.st_dev, info.st_ino)
    except OSError:
        return ("path", os.path.join(os.path.realpath(os.path.dirname(os.path.abspath(path))),
                                     os.path.basename(path)))


def refuse_same_files(named: list[tuple[str, Path]]) -> None:
    """Refuse, before any work, two roles of one command (an output and the audit log, a report and the
    DICOM file, an output and an input) that are one file: one would silently replace the other.

    `named` pairs an option's name with its path; the message names both options.
    """
    seen: dict[tuple, tuple[str, Path]] = {}
    for option, path in named:
        key = identity(path)
        if key in seen:
            first, first_path = seen[key]
            same = "" if str(first_path) == str(path) else f" and {path}"
            raise UsageError(f"{first} {first_path}{same}: {first} and {option} are the same file, and one "
                             "would replace the other; give each its own file.")
        seen[key] = (option, path)
