"""`dvqa validate`: stream-level defects no attribute validator sees, outputs CI servers read, no crashes."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from xml.etree import ElementTree as ET

import pydicom
import pytest
from pydicom.encaps import encapsulate, generate_fragments

from dvqa.convert.pipeline import ConvertOptions, convert
from dvqa.validate.run import check_file
from helpers import CLIPS, dvqa, run, tool


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    """dvqa's own outputs, one per codec family, and deliberately broken variants of them."""
    d = tmp_path_factory.mktemp("corpus")
    good = {
        "h264": convert(CLIPS / "h264_cfr_high.mkv", d / "h264.dcm", ConvertOptions(quality=False)).output,
        "h264_42": convert(CLIPS / "h264_cb42.mkv", d / "h264_42.dcm", ConvertOptions(quality=False)).output,
        "mpeg2": convert(CLIPS / "h264_cfr_high.mkv", d / "mpeg2.dcm",
                         ConvertOptions(syntax="mpeg2-mp-ml", quality=False)).output,
        "hevc": convert(CLIPS / "h264_cfr_high.mkv", d / "hevc.dcm",
                        ConvertOptions(syntax="hevc-main", quality=False)).output,
        "mjpeg": convert(CLIPS / "h264_cfr_high.mkv", d / "mjpeg.dcm",
                         ConvertOptions(syntax="mjpeg", quality=False)).output,
    }
    files = dict(good)

    def variant(name: str, base: str, change) -> None:
        ds = pydicom.dcmread(str(good[base]))
        change(ds)
        files[name] = d / f"{name}.dcm"
        ds.save_as(str(files[name]), enforce_file_format=True)

    variant("frames-wrong", "h264", lambda ds: setattr(ds, "NumberOfFrames", 89))
    variant("rows-wrong", "hevc", lambda ds: setattr(ds, "Rows", 480))
    variant("photometric-wrong", "h264", lambda ds: setattr(ds, "PhotometricInterpretation", "RGB"))
    variant("bits-wrong", "hevc", lambda ds: setattr(ds, "BitsStored", 10))
    variant("level-too-high", "h264_42", lambda ds: setattr(ds.file_meta, "TransferSyntaxUID",
                                                              "1.2.840.10008.1.2.4.102"))
    variant("rate-wrong-mpeg2", "mpeg2", lambda ds: setattr(ds, "FrameTime", "40.0"))
    variant("lossy-method-wrong", "h264", lambda ds: setattr(ds, "LossyImageCompressionMethod", "ISO_10918_1"))
    variant("mjpeg-frames-wrong", "mjpeg", lambda ds: setattr(ds, "NumberOfFrames", 91))

    def split(ds):  # the stream in two fragments under the non-fragmentable UID
        stream = b"".join(list(generate_fragments(ds.PixelData))[1:])
        ds.PixelData = encapsulate([stream], fragments_per_frame=2, has_bot=False)
    variant("fragmented", "h264", split)
    files["not-dicom"] = d / "notes.dcm"
    files["not-dicom"].write_text("not a DICOM file\n")
    files["truncated"] = d / "truncated.dcm"
    files["truncated"].write_bytes(good["h264"].read_bytes()[: good["h264"].stat().st_size // 2])
    return files


EXPECTED = {
    "frames-wrong": "stream.frame-count", "rows-wrong": "stream.size-mismatch",
    "photometric-wrong": "stream.photometric", "bits-wrong": "stream.bit-depth", "level-too-high": "stream.level",
    "rate-wrong-mpeg2": "stream.frame-rate", "lossy-method-wrong": "stream.lossy-method",
    "mjpeg-frames-wrong": "stream.frame-count", "fragmented": "stream.fragments", "not-dicom": "file.not-dicom",
    "truncated": "file.truncated",
}


@pytest.mark.requirement("DVQA-CONV-001")
@pytest.mark.parametrize("name", ["h264", "h264_42", "mpeg2", "hevc", "mjpeg"])
def test_dvqa_outputs_have_no_stream_errors(name: str, corpus) -> None:
    errors = [f for f in check_file(corpus[name]).findings if f.severity.value == "error"]
    assert errors == []


@pytest.mark.requirement("DVQA-VAL-002")
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_defect_is_an_error_with_its_check_id(name: str, corpus) -> None:
    codes = {f.code for f in check_file(corpus[name]).findings if f.severity.value == "error"}
    assert EXPECTED[name] in codes, codes


@pytest.mark.requirement("DVQA-VAL-002")
@pytest.mark.parametrize("name", ["frames-wrong", "rows-wrong", "level-too-high", "fragmented", "mjpeg-frames-wrong"])
def test_stream_defects_dciodvfy_cannot_see(name: str, corpus) -> None:
    """dciodvfy checks attributes, not the bitstream: these pass it, and dvqa catches them."""
    out = run(tool("dciodvfy"), str(corpus[name]))
    dciodvfy_errors = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]
    ds = pydicom.dcmread(str(corpus[name]), stop_before_pixels=True)
    if str(ds.file_meta.TransferSyntaxUID) in ("1.2.840.10008.1.2.4.102", "1.2.840.10008.1.2.4.104",
                                                "1.2.840.10008.1.2.4.50"):
        assert dciodvfy_errors == [], dciodvfy_errors
    assert EXPECTED[name] in {f.code for f in check_file(corpus[name]).findings}


@pytest.mark.requirement("DVQA-VAL-004")
def test_cli_formats_exit_codes_and_folders(corpus, tmp_path: Path) -> None:
    folder = tmp_path / "tree" / "deeper"
    folder.mkdir(parents=True)
    for name in ("h264", "frames-wrong", "not-dicom"):
        shutil.copy(corpus[name], folder / corpus[name].name)
    tree = tmp_path / "tree"
    text = dvqa("validate", str(tree))
    assert text.returncode == 1 and "checked  3 files: 2 failed" in text.stdout
    assert text.stdout.startswith("standard DICOM 2020a (bundled")  # the edition the IOD layer used
    data = json.loads(dvqa("validate", str(tree), "--format", "json", "--jobs", "2").stdout)
    assert [Path(f["path"]).name for f in data["files"]] == ["frames-wrong.dcm", "h264.dcm", "notes.dcm"]
    assert [f["ok"] for f in data["files"]] == [False, True, False]
    suite = ET.fromstring(dvqa("validate", str(tree), "--format", "junit").stdout).find("testsuite")
    cases = suite.findall("testcase")
    assert int(suite.get("tests")) == len(cases) and int(suite.get("failures")) == 2
    assert sum(1 for c in cases if c.find("skipped") is not None) == int(suite.get("skipped")) == 0
    assert {p.get("name"): p.get("value") for p in suite.find("properties")}["dicom-edition"] == "2020a"
    sarif = json.loads(dvqa("validate", str(tree), "--format", "sarif").stdout)
    assert sarif["version"] == "2.1.0" and sarif["runs"][0]["tool"]["driver"]["name"] == "dvqa"
    results = sarif["runs"][0]["results"]
    assert {r["ruleId"] for r in results} >= {"stream.frame-count", "file.not-dicom"}
    rule_ids = {r["id"] for r in sarif["runs"][0]["tool"]["driver"]["rules"]}
    assert all(r["ruleId"] in rule_ids and r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
               for r in results)
    only_good = dvqa("validate", str(folder / "h264.dcm"))
    assert only_good.returncode == 0
    strict = dvqa("validate", str(folder / "h264.dcm"), "--profile", "endoscopy", "--fail-on", "warning")
    assert strict.returncode == 1 and "endoscopy.patient-id" in strict.stdout  # no Patient ID: a warning


@pytest.mark.requirement("DVQA-VAL-003")
def test_mutated_files_never_crash(corpus) -> None:
    """A mutation loop: random byte flips, insertions and cuts of valid files. Never a traceback;
    every cut file is reported as an error. (A longer run: DVQA_FUZZ_COUNT=20000.)"""
    import os

    rng = random.Random(20261125)
    bases = [corpus[n].read_bytes() for n in ("h264", "mjpeg", "mpeg2")]
    count = int(os.environ.get("DVQA_FUZZ_COUNT", "2000"))
    work = corpus["h264"].parent / "fuzz.dcm"
    with_findings = 0
    for n in range(count):
        data = bytearray(rng.choice(bases))
        kind = rng.choice(("flip", "insert", "cut", "header"))
        if kind == "flip":
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif kind == "insert":
            at = rng.randrange(len(data))
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif kind == "cut":
            del data[rng.randrange(132, len(data) - 1):]
        else:  # the header and the element tags, where parsers are most fragile
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(128, min(len(data), 1400))] = rng.randrange(256)
        work.write_bytes(bytes(data))
        result = check_file(work)  # must return, whatever the bytes
        with_findings += bool(result.findings)
        if kind == "cut":
            assert any(f.severity.value == "error" for f in result.findings), (n, kind)
    assert with_findings > count // 4


def test_rules_list_documents_every_rule_with_its_source() -> None:
    proc = dvqa("rules", "list", "--format", "json")
    assert proc.returncode == 0
    profile = {p["name"]: p for p in json.loads(proc.stdout)}["endoscopy"]
    assert {r["id"] for r in profile["rules"]} >= {"endoscopy.sop-class", "endoscopy.frame-rate"}
    assert all(r["source"].strip() for r in profile["rules"] + profile["quality_floors"])
    assert "source: PS3.3 C.8.12.1" in dvqa("rules", "list").stdout
