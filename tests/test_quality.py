"""Per-frame quality evidence: numbers checked against FFmpeg's filters and scikit-image."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import av
import numpy as np
import pytest
from skimage.metrics import structural_similarity

from dvqa.convert.pipeline import ConvertOptions, convert
from dvqa.quality.metrics import gaussian_ssim
from helpers import CLIPS, RECORDED, dvqa, run, stream_bytes, tool

CFR = CLIPS / "h264_cfr_high.mkv"  # 320x240, 30 fps, limited range: pairs map 1:1, no transforms


def _ffmpeg_scores(distorted_es: Path, codec_format: str, reference: Path, tmp_path: Path):
    """FFmpeg's psnr and ssim filters, per frame, pairing frames by their number."""
    psnr_log, ssim_log = tmp_path / "psnr.log", tmp_path / "ssim.log"
    graph = ("[0:v]settb=AVTB,setpts=N[d];[1:v]settb=AVTB,setpts=N[r];[d]split[d1][d2];[r]split[r1][r2];"
             f"[d1][r1]psnr=stats_file={psnr_log};[d2][r2]ssim=stats_file={ssim_log}")
    proc = run(tool("ffmpeg"), "-v", "error", "-f", codec_format, "-i", str(distorted_es), "-i", str(reference),
               "-lavfi", graph, "-f", "null", "-")
    assert proc.returncode == 0, proc.stderr
    psnr = [dict(re.findall(r"(\w+):(\S+)", line)) for line in psnr_log.read_text().splitlines()]
    ssim = [dict(re.findall(r"(\w+):(\S+)", line)) for line in ssim_log.read_text().splitlines()]
    return psnr, ssim


@pytest.mark.requirement("DVQA-QUAL-001")
@pytest.mark.parametrize("syntax, es_format", [("h264-high-4.1", "h264"), ("hevc-main", "hevc")])
def test_psnr_and_fast_ssim_agree_with_ffmpeg_filters(syntax: str, es_format: str, tmp_path: Path) -> None:
    result = convert(CFR, tmp_path / "out.dcm", ConvertOptions(syntax=syntax, passthrough=False))
    q = result.quality
    assert q is not None and q.frames == result.frames == 90
    assert list(q.per_frame["source_frame"]) == list(range(90))  # the 1:1 case: same frame pairs
    es = tmp_path / "stream.es"
    es.write_bytes(stream_bytes(result.output))  # what the DICOM file holds
    psnr, ssim = _ffmpeg_scores(es, es_format, CFR, tmp_path)
    assert len(psnr) == len(ssim) == 90
    for k in range(90):
        for ours, theirs in (("psnr_y", "psnr_y"), ("psnr_cb", "psnr_u"), ("psnr_cr", "psnr_v"),
                             ("psnr", "psnr_avg")):
            assert abs(q.per_frame[ours][k] - float(psnr[k][theirs])) <= 0.05, (k, ours)
        assert abs(q.per_frame["ssim_y"][k] - float(ssim[k]["Y"])) <= 0.001, k
    assert 30 < q.statistic("psnr_y", "min") < 99  # lossy, and measured


def _luma_planes(container_path: Path, es_format: str | None = None) -> list[np.ndarray]:
    planes = []
    with av.open(str(container_path), format=es_format) as container:
        for frame in container.decode(video=0):
            p = frame.planes[0]
            planes.append(np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, : p.width].copy())
    return planes


@pytest.mark.requirement("DVQA-QUAL-001")
def test_reference_ssim_agrees_with_scikit_image(tmp_path: Path) -> None:
    result = convert(CFR, tmp_path / "out.dcm",
                     ConvertOptions(syntax="hevc-main", passthrough=False, ssim="reference"))
    es = tmp_path / "stream.hevc"
    es.write_bytes(stream_bytes(result.output))
    source, decoded = _luma_planes(CFR), _luma_planes(es, "hevc")
    assert len(source) == len(decoded) == result.quality.frames
    for k, (a, b) in enumerate(zip(source, decoded)):
        expected = structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
                                         use_sample_covariance=False, data_range=255)
        assert abs(result.quality.per_frame["ssim_y"][k] - expected) <= 1e-4, k
    assert result.quality.to_dict()["ssim_definition"]["name"] == "reference"


