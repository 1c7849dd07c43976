"""Live conversion (`dvqa convert -` and `dvqa convert --follow`): the recording converted while it arrives
gives the stream a whole-file conversion gives, ends at the marker or after --idle, and a stream cut
mid-chunk is an error - or, asked for, a partial file that says so."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import pytest

from helpers import CLIPS, RECORDED, ROOT, dvqa, wait_until_read

# variable timestamps and a 7 ms first interval; audio; a canvas size change; fragmented MP4 over a pipe
CLIPS_LIVE = [CLIPS / "vp9_vfr.webm", RECORDED / "vp8_opus.webm", RECORDED / "vp9_resize.webm", CLIPS / "vp9_frag.mp4"]


def _stdin(source: Path | bytes, *args: str) -> subprocess.CompletedProcess:
    data = source if isinstance(source, bytes) else source.read_bytes()
    return subprocess.run([sys.executable, "-m", "dvqa", "convert", "-", *args], input=data, capture_output=True,
                          cwd=ROOT, timeout=300)


def _json(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _append_in_chunks(source: Path, target: Path, pieces: int, pause_s: float, marker: bool) -> threading.Thread:
    """A recorder uploading its timeslices: the file's bytes appended piece by piece, then the marker."""
    def write() -> None:
        data = source.read_bytes()
        step = -(-len(data) // pieces)
        with open(target, "ab", buffering=0) as out:
            for start in range(0, len(data), step):
                out.write(data[start:start + step])
                time.sleep(pause_s)
        if marker:
            target.with_name(target.name + ".done").write_text("")
    target.write_bytes(b"")
    thread = threading.Thread(target=write)
    thread.start()
    return thread


@pytest.mark.requirement("DVQA-CONV-008")
@pytest.mark.parametrize("clip", CLIPS_LIVE, ids=lambda p: p.name)
def test_a_stream_on_stdin_converts_to_the_whole_file_conversions_stream(clip: Path, tmp_path: Path) -> None:
    live = _json(_stdin(clip, "-o", str(tmp_path / "live.dcm"), "--syntax", "h264-high-4.1", "--format", "json"))
    whole = _json(dvqa("convert", str(clip), "-o", str(tmp_path / "whole.dcm"), "--syntax", "h264-high-4.1",
                       "--format", "json"))
    assert live["elementary_stream_sha256"] == whole["elementary_stream_sha256"]  # frame for frame, bit for bit
    # the last frame's display time comes from the container: the whole-file scan (demux only) and the live
    # demuxer (which probes the stream) may read it a fraction of a millisecond apart (fragmented MP4)
    fine = ("source_duration_s", "output_minus_source_ms")
    assert {k: v for k, v in live["timing"].items() if k not in fine} == \
        {k: v for k, v in whole["timing"].items() if k not in fine}
    assert live["timing"]["source_duration_s"] == pytest.approx(whole["timing"]["source_duration_s"], abs=0.001)
    assert live["quality"]["summary"] == whole["quality"]["summary"]
    assert live["input"]["sha256"] == hashlib.sha256(clip.read_bytes()).hexdigest()
    assert any("decided from the first" in note for note in live["notes"])
    assert dvqa("validate", str(tmp_path / "live.dcm")).returncode == 0


@pytest.mark.requirement("DVQA-CONV-008")
def test_a_live_h264_stream_that_may_not_pass_through_is_re_encoded_and_says_why(tmp_path: Path) -> None:
    live = _json(_stdin(RECORDED / "h264_opus.webm", "-o", str(tmp_path / "live.dcm"), "--format", "json"))
    refusal = live["plan"]["passthrough_refusal"]
    assert live["passthrough"] is False and "full range" in refusal and "in the first 2.0 s" in refusal
    assert live["quality"]["summary"]["psnr_y"]["min"] > 40
    assert not any("copied while it arrived" in note for note in live["notes"])  # decided at the start


def _h264_on_a_grid(path: Path, frames: int, jump_at: int | None = None) -> None:
    """A camera-like H.264 Matroska recording on an exact 30 fps grid (limited range, VUI says 30 fps),
    optionally with every frame from `jump_at` on 10 ms late: a timing jump after the first seconds."""
    sys.path.insert(0, str(CLIPS.parent))
    import make_references

    with av.open(str(path), "w", format="matroska") as out:
        video = make_references._video_stream(out, "libx264", 320, 240, {"preset": "veryfast", "profile": "baseline"},
                                              full_range=False, cfr=30)

        def mux(packets) -> None:
            for packet in packets:
                late = 10 if jump_at is not None and packet.pts >= jump_at else 0
                packet.pts, packet.dts = round(packet.pts * 1000 / 30) + late, round(packet.dts * 1000 / 30) + late
                packet.time_base = Fraction(1, 1000)
                out.mux(packet)
        for frame in make_references._frames([round(i * 1000 / 30) for i in range(frames)], 320, 240, False):
            frame.pts, frame.time_base = round(frame.pts * 30 / 1000), Fraction(1, 30)
            mux(video.encode(frame))
        mux(video.encode(None))


def _same_as_whole_file(live: dict, whole: dict) -> None:
    assert live["elementary_stream_sha256"] == whole["elementary_stream_sha256"]
    assert live["plan"]["syntax"] == whole["plan"]["syntax"] and live["timing"] == whole["timing"]
    assert live["quality"]["summary"] == whole["quality"]["summary"]


@pytest.mark.requirement("DVQA-CONV-008", "DVQA-CONV-002")
@pytest.mark.parametrize("clip", [CLIPS / "h264_cfr_high.mkv", CLIPS / "h264_cb42.mkv", "one second"],
                         ids=lambda c: getattr(c, "name", c))
def test_a_passable_h264_stream_is_copied_as_it_arrives_as_a_whole_file_passthrough_copies_it(
        clip: Path | str, tmp_path: Path) -> None:
    if clip == "one second":  # shorter than the 2 s a live conversion judges: decided at the end
        clip = tmp_path / "short.mkv"
        _h264_on_a_grid(clip, 30)
    live = _json(_stdin(clip, "-o", str(tmp_path / "live.dcm"), "--format", "json"))
    whole = _json(dvqa("convert", str(clip), "-o", str(tmp_path / "whole.dcm"), "--format", "json"))
    assert live["passthrough"] is True and whole["passthrough"] is True and live["encoder"] is None
    assert live["plan"] == whole["plan"]  # the same syntax, reason and rate
    _same_as_whole_file(live, whole)
    assert live["quality"]["summary"]["psnr_y"]["min"] == "Infinity"  # identical pictures
    assert any("passthrough decided from the first" in note for note in live["notes"])
    assert dvqa("validate", str(tmp_path / "live.dcm")).returncode == 0


@pytest.mark.requirement("DVQA-CONV-008")
def test_a_copy_the_whole_stream_refuses_at_its_end_is_re_encoded_from_the_bytes_read(tmp_path: Path) -> None:
    clip = tmp_path / "jump.mkv"
    _h264_on_a_grid(clip, 120, jump_at=90)  # on the grid for 3 s, then 10 ms late
    growing = tmp_path / "upload.mkv"
    writer = _append_in_chunks(clip, growing, pieces=6, pause_s=0.2, marker=True)
    log = tmp_path / "audit.jsonl"
    live = _json(dvqa("convert", "--follow", str(growing), "-o", str(tmp_path / "live.dcm"), "--format", "json",
                      "--audit", str(log)))
    writer.join()
    whole = _json(dvqa("convert", str(clip), "-o", str(tmp_path / "whole.dcm"), "--format", "json"))
    assert whole["passthrough"] is False and "timestamps are variable" in whole["plan"]["passthrough_refusal"]
    assert live["passthrough"] is False and live["encoder"] is not None
    assert live["plan"]["passthrough_refusal"] == whole["plan"]["passthrough_refusal"]  # the whole-file rule
    assert any("copied while it arrived" in note and "re-encoded after the stream ended" in note
               for note in live["notes"])
    # the bytes read are re-encoded as a live re-encode does them: the rate from the first seconds (30 fps;
    # the whole file's average, with the jump, makes 29.97 fps), the same frames kept
    reencoded = _json(_stdin(clip, "-o", str(tmp_path / "reencoded.dcm"), "--format", "json", "--no-passthrough"))
    assert live["elementary_stream_sha256"] == reencoded["elementary_stream_sha256"]
    assert live["timing"] == reencoded["timing"] and live["timing"]["rate"] == "30"
    assert whole["timing"]["rate"] == "30000/1001" and live["timing"]["kept_source_frames"] == 120 == \
        whole["timing"]["kept_source_frames"]
    entry = json.loads(log.read_text().splitlines()[-1])
    assert entry["outcome"] == "success" and entry["input"]["sha256"] == hashlib.sha256(clip.read_bytes()).hexdigest()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # nothing kept behind


@pytest.mark.requirement("DVQA-CONV-008")
def test_follow_converts_a_growing_file_and_ends_at_the_marker(tmp_path: Path) -> None:
    growing = tmp_path / "upload.webm"
    writer = _append_in_chunks(RECORDED / "vp9_raf.webm", growing, pieces=8, pause_s=0.25, marker=True)
    log = tmp_path / "audit.jsonl"
    proc = dvqa("convert", "--follow", str(growing), "-o", str(tmp_path / "live.dcm"), "--audit", str(log),
                "--format", "json")
    writer.join()
    record = _json(proc)
    whole = _json(dvqa("convert", str(growing), "-o", str(tmp_path / "whole.dcm"), "--format", "json",
                       "--syntax", record["plan"]["syntax"]))
    assert record["elementary_stream_sha256"] == whole["elementary_stream_sha256"]
    entry = json.loads(log.read_text().splitlines()[-1])
    assert entry["outcome"] == "success"
    assert entry["input"]["read_live"] is True and entry["input"]["ended_by"] == "marker"
    assert entry["input"]["sha256"] == hashlib.sha256(growing.read_bytes()).hexdigest()
    assert entry["input"]["size"] == growing.stat().st_size
    assert dvqa("audit", "verify", str(log)).returncode == 0


@pytest.mark.requirement("DVQA-CONV-008")
def test_a_marker_older_than_the_file_is_refused(tmp_path: Path) -> None:
    growing = tmp_path / "upload.webm"
    growing.write_bytes((RECORDED / "vp8_opus.webm").read_bytes())
    marker = tmp_path / "upload.webm.done"
    marker.write_text("")
    old = growing.stat().st_mtime - 3600
    os.utime(marker, (old, old))  # left by an earlier recording under the same name
    proc = dvqa("convert", "--follow", str(growing), "-o", str(tmp_path / "live.dcm"))
    assert proc.returncode == 2 and "earlier recording" in proc.stderr
    assert not (tmp_path / "live.dcm").exists()
    marker.touch()  # written after the last chunk: the recording is complete, converted at once
    assert dvqa("convert", "--follow", str(growing), "-o", str(tmp_path / "live.dcm")).returncode == 0


@pytest.mark.requirement("DVQA-CONV-008")
def test_follow_without_a_marker_ends_after_idle_seconds(tmp_path: Path) -> None:
    growing = tmp_path / "upload.webm"
    writer = _append_in_chunks(CLIPS / "vp8_irregular.webm", growing, pieces=4, pause_s=0.2, marker=False)
    started = time.monotonic()
    proc = dvqa("convert", "--follow", str(growing), "--idle", "1.5", "-o", str(tmp_path / "live.dcm"),
                "--format", "json")
    writer.join()
    record = _json(proc)
    assert time.monotonic() - started >= 1.5
    assert any("ended at idle" in note for note in record["notes"])
    assert record["timing"]["kept_source_frames"] == record["timing"]["source_frames"]


@pytest.mark.requirement("DVQA-CONV-008", "DVQA-OUT-001")
def test_a_stream_cut_mid_chunk_fails_or_with_keep_partial_is_marked_partial(tmp_path: Path) -> None:
    cut = (CLIPS / "vp9_vfr.webm").read_bytes()[:100_000]  # a recorder that died mid-chunk
    out = tmp_path / "out"
    out.mkdir()
    log = tmp_path / "audit.jsonl"
    failed = _stdin(cut, "-o", str(out / "live.dcm"), "--audit", str(log))
    assert failed.returncode == 3
    message = failed.stderr.decode()
    assert "stops in the middle of a chunk" in message and "--keep-partial" in message
    assert len(message.strip().splitlines()) == 1 and "Traceback" not in message
    assert list(out.iterdir()) == []  # nothing left at the output, not even a temporary folder
    entry = json.loads(log.read_text().splitlines()[-1])
    assert entry["outcome"] == "failure" and entry["input"]["size"] == len(cut)
    kept = _stdin(cut, "-o", str(out / "live.dcm"), "--audit", str(log), "--keep-partial", "--format", "json")
    record = _json(kept)
    assert record["partial"] and "frames that arrived whole" in record["partial"]
    assert [f["code"] for f in record["findings"]] == ["convert.partial-stream"]
    entry = json.loads(log.read_text().splitlines()[-1])
    assert entry["partial"] == record["partial"] and entry["output"]["written"] is True
    assert dvqa("validate", str(out / "live.dcm")).returncode == 0
    assert dvqa("convert", str(CLIPS / "vp9_vfr.webm"), "-o", str(tmp_path / "x.dcm"),
                "--keep-partial").returncode == 2  # only for streams read while they arrive


@pytest.mark.requirement("DVQA-CONV-008", "DVQA-OUT-001")
def test_a_signal_while_waiting_for_the_next_chunk_stops_the_conversion(tmp_path: Path) -> None:
    """FFmpeg reads a live stream through a Python callback, where PyAV swallows exceptions: a Ctrl-C while
    waiting for data must still stop the conversion, as an interruption, with nothing left behind."""
    growing = tmp_path / "upload.webm"
    growing.write_bytes((CLIPS / "vp9_vfr.webm").read_bytes()[:100_000])  # no marker: the recorder is still going
    out, log = tmp_path / "out", tmp_path / "audit.jsonl"
    out.mkdir()
    process = subprocess.Popen([sys.executable, "-m", "dvqa", "convert", "--follow", str(growing), "-o",
                                str(out / "live.dcm"), "--audit", str(log)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=ROOT)
    wait_until_read(process, growing, 100_000)  # waiting for the next chunk: observed, not assumed
    process.send_signal(2)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "Traceback" not in stderr and "interrupted (SIGINT)" in stderr
    assert len(stderr.strip().splitlines()) == 1
    assert list(out.iterdir()) == []
    entry = json.loads(log.read_text().splitlines()[-1])
    assert entry["outcome"] == "failure" and "interrupted by SIGINT" in entry["message"]


@pytest.mark.requirement("DVQA-CONV-008")
def test_a_live_conversion_says_why_its_rate_and_takes_rate(tmp_path: Path) -> None:
    measured = _json(_stdin(CLIPS / "vp9_vfr.webm", "-o", str(tmp_path / "a.dcm"), "--format", "json",
                            "--no-quality"))["plan"]
    assert measured["rate_reason"].startswith(f"{measured['rate']} fps, decided from the first ")
    assert "the recording's frames came every" in measured["rate_reason"]
    pinned = _json(_stdin(CLIPS / "vp9_vfr.webm", "-o", str(tmp_path / "b.dcm"), "--format", "json",
                          "--no-quality", "--rate", "25"))
    assert pinned["plan"]["rate"] == "25" and pinned["plan"]["rate_reason"] == "25 fps, as --rate sets"
    assert pinned["timing"]["rate"] == "25"
    refused = _stdin(CLIPS / "vp9_vfr.webm", "-o", str(tmp_path / "c.dcm"), "--syntax", "mpeg2-mp-ml",
                     "--rate", "31")
    assert refused.returncode == 2 and not (tmp_path / "c.dcm").exists()
    assert b"--rate sets 31 fps, but mpeg2-mp-ml carries" in refused.stderr
