"""The cluster as a local attacker or a rogue network peer sees it (issue 28 items 1-2, issue 27's hangs):
a local cluster refuses clients without its per-run credentials and keeps dvqa's secrets out of its
workers; a remote scheduler is reached over TLS, clear text only when asked; a cluster without
workers ends the run with exit 4 instead of waiting forever."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from bench.orthanc import free_port
from dask_cluster import dask_cluster, pki
from helpers import CLIPS, PEM, ROOT, certificate, dvqa, pem_key, write_pki

SECRET = "DVQA_TEST_CLUSTER_SECRET"


def _damaged(folder: Path) -> Path:
    """A file validate checks (and fails): enough to reach the cluster."""
    (folder / "damaged.dcm").write_bytes(bytes(128) + b"DICM" + bytes(40))
    return folder / "damaged.dcm"


def _http_status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.requirement("DVQA-SEC-002")
def test_a_local_cluster_refuses_clients_without_its_credentials(monkeypatch) -> None:
    from distributed import Client
    from distributed.security import Security

    from dvqa.cli.common import passphrase
    from dvqa.core.cluster import client

    monkeypatch.setenv(SECRET, "the audit key")
    assert passphrase(SECRET, "--audit-key-env") == "the audit key"  # what --audit-key-env reads is a secret
    with client("local:1") as connected:
        address = connected.scheduler.address
        assert address.startswith("tls://127.0.0.1:")
        for intruder, extra in ((address, {}), (address.replace("tls://", "tcp://"), {}),
                                (address, {"security": Security.temporary()})):  # TLS, but not this run's CA
            with pytest.raises(Exception):
                Client(intruder, timeout=10, **extra).close()
            # the refused Client is finalized now: left to a later garbage collection, its __del__ ran inside the
            # next Client's start-up, which holds the lock its close() takes - a loaded run hung there for 50 min
            # (distributed 2026.8.0 LoopRunner)
            gc.collect()
        assert set(connected.run(lambda: os.environ.get(SECRET)).values()) == {None}
        ports = [connected.run_on_scheduler(lambda dask_scheduler: dask_scheduler.http_server.port),
                 *connected.run(lambda dask_worker: dask_worker.http_server.port).values()]
        for port in ports:  # no dashboard, no logs, no health or metrics pages
            for path in ("/info/main/workers.html", "/health", "/metrics", "/json/identity.json"):
                assert _http_status(port, path) == 404, (port, path)
    assert os.environ[SECRET] == "the audit key"  # the client's own environment is back


@pytest.mark.requirement("DVQA-SEC-002")
def test_a_remote_scheduler_in_clear_text_or_without_credentials_is_refused(tmp_path: Path) -> None:
    files = str(_damaged(tmp_path))
    port = free_port()  # nothing listens: every refusal comes before any connection
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    cases = [
        ([f"tcp://127.0.0.1:{port}"], {}, "--allow-clear-text"),
        ([f"127.0.0.1:{port}"], {}, "--allow-clear-text"),
        ([f"tcp://127.0.0.1:{port}", "--allow-clear-text", "--require-tls"], {}, "--require-tls"),
        ([f"tcp://127.0.0.1:{port}", "--allow-clear-text"], {"DVQA_REQUIRE_TLS": "1"}, "DVQA_REQUIRE_TLS"),
        ([f"tls://127.0.0.1:{port}"], {}, "--cluster-ca"),
        ([f"tls://127.0.0.1:{port}", "--cluster-ca", str(bad), "--cluster-cert", str(bad)], {}, "could not be loaded"),
        ([f"http://127.0.0.1:{port}"], {}, "tls://HOST:PORT"),
    ]
    for args, env, named in cases:
        proc = subprocess.run([sys.executable, "-m", "dvqa", "validate", files, "--scheduler", *args],
                              capture_output=True, text=True, timeout=120, env={**os.environ, **env}, cwd=ROOT)
        assert proc.returncode == 2 and named in proc.stderr, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and "internal error" not in proc.stderr, proc.stderr


@pytest.mark.requirement("DVQA-SEC-002", "DVQA-VAL-005")
def test_a_tls_scheduler_with_its_own_worker(tmp_path: Path) -> None:
    tls, stranger = pki(tmp_path / "pki"), pki(tmp_path / "stranger")
    folder = tmp_path / "files"
    folder.mkdir()
    assert dvqa("convert", str(CLIPS / "h264_cfr_high.mkv"), "-o", str(folder / "a.dcm"),
                "--no-quality").returncode == 0
    local = dvqa("validate", str(folder), "--format", "json")
    with dask_cluster(tmp_path, tls) as (address, options, worker, _):
        idle = dvqa("validate", str(folder), "--scheduler", address, *options, "--worker-timeout", "2")
        assert idle.returncode == 4 and "no Dask worker joined" in idle.stderr, idle.stderr  # none started yet
        assert len(idle.stderr.strip().splitlines()) == 1
        worker()
        remote = dvqa("validate", str(folder), "--scheduler", address, *options, "--format", "json")
        assert (remote.returncode, remote.stdout) == (local.returncode, local.stdout), remote.stderr
        foreign = dvqa("validate", str(folder), "--scheduler", address, "--cluster-ca", str(stranger["ca"]),
                       "--cluster-cert", str(stranger["cert"]), "--cluster-key", str(stranger["key"]))
        assert foreign.returncode == 4 and "TLS" in foreign.stderr, foreign.stderr
        assert len(foreign.stderr.strip().splitlines()) == 1 and "internal error" not in foreign.stderr


def _two_rows(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A manifest of two slow rows (re-encode, reference SSIM): time to stop the cluster under one."""
    out = tmp_path / "out"
    out.mkdir()
    manifest = tmp_path / "manifest.csv"
    rows = [(CLIPS / "vp9_vfr.webm", "P1"), (CLIPS / "h264_cfr_high.mkv", "P2")]
    manifest.write_text("input,output,syntax,PatientID,ssim\n" + "".join(
        f"{source},{out / f'{n}.dcm'},h264-high-4.1,{patient},reference\n" for n, (source, patient) in enumerate(rows)))
    return manifest, out, tmp_path / "audit.jsonl"