def test_gaussian_ssim_on_noise_and_identity() -> None:
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:120, 0:160]
    a = ((x + 2 * y) % 256).astype(np.uint8)  # smooth: noise on it lowers SSIM a lot
    b = np.clip(a.astype(int) + rng.integers(-20, 21, a.shape), 0, 255).astype(np.uint8)
    expected = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                     data_range=255)
    assert abs(gaussian_ssim(a, b) - expected) <= 1e-4 and expected < 0.9
    assert gaussian_ssim(a, a) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.requirement("DVQA-QUAL-001")
def test_passthrough_reports_infinity_and_one(tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    proc = dvqa("convert", str(CFR), "-o", str(tmp_path / "o.dcm"), "--report", str(report))
    assert proc.returncode == 0, proc.stderr
    q = json.loads(report.read_text())["quality"]
    assert q["frames"] == 90
    assert q["per_frame"]["psnr_y"] == ["Infinity"] * 90 and q["per_frame"]["psnr"] == ["Infinity"] * 90
    assert q["per_frame"]["ssim_y"] == [1.0] * 90
    assert q["summary"]["psnr_y"]["mean"] == "Infinity" and q["summary"]["ssim_y"]["min"] == 1.0
    assert all(math.isinf(float(v)) for v in q["per_frame"]["psnr_cb"])


@pytest.mark.requirement("DVQA-QUAL-003")
def test_report_has_everything_an_auditor_needs(tmp_path: Path) -> None:
    out, report = tmp_path / "o.dcm", tmp_path / "r.json"
    proc = dvqa("convert", str(CLIPS / "vp9_vfr.webm"), "-o", str(out), "--report", str(report))
    assert proc.returncode == 0, proc.stderr
    r = json.loads(report.read_text())
    q = r["quality"]
    frames = r["output"]["frames"]
    assert all(len(q["per_frame"][k]) == frames for k in
               ("output_frame", "source_frame", "source_pts", "output_pts", "psnr_y", "psnr_cb", "psnr_cr",
                "psnr", "ssim_y"))
    # duplicated output frames are scored against the source frame they repeat
    assert q["per_frame"]["source_frame"] == [row["source_frame"] for row in r["timing_map"]]
    assert q["dropped_source_frames"] == len(r["timing"]["dropped_source_frames"]) == 0  # all kept
    assert q["duplicated_output_frames"] == len(r["timing"]["duplicated_output_frames"]) == 3
    assert set(q["summary"]["psnr_y"]) == {"mean", "min", "p1", "p5", "worst"}
    worst = [w["output_frame"] for w in q["summary"]["psnr_y"]["worst"]]
    assert worst[0] == int(np.argmin(q["per_frame"]["psnr_y"])) and len(worst) == 5
    assert "8x8" in q["ssim_definition"]["description"]
    assert r["ffmpeg_version"] and r["encoder_build"].startswith("x264 - core")
    assert r["input"]["sha256"] == _sha(CLIPS / "vp9_vfr.webm") and r["output"]["sha256"] == _sha(out)
    assert any("colour range converted" in t for t in r["transforms"])


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _profile(tmp_path: Path, minimum: float) -> Path:
    path = tmp_path / "strict.yaml"
    path.write_text(f"""profile: strict
description: a floor no lossy conversion meets
quality_floors:
  - id: quality.test-psnr
    metric: psnr_y
    statistic: min
    min: {minimum}
    severity: error
    message: a frame is below the test floor
    source: this test
""")
    return path


@pytest.mark.requirement("DVQA-QUAL-002")
def test_floor_not_met_exits_1_and_writes_nothing(tmp_path: Path) -> None:
    out, report = tmp_path / "o.dcm", tmp_path / "r.json"
    proc = dvqa("convert", str(CLIPS / "vp9_vfr.webm"), "-o", str(out), "--profile",
                str(_profile(tmp_path, 99)), "--report", str(report))
    assert proc.returncode == 1, proc.stderr
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "strict.yaml"]
    r = json.loads(report.read_text())
    worst = [w["output_frame"] for w in r["quality"]["summary"]["psnr_y"]["worst"]]
    assert r["written"] is False and r["findings"][0]["code"] == "quality.test-psnr"
    assert f"worst output frames: {worst[0]} (" in proc.stdout and "not written" in proc.stdout
    page = tmp_path / "r.html"
    kept = dvqa("convert", str(CLIPS / "vp9_vfr.webm"), "-o", str(out), "--profile",
                str(_profile(tmp_path, 99)), "--keep-failed", "--report", str(page))
    assert kept.returncode == 1 and out.exists()
    assert "FAIL: 1 quality floor not met" in page.read_text() and "quality.test-psnr" in page.read_text()
    recheck = dvqa("quality", str(CLIPS / "vp9_vfr.webm"), str(out), "--profile", str(_profile(tmp_path, 99)))
    assert recheck.returncode == 1 and "quality.test-psnr" in recheck.stdout
    assert dvqa("quality", str(CLIPS / "vp9_vfr.webm"), str(out), "--profile", "endoscopy").returncode == 0


