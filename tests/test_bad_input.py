"""Bad input: one sentence naming the file, the documented exit code, nothing at OUT, input untouched."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from helpers import CLIPS, RECORDED, dvqa


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _make(kind: str, folder: Path) -> Path:
    if kind == "zero-byte":
        path = folder / "empty.webm"
        path.write_bytes(b"")
    elif kind == "text":
        path = folder / "notes.webm"
        path.write_text("this is not a video\n" * 50)
    elif kind == "truncated-webm":
        path = folder / "cut.webm"
        path.write_bytes((CLIPS / "vp9_vfr.webm").read_bytes()[:30000])
    elif kind == "truncated-mp4":
        path = folder / "cut.mp4"
        path.write_bytes((CLIPS / "h264_frag.mp4").read_bytes()[:150000])
    elif kind == "audio-only":
        path = folder / "voice.webm"
        shutil.copy(CLIPS / "audio_only.webm", path)
    elif kind == "stale-sps-mp4":
        path = folder / "resized.mp4"
        shutil.copy(CLIPS / "h264_stale_sps.mp4", path)
    elif kind == "stale-sps-chromium":  # the real thing: Chromium 156 resizing its canvas
        path = folder / "resized.mp4"
        shutil.copy(RECORDED / "h264_resize.mp4", path)
    else:
        raise AssertionError(kind)
    return path


@pytest.mark.parametrize("kind, words", [
    ("zero-byte", "empty"),
    ("text", "WebM, Matroska or MP4"),
    ("truncated-webm", "cut short"),
    ("truncated-mp4", "cut short"),
    ("audio-only", "audio only"),
    ("stale-sps-mp4", "SPS/PPS"),
    ("stale-sps-chromium", "SPS/PPS"),
])
@pytest.mark.requirement("DVQA-OUT-001", "DVQA-OUT-002")
def test_bad_input_exit_3_one_sentence_no_output(kind: str, words: str, tmp_path: Path) -> None:
    source = _make(kind, tmp_path)
    before = _sha(source)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = dvqa("convert", str(source), "-o", str(out_dir / "x.dcm"))
    assert proc.returncode == 3, proc.stderr
    message = proc.stderr.strip()
    assert message.startswith("dvqa: error: ") and str(source) in message and words in message
    assert "Traceback" not in proc.stderr and len(message.splitlines()) == 1
    assert list(out_dir.iterdir()) == []  # no OUT, no temporary left beside it
    assert _sha(source) == before


@pytest.mark.requirement("DVQA-OUT-001")
def test_existing_output_needs_force(tmp_path: Path) -> None:
    out = tmp_path / "x.dcm"
    out.write_bytes(b"keep me")
    proc = dvqa("convert", str(CLIPS / "h264_cfr_high.mkv"), "-o", str(out))
    assert proc.returncode == 2 and "--force" in proc.stderr
    assert out.read_bytes() == b"keep me"
    proc = dvqa("convert", str(CLIPS / "h264_cfr_high.mkv"), "-o", str(out), "--force")
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[128:132] == b"DICM"


@pytest.mark.requirement("DVQA-OUT-002")
def test_usage_errors_exit_2(tmp_path: Path) -> None:
    proc = dvqa("convert", str(CLIPS / "vp9_vfr.webm"), "-o", str(tmp_path / "x.dcm"), "--syntax", "divx")
    assert proc.returncode == 2 and "'divx' is not one of 'auto', 'h264-high-4.1'" in proc.stderr
    proc = dvqa("convert", str(CLIPS / "vp9_vfr.webm"), "-o", str(tmp_path / "x.dcm"), "--syntax", "hevc-main10")
    assert proc.returncode == 2 and "'hevc-main10' is not one of" in proc.stderr  # the CLI offers what it writes
    from dvqa.convert import ConvertOptions, convert
    from dvqa.core.errors import UsageError

    with pytest.raises(UsageError, match="Bits Allocated 8"):  # and the library says why
        convert(CLIPS / "vp9_vfr.webm", tmp_path / "x.dcm", ConvertOptions(syntax="hevc-main10"))
    assert not (tmp_path / "x.dcm").exists()
    proc = dvqa("convert", str(CLIPS / "vp9_vfr.webm"), "-o", str(tmp_path / "missing" / "x.dcm"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.requirement("DVQA-OUT-002")
def test_missing_input_exit_3(tmp_path: Path) -> None:
    proc = dvqa("convert", str(tmp_path / "nope.webm"), "-o", str(tmp_path / "x.dcm"))
    assert proc.returncode == 3 and "no such file" in proc.stderr
