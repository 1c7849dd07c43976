"""What the gateway made, kept on disk: remuxed videos and thumbnails, in a private folder.

The files hold patient pictures, so the folder is created 0700 and every file 0600, named by a hash
(never by a UID or a name). The cache is bounded: after each new entry the least recently used ones
are removed until the total is under the limit. A SOP Instance UID names one immutable instance
(PS3.3 C.12.1.1.1), so an entry never goes stale; it only ages out.

More than one process may write one cache (the server, and recording ingestion's conversion process
warming it, dvqa.serve.prewarm): entries appear only by rename, a temporary file's name holds its
writer's process id and a random part (two writers of one entry never share one), the start-up's
clean-up removes only what a process that is gone left (or what nobody touched for STALE_S), and the
trim takes an entry another process removed in the meantime in its stride.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from pathlib import Path

from dvqa.core.errors import EnvironmentProblem

STALE_S = 3600  # a temporary file not written for this long is an interrupted run's, whoever's it was


class Cache:
    """Files under `folder`, at most `max_bytes` in total."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.work = folder / "work"
        try:
            for path in (folder, self.work):
                path.mkdir(mode=0o700, parents=True, exist_ok=True)
                info = os.lstat(path)
                if path.is_symlink() or info.st_uid != os.getuid():  # planted by someone else: never used
                    raise EnvironmentProblem(f"{path}: the cache folder is a symbolic link or belongs to another "
                                             "user; give a cache_dir of your own.")
                os.chmod(path, 0o700)
        except OSError as exc:
            raise EnvironmentProblem(f"{folder}: cannot create the cache folder ({exc.strerror}); give a "
                                     "writable cache_dir in the config file.") from None
        for left in self.work.iterdir():  # what an interrupted run left behind (never a live writer's)
            if _stale(left):
                left.unlink(missing_ok=True)

    @staticmethod
    def key(*parts: str) -> str:
        return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:40]

    def path(self, key: str, suffix: str) -> Path:
        return self.folder / f"{key}{suffix}"

    def temporary(self, key: str, suffix: str) -> Path:
        """A new name in the work folder: the writer's process id (see _stale) and a random part."""
        return self.work / f"{key}.{os.getpid()}.{secrets.token_hex(6)}{suffix}"

    def get(self, key: str, suffix: str) -> Path | None:
        """The entry if it is complete (entries appear only by rename), marked as just used."""
        path = self.path(key, suffix)
        try:
            os.utime(path)
        except FileNotFoundError:
            return None
        return path

    def put(self, temporary: Path, key: str, suffix: str) -> Path:
        """Move a finished file into the cache (atomically) and trim the cache to its limit."""
        os.chmod(temporary, 0o600)
        final = self.path(key, suffix)
        os.replace(temporary, final)
        self.trim(keep=final)
        return final

    def trim(self, keep: Path | None = None) -> None:
        entries = []
        for path in self.folder.iterdir():
            try:
                stat = path.lstat()
            except FileNotFoundError:  # trimmed by another process since the listing
                continue
            if stat.st_mode & 0o170000 == 0o100000:  # a regular file (the work folder is not an entry)
                entries.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            if path != keep:
                path.unlink(missing_ok=True)
                total -= size


def _stale(path: Path) -> bool:
    """True when the temporary file's writer (the process id in its name) has ended, or nobody has
    written it for STALE_S (a process id used again after a restart)."""
    try:
        pid = int(path.name.split(".")[1])
        age = time.time() - path.lstat().st_mtime
    except (IndexError, ValueError):
        return True
    except FileNotFoundError:
        return False
    if age > STALE_S:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # a live process of another user (a cache folder is one user's)
        return False
    return False


def private_file(path: Path) -> int:
    """A new file only this user can read (0600), as a raw descriptor."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