def _batch_until_a_row_starts(address: str, options: list[str], manifest: Path, log: Path) -> tuple:
    """`dvqa batch convert` on the cluster, returned once a row has started there: (process, its event)."""
    from distributed import Client

    proc = subprocess.Popen([sys.executable, "-m", "dvqa", "batch", "convert", str(manifest), "--scheduler",
                             address, *options, "--worker-timeout", "3", "--audit", str(log)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started, deadline = None, time.monotonic() + 120
    with Client(address, timeout=30) as watcher:
        while started is None and time.monotonic() < deadline and proc.poll() is None:
            started = next((e for _, e in watcher.get_events("dvqa-batch") if e["state"] == "started"), None)
            time.sleep(0.02)
    if started is None:
        proc.kill()
        raise AssertionError(f"no row started: {proc.communicate()[1]}")
    return proc, started


@pytest.mark.requirement("DVQA-CONV-007")
def test_a_batch_whose_last_worker_dies_stops_with_its_rows_recorded(tmp_path: Path) -> None:
    manifest, out, log = _two_rows(tmp_path)
    with dask_cluster(tmp_path, None) as (address, options, worker, _):
        only = worker()
        proc, started = _batch_until_a_row_starts(address, options, manifest, log)
        os.kill(only.pid, signal.SIGKILL)
        only.wait(30)  # reaped: its work folders now belong to a dead process
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 4, err
    assert "no Dask worker remained" in err and "--resume" in err and "Traceback" not in err, err
    assert err.strip().splitlines()[0].endswith("cross the network unencrypted (--allow-clear-text).")
    assert len(err.strip().splitlines()) == 2, err  # the clear-text warning, then one sentence
    records = [json.loads(line) for line in log.read_text().splitlines()]
    first, other = started["index"] + 2, 3 - started["index"]  # manifest lines 2 and 3
    rows = [r for r in records if "batch" in r]  # the row records; then one record of the batch that stopped
    assert sorted(r["batch"]["line"] for r in rows if r["outcome"] == "failure") == sorted([first, first, other])
    stopped = [r for r in records if "batch" not in r]
    assert len(stopped) == 1 and stopped[0]["exit_code"] == 4 and "no Dask worker remained" in stopped[0]["message"]
    lost = next(r for r in rows if r["batch"]["worker"] == started["where"])
    assert "did not run again" in lost["message"] and "ran the task again" not in lost["message"]
    assert os.listdir(out) == []  # no output, nothing staged, no worker's work folder
    assert dvqa("audit", "verify", str(log)).returncode == 0


@pytest.mark.requirement("DVQA-CONV-007")
def test_a_batch_whose_scheduler_dies_stops_and_leaves_no_patient_data_behind(tmp_path: Path) -> None:
    manifest, out, log = _two_rows(tmp_path)
    with dask_cluster(tmp_path, None) as (address, options, worker, scheduler):
        only = worker()
        proc, started = _batch_until_a_row_starts(address, options, manifest, log)
        scheduler.kill()
        _, err = proc.communicate(timeout=120)
        only.wait(120)  # the worker closes once its scheduler is gone, after the conversion under way
    assert proc.returncode == 4, err
    assert "scheduler dropped the tasks" in err and "--resume" in err and len(err.strip().splitlines()) == 2, err
    records = [json.loads(line) for line in log.read_text().splitlines()]
    lost = next(r for r in records if "batch" in r and r["batch"]["worker"] == started["where"]
                and r["outcome"] == "failure")
    assert "the run stopped before its result came back" in lost["message"], lost["message"]
    assert "ran the task again" not in lost["message"]
    converted = {Path(r["output"]["path"]).name for r in records if r["outcome"] == "success"}
    assert set(os.listdir(out)) == converted  # the conversion that finished after the client left was discarded


@pytest.mark.requirement("DVQA-VAL-005")
def test_a_worker_dying_at_start_up_is_one_sentence(tmp_path: Path) -> None:
    dying = tmp_path / "dying_worker.py"
    dying.write_text("import os\nos._exit(3)\n")
    proc = subprocess.run([sys.executable, "-m", "dvqa", "validate", str(_damaged(tmp_path)), "--scheduler", "local:1"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "DASK_DISTRIBUTED__WORKER__PRELOAD": f'["{dying}"]'})
    assert proc.returncode == 4 and "did not start" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "internal error" not in proc.stderr


@pytest.mark.requirement("DVQA-SEC-002", "DVQA-CONV-007")
def test_the_client_places_and_signs_only_what_it_staged_and_validated(tmp_path: Path) -> None:
    from dvqa.convert.batch import STAGED_TAIL, Outcome, _Run
    from dvqa.convert.manifest import Row
    from dvqa.convert.pipeline import ConvertOptions
    from dvqa.core import outputs
    from dvqa.trust.signature import Signer

    signer_pki = write_pki(tmp_path, lambda ca_key, key: {
        "cert": certificate("signer", key, "dvqa test CA", ca_key).public_bytes(PEM), "key": pem_key(key)})
    out = tmp_path / "out"
    out.mkdir()
    victim = out / "someone_elses.dcm"
    victim.write_bytes(b"another patient's study")
    rows = [Row(2, CLIPS / "h264_cfr_high.mkv", out / "a.dcm", ConvertOptions()),
            Row(3, CLIPS / "vp9_vfr.webm", out / "b.dcm", ConvertOptions())]
    results: list = [None, None]
    signer = Signer.load(signer_pki["key"], signer_pki["cert"], None)
    run = _Run(tmp_path / "m.csv", rows, None, False, signer, "base", results, None)
    event = {"output": {"path": "x", "written": True}}
    run.finish(Outcome(0, "a" * 12, "rogue", 0, "", dict(event), str(victim)))  # a path the worker chose
    staged = out / (outputs.stage_prefix(rows[1].output) + "b" * (len(STAGED_TAIL) - 4) + ".dcm")
    staged.write_bytes(b"not DICOM at all")  # at the right name, but not what the worker claims
    run.finish(Outcome(1, "b" * 12, "rogue", 0, "", dict(event), str(staged)))
    assert victim.read_bytes() == b"another patient's study"
    assert sorted(os.listdir(out)) == ["someone_elses.dcm"]  # nothing placed, the unvalidated file removed
    assert [r.status for r in results] == ["failed", "failed"]
    assert "not the file staged for this row" in results[0].message and results[0].exit_code == 4
    assert "does not validate" in results[1].message and results[1].exit_code == 1
