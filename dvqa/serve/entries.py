"""What the gateway's cache holds for one video instance, named in one place: the gateway (which fills
it on a viewer's first visit) and dvqa.serve.prewarm (which fills it when dvqa stored the instance)
must write and read the same entries.

Per SOP Instance UID (a name for one immutable instance, so an entry never goes stale):
- "rendered": the fragmented MP4 written while the instance arrives (H.264, HEVC), or the MPEG-2
  elementary stream (.mpg), which is its own rendering;
- "progressive": the same pictures as a progressive MP4 (index first), which replaces the fragmented
  one for every later viewer;
- "header": the instance's transfer syntax and its DICOMweb metadata made from its header - so a
  cached instance needs no retrieve from the upstream to tell its syntax or its metadata;
- "thumbnail" and rendered frames: JPEGs, made when asked for.
"""

from __future__ import annotations

import json
from pathlib import Path

from dvqa.serve.cache import Cache, private_file

RENDER_VERSION = "2"  # part of every key and ETag: a change to how videos are rendered changes it
THUMBNAIL_SIZE = 256  # the longest side of /thumbnail's JPEG
THUMBNAIL_QUALITY = 85


def rendered_key(instance: str) -> str:
    return Cache.key("rendered", RENDER_VERSION, instance)


def progressive_key(instance: str) -> str:
    return Cache.key("progressive", RENDER_VERSION, instance)


def header_key(instance: str) -> str:
    return Cache.key("header", RENDER_VERSION, instance)


def picture_key(instance: str, frame: int | None = None, size: int | None = None, quality: int = 0) -> str:
    """The thumbnail (frame None) or one rendered frame (numbered from 1) at a size and JPEG quality."""
    what = "thumbnail" if frame is None else f"frame-{frame}-{size}-{quality}"
    return Cache.key(what, RENDER_VERSION, instance)


def store_header(cache: Cache, instance: str, transfer_syntax: str, made: dict) -> Path:
    """Keep the instance's transfer syntax and metadata on disk (read again after a restart, or by the
    server when another process wrote them)."""
    key = header_key(instance)
    temporary = cache.temporary(key, ".json")
    with open(private_file(temporary), "wb") as out:
        out.write(json.dumps({"transfer_syntax": transfer_syntax, "metadata": made}).encode())
    return cache.put(temporary, key, ".json")


def read_header(cache: Cache, instance: str) -> tuple[str, dict] | None:
    """(transfer syntax, metadata) kept for the instance, or None (none kept, or unreadable: made again)."""
    path = cache.get(header_key(instance), ".json")
    if path is None:
        return None
    try:
        kept = json.loads(path.read_text())
        syntax, made = kept["transfer_syntax"], kept["metadata"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(syntax, str) or not isinstance(made, dict):
        return None
    return syntax, made
