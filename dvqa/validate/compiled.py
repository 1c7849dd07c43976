"""An edition's tables in a form that is fast to open: the start-up of every `dvqa validate`.

Parsing the bundled edition's 7.6 MB of JSON took ~0.3 s of each run, although one file's IOD uses a
twentieth of it (a video IOD: 21 of 635 module and macro tables). The compiled form is one file per
edition in dvqa's cache folder (XDG_CACHE_HOME/dvqa/tables, or ~/.cache/dvqa/tables), named by the SHA-256
of the source tables it was made from: a header (the small tables - dictionary, IODs, references - and
where each module table lies in the file) and then each module table as its own marshal blob, unpacked
the first time a data set's IOD asks for it, straight from the bytes read (no copy of the other 6 MB:
unpacking a header that held the blobs copied them all, ~15 ms of every run).

marshal, not pickle: loading it builds data, never runs code, so a planted file can at worst be refused.
The file is trusted only when it is a regular file owned by the user and not writable by others, its
stated SHA-256 matches its content and it names the source digest asked for; anything else is rebuilt
from the source tables (which dvqa.validate.standard has just read and hashed) and written again through
dvqa.core.outputs. Writing it is only an optimisation: a cache folder that cannot be written costs time,
never a verdict.
"""

from __future__ import annotations

import hashlib
import marshal
import os
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from dvqa.core import outputs
from dvqa.core.errors import DvqaError
from dvqa.core.regular import open_regular

FORMAT = 3  # bump when the layout below (or what dvqa.validate.standard makes of the source) changes: an older
# file is then rebuilt, never misread (2: condition value numbers counted from 1, standard._value_numbers;
# 3: module blobs after the header, found by offset)
MAGIC = b"dvqa compiled DICOM tables %d\n" % FORMAT
MARSHAL_VERSION = 4  # data only; readable by every Python dvqa supports
CAP = 256 * 1024 * 1024


@dataclass
class Form:
    """What dvqa.validate.standard.Tables is made of."""

    dict_info: dict
    iod_info: dict
    modules: Mapping[str, dict]
    references: dict
    unevaluated: int
    known_tags: frozenset[str]


class Modules(Mapping):
    """Module and macro tables by reference ("module:patient"), each unpacked on first use from `data`, where
    `index` says it lies (offset, length)."""

    def __init__(self, data: bytes | memoryview, index: dict[str, tuple[int, int]]) -> None:
        self._data = memoryview(data)
        self._blobs = index
        self._open: dict[str, dict] = {}

    def __getitem__(self, ref: str) -> dict:
        table = self._open.get(ref)
        if table is None:
            start, length = self._blobs[ref]
            table = self._open[ref] = marshal.loads(self._data[start:start + length])
        return table

    def __contains__(self, ref: object) -> bool:
        return ref in self._blobs

    def __iter__(self) -> Iterator[str]:
        return iter(self._blobs)

    def __len__(self) -> int:
        return len(self._blobs)


def known_tags(modules: Mapping[str, dict]) -> frozenset[str]:
    """Every attribute some module or macro lists, at any depth (for "newer than the edition")."""
    found: set[str] = set()
    stack = list(modules.values())
    while stack:
        table = stack.pop()
        for key, value in table.items():
            if key.startswith("(") and isinstance(value, dict):
                found.add(key)
                if "items" in value:
                    stack.append(value["items"])
    return frozenset(found)


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dvqa" / "tables"


def path_for(name: str, digest: str) -> Path:
    """Named by the source's digest and the layout's FORMAT: dvqa versions of another layout that share the cache
    (a user's two installs, a developer's branches) each keep their own file instead of rebuilding each other's."""
    return cache_dir() / f"{name}-{digest}-f{FORMAT}.tables"


def load(name: str, digest: str, parse: Callable[[], dict]) -> Form:
    """The compiled tables of the edition whose source tables hash to `digest`; `parse()` gives the source
    tables (keys dict_info, iod_info, module_info, references, unevaluated) when no usable compiled form
    is cached, and the form made from them is cached for the next run."""
    path = path_for(name, digest)
    form = _read(path, digest)
    if form is not None:
        return form
    source = parse()
    blobs, index, offset = [], {}, 0
    for ref, table in source["module_info"].items():
        blob = marshal.dumps(table, MARSHAL_VERSION)
        index[ref] = (offset, len(blob))
        blobs.append(blob)
        offset += len(blob)
    known = known_tags(source["module_info"])
    header = marshal.dumps({"source": digest, "dict_info": source["dict_info"], "iod_info": source["iod_info"],
                            "references": source["references"], "unevaluated": source["unevaluated"],
                            "known_tags": sorted(known), "modules": index}, MARSHAL_VERSION)
    area = b"".join(blobs)
    payload = len(header).to_bytes(8, "little") + header + area
    _write(path, MAGIC + hashlib.sha256(payload).hexdigest().encode("ascii") + b"\n" + payload)
    return Form(source["dict_info"], source["iod_info"], Modules(area, index), source["references"],
                source["unevaluated"], known)


def _read(path: Path, digest: str) -> Form | None:
    try:
        fd = open_regular(path, "compiled DICOM tables")
    except (DvqaError, OSError):
        return None
    try:
        info = os.fstat(fd)
        if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) or info.st_size > CAP:
            return None  # someone else's file, or one others can change: not trusted, rebuilt
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = handle.read(CAP + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    start = len(MAGIC) + 65  # the magic line, then the payload's SHA-256 in hex and a newline
    payload = memoryview(data)[start:]  # not a copy of 6 MB
    if data[:len(MAGIC)] != MAGIC or hashlib.sha256(payload).hexdigest().encode("ascii") + b"\n" != \
            data[len(MAGIC):start]:
        return None
    size = int.from_bytes(payload[:8], "little")
    try:
        content = marshal.loads(payload[8:8 + size])
    except (EOFError, ValueError, TypeError):
        return None
    if not isinstance(content, dict) or content.get("source") != digest:
        return None
    return Form(content["dict_info"], content["iod_info"], Modules(payload[8 + size:], content["modules"]),
                content["references"], content["unevaluated"], frozenset(content["known_tags"]))


def _write(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder = path.parent.lstat()
        if not stat.S_ISDIR(folder.st_mode) or folder.st_uid != os.getuid():
            return  # a link or another user's folder: never written into
        outputs.write_atomic(path, data, replace=True)
    except (OSError, DvqaError):
        return  # read-only home, full disk: the next run parses the source tables again
