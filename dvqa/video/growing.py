"""A recording read while it is still being written: a file that grows, or a stream on stdin.

Browsers hand a recording over in pieces (MediaRecorder with a timeslice): WebM or fragmented MP4
chunks appended to a file by an upload handler, or piped. FFmpeg reads such input through a
file object that blocks at the current end until more arrives, and ends only when the stream does.

When a growing file ends:
- **the marker** `INPUT.done` (a file beside it, any content), written by whoever appends the
  chunks after the last one. It is exact: the conversion finishes the moment it appears, which is
  what makes the DICOM file ready seconds after the recording stops. Recommended.
- **`idle` seconds without growth**: for writers that cannot leave a marker. It costs its full
  length in latency, and a writer stalled longer than it (a network upload pausing) is taken as
  finished - the stream check then finds a cut-off last chunk and says so.
Whichever comes first ends it. A pipe (stdin) ends at end of file.

Everything read is hashed on the way (SHA-256 of the bytes, as the audit record keeps inputs), so
a stream that exists nowhere else still has its digest.

A followed file must stay the recording that was opened. The descriptor opened at the start is read
to the end (never the name again), and three things would make what was read something else:
the name renamed over or deleted (another recording now at the path, or none), the file truncated
(a recorder that restarted writes a new recording into it) and the bytes already read rewritten.
The first two are checked whenever the reader waits for the next chunk - an fstat of the
descriptor and a stat of the name, microseconds - so a conversion stops at the first sign. The
third cannot be seen from sizes (a restarted recorder can truncate and outgrow the old size between
two checks, and dvqa would read the new recording's bytes after the old one's): at the end, the
bytes the file now holds up to what was read are read again through the same descriptor and their
SHA-256 compared with the running digest of what was converted - one sequential re-read of a file
that was just written (page cache), no copy kept, and exact, where hashing samples would not be.
Any of these ends the conversion as a failure (exit 3, nothing written) unless --keep-partial; then
a rename or deletion converts what was read before (the descriptor's bytes, still verified), while
bytes that changed under the reader are refused even so: what was read is a mix of two recordings.
A FIFO is not followed: it is a stream, and `dvqa convert - < FIFO` reads it to its end.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys
import time
from pathlib import Path
from typing import BinaryIO

from dvqa.core.errors import InputError, UsageError
from dvqa.core.regular import kind

POLL_S = 0.05
MARKER_SUFFIX = ".done"


def marker_for(path: Path) -> Path:
    return path.with_name(path.name + MARKER_SUFFIX)


class Growing:
    """A binary, non-seekable reader over a file that may still grow (or over a pipe)."""

    def __init__(self, handle: BinaryIO, label: str, follow: Path | None = None, idle_s: float = 30.0) -> None:
        self.handle = handle
        self.label = label  # how messages and the audit record name the input
        self.follow = follow  # the growing file's path; None: a pipe, which ends at end of file
        self.idle_s = idle_s
        self.digest = hashlib.sha256()
        self.size = 0
        self.ended_by = ""  # "marker", "idle", "end of file"
        self.last_growth = time.monotonic()
        self.spool: BinaryIO | None = None  # a copy of every byte read, while keep_copy is on
        self.interrupted: KeyboardInterrupt | None = None  # a signal that came while FFmpeg was reading
        self.changed = ""  # how the followed file stopped being the recording opened (see the module), or ""
        self.mixed = False  # the bytes read are no longer the file's: no part of them can be trusted

    def keep_copy(self, path: Path) -> None:
        """Copy every byte read from now on into `path` (call before the first read): a live conversion
        that may pass the bitstream through keeps the input, to re-encode it if the end refuses that."""
        self.spool = open(path, "wb")

    def end_copy(self) -> None:
        if self.spool is not None:
            self.spool.close()
            self.spool = None

    def _got(self, data: bytes) -> bytes:
        self.digest.update(data)
        self.size += len(data)
        if self.spool is not None:
            self.spool.write(data)
        return data

    @classmethod
    def follow_file(cls, path: Path, idle_s: float) -> "Growing":
        """The file at `path`, opened once: everything after follows this descriptor (see the module).

        Opened with O_NONBLOCK so that a FIFO is refused at once instead of waiting for a writer. A
        marker older than the file is an earlier recording's: it would end this one at its first
        pause, at a chunk boundary, where nothing shows the recording was cut. Refused."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise InputError(f"{path}: no such file to follow; start dvqa once the recorder has created it.") from None
        except OSError as exc:
            raise InputError(f"{path}: cannot be opened to follow ({exc.strerror}); check the path and its "
                             "permissions.") from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            if stat.S_ISFIFO(info.st_mode):
                raise UsageError(f"{path}: is a FIFO (named pipe), which has no file to follow; read it as a "
                                 f"stream instead: dvqa convert - -o OUTPUT.dcm < {path}")
            raise InputError(f"{path}: is {kind(info.st_mode)}, not a recording file to follow; give the file "
                             "the recorder writes.")
        os.set_blocking(fd, True)
        marker = marker_for(path)
        try:
            stale = marker.stat().st_mtime < info.st_mtime
        except FileNotFoundError:
            stale = False
        if stale:
            os.close(fd)
            raise UsageError(f"{marker}: is older than {path}, so it belongs to an earlier recording and would end "
                             "this one early; remove it (the writer creates it after the last chunk).")
        return cls(os.fdopen(fd, "rb", buffering=0), str(path), follow=path, idle_s=idle_s)

    @classmethod
    def stdin(cls) -> "Growing":
        """Python sets sys.stdin to None when descriptor 0 was closed at start-up (`<&-`); then descriptor 0
        may since belong to a file dvqa opened itself, which must never be read as the recording."""
        if sys.stdin is None:
            raise UsageError("stdin is closed, so there is no recording to read; pipe one in: "
                             "dvqa convert - -o OUTPUT.dcm < RECORDING")
        try:
            return cls(os.fdopen(os.dup(0), "rb", buffering=0), "stdin")
        except OSError as exc:
            raise UsageError(f"stdin cannot be read ({exc.strerror}); pipe a recording in: "
                             "dvqa convert - -o OUTPUT.dcm < RECORDING") from None

    def read(self, size: int = -1) -> bytes:
        """Up to `size` bytes; blocks at the current end until more arrive; b"" only when the stream ended.

        FFmpeg calls this from its read callback, where PyAV prints and swallows any exception - a Ctrl-C
        or SIGTERM while waiting for the next chunk would be lost and the conversion would go on. So an
        interruption here ends the stream and is kept; the caller re-raises it (raise_if_interrupted)."""
        if self.interrupted is not None:
            return b""
        try:
            return self._read(size)
        except KeyboardInterrupt as exc:
            self.interrupted = exc
            return b""

    def raise_if_interrupted(self) -> None:
        if self.interrupted is not None:
            raise self.interrupted

    def _read(self, size: int) -> bytes:
        size = 1 << 16 if size is None or size < 0 else size
        while True:
            if self.follow is not None and not self.changed:
                self.changed = self._identity_problem()
            if self.changed:  # the followed file is no longer the recording opened: the stream ends here
                self.ended_by = "a change of the followed file"
                return b""
            data = self.handle.read(size)
            if data:
                self.last_growth = time.monotonic()
                return self._got(data)
            if self.follow is None:
                self.ended_by = "end of file"
                return b""
            if marker_for(self.follow).exists():
                data = self.handle.read(size)  # what was appended just before the marker
                if data:
                    return self._got(data)
                self.ended_by = "marker"
                return b""
            if time.monotonic() - self.last_growth >= self.idle_s:
                self.ended_by = "idle"
                return b""
            time.sleep(POLL_S)

    def _identity_problem(self) -> str:
        """"" while the followed name still names the descriptor's file, which holds at least what was read;
        else what happened, in words. An fstat and a stat: cheap enough for every read."""
        assert self.follow is not None
        opened = os.fstat(self.handle.fileno())
        if opened.st_size < self.size:
            return f"truncated to {opened.st_size} bytes after {self.size} had been read"
        try:
            named = os.stat(self.follow)
        except FileNotFoundError:
            return "deleted or renamed away"
        if (named.st_dev, named.st_ino) != (opened.st_dev, opened.st_ino):
            return "replaced by another file (renamed over, or deleted and created again)"
        return ""

    def verify(self) -> None:
        """After the stream: the followed file still holds exactly the bytes that were read (see the module).

        Sets `changed` (and `mixed` when the bytes read differ from the file's); a no-op for a pipe."""
        if self.follow is None or self.mixed:
            return
        if not self.changed:
            self.changed = self._identity_problem()
        if self.changed.startswith("truncated"):
            return  # the bytes read are gone from the file: nothing left to compare them with
        again, at, fd = hashlib.sha256(), 0, self.handle.fileno()
        while at < self.size:
            piece = os.pread(fd, min(1 << 20, self.size - at), at)
            if not piece:
                break
            again.update(piece)
            at += len(piece)
        if at != self.size or again.hexdigest() != self.digest.hexdigest():
            self.changed = (f"rewritten while it was read: its first {self.size} bytes are no longer the bytes "
                            "read (a recorder that restarted into the same file?)")
            self.mixed = True

    def raise_if_changed(self, keep_partial: bool) -> None:
        """The conversion's end when the followed file changed: always when the bytes read are a mix, else
        unless --keep-partial (then the caller marks the result partial)."""
        if not self.changed or (keep_partial and not self.mixed):
            return
        fix = ("no part of what was read can be trusted, even with --keep-partial" if self.mixed
               else "--keep-partial converts what was read before")
        raise InputError(f"{self.label}: the followed file was {self.changed}, so what was read is not the "
                         f"complete recording; nothing was written - convert the recording again ({fix}).")

    def partial_note(self) -> str:
        """The report's and audit record's words for a --keep-partial conversion of a changed file."""
        return (f"partial recording: the followed file was {self.changed}; the {self.size} bytes read before "
                "were converted (--keep-partial)")

    def close(self) -> None:
        self.handle.close()
        self.end_copy()

    def facts(self) -> dict[str, object]:
        """The input as the audit trail keeps it: what was read, and its digest."""
        return {"path": str(Path(self.label).absolute()) if self.follow else self.label, "size": self.size,
                "sha256": self.digest.hexdigest(), "read_live": True, "ended_by": self.ended_by,
                **({"changed": self.changed} if self.changed else {})}
