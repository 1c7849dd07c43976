"""Put into the gateway's cache, from a DICOM file dvqa has, what a viewer's first visit would have put
there - so the first viewer of a video dvqa stored gets the warm path (its first frame in OHIF about
1.2 s after opening the viewer, in a browser that has opened OHIF before; docs/serve.md) instead of
waiting for the PACS to send half a gigabyte.

Why here and not at the first visit: a PACS such as Orthanc 1.10 takes 1-2 s to send the first byte of a
476 MB instance and ignores Range, so a cold visit cannot reach 2 s; but dvqa held the file a moment
before (a recording it stored, dvqa.serve.ingest; an instance a client stored with STOW-RS through the
gateway, dvqa.serve.stow), so the bulk data need not come back from the PACS at all. (An Orthanc
upstream's other arrivals are read back from it as soon as they are stored: dvqa.serve.watch.)

What is written is what the visit writes, made by the same code: the file is read by the parser of the
upstream's bytes (dvqa.serve.dicomstream), its stream remuxed by dvqa.serve.liveremux.render, made
progressive by dvqa.serve.render.write_progressive, its metadata by dvqa.serve.metadata, its thumbnail by
dvqa.serve.remux; the entries are those of dvqa.serve.entries (the header entry with the transfer syntax,
so the gateway tells a cached instance's syntax without a retrieve), each put 0600 and atomically by the
cache's own put(). Access stays the upstream's decision: the gateway still asks it, with the client's
credentials, before it serves an entry.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Iterable

from dvqa.core.errors import InputError
from dvqa.serve import liveremux, metadata, remux
from dvqa.serve.cache import Cache, private_file
from dvqa.serve.config import ServeConfig
from dvqa.serve.dicomstream import DicomStream
from dvqa.serve.entries import (THUMBNAIL_QUALITY, THUMBNAIL_SIZE, picture_key, progressive_key, read_header,
                                rendered_key, store_header)
from dvqa.serve.render import SUFFIX, write_progressive
from dvqa.serve.upstream import meta_transfer_syntax

log = logging.getLogger("dvqa.serve")
PIECE = 1 << 20  # read at a time; holds the File Meta Information, which says the transfer syntax


def prewarm(cache: Cache, dicom_path: Path) -> bool:
    """Write the gateway's cache entries for the DICOM file at `dicom_path`.

    Returns
    -------
    bool
        True when the cache holds them (written now, or already there); False when the file is not in a
        transfer syntax the gateway renders as a video (nothing is written then).

    Raises
    ------
    InputError
        The file is damaged (its Pixel Data cut short, no video stream): nothing is written.
    """
    with open(dicom_path, "rb") as source:
        return prewarm_pieces(cache, iter(lambda: source.read(PIECE), b""))


def prewarm_pieces(cache: Cache, pieces: Iterable[bytes], wanted: Collection[str] | None = None) -> bool:
    """`prewarm` for a DICOM file given as its bytes in order (pieces of at least PIECE bytes but the
    last); `wanted`: only an instance whose SOP Instance UID is in it is written."""
    parser = DicomStream()
    spool: liveremux.Spool | None = None
    made: list[Path] = []  # temporary files, removed whatever happens
    try:
        header = None
        for number, piece in enumerate(pieces):
            if number == 0 and remux.renderable(meta_transfer_syntax(piece) or "") is None:
                return False  # not a video the gateway renders (or not a PS3.10 file): nothing to warm
            stream = parser.feed(piece)
            if header is None and parser.header_done:
                header = parser.header()
                instance = str(header.get("SOPInstanceUID", ""))
                if not instance or (wanted is not None and instance not in wanted):
                    return False
                source = remux.source_of(header)
                suffix = SUFFIX[source.media_type]
                if cached(cache, instance, (suffix,)):
                    return True
                # MPEG-2's elementary stream is its own rendering; H.264 and HEVC are remuxed from a spool
                spool = liveremux.Spool(cache.temporary(rendered_key(instance), ".es" if suffix == ".mp4" else suffix))
                made.append(spool.path)
            for data in stream:
                spool.append(data)  # type: ignore[union-attr]
        if header is None or spool is None:
            raise InputError("the file holds no encapsulated Pixel Data")
        if not parser.done:
            raise InputError("the file has a cut-short or damaged Pixel Data element")
        if not spool.size:
            raise InputError("the file's Pixel Data holds no video stream")
        spool.close(failed=False)
        syntax = str(header.file_meta.TransferSyntaxUID)
        if suffix == ".mp4":
            fragmented = cache.temporary(rendered_key(instance), ".mp4")
            made.append(fragmented)
            liveremux.render(spool, source, fragmented)  # the spool has ended: it reads it through
            progressive = cache.temporary(progressive_key(instance), ".mp4")
            made.append(progressive)
            write_progressive(fragmented, progressive)
            final = cache.put(progressive, progressive_key(instance), ".mp4")
        else:
            final = cache.put(spool.path, rendered_key(instance), suffix)
        _thumbnail(cache, instance, final)
        store_header(cache, instance, syntax, metadata.dicom_json(header))  # last: says the entries are there
        return True
    finally:
        if spool is not None and not spool.ended:
            spool.close(failed=True)
        for path in made:
            path.unlink(missing_ok=True)


def cached(cache: Cache, instance: str, suffixes: Iterable[str] = tuple(SUFFIX.values())) -> bool:
    """The cache holds the instance's rendering and header (its rendering in one of `suffixes`' forms)."""
    media = cache.get(progressive_key(instance), ".mp4") or next(
        (found for s in suffixes if (found := cache.get(rendered_key(instance), s)) is not None), None)
    return media is not None and read_header(cache, instance) is not None


def _thumbnail(cache: Cache, instance: str, media: Path) -> None:
    """The JPEG the gateway's /thumbnail answers (made as it makes it, from the rendering)."""
    codec = "mpeg2video" if media.suffix == ".mpg" else "h264"  # the MP4 demuxer reads H.264 and HEVC
    picture = remux.jpeg(remux.picture(media, codec, None), THUMBNAIL_SIZE, THUMBNAIL_QUALITY)
    key = picture_key(instance)
    temporary = cache.temporary(key, ".jpg")
    try:
        with open(private_file(temporary), "wb") as out:
            out.write(picture)
        cache.put(temporary, key, ".jpg")
    finally:
        temporary.unlink(missing_ok=True)