def test_endoscopy_profile_passes_a_normal_conversion(tmp_path: Path) -> None:
    proc = dvqa("convert", str(RECORDED / "vp9_raf.webm"), "-o", str(tmp_path / "o.dcm"), "--profile", "endoscopy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "endoscopy: all 4 quality floors met" in proc.stdout
    listed = dvqa("rules", "list")
    assert "quality.psnr-y-mean [error] mean psnr_y >= 40" in listed.stdout


def test_unknown_profile_and_bad_report_name_are_usage_errors(tmp_path: Path) -> None:
    proc = dvqa("convert", str(CFR), "-o", str(tmp_path / "o.dcm"), "--profile", "nope")
    assert proc.returncode == 2 and "no such profile" in proc.stderr
    proc = dvqa("convert", str(CFR), "-o", str(tmp_path / "o.dcm"), "--report", str(tmp_path / "r.txt"))
    assert proc.returncode == 2 and ".json or .html" in proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.requirement("DVQA-QUAL-003")
def test_quality_command_reproduces_the_conversion_report(tmp_path: Path) -> None:
    out, first, second = tmp_path / "o.dcm", tmp_path / "a.json", tmp_path / "b.json"
    source = CLIPS / "vp8_irregular.webm"  # irregular timestamps: shifted and duplicated frames
    assert dvqa("convert", str(source), "-o", str(out), "--report", str(first)).returncode == 0
    page = tmp_path / "b.html"
    proc = dvqa("quality", str(source), str(out), "--report", str(second), "--report", str(page))
    assert proc.returncode == 0, proc.stderr
    ra, rb = json.loads(first.read_text()), json.loads(second.read_text())
    a, b = ra["quality"], rb["quality"]
    assert a["per_frame"]["source_frame"] == b["per_frame"]["source_frame"]
    for key in ("psnr_y", "psnr_cb", "psnr_cr", "psnr", "ssim_y"):
        assert a["per_frame"][key] == b["per_frame"][key], key
    # the same frames are marked duplicated on the quality command's plots as on the conversion's
    duplicated = ra["timing"]["duplicated_output_frames"]
    assert duplicated and rb["timing"]["duplicated_output_frames"] == duplicated
    marked = re.findall(r'class="duplicated" data-output-frame="(\d+)"', page.read_text())
    assert sorted(set(int(k) for k in marked)) == duplicated


@pytest.mark.requirement("DVQA-CONV-004")
def test_quality_command_on_a_letterboxed_mpeg2_compares_the_picture_only(tmp_path: Path) -> None:
    out = tmp_path / "o.dcm"
    result = convert(CLIPS / "vp9_vfr.webm", out, ConvertOptions(syntax="mpeg2-mp-ml"))
    assert "letterbox bars are excluded" in " ".join(result.transforms)
    proc = dvqa("quality", str(CLIPS / "vp9_vfr.webm"), str(out), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)["quality"]["summary"]
    assert summary["psnr_y"]["mean"] == round(result.quality.statistic("psnr_y", "mean"), 6)


def test_damaged_passthrough_source_is_refused(tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.mkv"
    with av.open(str(CFR)) as src, av.open(str(damaged), "w", format="matroska") as dst:
        stream = src.streams.video[0]
        copy = dst.add_stream_from_template(stream)
        for number, packet in enumerate(p for p in src.demux(stream) if p.size):
            if number == 45:  # half an access unit lost: the decoder reports it
                cut = av.Packet(bytes(packet)[: packet.size // 2])
                cut.pts, cut.dts, cut.time_base = packet.pts, packet.dts, packet.time_base
                packet = cut
            packet.stream = copy
            dst.mux(packet)
    for extra in ((), ("--no-quality",)):
        proc = dvqa("convert", str(damaged), "-o", str(tmp_path / "o.dcm"), *extra)
        assert proc.returncode == 3, proc.stderr
        assert "does not decode cleanly" in proc.stderr and "Traceback" not in proc.stderr
        assert not (tmp_path / "o.dcm").exists()


@pytest.mark.requirement("DVQA-QUAL-003")
def test_html_report_renders_in_chromium(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    proc = dvqa("convert", str(RECORDED / "vp9_raf.webm"), "-o", str(tmp_path / "o.dcm"), "--profile",
                "endoscopy", "--report", str(page), "--report", str(tmp_path / "r.json"))
    assert proc.returncode == 0, proc.stderr
    record = json.loads((tmp_path / "r.json").read_text())
    frames = record["output"]["frames"]
    dom = run(tool("chromium"), "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-extensions",
              "--disable-background-networking", f"--user-data-dir={tmp_path / 'profile'}",
              "--virtual-time-budget=5000", "--dump-dom", page.as_uri())
    html = dom.stdout
    assert dom.returncode == 0 and "</html>" in html, dom.stderr[-2000:]
    check = re.search(r'id="render-check" data-images="(\d+)" data-images-rendered="(\d+)" '
                      r'data-series-drawn="(\d+)"', html)
    assert check, "the page's self-check did not run"
    images, rendered, series = map(int, check.groups())
    assert images == rendered and images >= 15 and images % 3 == 0  # >= 5 worst frames x 3 pictures
    assert series == 4  # PSNR Y, Cb, Cr and SSIM lines have a drawn length
    points = re.findall(r'data-series="(\w+)" data-points="(\d+)"', html)
    assert {name for name, _ in points} == {"psnr_y", "psnr_cb", "psnr_cr", "ssim_y"}
    assert all(int(n) == frames for _, n in points)
    assert 'id="ssim-name">fast<' in html and "PASS: every quality floor of the endoscopy profile is met and the file written validates" in html
    assert record["output"]["sha256"] in html and record["input"]["sha256"] in html
    worst = [w["output_frame"] for w in record["quality"]["summary"]["psnr_y"]["worst"]]
    assert f'data-output-frame="{worst[0]}"' in html
    assert not re.search(r'(src|href)="(https?:|//)', html)  # self-contained: nothing fetched


@pytest.mark.requirement("DVQA-QUAL-001")
def test_quality_command_on_two_video_files_agrees_with_ffmpeg(tmp_path: Path) -> None:
    # QA re-checking an export made elsewhere: the distorted side is a plain video file
    distorted = tmp_path / "export.mp4"
    proc = run(tool("ffmpeg"), "-v", "error", "-i", str(CFR), "-c:v", "libx264", "-crf", "35",
               "-pix_fmt", "yuv420p", str(distorted))
    assert proc.returncode == 0, proc.stderr
    report = tmp_path / "q.json"
    proc = dvqa("quality", str(CFR), str(distorted), "--report", str(report), "--report", str(tmp_path / "q.html"))
    assert proc.returncode == 0, proc.stderr
    q = json.loads(report.read_text())["quality"]
    psnr, ssim = _ffmpeg_scores(distorted, "mp4", CFR, tmp_path)
    assert q["frames"] == len(psnr) == 90
    for k in range(90):
        assert abs(q["per_frame"]["psnr_y"][k] - float(psnr[k]["psnr_y"])) <= 0.05, k
        assert abs(q["per_frame"]["ssim_y"][k] - float(ssim[k]["Y"])) <= 0.001, k
    assert 25 < q["summary"]["psnr_y"]["min"] < 45  # crf 35 is visibly lossy
    assert "SSIM definition" in (tmp_path / "q.html").read_text()


@pytest.mark.requirement("DVQA-QUAL-001")
def test_a_passthrough_report_says_bit_exact_and_its_head_says_what_was_done(tmp_path: Path) -> None:
    """No --profile: a verdict all the same, saying what it is judged against; a passthrough shows
    'bit-exact', not five 'worst' frames with black difference pictures."""
    page, record = tmp_path / "p.html", tmp_path / "p.json"
    proc = dvqa("convert", str(CLIPS / "h264_cfr_high.mkv"), "-o", str(tmp_path / "p.dcm"), "--report", str(page),
                "--report", str(record))
    assert proc.returncode == 0, proc.stderr
    r, html = json.loads(record.read_text()), page.read_text()
    assert r["passthrough"] is True
    assert "quality  bit-exact: each of the 90 frames decoded from the file written is identical" in proc.stdout
    assert "Infinity" not in proc.stdout and "note     none" not in proc.stdout and "{'" not in proc.stdout
    head = html[:html.index('id="files"')]  # the verdict and the conversion's facts come first
    assert 'id="verdict">PASS: the file written validates<' in head
    assert "Judged against dvqa&#39;s stream-layer validation of the file written (no --profile" in head
    assert r["output"]["transfer_syntax_uid"] in head and 'id="bit-exact">bit-exact<' in head
    assert "passed through: the H.264 bitstream is wrapped unchanged" in head
    assert r["plan"]["rate_reason"].replace("'", "&#39;") in head
    assert "<img" not in html and 'class="worst"' not in html and "Infinity dB" not in html


@pytest.mark.requirement("DVQA-QUAL-001")
def test_a_re_encode_report_names_the_settings_and_marks_duplicated_frames(tmp_path: Path) -> None:
    page, record = tmp_path / "r.html", tmp_path / "r.json"
    proc = dvqa("convert", str(CLIPS / "vp9_vfr.webm"), "-o", str(tmp_path / "r.dcm"), "--report", str(page),
                "--report", str(record))
    assert proc.returncode == 0, proc.stderr
    r, html = json.loads(record.read_text()), page.read_text()
    options = r["encoder"]["options"]
    assert f"stream   re-encoded with libx264: preset {options['preset']}, crf {options['crf']}," in proc.stdout
    head = html[:html.index('id="files"')]
    assert 'id="encoder"><code>libx264</code>: preset <code>' in head and "re-encoded with libx264" in head
    duplicated = r["timing"]["duplicated_output_frames"]
    assert len(duplicated) == 3
    marked = re.findall(r'class="duplicated" data-output-frame="(\d+)"', html)
    assert marked == [str(k) for k in duplicated] * 2  # on the PSNR plot and on the SSIM plot
    assert "3 output frames (" + ", ".join(map(str, duplicated)) + ") repeat the frame before them" in html


def test_counts_agree_with_their_nouns() -> None:
    from dvqa.quality.reports import number, plural, verdict

    assert (plural(1, "record"), plural(2, "record"), plural(0, "entry", "entries")) == ("1 record", "2 records",
                                                                                        "0 entries")
    assert number("Infinity", 2) == "∞" and number(float("inf"), 2) == "∞" and number(43.214, 2) == "43.21"
    measured = verdict({"command": "quality", "findings": [], "profile": None})
    assert measured["state"] == "measured" and "No --profile was given" in measured["against"]
