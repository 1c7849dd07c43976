"""The recording spool: what `dvqa serve` has acknowledged, on disk, so that a SIGKILL loses nothing.

Layout under the configured spool_dir (folders 0700, files 0600 - the chunks are patient video)::

    recordings/ID/recording.json   the request: patient/study metadata, conversion choices, when created
    recordings/ID/chunks/NNNNNNNN  chunk n exactly as received; the name exists only once the bytes are fsync'd
    recordings/ID/end.json         the client's end: chunk count, whole-recording SHA-256, when
    recordings/ID/abandoned        the recording expired: its conversion stops at the next chunk it waits for
    recordings/ID/lock             held (flock) by the one process converting the recording
    recordings/ID/result.json      the outcome; once it is written the rest of the folder is removed
    recordings/ID/quality.html     the quality report (and quality.json), written just after it: frame thumbnails
    dicom/ID.dcm                   the DICOM file, kept while the PACS has not taken it

A chunk is written to a private temporary name, fsync'd, hard-linked to its name (which fails when the
name exists, so two uploads of one n cannot both win), and the folder fsync'd: only then is it
acknowledged. After a crash the chunk files are exactly the acknowledged chunks, whole; temporaries a
dead process left are swept (dvqa.core.outputs.sweep). The conversion reads the chunks in order through
ChunkFeed, a file-like object that waits at a missing chunk - the same live path as `dvqa convert
--follow` of a growing file, with end.json as its end marker.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

from dvqa.core import outputs
from dvqa.core.errors import EnvironmentProblem

REPORT_KINDS = ("html", "json")  # the quality report's forms, as dvqa.quality.reports names them by suffix
POLL_S = 0.05  # as dvqa.video.growing: how often a waiting conversion looks for the next chunk
CHUNK_DIGITS = 8
MAX_CHUNKS = 10 ** CHUNK_DIGITS


def private_folder(path: Path) -> Path:
    """`path` as a folder only this user can enter; one planted by someone else (a link, another owner) is refused."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(path)
        if path.is_symlink() or info.st_uid != os.getuid():
            raise EnvironmentProblem(f"{path}: the spool folder is a symbolic link or belongs to another user; give "
                                     "a spool_dir of your own.")
        os.chmod(path, 0o700)
    except OSError as exc:
        raise EnvironmentProblem(f"{path}: cannot create the spool folder ({exc.strerror}); give a writable "
                                 "record.spool_dir in the config file.") from None
    return path


def write_json(path: Path, data: dict) -> None:
    """All or nothing, and on the disk before this returns (file and folder fsync'd)."""
    outputs.write_atomic(path, json.dumps(data, indent=1, sort_keys=True) + "\n")
    outputs.sync_folder(path.parent)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


@dataclass(frozen=True)
class Stored:
    """A chunk on disk: its size and SHA-256."""

    size: int
    sha256: str


class Conflict(Exception):
    """Chunk n is on disk already, with other bytes."""

    def __init__(self, stored: Stored) -> None:
        super().__init__(stored.sha256)
        self.stored = stored


def file_digest(path: Path) -> Stored:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while piece := handle.read(1 << 20):
            digest.update(piece)
            size += len(piece)
    return Stored(size, digest.hexdigest())


