"""Layer 2 of `dvqa validate`: does the encapsulated video stream (or native Pixel Data) agree with the header?

These are the defects that make a PACS viewer show a black frame or play at the wrong speed, and
that attribute-level validators cannot see: the bitstream's own headers (H.264/HEVC SPS, MPEG-2
sequence header, JPEG SOF, read through FFmpeg's parsers in PyAV, without decoding) against Rows,
Columns, Number of Frames, Frame Time / Cine Rate, Photometric Interpretation, Bits Stored, the
transfer syntax's profile, level, sizes and rates (the one table in dvqa.dicom.syntaxes), the lossy
compression attributes, and the fragment layout (PS3.5 §8.2, §A.4).
"""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

from pydicom.dataset import Dataset
from pydicom.uid import UID

from dvqa.core import signals
from dvqa.core.findings import Finding, Severity
from dvqa.dicom import dicomfile, dicomread, syntaxes
from dvqa.dicom.iod import declared_rate

PIXEL_DATA = 0x7FE00010
ES_FORMAT = {"h264": "h264", "hevc": "hevc", "mpeg2video": "mpegvideo"}
# what each decoder pixel format means for Photometric Interpretation and Bits Stored
PIXELS = {
    "yuv420p": ("YBR_PARTIAL_420", 8), "yuvj420p": ("YBR_PARTIAL_420", 8),
    "yuv420p10le": ("YBR_PARTIAL_420", 10),
    "yuvj422p": ("YBR_FULL_422", 8), "yuv422p": ("YBR_FULL_422", 8),
}
H264_PROFILES = {"High": {"High", "Main", "Constrained Baseline"}}  # a High decoder decodes these (H.264 A.2.4)
HEVC_PROFILES = {"Main": {"Main"}, "Main 10": {"Main", "Main 10"}}
REF_SECTION = {"mpeg2video": "PS3.5 §8.2.5/§8.2.6", "h264": "PS3.5 §8.2.7/§8.2.8", "hevc": "PS3.5 §8.2.9/§8.2.10",
               "mjpeg": "PS3.5 §8.2.1, §A.4"}


class _FragmentReader(io.RawIOBase):
    """The elementary stream, read fragment by fragment from the file (never all in memory)."""

    def __init__(self, pieces: Iterator[bytes], stop: Callable[[], bool] = lambda: False) -> None:
        self._pieces = pieces
        self._buffer = memoryview(b"")
        self._stop = stop  # true once a signal came: the stream ends here, so FFmpeg returns at once

    def readable(self) -> bool:
        return True

    def readinto(self, target) -> int:  # type: ignore[override]
        if self._stop():
            return 0
        while not len(self._buffer):
            piece = next(self._pieces, None)
            if piece is None:
                return 0
            self._buffer = memoryview(piece)
        n = min(len(target), len(self._buffer))
        target[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]  # a view: no copying of what is left
        return n


