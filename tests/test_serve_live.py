"""`dvqa serve` remuxes while the instance arrives: the DICOM parser fed in arbitrary pieces, and the
live remux against the whole-file remux (whose display order tests/test_serve.py checks against the
decoder's) on real streams, fed slower than it can read."""

from __future__ import annotations

import json
import random
import subprocess
import threading
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.encaps import encapsulate

from dvqa.convert.pipeline import ConvertOptions, convert
from dvqa.core.errors import InputError
from dvqa.serve import liveremux, remux
from dvqa.serve.dicomstream import DicomStream
from helpers import CLIPS, RECORDED, stream_bytes, tool

# (name, clip, syntax): B-pictures passed through, a re-encoded variable-rate recording, a Chromium one, HEVC
SOURCES = [("b-pictures", CLIPS / "h264_cfr_high.mkv", "h264-high-4.1"),
           ("vfr", CLIPS / "vp9_vfr.webm", "h264-high-4.2"),
           ("chromium", RECORDED / "h264.mp4", "h264-high-4.1"),
           ("hevc", CLIPS / "h264_cfr_high.mkv", "hevc-main")]


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("live")
    return {name: convert(clip, folder / f"{name}.dcm", ConvertOptions(syntax=syntax, quality=False)).output
            for name, clip, syntax in SOURCES}


def _feed(parser: DicomStream, data: bytes, seed: int) -> list[bytes]:
    """Fed as a network would: byte by byte at first (every header boundary cut), then random pieces."""
    rng, out, at = random.Random(seed), [], 0
    while at < len(data):
        size = 1 if at < 3000 else rng.randint(1, 70000)
        out += parser.feed(data[at:at + size])
        at += size
    return out


@pytest.mark.parametrize("name", ["b-pictures", "vfr"])
def test_the_parser_hands_on_pixel_data_fed_in_any_pieces(made, name, tmp_path) -> None:
    ds = pydicom.dcmread(str(made[name]))
    stream = stream_bytes(made[name])
    ds.PixelData = encapsulate([stream], fragments_per_frame=3)  # more than one item after the offset table
    several = tmp_path / "fragments.dcm"
    ds.save_as(str(several), enforce_file_format=True)
    for path in (made[name], several):
        parser = DicomStream()
        got = b"".join(_feed(parser, path.read_bytes(), seed=len(name)))
        assert parser.done and got == stream
        header, direct = parser.header(), pydicom.dcmread(str(path), stop_before_pixels=True)
        assert header == direct and header.file_meta.TransferSyntaxUID == direct.file_meta.TransferSyntaxUID


def test_the_parser_knows_a_cut_or_damaged_instance(made) -> None:
    data = made["b-pictures"].read_bytes()
    parser = DicomStream()
    parser.feed(data[: len(data) // 2])
    assert parser.header_done and not parser.done  # the caller sees it never ended
    damaged = bytearray(data)
    at = data.rindex(b"\xfe\xff\xdd\xe0")  # the Sequence Delimitation Item becomes a bogus tag
    damaged[at:at + 4] = b"\x10\x00\x10\x00"
    with pytest.raises(InputError, match="cut-short or damaged"):
        DicomStream().feed(bytes(damaged))
    with pytest.raises(InputError, match="not a DICOM file"):
        DicomStream().feed(b"\x00" * 200)


def _packets(mp4: Path) -> list[str]:
    return subprocess.run([tool("ffprobe"), "-v", "error", "-show_entries", "packet=pts,dts,duration,size,flags",
                           "-of", "csv", str(mp4)], capture_output=True, text=True, check=True).stdout.splitlines()


@pytest.mark.parametrize("name", [s[0] for s in SOURCES])
def test_the_live_remux_writes_while_the_stream_arrives_and_times_it_as_the_whole_file_remux(made, name,
                                                                                              tmp_path) -> None:
    """The stream repeated 12 times (each copy starts with an IDR picture), fed in 64 KiB pieces with a
    pause: H.264 fragments are written before half of it has arrived; every picture's times are those of
    the whole-file remux; HEVC (no slice-header reader) is remuxed once it has all arrived."""
    ds = pydicom.dcmread(str(made[name]), stop_before_pixels=True)
    stream = stream_bytes(made[name]) * 12
    ds.NumberOfFrames = int(ds.NumberOfFrames) * 12
    if "FrameTimeVector" in ds:
        ds.FrameTimeVector = list(ds.FrameTimeVector) * 12
    source = remux.source_of(ds)
    spool = liveremux.Spool(tmp_path / "stream.es")
    part = tmp_path / "live.mp4"
    failures: list[BaseException] = []

    def run() -> None:
        try:
            liveremux.render(spool, source, part)
        except BaseException as exc:
            failures.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    written_at = None
    for at in range(0, len(stream), 65536):
        spool.append(stream[at:at + 65536])
        time.sleep(0.01)
        if written_at is None and part.exists() and part.stat().st_size:
            written_at = spool.size
    spool.close(failed=False)
    worker.join(120)
    assert not failures and not worker.is_alive()
    whole = tmp_path / "whole.mp4"
    with open(whole, "wb") as out:
        remux.write_mp4(spool.path, source, out)
    if source.codec == "h264":
        assert written_at is not None and written_at < len(stream) / 2, (written_at, len(stream))
        assert _packets(part) == _packets(whole)
        probe = json.loads(subprocess.run([tool("ffprobe"), "-v", "error", "-show_entries", "stream=start_time",
                                           "-of", "json", str(part)], capture_output=True, text=True,
                                          check=True).stdout)["streams"][0]
        assert float(probe["start_time"]) == 0.0
    else:
        assert written_at is None and part.read_bytes() == whole.read_bytes()


def test_a_failed_download_stops_the_live_remux_at_once(made, tmp_path) -> None:
    ds = pydicom.dcmread(str(made["b-pictures"]), stop_before_pixels=True)
    stream = stream_bytes(made["b-pictures"]) * 12
    spool = liveremux.Spool(tmp_path / "stream.es")
    worker = threading.Thread(target=liveremux.render, args=(spool, remux.source_of(ds), tmp_path / "live.mp4"))
    worker.start()
    spool.append(stream[: len(stream) // 2])
    time.sleep(0.5)
    started = time.monotonic()
    spool.close(failed=True)
    worker.join(30)
    assert not worker.is_alive() and time.monotonic() - started < 5