@dataclass(frozen=True)
class WarmTarget:
    """The server's gateway cache, as recording ingestion's conversion process needs it (plain values:
    it is handed to that process with its arguments)."""

    folder: Path
    max_bytes: int


def warm_target(config: ServeConfig) -> WarmTarget | None:
    """Where recording ingestion should warm the server's gateway cache, or None when it should not.

    The condition: the server has a gateway (`upstream`), prewarming is on (`prewarm`, the default), and
    finished recordings go by STOW-RS to that same DICOMweb root (`record.pacs.stow` equal to `upstream`,
    a trailing / aside) - so the instance the first viewer asks the gateway for is the one stored. A DIMSE
    target (host, port) cannot be matched to a DICOMweb root, so it is not warmed; a `record.pacs.stow`
    that names this gateway's own /dicom-web needs no call: the gateway warms what is stored through it."""
    target = config.record.pacs
    if not (config.upstream and config.prewarm and config.cache_dir and target is not None and target.stow
            and target.stow.rstrip("/") == config.upstream.rstrip("/")):
        return None
    return WarmTarget(Path(config.cache_dir), config.cache_max_mb * 1024 * 1024)


def prewarm_stored(target: WarmTarget | None, stored: Path) -> bool:
    """For recording ingestion, once the PACS has stored the file at `stored`: warm the server's gateway
    cache (`target` from warm_target; None: nothing to do). Safe in a process of its own beside the
    server (the cache is shared through atomic renames, dvqa.serve.cache). Never raises: a failure is
    logged, and the first viewer then takes the cold path. True when the cache holds the instance."""
    if target is None:
        return False
    try:
        return prewarm(Cache(target.folder, target.max_bytes), stored)
    except Exception as exc:  # the recording is stored all the same
        log.warning("could not prepare a stored recording for its first viewer (%s: %s)", type(exc).__name__, exc)
        return False