def _native(path: Path, ds: Dataset, syntax: UID, at: int) -> list[Finding]:
    """Native (uncompressed) Pixel Data against the image attributes: its VR, OW when Bits Allocated is above 8
    (OB only for 8 bits or fewer, and only with an explicit VR; PS3.5 §8.2), and its length, Rows x Columns x
    Samples per Pixel x Number of Frames x Bits Allocated bits, padded to an even number of bytes (PS3.5
    §8.1.1). The element's header is read again at `at`: the value itself never is."""
    header = dicomread.pixel_data_header(path, at, syntax)
    if header is None or header[0] != PIXEL_DATA:
        return []
    _, vr, length = header
    where, found = "PixelData (7FE0,0010)", []
    bits = ds.get("BitsAllocated")
    if vr == "OB" and isinstance(bits, int) and bits > 8:
        found.append(Finding(Severity.ERROR, "stream.pixel-vr", f"native Pixel Data is OB, but Bits Allocated is {bits}: "
                             "above 8 it is OW", str(path), where, "PS3.5 §8.2"))
    counts = [ds.get(k) for k in ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated")]
    frames = ds.get("NumberOfFrames", 1)
    try:
        frames = int(frames) if frames not in (None, "") else 1
    except (TypeError, ValueError):
        return found  # not a number: the value layer's finding
    if all(isinstance(c, int) and c > 0 for c in counts):
        rows, columns, samples, allocated = counts
        expected = (rows * columns * samples * frames * allocated + 7) // 8
        expected += expected & 1
        if length != expected:
            found.append(Finding(Severity.ERROR, "stream.pixel-length", f"native Pixel Data holds {length} bytes, but "
                                 f"Rows x Columns x Samples per Pixel x Number of Frames x Bits Allocated ({rows} x "
                                 f"{columns} x {samples} x {frames} x {allocated} bits) make {expected}", str(path),
                                 where, "PS3.5 §8.1.1"))
    return found


def _level_number(level: str) -> int:
    """Syntax table level ("4.1", "5.1", "Main", "High") as FFmpeg numbers it (41, 153 for HEVC 5.1)."""
    return {"4.1": 41, "4.2": 42, "5.1": 153}.get(level, -1)


def check(path: Path, ds: Dataset, pixel_data_at: int | None = None) -> list[Finding]:
    """Stream-level findings for one file whose header `ds` was read without Pixel Data
    (`pixel_data_at`: where dvqa.dicom.dicomread.read_header found the Pixel Data element)."""
    uid = str(ds.file_meta.get("TransferSyntaxUID", ""))
    syntax = syntaxes.BY_UID.get(uid)
    if syntax is None:
        transfer = UID(uid)
        if transfer.is_transfer_syntax and not transfer.is_encapsulated and pixel_data_at is not None:
            return _native(path, ds, transfer, pixel_data_at)
        return []
    if PIXEL_DATA not in ds:  # no stream to check (a presentation state written with its image's syntax, PS3.5
        return []  # A.4: the syntax concerns Pixel Data only); an image without one is the IOD layer's finding
    ref = REF_SECTION[syntax.codec]
    found: list[Finding] = []

    def add(severity: Severity, code: str, message: str, where: str = "") -> None:
        found.append(Finding(severity, code, message, str(path), where, ref))

    if syntax.one_fragment_per_frame:  # one JPEG per item: small, read whole; no FFmpeg needed
        try:
            items = dicomfile.read_fragments(path, pixel_data_at)
            _check_jpeg(ds, next(items), items, add)
        except (ValueError, StopIteration) as exc:
            add(Severity.ERROR, "stream.unreadable", f"the encapsulated stream cannot be parsed ({exc})",
                "(7FE0,0010)")
        return found
    import av  # here, not at the top: only a video stream needs FFmpeg (start-up of `dvqa validate`)

    try:
        bot_pieces: list[bytes] = []
        seen: set[int] = set()

        def stream() -> Iterator[bytes]:
            for number, piece in dicomfile.read_chunks(path, start=pixel_data_at):
                if number == 0:
                    bot_pieces.append(piece)
                else:
                    seen.add(number)
                    yield piece

        # FFmpeg reads through a Python callback, where PyAV would swallow a signal: signals are held, and a
        # held one ends the stream at the next read, so the check stops at once and the signal is raised after
        # the block (holding it to the end of the check ignored Ctrl-C and SIGTERM for as long as that took)
        with signals.deferred() as caught:
            try:
                facts = _stream_facts(_FragmentReader(stream(), lambda: caught.signum is not None), syntax.codec)
            except (ValueError, av.error.FFmpegError):
                if caught.signum is None:
                    raise
                return found  # not reached: the held signal is raised as the block ends
        bot, fragments = b"".join(bot_pieces), len(seen)
    except (ValueError, av.error.FFmpegError, StopIteration) as exc:
        add(Severity.ERROR, "stream.unreadable", f"the encapsulated stream cannot be parsed ({exc})",
            "(7FE0,0010)")
        return found
    if bot:
        add(Severity.ERROR, "stream.offset-table", "MPEG-2/H.264/HEVC streams have an empty Basic Offset "
            f"Table, this one holds {len(bot)} bytes", "(7FE0,0010) item 0")
    if fragments > 1 and uid == syntax.uid:
        add(Severity.ERROR, "stream.fragments", f"{fragments} fragments under the non-fragmentable "
            f"{uid}; a stream in several fragments needs {syntax.fragmentable_uid or 'a fragmentable syntax'}",
            "(7FE0,0010)")
    _compare(ds, syntax, facts, add)
    return found


def _stream_facts(reader: io.RawIOBase, codec: str) -> dict[str, object]:
    import av

    av.logging.set_level(av.logging.ERROR)
    with av.logging.Capture(False), av.open(io.BufferedReader(reader), format=ES_FORMAT[codec]) as container:
        stream = container.streams.video[0]
        frames = sum(1 for packet in container.demux(stream) if packet.size)
        cc = stream.codec_context
        rate = cc.framerate if cc.framerate and float(cc.framerate) > 0 else None  # None: no VUI timing
        return {"width": cc.width, "height": cc.height, "pix_fmt": cc.pix_fmt or "", "profile": cc.profile or "",
                "level": cc.level, "frames": frames, "rate": rate}


def _compare(ds: Dataset, syntax: syntaxes.VideoSyntax, f: dict, add) -> None:
    rows, columns = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    if (f["width"], f["height"]) != (columns, rows):
        add(Severity.ERROR, "stream.size-mismatch", f"the stream is {f['width']}x{f['height']} but Columns x Rows "
            f"say {columns}x{rows}", "(0028,0010)/(0028,0011)")
    declared_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if f["frames"] != declared_frames:
        add(Severity.ERROR, "stream.frame-count", f"the stream holds {f['frames']} frames but Number of Frames "
            f"says {declared_frames}", "(0028,0008)")
    declared = declared_rate(ds)
    if declared is None:
        add(Severity.ERROR, "stream.no-frame-time", "neither Frame Time nor Cine Rate gives the frame rate",
            "(0018,1063)")
    elif f["rate"] is not None and abs(float(f["rate"]) - float(declared)) > 0.01 * float(declared):
        # MPEG-2's frame_rate_code is mandatory and players use it; H.264/HEVC VUI timing is optional
        severity = Severity.ERROR if syntax.codec == "mpeg2video" else Severity.WARNING
        add(severity, "stream.frame-rate", f"the stream declares {float(f['rate']):.3f} fps but Frame Time "
            f"gives {float(declared):.3f} fps; players that trust the stream play at the wrong speed",
            "(0018,1063)")
    rate = declared or Fraction(0)
    if declared is not None and not syntax.allows(columns, rows, rate):
        add(Severity.ERROR, "stream.format-not-allowed", f"{columns}x{rows} at {float(rate):.3f} fps is not "
            f"allowed by {syntax.title}", "(0028,0010)")
    _profile_and_level(syntax, f, add)
    photometric, bits = PIXELS.get(f["pix_fmt"], ("?", 0))
    if photometric != "?" and str(ds.get("PhotometricInterpretation", "")) != photometric:
        add(Severity.ERROR, "stream.photometric", f"the stream is {f['pix_fmt']}: Photometric Interpretation "
            f"must be {photometric}, not {ds.get('PhotometricInterpretation', '(absent)')}", "(0028,0004)")
    if bits and int(ds.get("BitsStored", 0)) != bits:
        add(Severity.ERROR, "stream.bit-depth", f"the stream has {bits}-bit samples but Bits Stored is "
            f"{ds.get('BitsStored', '(absent)')}", "(0028,0101)")
    _lossy(ds, syntax, add)


def _profile_and_level(syntax: syntaxes.VideoSyntax, f: dict, add) -> None:
    if syntax.codec == "h264":
        allowed = H264_PROFILES.get(syntax.profile, {syntax.profile})
        limit = _level_number(syntax.level)
    elif syntax.codec == "hevc":
        allowed = HEVC_PROFILES.get(syntax.profile, {syntax.profile})
        limit = _level_number(syntax.level)
    else:  # MPEG-2 Main profile; level as FFmpeg names it (Main 8, High 4)
        allowed, limit = {"Main"}, -1
    if f["profile"] and f["profile"] not in allowed:
        add(Severity.ERROR, "stream.profile", f"{f['profile']} profile is not carried by {syntax.title}",
            "(7FE0,0010)")
    if limit > 0 and f["level"] and f["level"] > limit:
        add(Severity.ERROR, "stream.level", f"level {f['level'] / (30 if syntax.codec == 'hevc' else 10):g} is "
            f"above {syntax.title}'s {syntax.level}", "(7FE0,0010)")


def _lossy(ds: Dataset, syntax: syntaxes.VideoSyntax, add) -> None:
    if str(ds.get("LossyImageCompression", "")) != "01":
        add(Severity.ERROR, "stream.lossy-flag", "Lossy Image Compression must be 01 for a lossy transfer syntax",
            "(0028,2110)")
    values = _multi(ds, "LossyImageCompressionMethod")
    if syntax.lossy_method not in values:  # absent: a warning, the attribute is Type 3 where the IOD table does not
        # require it (PS3.3 C.7.6.1, "should" in C.7.6.1.1.5.1); present without this syntax's method: wrong
        add(Severity.ERROR if values else Severity.WARNING, "stream.lossy-method", f"Lossy Image Compression Method "
            f"should include {syntax.lossy_method} for {syntax.title}, found {values or '(absent)'}", "(0028,2114)")
    if not _multi(ds, "LossyImageCompressionRatio"):
        add(Severity.WARNING, "stream.lossy-ratio", "Lossy Image Compression Ratio is absent", "(0028,2112)")


def _multi(ds: Dataset, keyword: str) -> list[str]:
    if keyword not in ds:
        return []
    value = ds[keyword].value
    if value is None or value == "":
        return []
    return [str(v) for v in value] if ds[keyword].VM > 1 else [str(value)]


def _check_jpeg(ds: Dataset, bot: bytes, fragments: Iterator[bytes], add) -> None:
    """Motion JPEG: every frame one JPEG, in its own fragment(s); SOF size and sampling vs the header."""
    declared = int(ds.get("NumberOfFrames", 1) or 1)
    frames, first = 0, b""
    for fragment in fragments:  # streamed: only the first frame is kept
        if fragment[:2] == b"\xff\xd8":
            frames += 1
            first = first or fragment
    if frames != declared:
        add(Severity.ERROR, "stream.frame-count", f"{frames} JPEG frames (SOI markers at fragment starts) but "
            f"Number of Frames says {declared}", "(0028,0008)")
    if bot and len(bot) // 4 != declared:
        add(Severity.ERROR, "stream.offset-table", f"the Basic Offset Table has {len(bot) // 4} entries for "
            f"{declared} frames", "(7FE0,0010) item 0")
    if not first:
        return
    sof = _jpeg_sof(first)
    if sof is None:
        add(Severity.ERROR, "stream.unreadable", "the first JPEG frame has no baseline SOF0 header",
            "(7FE0,0010) item 1")
        return
    height, width, components, horizontal = sof
    if (width, height) != (int(ds.get("Columns", 0)), int(ds.get("Rows", 0))):
        add(Severity.ERROR, "stream.size-mismatch", f"the JPEG frames are {width}x{height} but Columns x "
            f"Rows say {ds.get('Columns')}x{ds.get('Rows')}", "(0028,0010)/(0028,0011)")
    expected = "YBR_FULL_422" if components == 3 and horizontal == 2 else None
    if expected and str(ds.get("PhotometricInterpretation", "")) != expected:
        add(Severity.ERROR, "stream.photometric", f"JPEG 4:2:2 Y'CbCr frames need {expected}, not "
            f"{ds.get('PhotometricInterpretation')}", "(0028,0004)")
    _lossy(ds, syntaxes.BY_NAME["mjpeg"], add)


def _jpeg_sof(data: bytes) -> tuple[int, int, int, int] | None:
    """(height, width, components, horizontal sampling of the first component) from SOF0."""
    at = 2
    while at + 4 <= len(data) and data[at] == 0xFF:
        marker, length = data[at + 1], int.from_bytes(data[at + 2 : at + 4], "big")
        if marker == 0xC0:
            height = int.from_bytes(data[at + 5 : at + 7], "big")
            width = int.from_bytes(data[at + 7 : at + 9], "big")
            return height, width, data[at + 9], data[at + 11] >> 4
        at += 2 + length
    return None
