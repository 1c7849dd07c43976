"""`dvqa batch convert`: a manifest converted here or on a real Dask LocalCluster on 127.0.0.1, one audit
chain written by the client alone, a worker killed mid-task, and a client interrupted then resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest

from helpers import CLIPS, RECORDED, ROOT, dvqa

# (input, syntax, extra cells): passthrough, re-encodes of variable-rate and resized sources, a damaged one
ROWS = [
    (CLIPS / "h264_cfr_high.mkv", "", {"PatientID": "P1", "PatientName": "Doe^Jane"}),
    (CLIPS / "vp9_vfr.webm", "h264-high-4.1", {"PatientID": "P2"}),
    (RECORDED / "h264_opus.webm", "", {"PatientID": "P3", "AccessionNumber": "A3"}),
    (CLIPS / "vp8_size_change.webm", "mpeg2-mp-ml", {"PatientID": "P4"}),
    (CLIPS / "h264_stale_sps.mp4", "", {"PatientID": "P5"}),  # Chrome's MP4 after a resize: exit 3
]


def _manifest(folder: Path, rows=ROWS, suffix: str = ".csv", extra_columns: dict | None = None) -> Path:
    (folder / "out").mkdir(exist_ok=True)
    columns = ["input", "output", "syntax", "PatientID", "PatientName", "AccessionNumber", *(extra_columns or {})]
    records = [{"input": str(source), "output": f"out/{number}_{source.stem}.dcm", "syntax": syntax, **cells,
                **(extra_columns or {})} for number, (source, syntax, cells) in enumerate(rows, 1)]
    path = folder / f"manifest{suffix}"
    if suffix == ".csv":
        lines = [",".join(columns)] + [",".join(str(r.get(c, "")) for c in columns) for r in records]
    else:
        lines = [json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n")
    return path


def _records(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def _leftovers(folder: Path) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name.startswith("."))


def _pixel_data(path: Path) -> bytes:
    return pydicom.dcmread(path).PixelData


@pytest.mark.requirement("DVQA-CONV-007")
def test_a_batch_on_a_local_cluster_gives_the_outputs_of_local_conversions(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path)
    log = tmp_path / "audit.jsonl"
    proc = dvqa("batch", "convert", str(manifest), "--scheduler", "local:2", "--audit", str(log), "--format", "json")
    assert proc.returncode == 3, proc.stderr  # the damaged recording: the most serious row's exit code
    report = json.loads(proc.stdout)
    assert report["counts"] == {"converted": 4, "failed": 1}
    assert [r["line"] for r in report["rows"]] == [2, 3, 4, 5, 6]  # manifest order, whatever finished first
    assert "does not decode cleanly" in report["rows"][4]["message"]
    assert dvqa("audit", "verify", str(log)).returncode == 0
    records = _records(log)
    assert len(records) == 5 and all(r["batch"]["manifest"] == str(manifest) for r in records)
    failed = [r for r in records if r["outcome"] == "failure"]
    assert len(failed) == 1 and failed[0]["exit_code"] == 3 and failed[0]["batch"]["attempt"] == 1  # not retried
    # every row ran in one of Dask's worker processes, not in the client
    assert all(r["batch"]["worker"].startswith("tls://127.0.0.1:") for r in records)  # a local cluster is TLS
    by_output = {Path(r["output"]["path"]).name: r for r in records}
    for number, (source, syntax, cells) in enumerate(ROWS[:4], 1):
        written = tmp_path / "out" / f"{number}_{source.stem}.dcm"
        alone = tmp_path / f"alone_{number}.dcm"
        local = dvqa("convert", str(source), "-o", str(alone), "--format", "json",
                     *(["--syntax", syntax] if syntax else []), "--patient-id", cells["PatientID"])
        assert local.returncode == 0, local.stderr
        expected = json.loads(local.stdout)
        record = by_output[written.name]
        assert record["elementary_stream_sha256"] == expected["elementary_stream_sha256"], source.name
        assert record["passthrough"] == expected["passthrough"]
        assert record["output"]["sha256"] != "" and written.stat().st_size == record["output"]["size"]
        assert _pixel_data(written) == _pixel_data(alone)  # passthrough and re-encodes alike: same stream bytes
        assert pydicom.dcmread(written, stop_before_pixels=True).PatientID == cells["PatientID"]
    assert {r["passthrough"] for r in records if r["outcome"] == "success"} == {True, False}  # both kinds of row
    assert _leftovers(tmp_path / "out") == []


@pytest.mark.requirement("DVQA-CONV-007")
def test_a_manifest_is_checked_before_any_row_converts(tmp_path: Path) -> None:
    good = _manifest(tmp_path, ROWS[:2])
    header, first, second = good.read_text().splitlines()
    cases = {
        "unknown column 'Colour'": "input,output,Colour\n" + f"{ROWS[0][0]},out/x.dcm,red\n",
        "is not a file": header + "\n" + first + "\n" + second.replace("vp9_vfr", "missing") + "\n",
        "is also the output of line 2": header + "\n" + first + "\n" + first.replace("P1", "P9") + "\n",
        "syntax 'h263'": header + "\n" + first.replace(",,P1", ",h263,P1") + "\n",
        "does not exist; create it first": header + "\n" + first.replace("out/", "nowhere/") + "\n",
        "PatientID": header + "\n" + first.replace("P1", "P1\\\\P2") + "\n",  # a backslash makes two IDs
        "is the row's input": "input,output\n" + f"{ROWS[0][0]},{ROWS[0][0]}\n",
        "line 2: rate '30fps' is not a frame rate": "input,output,rate\n" + f"{ROWS[0][0]},out/x.dcm,30fps\n",
    }
    log = tmp_path / "audit.jsonl"
    for expected, text in cases.items():
        manifest = tmp_path / "bad.csv"
        manifest.write_text(text)
        proc = dvqa("batch", "convert", str(manifest), "--audit", str(log))
        assert proc.returncode == 2, (expected, proc.stderr)
        assert expected in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "Traceback" not in proc.stderr
    assert os.listdir(tmp_path / "out") == []  # and each refusal is one failure record (test_hostile_batch.py)
    assert [(r["command"], r["exit_code"]) for r in _records(log)] == [("batch convert", 2)] * len(cases)
    jsonl = _manifest(tmp_path, ROWS[1:2], ".jsonl", {"quality": False, "rate": "29.97"})
    proc = dvqa("batch", "convert", str(jsonl), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)["rows"][0]
    assert row["status"] == "converted" and row["summary"]["psnr_y_min"] is None  # quality=false, from the row
    written = pydicom.dcmread(tmp_path / "out" / f"1_{ROWS[1][0].stem}.dcm", stop_before_pixels=True)
    assert float(written.CineRate) == 30 and abs(float(written.FrameTime) - 1001 / 30) < 1e-3  # rate 29.97, read as NTSC
    again = dvqa("batch", "convert", str(jsonl))
    assert again.returncode == 2 and "already exists" in again.stderr and "--resume" in again.stderr


@pytest.mark.requirement("DVQA-CONV-007")
def test_a_worker_killed_mid_task_is_retried_and_both_attempts_are_recorded(tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    # the first row is slow (reference SSIM over a re-encode): time to find its worker and kill it
    rows = [(CLIPS / "vp9_vfr.webm", "h264-high-4.1", {"PatientID": "P1"}),
            (CLIPS / "h264_cfr_high.mkv", "", {"PatientID": "P2"}),
            (RECORDED / "vp8_opus.webm", "", {"PatientID": "P3"})]
    manifest = _manifest(tmp_path, rows, extra_columns={"ssim": "reference"})
    log = tmp_path / "audit.jsonl"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as watcher:
        proc = subprocess.Popen([sys.executable, "-m", "dvqa", "batch", "convert", str(manifest), "--scheduler",
                                 cluster.scheduler_address, "--allow-clear-text", "--audit", str(log),
                                 "--format", "json"],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        killed = None
        deadline = time.monotonic() + 120
        while killed is None and time.monotonic() < deadline and proc.poll() is None:
            for _, event in watcher.get_events("dvqa-batch"):
                if event["index"] == 0 and event["state"] == "started":
                    killed = event
                    os.kill(event["pid"], signal.SIGKILL)
                    break
            time.sleep(0.02)
        out, err = proc.communicate(timeout=300)
    assert killed is not None, "the first row never started"
    assert proc.returncode == 0, err
    report = json.loads(out)
    assert report["counts"] == {"converted": 3}
    first = report["rows"][0]
    assert first["attempts"] == 2 and first["worker"] != killed["where"]
    assert dvqa("audit", "verify", str(log)).returncode == 0
    records = [r for r in _records(log) if r["batch"]["line"] == 2]
    assert [r["outcome"] for r in records] == ["failure", "success"]
    lost, done = records
    assert lost["batch"]["attempt"] == 1 and lost["batch"]["worker"] == killed["where"]
    assert "gave no result" in lost["message"] and lost["output"]["written"] is False
    assert done["batch"]["attempt"] == 2
    assert pydicom.dcmread(tmp_path / "out" / "1_vp9_vfr.dcm").PatientID == "P1"
    assert _leftovers(tmp_path / "out") == []  # the killed attempt's work folder was swept, nothing staged is left


@pytest.mark.requirement("DVQA-CONV-007")
def test_an_interrupted_batch_resumes_and_skips_only_verified_outputs(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DVQA_BATCH_KEY", "batch-audit-key-of-at-least-32-bytes")  # --resume needs a keyed log
    key = ("--audit-key-env", "DVQA_BATCH_KEY")
    rows = [(CLIPS / "h264_cfr_high.mkv", "", {"PatientID": "P1"}),
            (CLIPS / "vp9_vfr.webm", "h264-high-4.1", {"PatientID": "P2"}),
            (CLIPS / "vp8_irregular.webm", "h264-high-4.1", {"PatientID": "P3"})]
    manifest = _manifest(tmp_path, rows, extra_columns={"ssim": "reference"})
    log = tmp_path / "audit.jsonl"
    assert "--resume needs --audit" in dvqa("batch", "convert", str(manifest), "--resume").stderr
    proc = subprocess.Popen([sys.executable, "-m", "dvqa", "batch", "convert", str(manifest), "--audit", str(log), *key],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (log.exists() and log.read_text().count("\n") >= 1) and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "--resume" in err and "Traceback" not in err
    first = _records(log)
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert [Path(r["output"]["path"]).name for r in first if r["outcome"] == "success"] == written
    assert all("interrupted by SIGTERM" in r["message"] for r in first if r["outcome"] != "success")
    assert 1 <= len(written) < 3 and _leftovers(tmp_path / "out") == []

    resumed = dvqa("batch", "convert", str(manifest), "--audit", str(log), *key, "--resume", "--format", "json")
    assert resumed.returncode == 0, resumed.stderr
    statuses = [r["status"] for r in json.loads(resumed.stdout)["rows"]]
    assert statuses.count("skipped") == len(written) and statuses.count("converted") == 3 - len(written)
    assert dvqa("audit", "verify", str(log)).returncode == 0
    succeeded = [Path(r["output"]["path"]).name for r in _records(log) if r["outcome"] == "success"]
    assert sorted(succeeded) == sorted(p.name for p in (tmp_path / "out").iterdir())  # each row converted once

    changed = tmp_path / "out" / "1_h264_cfr_high.dcm"
    data = bytearray(changed.read_bytes())
    data[-1] ^= 1
    changed.write_bytes(bytes(data))
    refused = dvqa("batch", "convert", str(manifest), "--audit", str(log), *key, "--resume")
    assert refused.returncode == 2 and "no record in" in refused.stderr and "line 2" in refused.stderr
    forced = dvqa("batch", "convert", str(manifest), "--audit", str(log), *key, "--resume", "--force", "--format", "json")
    assert forced.returncode == 0, forced.stderr
    assert [r["status"] for r in json.loads(forced.stdout)["rows"]] == ["converted", "skipped", "skipped"]
