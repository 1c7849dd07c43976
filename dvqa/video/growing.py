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
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import BinaryIO

from dvqa.core.errors import UsageError

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
        """A marker older than the file is an earlier recording's: it would end this one at its first
        pause, at a chunk boundary, where nothing shows the recording was cut. Refused."""
        marker = marker_for(path)
        if marker.exists() and marker.stat().st_mtime < path.stat().st_mtime:
            raise UsageError(f"{marker}: is older than {path}, so it belongs to an earlier recording and would end "
                             "this one early; remove it (the writer creates it after the last chunk).")
        return cls(open(path, "rb"), str(path), follow=path, idle_s=idle_s)

    @classmethod
    def stdin(cls) -> "Growing":
        return cls(os.fdopen(os.dup(0), "rb", buffering=0), "stdin")

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

    def close(self) -> None:
        self.handle.close()
        self.end_copy()

    def facts(self) -> dict[str, object]:
        """The input as the audit trail keeps it: what was read, and its digest."""
        return {"path": str(Path(self.label).absolute()) if self.follow else self.label, "size": self.size,
                "sha256": self.digest.hexdigest(), "read_live": True, "ended_by": self.ended_by}