class RecordingFolder:
    """One recording's folder in the spool (see the module)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.id = path.name
        self.chunks = path / "chunks"
        self.request_path = path / "recording.json"
        self.end_path = path / "end.json"
        self.abandoned_path = path / "abandoned"
        self.result_path = path / "result.json"
        self.lock_path = path / "lock"

    def create(self, request: dict) -> None:
        private_folder(self.path)
        private_folder(self.chunks)
        write_json(self.request_path, request)

    def request(self) -> dict:
        found = read_json(self.request_path)
        if found is None:
            raise FileNotFoundError(self.request_path)
        return found

    def chunk(self, n: int) -> Path:
        return self.chunks / f"{n:0{CHUNK_DIGITS}d}"

    def acknowledged(self) -> dict[int, int]:
        """chunk number -> size, of every chunk on disk (a temporary is never a chunk: its name is not digits)."""
        found = {}
        try:
            entries = list(os.scandir(self.chunks))
        except FileNotFoundError:
            return found
        for entry in entries:
            if entry.name.isdigit() and len(entry.name) == CHUNK_DIGITS:
                found[int(entry.name)] = entry.stat().st_size
        return found

    def put_chunk(self, n: int, data: bytes, sha256: str) -> bool:
        """Chunk n on disk (fsync'd); True when it is new, False when the same bytes were there; Conflict when
        other bytes were. Blocking: run it off the event loop."""
        target = self.chunk(n)
        if target.exists():
            return self._same(target, len(data), sha256)
        fd, tmp = outputs.temp_file(self.chunks, target.name)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
            os.close(fd)
            fd = -1
            try:
                os.link(tmp, target, follow_symlinks=False)
            except FileExistsError:  # another request for this n won the race
                return self._same(target, len(data), sha256)
            outputs.sync_folder(self.chunks)
            return True
        finally:
            if fd >= 0:
                os.close(fd)
            tmp.unlink(missing_ok=True)

    @staticmethod
    def _same(target: Path, size: int, sha256: str) -> bool:
        stored = file_digest(target)
        if stored.size != size or stored.sha256 != sha256:
            raise Conflict(stored)
        return False

    def whole_digest(self, count: int, digest=None, start: int = 0) -> str:
        """The SHA-256 of chunks 0 .. count-1; `digest` may hold chunks 0 .. start-1 already (hashed as they
        came, so that `end` does not read the whole recording again: about a second per 500 MB here)."""
        digest = digest or hashlib.sha256()
        for n in range(start, count):
            with open(self.chunk(n), "rb") as handle:
                while piece := handle.read(1 << 20):
                    digest.update(piece)
        return digest.hexdigest()

    def end(self) -> dict | None:
        return read_json(self.end_path)

    def mark_end(self, chunks: int, sha256: str) -> dict:
        end = {"chunks": chunks, "sha256": sha256, "at": time.time()}
        write_json(self.end_path, end)
        return end

    def mark_abandoned(self) -> None:
        outputs.write_atomic(self.abandoned_path, b"")
        outputs.sync_folder(self.path)

    def sweep(self) -> None:
        """Remove the temporaries of a chunk a dead server was writing (never acknowledged)."""
        outputs.sweep(self.chunks)

    def result(self) -> dict | None:
        return read_json(self.result_path)

    def report_path(self, kind: str) -> Path:
        """The quality report as `kind` (one of REPORT_KINDS)."""
        return self.path / f"quality.{kind}"

    def write_result(self, result: dict) -> None:
        """The result again, completed (the quality reports are written after it)."""
        write_json(self.result_path, result)

    def finish(self, result: dict) -> None:
        """Write the outcome, then remove what the recording left (chunks, request with its patient data)."""
        self.write_result(result)
        self.clean()

    def clean(self) -> None:
        """Everything but the outcome: called once result.json exists (again after a crash that came between)."""
        shutil.rmtree(self.chunks, ignore_errors=True)
        for leftover in (self.request_path, self.end_path, self.abandoned_path):
            leftover.unlink(missing_ok=True)

    def finished_at(self) -> float | None:
        """When the result was last written (None: no result), for record.retention_days."""
        try:
            return self.result_path.stat().st_mtime
        except FileNotFoundError:
            return None

    def remove(self) -> None:
        """The whole folder: result, reports, lock (retention; the recording's chunks went when it finished)."""
        shutil.rmtree(self.path, ignore_errors=True)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Held by the process converting this recording; waits while another (an orphan of a killed server
        finishing its work) holds it. Released by the kernel when the holder dies."""
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


class Stop(KeyboardInterrupt):
    """The conversion must stop while it waits for a chunk. A KeyboardInterrupt, as a signal would be: the live
    path (dvqa.video.growing) keeps it and the conversion ends as interrupted, recorded with `name`."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class ChunkFeed:
    """The recording's bytes, chunk after chunk, for dvqa.video.growing.Growing: `read` waits at a chunk not yet
    on disk, and returns b"" once the chunks end.json counts were all read. It stops (Stop) when the recording
    is abandoned, or when the server that started this process is gone (SIGKILL): the next server resumes."""

    def __init__(self, folder: RecordingFolder, server_pid: int) -> None:
        self.folder = folder
        self.server_pid = server_pid
        self.parent = os.getppid()  # the fork server, which ends with the server: then this process is re-parented
        self.n = 0
        self.current: BinaryIO | None = None

    def read(self, size: int = -1) -> bytes:
        size = 1 << 16 if size is None or size < 0 else size
        while True:
            if self.current is not None:
                data = self.current.read(size)
                if data:
                    return data
                self.current.close()
                self.current = None
                self.n += 1
            try:
                self.current = open(self.folder.chunk(self.n), "rb")
                continue
            except FileNotFoundError:
                pass
            end = self.folder.end() if self.folder.end_path.exists() else None
            if end is not None and self.n >= int(end["chunks"]):
                return b""
            if self.folder.abandoned_path.exists():
                raise Stop("the recording being abandoned (no chunk within record.idle_expiry_s)")
            if os.getppid() != self.parent or not outputs.process_alive(self.server_pid):
                raise Stop("the end of the dvqa serve process that started it")
            time.sleep(POLL_S)

    def close(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None



class Spool:
    """The spool folder: recordings/ and dicom/."""

    def __init__(self, root: Path) -> None:
        self.root = private_folder(root)
        self.recordings = private_folder(root / "recordings")
        self.dicom = private_folder(root / "dicom")

    def folder(self, recording_id: str) -> RecordingFolder:
        return RecordingFolder(self.recordings / recording_id)

    def all(self) -> list[RecordingFolder]:
        return [RecordingFolder(p) for p in sorted(self.recordings.iterdir()) if p.is_dir() and not p.is_symlink()]
