"""`dvqa batch convert` against hostile manifests (issue 27 items 2, 3 and the batch items; issue 28 item 10).

Every case is a refusal with one sentence naming the manifest line (and column or key) and exit 2
(3 for an unreadable file), or the correct behaviour; most are refused before any row converts, so
they need no conversion. The conversions that run use the short passthrough clip without quality.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from helpers import CLIPS, ROOT, dvqa

KEY = ("DVQA_TEST_BATCH_AUDIT_KEY", "k" * 40)  # an audit key of 32+ bytes, from the environment
KEYED = ("--audit-key-env", KEY[0])
CLIP = CLIPS / "h264_cfr_high.mkv"  # 90 frames, passed through bit-exact: well under a second


def _batch(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """The real command line, its memory capped (a manifest cell naming /dev/zero must not take the machine
    down if dvqa reads it whole) and its time bounded (a FIFO must not hang the suite)."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    return subprocess.run([sys.executable, "-m", "dvqa", "batch", "convert", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, preexec_fn=limit)


def _one_sentence(proc: subprocess.CompletedProcess, code: int, *expected: str) -> None:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for text in expected:
        assert text in proc.stderr, (text, proc.stderr)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _records(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """tmp_path with out/ and two recordings: rec1.webm and rec2.webm (copies of the short clip)."""
    (tmp_path / "out").mkdir()
    shutil.copy(CLIP, tmp_path / "rec1.webm")
    shutil.copy(CLIP, tmp_path / "rec2.webm")
    return tmp_path


@pytest.mark.requirement("DVQA-CONV-007")
def test_a_quoted_line_break_in_a_csv_cell_is_refused_not_joined_into_another_file_name(folder: Path) -> None:
    # the old reader split the file into lines first: "rec\n1.webm" became rec1.webm, another recording
    manifest = folder / "m.csv"
    manifest.write_text('input,output,PatientID\nrec2.webm,out/b.dcm,P2\n"rec\n1.webm",out/a.dcm,P9\n')
    proc = _batch(str(manifest), "--no-quality")
    _one_sentence(proc, 2, "line 3 column input", "U+000A")
    assert os.listdir(folder / "out") == []
    # a CRLF file is still rows, and a quoted comma stays in its cell
    manifest.write_text('input,output,PatientName\r\nrec1.webm,out/a.dcm,"Doe, Jane"\r\n')
    proc = _batch(str(manifest), "--no-quality")
    assert proc.returncode == 0, proc.stderr
    assert pydicom.dcmread(folder / "out" / "a.dcm", stop_before_pixels=True).PatientName == "Doe, Jane"


@pytest.mark.requirement("DVQA-CONV-007")
def test_control_characters_and_nul_in_paths_and_values_are_one_sentence(folder: Path) -> None:
    csv_cases = {
        "output": "input,output\nrec1.webm,out/a\x00.dcm\n",  # a NUL in a path
        "PatientID": "input,output,PatientID\nrec1.webm,out/a.dcm,P\t1\n",
        "metadata_json": "input,output,metadata_json\nrec1.webm,out/a.dcm,m\x00.json\n",
    }
    for column, text in csv_cases.items():
        manifest = folder / "m.csv"
        manifest.write_text(text)
        _one_sentence(_batch(str(manifest)), 2, f"line 2 column {column}", "control character")
    jsonl_cases = {
        "input": {"input": "rec1.webm\u2028", "output": "out/a.dcm"},  # a line separator JSON allows raw
        "output": {"input": "rec1.webm", "output": "out/a\u0000.dcm"},
        "PatientName": {"input": "rec1.webm", "output": "out/a.dcm", "PatientName": "Doe\u0085Jane"},
    }
    long = "a" * 300  # over NAME_MAX: the file system's error, said as one sentence
    for text in (f"input,output\nrec1.webm,out/{long}.dcm\n", f"input,output\n{long}.webm,out/a.dcm\n"):
        (folder / "m.csv").write_text(text)
        _one_sentence(_batch(str(folder / "m.csv")), 2, "line 2", "File name too long; fix the path")
    for column, cells in jsonl_cases.items():
        manifest = folder / "m.jsonl"
        manifest.write_text(json.dumps(cells, ensure_ascii=False) + "\n")
        _one_sentence(_batch(str(manifest)), 2, f"line 1 column {column}", "control character")
    assert os.listdir(folder / "out") == []


@pytest.mark.requirement("DVQA-CONV-007")
def test_a_column_named_twice_is_refused(folder: Path) -> None:
    manifest = folder / "m.csv"
    manifest.write_text("input,output,PatientID,PatientID\nrec1.webm,out/a.dcm,P1,P2\n")
    _one_sentence(_batch(str(manifest)), 2, "line 1", "'PatientID' is named twice")
    manifest = folder / "m.jsonl"
    manifest.write_text('{"input": "rec1.webm", "output": "out/a.dcm", "PatientID": "P1", "PatientID": "P2"}\n')
    _one_sentence(_batch(str(manifest)), 2, "line 1", "'PatientID' is named twice")


@pytest.mark.requirement("DVQA-CONV-007")
def test_jsonl_values_are_strings_or_integers_where_the_vr_is_numeric(folder: Path) -> None:
    from dvqa.convert import manifest as manifests
    from dvqa.convert.pipeline import ConvertOptions

    base = {"input": "rec1.webm", "output": "out/a.dcm"}
    refused = {
        "PatientID": {"a": 1},  # was PatientID "{'a': 1}"
        "PatientName": ["Doe"],
        "PatientWeight": float("nan"),  # json.dumps writes NaN; was "nan"
        "AccessionNumber": 12,  # SH: an integer is not its value
        "StudyDescription": True,
        "syntax": 3.5,
    }
    manifest = folder / "m.jsonl"
    for key, value in refused.items():
        manifest.write_text(json.dumps({**base, key: value}) + "\n")
        _one_sentence(_batch(str(manifest)), 2, f"line 1 key {key}", "JSON string")
    # deeply nested JSON and an integer too long to convert: one sentence, not a RecursionError/ValueError
    manifest.write_text('{"input": "rec1.webm", "output": "out/a.dcm", "PatientID": ' + "[" * 100000
                        + "]" * 100000 + "}\n")
    _one_sentence(_batch(str(manifest)), 2, "line 1", "nested too deeply")
    manifest.write_text('{"input": "rec1.webm", "output": "out/a.dcm", "PatientID": ' + "9" * 5000 + "}\n")
    _one_sentence(_batch(str(manifest)), 2, "line 1", "not JSON")
    for line in ('[["input", "rec1.webm"], ["output", "out/a.dcm"]]', '["input", "output"]', '"rec1.webm"'):
        manifest.write_text(line + "\n")
        _one_sentence(_batch(str(manifest)), 2, "line 1", "must be one JSON object")
    # accepted: an integer for IS/DS, true/false for a switch, null for "the default"
    manifest.write_text(json.dumps({**base, "SeriesNumber": 7, "PatientWeight": 70, "quality": False,
                                    "PatientID": None}) + "\n")
    row, = manifests.read(manifest, ConvertOptions())
    assert row.options.metadata.values["SeriesNumber"] == "7" and row.options.quality is False
    assert "PatientID" not in row.options.metadata.values


@pytest.mark.requirement("DVQA-CONV-007")
def test_an_output_that_is_a_source_the_manifest_the_log_or_another_output_is_refused_even_with_force(
        folder: Path) -> None:
    (folder / "link").symlink_to(folder / "out")
    (folder / "meta.json").write_text('{"00100020": {"vr": "LO", "Value": ["M1"]}}')
    shutil.copy(CLIP, folder / "out" / "old.dcm")  # an output already there (with --force: replaced)
    log = folder / "audit.jsonl"
    first = "rec1.webm,out/a.dcm,\n"
    cases = [  # (what the message says, the line it names, the rows)
        ("is a file read by line 2; it would be destroyed", 3, first + "rec2.webm,rec1.webm,\n"),  # a source
        ("is the row's input", 2, "out/../rec1.webm,rec1.webm,\n"),
        ("is the manifest", 3, first + "rec2.webm,m.csv,\n"),
        ("is also the output of line 2", 3, first + "rec2.webm,out/../out/a.dcm,\n"),
        ("is also the output of line 2", 3, first + "rec2.webm,link/a.dcm,\n"),  # a folder through a symlink
        ("is also the output of line 2", 3, "rec1.webm,out/old.dcm,\nrec2.webm,link/old.dcm,\n"),  # one inode
        ("is a file read by line 2", 3, "rec2.webm,out/b.dcm,meta.json\nrec1.webm,meta.json,\n"),
    ]
    manifest = folder / "m.csv"
    sources = {p: _sha(p) for p in (folder / "rec1.webm", folder / "rec2.webm", folder / "meta.json")}
    for expected, line, rows in cases:
        manifest.write_text("input,output,metadata_json\n" + rows)
        proc = _batch(str(manifest), "--force", "--no-quality", "--audit", str(log))
        _one_sentence(proc, 2, expected, f"m.csv line {line}: output")
        assert sorted(os.listdir(folder / "out")) == ["old.dcm"], expected
    assert {p: _sha(p) for p in sources} == sources and manifest.read_text().startswith("input,")
    assert _sha(folder / "out" / "old.dcm") == _sha(CLIP)
    assert all(r["command"] == "batch convert" for r in _records(log))  # each refusal recorded, nothing converted
    # the audit log as an output: refused, and not written to (the refusal is about the log itself)
    before = log.read_bytes()
    manifest.write_text(f"input,output\nrec1.webm,{log.name}\n")
    _one_sentence(_batch(str(manifest), "--force", "--audit", str(log)), 2, "is the audit log")
    assert log.read_bytes() == before


@pytest.mark.requirement("DVQA-CONV-007")
def test_output_root_confines_every_output(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    (folder / "out" / "escape").symlink_to(elsewhere)
    manifest = folder / "m.csv"
    for output in (str(elsewhere / "a.dcm"), "out/escape/a.dcm", "out/../a.dcm"):
        manifest.write_text(f"input,output\nrec1.webm,out/ok.dcm\nrec2.webm,{output}\n")
        proc = _batch(str(manifest), "--output-root", str(folder / "out"), "--no-quality")
        _one_sentence(proc, 2, "m.csv line 3", "is outside --output-root")
        assert os.listdir(elsewhere) == [] and sorted(os.listdir(folder / "out")) == ["escape"]
    proc = _batch(str(manifest), "--output-root", str(folder / "missing"))
    _one_sentence(proc, 2, "--output-root", "not a folder")
    manifest.write_text("input,output\nrec1.webm,out/ok.dcm\n")
    proc = _batch(str(manifest), "--output-root", str(folder / "out"), "--no-quality")
    assert proc.returncode == 0, proc.stderr
    assert (folder / "out" / "ok.dcm").is_file()


@pytest.mark.requirement("DVQA-CONV-007")
def test_resume_does_not_skip_a_row_corrected_since_its_output_was_made(folder: Path, monkeypatch) -> None:
    monkeypatch.setenv(*KEY)  # --resume trusts only a keyed log
    manifest = folder / "m.csv"
    log = folder / "audit.jsonl"
    manifest.write_text("input,output,PatientID\nrec1.webm,out/a.dcm,WRONG\nrec2.webm,out/b.dcm,P2\n")
    first = _batch(str(manifest), "--audit", str(log), *KEYED, "--no-quality")
    assert first.returncode == 0, first.stderr
    unchanged = _batch(str(manifest), "--audit", str(log), *KEYED, "--resume", "--no-quality", "--format", "json")
    assert unchanged.returncode == 0, unchanged.stderr
    assert [r["status"] for r in json.loads(unchanged.stdout)["rows"]] == ["skipped", "skipped"]
    manifest.write_text("input,output,PatientID\nrec1.webm,out/a.dcm,P1\nrec2.webm,out/b.dcm,P2\n")
    refused = _batch(str(manifest), "--audit", str(log), *KEYED, "--resume", "--no-quality")
    _one_sentence(refused, 2, "line 2", "the row differs from the one audit record 1 converted", "--force")
    assert pydicom.dcmread(folder / "out" / "a.dcm", stop_before_pixels=True).PatientID == "WRONG"
    # a default changed on the command line is a different row too (quality on now)
    assert "the row differs" in _batch(str(manifest), "--audit", str(log), *KEYED, "--resume").stderr
    forced = _batch(str(manifest), "--audit", str(log), *KEYED, "--resume", "--force", "--no-quality",
                    "--format", "json")
    assert forced.returncode == 0, forced.stderr
    assert [r["status"] for r in json.loads(forced.stdout)["rows"]] == ["converted", "skipped"]
    assert pydicom.dcmread(folder / "out" / "a.dcm", stop_before_pixels=True).PatientID == "P1"
    assert dvqa("audit", "verify", str(log), *KEYED).returncode == 0
    digests = [r["batch"]["row_sha256"] for r in _records(log) if "batch" in r]  # each conversion: its row
    assert len(digests) == 3 and all(len(d) == 64 for d in digests) and len(set(digests)) == 3


@pytest.mark.requirement("DVQA-CONV-007")
def test_a_refused_batch_writes_one_failure_record(folder: Path, monkeypatch) -> None:
    monkeypatch.setenv(*KEY)  # --resume trusts only a keyed log
    manifest = folder / "m.csv"
    log = folder / "audit.jsonl"
    manifest.write_text("input,output,PatientID\nrec1.webm,out/a.dcm,P1\\P2\n")  # a backslash: two IDs
    _one_sentence(_batch(str(manifest), "--audit", str(log), *KEYED), 2, "line 2")
    manifest.write_text("input,output\nrec1.webm,out/a.dcm\n")
    (folder / "out" / "a.dcm").write_bytes(b"there before")
    _one_sentence(_batch(str(manifest), "--audit", str(log), *KEYED), 2, "already exists")  # refused by the plan
    records = _records(log)
    assert [(r["command"], r["outcome"], r["exit_code"]) for r in records] == [("batch convert", "failure", 2)] * 2
    assert records[0]["manifest"]["path"] == str(manifest) and "line 2" in records[0]["message"]
    assert "already exists" in records[1]["message"]
    both = _batch(str(manifest), "--audit", str(log), *KEYED, "--jobs", "2", "--scheduler", "local:2")
    _one_sentence(both, 2, "give --jobs or --scheduler, not both")
    assert _records(log)[-1]["command"] == "batch convert" and "not both" in _records(log)[-1]["message"]
    assert dvqa("audit", "verify", str(log), *KEYED).returncode == 0
    # the manifest as the log, and a log that does not verify (with --resume): refused, nothing appended
    jsonl = folder / "audit.jsonl"
    before = log.read_bytes()
    _one_sentence(_batch(str(jsonl), "--audit", str(log), *KEYED), 2, "the manifest is the audit log")
    assert log.read_bytes() == before
    log.write_text(log.read_text().replace('"exit_code":2', '"exit_code":0', 1))
    before = log.read_bytes()
    _one_sentence(_batch(str(manifest), "--audit", str(log), *KEYED, "--resume"), 3, "does not verify")
    assert log.read_bytes() == before


@pytest.mark.requirement("DVQA-CONV-007")
def test_the_manifest_and_its_metadata_files_are_read_as_bounded_regular_files(folder: Path) -> None:
    fifo = folder / "m.csv"
    os.mkfifo(fifo)
    _one_sentence(_batch(str(fifo), timeout=60), 3, "the manifest is a FIFO")
    big = folder / "big.csv"
    with open(big, "wb") as handle:
        handle.write(b"input,output\n")
        handle.truncate(65 * 1024 * 1024)  # sparse: no disk used
    _one_sentence(_batch(str(big), timeout=60), 3, "over dvqa's limit of 64 MiB")
    os.mkfifo(folder / "meta.json")
    manifest = folder / "n.csv"
    for column, path, kind in (("metadata_json", "meta.json", "a FIFO"), ("metadata_json", "/dev/zero", "device"),
                               ("metadata_from", "/dev/zero", "device"), ("metadata_from", "meta.json", "a FIFO")):
        manifest.write_text(f"input,output,{column}\nrec1.webm,out/a.dcm,{path}\n")
        _one_sentence(_batch(str(manifest), timeout=60), 3, f"the {column} file named on", "line 2", kind)
    assert os.listdir(folder / "out") == []
