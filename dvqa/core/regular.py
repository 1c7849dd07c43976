"""Reading a file the user named: a regular file only, and never more than a stated size.

A path on the command line or in a manifest can be a FIFO (a plain open() waits forever for a
writer), a device (/dev/zero never ends, and read() keeps allocating until memory runs out) or a
symbolic link swapped in between a check and the read. So the file is opened with O_NONBLOCK (a
FIFO opens at once instead of waiting), checked with fstat on the descriptor actually opened (not
the name, which could change), and read to at most `cap` bytes; anything else is one sentence that
names the file, what it is, and the limit.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from dvqa.core.errors import DvqaError, InputError

MIB = 1024 * 1024

_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))


def kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    for test, words in _KINDS:
        if test(mode):
            return words
    return "not a regular file"


def open_regular(path: Path, what: str, error: type[DvqaError] = InputError) -> int:
    """A read-only descriptor of `path`, which must be a regular file; `what` names its role in messages."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise error(f"{path}: {what} does not exist; check the path.") from None
    except IsADirectoryError:
        raise error(f"{path}: {what} is a folder; give a file.") from None
    except PermissionError:
        raise error(f"{path}: {what} cannot be read (permission denied); check its permissions.") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise error(f"{path}: {what} is {kind(info.st_mode)}, not a regular file; give a file.")
    os.set_blocking(fd, True)
    return fd


def read_regular(path: Path, what: str, cap: int, error: type[DvqaError] = InputError) -> bytes:
    """The whole content of the regular file `path`, refused when larger than `cap` bytes."""
    fd = open_regular(path, what, error)
    try:
        size = os.fstat(fd).st_size
        if size > cap:
            raise error(f"{path}: {what} is {size} bytes, over dvqa's limit of {_size(cap)} for it; "
                        "give the right file.")
        chunks, total = [], 0
        while True:  # the size can change after fstat: read to the cap, not to the size seen
            chunk = os.read(fd, min(MIB, cap + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > cap:
                raise error(f"{path}: {what} grew over dvqa's limit of {_size(cap)} while it was read; "
                            "give a file that is not being written.")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _size(cap: int) -> str:
    return f"{cap // MIB} MiB" if cap >= MIB else f"{cap} bytes"
