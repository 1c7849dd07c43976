"""`dvqa serve`'s recording ingestion, as a browser's upload reaches it: a real server process, real recordings
split into MediaRecorder-sized chunks sent over HTTP, a real Orthanc on 127.0.0.1 as the PACS, and the faults
the issue names (a SIGKILLed server, a PACS that is down, a client that goes away, bad tokens and bodies)."""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import re
import secrets
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pydicom
import pytest
import yaml

from bench import orthanc as orthanc_server
from bench.record_server import RecordServer, digest, end, finished, put
from dvqa.convert.live import convert_live
from dvqa.convert.pipeline import ConvertOptions, convert
from dvqa.trust import audit
from dvqa.video import framecode
from dvqa.video.growing import Growing
from helpers import CLIPS, RECORDED, stream_bytes

free_port = orthanc_server.free_port

TOKEN = secrets.token_hex(32)
AUDIT_KEY = secrets.token_hex(32)
PASSTHROUGH = CLIPS / "h264_cfr_high.mkv"  # H.264, limited range, constant rate: the bitstream is copied
CHROMIUM = RECORDED / "vp8_opus.webm"  # a Chromium MediaRecorder recording: VP8 + Opus, re-encoded
CHUNK = 16 * 1024  # MediaRecorder at 1 s timeslices of a 2 s, 700 kbit/s clip gives chunks of this order



def to_orthanc(orthanc: dict, **extra) -> dict:
    return {"host": "127.0.0.1", "port": orthanc["port"], "called_aet": "ORTHANC", "calling_aet": "DVQA",
            "retries": 0, **extra}


class Server(RecordServer):
    """The server these tests start: their token and audit key."""

    def __init__(self, folder: Path, record: dict, upstream: str | None = None) -> None:
        super().__init__(folder, record, TOKEN, AUDIT_KEY, upstream)

    def client(self, token: str | None = TOKEN) -> httpx.Client:
        return super().client(token)


@pytest.fixture()
def served(tmp_path):
    started: list[Server] = []

    def start(record: dict, **kwargs) -> Server:
        folder = tmp_path / f"server{len(started)}"
        folder.mkdir()
        server = Server(folder, record, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def pieces(path: Path, size: int = CHUNK) -> list[bytes]:
    data = path.read_bytes()
    return [data[at:at + size] for at in range(0, len(data), size)]


def es_in_orthanc(orthanc: dict, uids: dict, folder: Path) -> bytes:
    """The video stream of the instance as Orthanc returns it over WADO-RS."""
    url = (f"{orthanc['http']}/dicom-web/studies/{uids['study']}/series/{uids['series']}/instances/"
           f"{uids['instance']}")
    response = httpx.get(url, headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
                         timeout=60)
    assert response.status_code == 200, response.text
    boundary = response.headers["content-type"].split("boundary=")[1].split(";")[0].strip('"').encode()
    part = response.content.split(b"--" + boundary)[1].split(b"\r\n\r\n", 1)[1][:-2]
    copy = folder / "from-orthanc.dcm"
    copy.write_bytes(part)
    return stream_bytes(copy)


def unpadded_sha(stream: bytes) -> set[str]:
    """The stream's SHA-256 as `dvqa convert` records it (before DICOM's pad to an even length, PS3.5 §A.4)."""
    shas = {hashlib.sha256(stream).hexdigest()}
    if stream.endswith(b"\x00") and len(stream) % 2 == 0:
        shas.add(hashlib.sha256(stream[:-1]).hexdigest())
    return shas


def test_the_api_is_documented_by_openapi(served, monkeypatch) -> None:
    """Complete enough to generate a client from: every route the server answers, the bodies it takes, and every
    answer it gives, refusals with their body."""
    server = served({})  # without --upstream: recording ingestion only, no gateway
    schema = httpx.get(f"{server.url}/openapi.json").json()
    no_gateway = httpx.get(f"{server.url}/dicom-web/studies")
    assert no_gateway.status_code == 404 and "--upstream" in no_gateway.json()["detail"]
    assert httpx.get(f"{server.url}/healthz").json()["status"] == "ok"
    assert not (server.folder / "cache").exists()  # no gateway, no rendering cache
    from dvqa.serve import record_api
    from dvqa.serve.config import load
    from dvqa.serve.recordings import Recordings

    monkeypatch.setenv("DVQA_TEST_AUDIT_KEY", AUDIT_KEY)
    api = record_api.router(Recordings(load(server.config, upstream=server.upstream).record))
    routes = {(route.path, method.lower()) for route in api.routes for method in route.methods}
    documented = {(path, method) for path, operations in schema["paths"].items() for method in operations}
    assert routes | {("/healthz", "get")} == documented and len(routes) >= 7, routes ^ documented
    request = schema["components"]["schemas"]["RecordingRequest"]["properties"]
    assert {"patient_name", "patient_id", "patient_birth_date", "patient_sex", "accession_number", "study_uid",
            "study_description", "metadata", "iod", "syntax"} == set(request)
    assert "HTTPBearer" in schema["components"]["securitySchemes"]
    paths = schema["paths"]
    put_op = paths["/recordings/{recording_id}/chunks/{n}"]["put"]
    assert {"200", "201", "400", "404", "409", "413", "507"} <= set(put_op["responses"])
    assert put_op["requestBody"]["required"] and "application/octet-stream" in put_op["requestBody"]["content"]
    digest_header = next(p for p in put_op["parameters"] if p["name"] == "Content-Digest")
    assert digest_header["in"] == "header" and digest_header["required"] is True
    assert {"429", "422"} <= set(paths["/recordings"]["post"]["responses"])
    assert paths["/recordings"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/RecordingRequest")
    assert paths["/recordings/{recording_id}/end"]["post"]["requestBody"]["content"]["application/json"]["schema"][
        "$ref"].endswith("/EndRequest")
    for path, operations in paths.items():
        for method, operation in operations.items():
            if not path.startswith("/recordings"):
                continue
            assert operation.get("security") == [{"HTTPBearer": []}], (method, path)
            answers = operation["responses"]
            assert "401" in answers and "503" in answers, (method, path)
            if "{recording_id}" in path:
                assert "404" in answers, (method, path)
            for code, answer in answers.items():
                if code.startswith("2") or code == "422":
                    continue
                assert answer["content"]["application/json"]["schema"]["$ref"].endswith("/Refusal"), (code, path)
    assert "text/html" in paths["/recordings/{recording_id}/quality.html"]["get"]["responses"]["200"]["content"]
    # the conformance statement describes this API as the server serves it
    from dvqa.serve.conformance import sections

    stated = next(t for s in sections() for t in s["tables"] if t["caption"] == "Recording API operations")
    assert {(method.lower(), path, answers) for method, path, _, answers in stated["rows"]} == {
        (method, path, ", ".join(sorted(operation["responses"])))
        for path, operations in paths.items() if path.startswith("/recordings") for method, operation in operations.items()}
    audit_answer = paths["/recordings/{recording_id}/audit"]["get"]["responses"]["200"]["content"]
    assert audit_answer["application/json"]["schema"]["$ref"].endswith("/AuditRecords")


@pytest.mark.requirement("DVQA-REC-001", "DVQA-CONV-002")
def test_passthrough_upload_is_stored_in_orthanc_with_the_stream_convert_writes(served, orthanc, tmp_path) -> None:
    server = served({"pacs": to_orthanc(orthanc)})
    reference = convert(PASSTHROUGH, tmp_path / "reference.dcm", ConvertOptions(quality=False))
    assert reference.plan.passthrough
    chunks = pieces(PASSTHROUGH)
    with server.client() as client:
        created = client.post("/recordings", json={"patient_name": "Doe^Jane", "patient_id": "P-30",
                                                   "patient_sex": "F", "study_description": "record test"})
        assert created.status_code == 201, created.text
        rid = created.json()["id"]
        folder = server.spool / "recordings" / rid
        for n, data in enumerate(chunks):
            assert put(client, rid, n, data).status_code == 201
            if n == 2:  # the same chunk again (a retry whose answer was lost): acknowledged, nothing changes
                again = put(client, rid, n, data)
                assert again.status_code == 200 and again.json()["sha256"] == hashlib.sha256(data).hexdigest()
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert {stat.S_IMODE(p.stat().st_mode) for p in (folder / "chunks").iterdir()} == {0o600}
        assert end(client, rid, chunks).status_code == 202
        state = finished(client, rid)
        base = f"/recordings/{rid}"
        assert state["links"] == {"quality_html": f"{base}/quality.html", "quality_json": f"{base}/quality.json",
                                  "audit": f"{base}/audit"}
        page = client.get(state["links"]["quality_html"])  # asked at once: answered once written
        report = client.get(state["links"]["quality_json"]).json()
        chain = client.get(state["links"]["audit"]).json()
    result = state["result"]
    assert state["state"] == "done" and result["stored"] is True, result
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"] and "no-store" in page.headers[
        "cache-control"]
    assert "dvqa quality report" in page.text and "Doe" not in page.text and "P-30" not in page.text
    assert report["elementary_stream_sha256"] == result["elementary_stream_sha256"] and report["passthrough"] is True
    assert report["output"]["sop_instance_uid"] == result["uids"]["instance"] and "patient" not in report["output"]
    assert len(report["quality"]["per_frame"]["psnr_y"]) == report["quality"]["frames"] == result["frames"]
    with server.client(None) as anonymous:
        assert {anonymous.get(link).status_code for link in state["links"].values()} == {401}
    assert result["passthrough"] is True and result["validation"]["verdict"] == "pass"
    assert result["elementary_stream_sha256"] == reference.elementary_stream_sha256
    assert result["input"]["sha256"] == hashlib.sha256(PASSTHROUGH.read_bytes()).hexdigest()
    assert result["pacs"]["outcome"] == "stored" and result["dicom"] is None  # stored: not kept (keep_stored)
    assert reference.elementary_stream_sha256 in unpadded_sha(es_in_orthanc(orthanc, result["uids"], tmp_path))
    assert result["end_to_stored_s"] is not None and result["end_to_stored_s"] >= result["end_to_ready_s"] >= 0
    assert set(result["after_ready_s"]) == {"validation", "store"}
    # the stream layer is the conversion's own check of these bytes (the file is not read again for it)
    assert result["validation"]["layers"] == {"file": "ran", "value": "ran", "iod": "ran",
                                              "stream": "ran during the conversion, on these bytes"}
    kept = sorted(p.name for p in folder.iterdir())  # the chunks and the request (patient data): gone
    assert kept == ["lock", "quality.html", "quality.json", "result.json"]
    assert {stat.S_IMODE((folder / name).stat().st_mode) for name in kept} == {0o600}
    check = audit.verify(server.audit, AUDIT_KEY.encode())
    assert check.ok, check.to_dict()
    records = audit.records(server.audit)
    assert [(r["command"], r["outcome"]) for r in records] == [("convert", "success"), ("pacs-store", "stored")]
    assert records[0]["input"]["sha256"] == result["input"]["sha256"]
    assert records[1]["uids"]["sop_instance"] == result["uids"]["instance"]
    assert records[1]["input"]["sha256"] == report["output"]["sha256"]  # the file sent is the file written
    # the result names each record by its place in the chain and its line's hash, as the chain itself does
    assert [(e["seq"], e["command"], e["outcome"]) for e in result["audit"]] == [
        (1, "convert", "success"), (2, "pacs-store", "stored")]
    assert result["audit"][0]["sha256"] == records[1]["prev"] and result["audit"][1]["sha256"] == check.head
    assert [(e["seq"], e["sha256"], e["unchanged"], e["record"]) for e in chain["records"]] == [
        (e["seq"], e["sha256"], True, r) for e, r in zip(result["audit"], records)]
    lines = server.audit.read_bytes().splitlines(keepends=True)  # the chain edited since: the answer says so
    server.audit.write_bytes(lines[0].replace(b'"outcome":"success"', b'"outcome":"edited!"') + lines[1])
    with server.client() as client:
        edited = client.get(f"/recordings/{rid}/audit").json()["records"]
    assert [e["unchanged"] for e in edited] == [False, True] and edited[0]["record"]["outcome"] == "edited!"


def test_reencoded_chromium_recording_has_the_timing_of_a_live_convert(served, tmp_path) -> None:
    server = served({})  # no PACS: the DICOM is kept, and the result says so
    with open(CHROMIUM, "rb") as handle:
        reference = convert_live(Growing(handle, str(CHROMIUM)), tmp_path / "reference.dcm",
                                 ConvertOptions(quality=False))
    chunks = pieces(CHROMIUM)
    with server.client() as client:
        rid = client.post("/recordings", json={"patient_id": "P-31"}).json()["id"]
        order = list(range(len(chunks)))
        order[3], order[4] = order[4], order[3]  # chunks may arrive out of order (retries): they are read in order
        for n in order:
            assert put(client, rid, n, chunks[n]).status_code == 201
        assert end(client, rid, chunks).status_code == 202
        state = finished(client, rid)
    result = state["result"]
    assert state["state"] == "done" and result["stored"] is False and "no PACS" in result["reason"]
    assert result["passthrough"] is False and result["syntax"] == reference.plan.syntax.name
    assert result["timing"] == reference.timing.summary() and result["frames"] == reference.frames
    kept = Path(result["dicom"])
    assert kept.parent == server.spool / "dicom" and stat.S_IMODE(kept.stat().st_mode) == 0o600
    ds = pydicom.dcmread(kept, stop_before_pixels=True)
    assert ds.PatientID == "P-31" and ds.SOPInstanceUID == result["uids"]["instance"]
    assert result["quality"]["frames"] == reference.frames and result["quality"]["psnr_y_mean"] > 30
    with server.client() as client:
        page = client.get(state["links"]["quality_html"]).text
        report = client.get(state["links"]["quality_json"]).json()
    assert page.count('src="data:image/png;base64,') >= 3  # a re-encode's worst frames: source, output, difference
    assert report["timing"] == result["timing"] and len(report["timing_map"]) == reference.frames
    assert "P-31" not in page and "patient" not in report["output"]


@pytest.mark.requirement("DVQA-REC-002")
def test_refusals_name_their_reason_and_keep_nothing(served) -> None:
    server = served({"max_chunk_mb": 0.03, "max_recording_mb": 0.1, "max_recordings": 2})
    small, big = b"\x1a\x45\xdf\xa3" + bytes(1000), bytes(40 * 1024)
    recordings = server.spool / "recordings"
    with server.client(None) as anonymous, server.client("not-the-token") as stranger, server.client() as client:
        for who in (anonymous, stranger):
            refused = who.post("/recordings", json={"patient_id": "P"})
            assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert list(recordings.iterdir()) == []
        bad = client.post("/recordings", json={"patient_id": "A\\B"})
        assert bad.status_code == 422 and "patient_id" in bad.json()["detail"] and "backslash" in bad.json()["detail"]
        assert client.post("/recordings", json={"patient_sex": "X"}).status_code == 422
        assert client.post("/recordings", json={"patient_nam": "typo"}).status_code == 422
        assert list(recordings.iterdir()) == []
        rid = client.post("/recordings", json={"patient_id": "P"}).json()["id"]
        assert stranger.put(f"/recordings/{rid}/chunks/0", content=small, headers=digest(small)).status_code == 401
        assert put(client, rid, 0, small, headers={}).status_code == 400  # no digest
        damaged = put(client, rid, 0, small, headers=digest(small[:-1]))
        assert damaged.status_code == 400 and "send the chunk again" in damaged.json()["detail"]
        assert not (recordings / rid / "chunks" / "00000000").exists()
        assert put(client, rid, 0, small).status_code == 201
        other = put(client, rid, 0, small + b"!")
        assert other.status_code == 409 and hashlib.sha256(small).hexdigest() in other.json()["detail"]
        too_big = put(client, rid, 1, big)
        assert too_big.status_code == 413 and "max_chunk_mb" in too_big.json()["detail"]
        for n in range(1, 4):
            assert put(client, rid, n, bytes(30 * 1024)).status_code == 201
        overall = put(client, rid, 4, bytes(20 * 1024))
        assert overall.status_code == 413 and "max_recording_mb" in overall.json()["detail"]
        missing = client.post(f"/recordings/{rid}/end", json={"chunks": 6, "sha256": "0" * 64})
        assert missing.status_code == 409 and "4, 5" in missing.json()["detail"]
        wrong = client.post(f"/recordings/{rid}/end", json={"chunks": 4, "sha256": "0" * 64})
        assert wrong.status_code == 400
        state = client.get(f"/recordings/{rid}").json()
        assert state["acknowledged"] == [0, 1, 2, 3] and state["next_chunk"] == 4 and state["state"] == "receiving"
        assert state["links"] == {}
        for link in ("quality.html", "quality.json", "audit"):
            early = client.get(f"/recordings/{rid}/{link}")
            assert early.status_code == 404 and "receiving" in early.json()["detail"], link
        assert client.post("/recordings", json={}).status_code == 201
        crowded = client.post("/recordings", json={})
        assert crowded.status_code == 429 and "max_recordings" in crowded.json()["detail"]
        assert crowded.headers["retry-after"]
        assert client.get("/recordings/" + "0" * 32).status_code == 404
        assert client.get("/recordings/../etc").status_code in (404, 422)


def converting(server: Server, rid: str) -> None:
    """Until the recording's conversion process is under way (it holds the recording's lock; its fork server may
    still be importing FFmpeg on a loaded machine), and then a moment, so it waits for the next chunk."""
    lock = server.spool / "recordings" / rid / "lock"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if lock.exists():
            with open(lock, "rb") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    break  # held: the process is converting
                fcntl.flock(handle, fcntl.LOCK_UN)
        time.sleep(0.1)
    time.sleep(1.0)


@pytest.mark.requirement("DVQA-REC-001")
def test_sigterm_and_sigkill_mid_upload_then_restart_resume_to_the_same_dicom(served, orthanc, tmp_path) -> None:
    server = served({"pacs": to_orthanc(orthanc)})
    reference = convert(PASSTHROUGH, tmp_path / "reference.dcm", ConvertOptions(quality=False))
    chunks = pieces(PASSTHROUGH)
    third = len(chunks) // 3
    with server.client() as client:
        rid = client.post("/recordings", json={"patient_id": "P-32"}).json()["id"]
        for n in range(third):
            assert put(client, rid, n, chunks[n]).status_code == 201
    converting(server, rid)
    assert server.stop() == 0  # a graceful stop: its conversion process is stopped and records that
    server.start()  # the same spool, the same port
    with server.client() as client:
        state = client.get(f"/recordings/{rid}").json()
        assert state["state"] == "receiving" and state["acknowledged"] == list(range(third))
        for n in range(third, 2 * third):
            assert put(client, rid, n, chunks[n]).status_code == 201
    converting(server, rid)
    server.kill()
    server.start()
    with server.client() as client:
        state = client.get(f"/recordings/{rid}").json()
        assert state["state"] == "receiving" and state["acknowledged"] == list(range(2 * third))
        for n in range(state["next_chunk"], len(chunks)):  # the client sends what was not acknowledged
            assert put(client, rid, n, chunks[n]).status_code == 201
        assert end(client, rid, chunks).status_code == 202
        result = finished(client, rid)["result"]
    assert result["stored"] is True, result
    assert result["elementary_stream_sha256"] == reference.elementary_stream_sha256
    assert reference.elementary_stream_sha256 in unpadded_sha(es_in_orthanc(orthanc, result["uids"], tmp_path))
    records = audit.records(server.audit)
    assert [(r["command"], r["outcome"]) for r in records] == [
        ("convert", "failure"), ("convert", "failure"), ("convert", "success"), ("pacs-store", "stored")]
    assert "SIGTERM" in records[0]["message"] and "dvqa serve process" in records[1]["message"]
    assert [e["seq"] for e in result["audit"]] == [3, 4]  # the result names the records of the attempt that made it
    assert audit.verify(server.audit, AUDIT_KEY.encode()).ok


@pytest.mark.requirement("DVQA-REC-001")
def test_pacs_down_at_the_end_keeps_the_dicom_for_a_later_store(served, orthanc, tmp_path) -> None:
    server = served({"pacs": {"host": "127.0.0.1", "port": free_port(), "called_aet": "ORTHANC", "retries": 0,
                              "timeout": 5}})
    chunks = pieces(PASSTHROUGH)
    with server.client() as client:
        rid = client.post("/recordings", json={"patient_id": "P-33"}).json()["id"]
        for n, data in enumerate(chunks):
            put(client, rid, n, data)
        end(client, rid, chunks)
        state = finished(client, rid)
    result = state["result"]
    assert state["state"] == "done" and result["stored"] is False and result["pacs"]["outcome"] == "failed"
    assert "dvqa pacs store" in result["reason"]
    kept = Path(result["dicom"])
    assert pydicom.dcmread(kept, stop_before_pixels=True).SOPInstanceUID == result["uids"]["instance"]
    later = subprocess.run([sys.executable, "-m", "dvqa", "pacs", "store", str(kept), "--port", str(orthanc["port"]),
                            "--called-aet", "ORTHANC", "--format", "json"], capture_output=True, text=True)
    assert later.returncode == 0, later.stderr
    assert json.loads(later.stdout)[0]["outcome"] == "stored"


@pytest.mark.requirement("DVQA-REC-001")
def test_a_recording_left_idle_is_abandoned_recorded_and_removed(served) -> None:
    server = served({"idle_expiry_s": 1.5})
    chunks = pieces(CHROMIUM)
    with server.client() as client:
        rid = client.post("/recordings", json={"patient_name": "Doe^John"}).json()["id"]
        for n in range(2):
            put(client, rid, n, chunks[n])
        state = finished(client, rid, timeout=30)
    assert state["state"] == "abandoned" and "idle_expiry_s" in state["result"]["reason"]
    folder = server.spool / "recordings" / rid
    assert sorted(p.name for p in folder.iterdir()) == ["lock", "result.json"]
    assert "Doe" not in (folder / "result.json").read_text()
    assert list((server.spool / "dicom").iterdir()) == []
    records = audit.records(server.audit)
    assert records[-1]["command"] == "serve-record" and records[-1]["outcome"] == "abandoned"
    assert records[-1]["input"]["chunks"] == 2
    assert state["links"] == {"audit": f"/recordings/{rid}/audit"}  # nothing was converted: no quality report
    with server.client() as client:
        linked = client.get(state["links"]["audit"]).json()["records"]
        assert client.get(f"/recordings/{rid}/quality.html").status_code == 404
    assert [(e["record"], e["unchanged"]) for e in linked] == [(records[-1], True)]
    # its conversion, if its process had started by then (a loaded machine's fork server may still be importing),
    # is recorded as interrupted: never as a success
    assert all(r["outcome"] == "failure" for r in records if r["command"] == "convert")


def upload(server, path: Path, patient_id: str) -> dict:
    """`path` uploaded in chunks and ended; GET's answer once finished."""
    chunks = pieces(path)
    with server.client() as client:
        rid = client.post("/recordings", json={"patient_id": patient_id}).json()["id"]
        for n, data in enumerate(chunks):
            assert put(client, rid, n, data).status_code == 201
        assert end(client, rid, chunks).status_code == 202
        return finished(client, rid)


def gone(server, rid: str, timeout: float = 30) -> None:
    """Wait until GET answers 404 for the recording (retention removed it)."""
    deadline = time.monotonic() + timeout
    with server.client() as client:
        while client.get(f"/recordings/{rid}").status_code != 404:
            assert time.monotonic() < deadline, f"recording {rid} was not removed in {timeout} s"
            time.sleep(0.2)


def test_retention_removes_finished_recordings_and_keeps_their_audit_records(served, orthanc) -> None:
    """record.retention_days: a finished recording's result, reports and the stored copy keep_stored kept go; the
    chain keeps the records it had and adds the removal's. A DICOM file the PACS never took is not removed."""
    retention = {"retention_days": 4 / 86400}  # 4 s
    server = served({"pacs": to_orthanc(orthanc), "keep_stored": True, **retention})
    state = upload(server, PASSTHROUGH, "P-KEEP")
    rid, result = state["id"], state["result"]
    assert result["stored"] is True and Path(result["dicom"]).is_file()
    with server.client() as client:
        assert client.get(state["links"]["quality_html"]).status_code == 200  # written (answered once it is)
    gone(server, rid)
    assert not (server.spool / "recordings" / rid).exists() and list((server.spool / "dicom").iterdir()) == []
    check = audit.verify(server.audit, AUDIT_KEY.encode())
    assert check.ok, check.to_dict()
    records = audit.records(server.audit)
    assert [(r["command"], r["outcome"]) for r in records] == [("convert", "success"), ("pacs-store", "stored"),
                                                                ("serve-record", "expired")]
    assert records[-1]["recording"] == rid and records[-1]["earlier_records"] == [e["seq"] for e in result["audit"]]
    assert [e["sha256"] for e in result["audit"]] == [
        records[1]["prev"], records[2]["prev"]]  # the records the result named are still in the chain, unchanged

    unsent = served({**retention})  # no PACS: the DICOM file is the only copy
    state = upload(unsent, PASSTHROUGH, "P-UNSENT")
    kept = Path(state["result"]["dicom"])
    gone(unsent, state["id"])
    assert kept.is_file() and not (unsent.spool / "recordings" / state["id"]).exists()
    expired = audit.records(unsent.audit)[-1]
    assert expired["outcome"] == "expired" and str(kept) in expired["message"] and "kept" in expired["message"]


@pytest.mark.requirement("DVQA-REC-002")
def test_cors_answers_the_recorder_origin_only(served) -> None:
    recorder, viewer = "https://recorder.example.org", "https://viewer.example.org"
    server = served({"recorder_origin": recorder}, upstream="http://127.0.0.1:9/dicom-web")
    config = yaml.safe_load(server.config.read_text())
    server.config.write_text(yaml.safe_dump({**config, "cors_origins": [viewer]}))
    server.stop()
    server.start()

    def preflight(path: str, origin: str, method: str) -> httpx.Response:
        return httpx.options(server.url + path, headers={
            "Origin": origin, "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization,content-digest"})

    allowed = preflight("/recordings/" + "0" * 32 + "/chunks/0", recorder, "PUT")
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == recorder
    assert "content-digest" in allowed.headers["access-control-allow-headers"].lower()
    for origin in (viewer, "https://elsewhere.example.org"):
        refused = preflight("/recordings", origin, "POST")
        assert "access-control-allow-origin" not in refused.headers
    gateway = preflight("/dicom-web/studies", viewer, "GET")
    assert gateway.headers.get("access-control-allow-origin") == viewer
    assert "access-control-allow-origin" not in preflight("/dicom-web/studies", recorder, "GET").headers


def fake_camera(path: Path, frames: int, width: int = 320, height: int = 240, rate: int = 30) -> Path:
    """A Y4M file for Chromium's fake camera: every frame carries its number as a frame code (dvqa.video.framecode)
    over a moving texture, so each frame of the DICOM can be traced to the frame the camera gave."""
    import numpy as np

    from dvqa.video import framecode

    y, x = np.mgrid[0:height, 0:width]
    chroma = np.full((height // 2) * (width // 2), 128, np.uint8).tobytes()
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{rate}:1 Ip A1:1 C420jpeg\n".encode())
        for index in range(frames):
            luma = (60 + 40 * np.sin((x + 4 * index) / 9.0) * np.cos(y / 13.0)).astype(np.uint8)
            framecode.draw(luma, index)
            out.write(b"FRAME\n" + luma.tobytes() + chroma + chroma)
    return path


class Proxy:
    """A TCP proxy between the browser and the server that fails on command: it cuts the connection in the middle
    of the next chunk upload(s), flips a byte in the body of the next one(s), or is down (every connection closed
    as it opens, as a dropped network looks to the page)."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.down = False
        self.cut_puts = self.corrupt_puts = self.refused = 0
        self.open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.down:
                self.refused += 1
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:  # the server is down (killed, restarting)
                self.refused += 1
                client.close()
                continue
            upstream.settimeout(None)
            self.open += [client, upstream]
            threading.Thread(target=self._requests, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _requests(self, src: socket.socket, dst: socket.socket) -> None:
        flip = False
        try:
            while data := src.recv(65536):
                if data.startswith(b"PUT /recordings/") and self.cut_puts:
                    self.cut_puts -= 1
                    dst.sendall(data[:len(data) // 2])
                    break
                if data.startswith(b"PUT /recordings/") and self.corrupt_puts:
                    self.corrupt_puts -= 1
                    flip = True
                head, gap, body = data.partition(b"\r\n\r\n") if data.startswith(b"PUT ") else (b"", b"", data)
                if flip and body:
                    data, flip = head + gap + body[:-1] + bytes([body[-1] ^ 0xFF]), False
                dst.sendall(data)
        except OSError:
            pass
        self._close(src, dst)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        self._close(src, dst)

    @staticmethod
    def _close(*sockets: socket.socket) -> None:
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def drop_all(self) -> None:
        self._close(*self.open)
        self.open = []

    def close(self) -> None:
        self.listener.close()
        self.drop_all()


def record_in_chromium(url: str, camera: Path, seconds: float, during=None, after=None
                       ) -> tuple[dict, str, bytes, float]:
    """The recorder page at `url` records `seconds` from the fake camera (`during(elapsed)` is called about every
    0.1 s meanwhile), then Stop: (GET's last answer, the status line shown, the recording's bytes, seconds from
    Stop to the result shown). `after(browser)` is called once the result is shown."""
    from cdp import Browser

    with Browser("--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                 f"--use-file-for-fake-video-capture={camera}") as browser:
        browser.navigate(f"{url}/record")
        browser.wait_for("document.readyState === 'complete' && !!document.getElementById('start')")
        browser.evaluate(f"document.getElementById('token').value = {json.dumps(TOKEN)};"
                         "document.getElementById('patient_id').value = 'P-CHROMIUM';"
                         "document.getElementById('start').click(); true")
        browser.wait_for("window.dvqaRecorder.id && window.dvqaRecorder.chunks.length > 0", timeout=30)
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < seconds:
            if during:
                during(elapsed)
            time.sleep(0.1)
        browser.evaluate("document.getElementById('stop').click(); true")
        stopped = time.monotonic()
        browser.wait_for("window.dvqaRecorder.result || window.dvqaRecorder.error", timeout=180, every=0.1)
        shown = time.monotonic() - stopped
        state = browser.evaluate("window.dvqaRecorder.result")
        status = browser.evaluate("document.getElementById('status').textContent")
        recording = base64.b64decode(browser.evaluate(
            "(async () => { const b = new Uint8Array(await new Blob(window.dvqaRecorder.chunks).arrayBuffer());"
            " let s = ''; for (let i = 0; i < b.length; i += 0x8000)"
            " s += String.fromCharCode.apply(null, b.subarray(i, i + 0x8000)); return btoa(s); })()"))
        if after:
            after(browser)
    return state, status, recording, shown


def assert_every_frame_stored(state: dict, recording: bytes, orthanc: dict, folder: Path, seconds: float) -> None:
    """Every frame the browser recorded is in the DICOM Orthanc returns, in order, except those the result's timing
    map says were dropped."""
    from helpers import decoded_luma, source_codes

    result = state["result"]
    assert result["input"]["sha256"] == hashlib.sha256(recording).hexdigest()
    webm = folder / "recording.webm"
    webm.write_bytes(recording)
    recorded = source_codes(webm)
    assert None not in recorded and recorded == sorted(recorded) and len(recorded) >= seconds * 20
    es_in_orthanc(orthanc, result["uids"], folder)
    codes = [framecode.read(luma) for luma in decoded_luma(folder / "from-orthanc.dcm", "h264", folder)]
    assert None not in codes
    kept = [c for n, c in enumerate(codes) if n == 0 or c != codes[n - 1]]  # a duplicated output frame shows twice
    assert kept == sorted(kept)
    dropped = {recorded[i] for i in result["timing"]["dropped_source_frames"]}  # by the timing map, said in the result
    assert set(recorded) - set(kept) == dropped and set(kept) <= set(recorded)


@pytest.mark.requirement("DVQA-REC-001")
def test_the_recorder_page_in_chromium_with_a_fake_camera_reaches_orthanc(served, orthanc, tmp_path) -> None:
    seconds = 10
    camera = fake_camera(tmp_path / "camera.y4m", (seconds + 6) * 30)
    server = served({"pacs": to_orthanc(orthanc)})
    page = httpx.get(f"{server.url}/record")
    assert page.status_code == 200 and "MediaRecorder" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    opened: dict = {}

    def open_reports(browser) -> None:
        """Click each report link the page shows; it fetches with the token and opens what came as a blob: URL."""
        opened["links"] = browser.evaluate("[...document.querySelectorAll('#reports a')].map(a => "
                                           "[a.textContent, a.getAttribute('href')])")
        browser.evaluate("document.querySelectorAll('#reports a').forEach(a => a.click()); true")
        browser.wait_for("Object.keys(window.dvqaRecorder.opened).length === 3", timeout=60)
        opened["bodies"] = browser.evaluate(
            "(async () => { const o = {}; for (const [k, u] of Object.entries(window.dvqaRecorder.opened))"
            " o[k] = [u.url.slice(0, 5), await u.blob.text()]; return o; })()")

    state, status, recording, shown = record_in_chromium(server.url, camera, seconds, after=open_reports)
    result = state["result"]
    assert result["stored"] is True and status == "Stored in the PACS.", (status, result)
    base = f"/recordings/{state['id']}"
    assert opened["links"] == [["Quality report", f"{base}/quality.html"],
                               ["Quality report (JSON)", f"{base}/quality.json"], ["Audit records", f"{base}/audit"]]
    bodies = opened["bodies"]
    assert {scheme for scheme, _ in bodies.values()} == {"blob:"}
    assert "dvqa quality report" in bodies["quality_html"][1]
    assert json.loads(bodies["quality_json"][1])["output"]["sop_instance_uid"] == result["uids"]["instance"]
    assert [e["seq"] for e in json.loads(bodies["audit"][1])["records"]] == [e["seq"] for e in result["audit"]]
    print(f"recorder page: {len(recording)} bytes in {len(state['acknowledged'])} chunks; Stop -> 'Stored' shown in "
          f"{shown:.2f} s; end -> stored {result['end_to_stored_s']} s (server)")
    assert_every_frame_stored(state, recording, orthanc, tmp_path, seconds)


@pytest.mark.requirement("DVQA-REC-001")
def test_the_recorder_page_survives_cut_connections_a_damaged_chunk_a_dropped_network_and_a_killed_server(
        served, orthanc, tmp_path) -> None:
    seconds = 14
    camera = fake_camera(tmp_path / "camera.y4m", (seconds + 6) * 30)
    server = served({"pacs": to_orthanc(orthanc)})
    proxy = Proxy(server.port)
    done: set[str] = set()

    def faults(elapsed: float) -> None:
        if elapsed > 1.5 and "corrupt" not in done:
            done.add("corrupt")
            proxy.corrupt_puts = 1
        if elapsed > 3 and "cut" not in done:
            done.add("cut")
            proxy.cut_puts = 1
        if elapsed > 4.5 and "down" not in done:
            done.add("down")
            proxy.down = True
            proxy.drop_all()
        if elapsed > 7.5 and "up" not in done:
            done.add("up")
            proxy.down = False
        if elapsed > 8 and "kill" not in done:
            done.add("kill")
            server.kill()
            proxy.drop_all()
            server.start()  # the same spool and port: the page's retries reach it again

    try:
        state, status, recording, shown = record_in_chromium(f"http://127.0.0.1:{proxy.port}", camera, seconds, faults)
    finally:
        proxy.close()
    result = state["result"]
    assert result["stored"] is True and status == "Stored in the PACS.", (status, result)
    assert proxy.corrupt_puts == proxy.cut_puts == 0 and proxy.refused > 0  # each fault did happen
    log = server.log.read_text()
    damaged = re.findall(r"PUT /recordings/\w+/chunks/(\d+) 400 ", log)
    assert len(damaged) == 1 and re.search(rf"PUT /recordings/\w+/chunks/{damaged[0]} 20[01] ", log)  # sent again
    assert log.count("Started server process") == 2  # killed mid-recording, and started again
    print(f"recorder page with faults: Stop -> 'Stored' shown in {shown:.2f} s; {proxy.refused} connections refused")
    assert_every_frame_stored(state, recording, orthanc, tmp_path, seconds)


@pytest.mark.requirement("DVQA-REC-002")
def test_configuration_mistakes_are_named_before_the_server_listens(tmp_path) -> None:
    from dvqa.core.errors import UsageError
    from dvqa.serve.config import load

    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    cases = {
        "tokens_sha256: [" + TOKEN[:20] + "]": "not a SHA-256 digest",
        "tokenz: []": "unknown setting 'tokenz'",
        f"tokens_sha256: ['{digest}']\n  pacs: {{host: x}}": "give host and port",
        f"tokens_sha256: ['{digest}']\n  pacs: {{stow: 'http://h/dicom-web', host: h, port: 104}}": "not both",
        f"tokens_sha256: ['{digest}']\n  recorder_origin: https://app.example.org/page": "recorder_origin",
        f"tokens_sha256: ['{digest}']\n  max_recordings: 0": "max_recordings",
        f"tokens_sha256: ['{digest}']\n  retention_days: 0": "retention_days must be positive",
        f"tokens_sha256: ['{digest}']\n  scheduler: tcp://10.0.0.1:8786": "in clear text",
        f"tokens_sha256: ['{digest}']\n  scheduler: {{address: local:1, cert: x.pem}}": "local:N makes its own",
        f"tokens_sha256: ['{digest}']\n  spool_dir: spool\n  scheduler: {{address: tcp://10.0.0.1:8786, "
        "allow_clear_text: true}": "absolute paths",
    }
    cases["spool_dir: /tmp"] = "nothing to serve"  # no tokens (the API could let nobody in) and no upstream
    cases["scheduler: local:1"] = "recording ingestion is off"  # --scheduler would have nothing to send
    for body, words in cases.items():
        config = tmp_path / "serve.yaml"
        config.write_text("record:\n  " + body + "\n")
        with pytest.raises(UsageError, match=re.escape(words)):
            load(config, upstream=None if words == "nothing to serve" else "http://127.0.0.1:9/dicom-web")
    config.write_text(yaml.safe_dump({"record": {"tokens_sha256": [digest], "spool_dir": str(tmp_path / "spool"),
                                                 "audit": str(tmp_path / "a.jsonl"), "audit_key_env": "DVQA_NOT_SET"}}))
    started = subprocess.run([sys.executable, "-m", "dvqa", "serve", "--upstream", "http://127.0.0.1:9/dicom-web",
                              "--port", str(free_port()), "--config", str(config)], capture_output=True, text=True,
                             timeout=60, env={k: v for k, v in os.environ.items() if k != "DVQA_NOT_SET"})
    assert started.returncode == 2 and started.stderr.strip().splitlines() == [
        "dvqa: error: record.audit_key_env DVQA_NOT_SET: that variable is not set in dvqa serve's environment."]


def test_with_a_scheduler_ended_recordings_are_converted_on_a_dask_cluster_and_signed_here(served, orthanc,
                                                                                          tmp_path) -> None:
    """record.scheduler (`dvqa serve --scheduler`), with a TLS LocalCluster (local:1): nothing is converted while
    the recording arrives; after `end` a worker converts it (the same DICOM as the live path: same stream, same
    timing), the server validates and signs it (the key never goes to the worker), stores it, and appends the
    worker's record to its own chain."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from helpers import certificate

    ca_key, key = rsa.generate_private_key(65537, 2048), rsa.generate_private_key(65537, 2048)
    cert = certificate("dvqa test signer", key, "dvqa test CA", ca_key)
    (tmp_path / "signer.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                            serialization.PrivateFormat.TraditionalOpenSSL,
                                                            serialization.NoEncryption()))
    (tmp_path / "signer.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    server = served({"pacs": to_orthanc(orthanc), "scheduler": "local:1", "keep_stored": True,
                     "sign_key": str(tmp_path / "signer.key"), "sign_cert": str(tmp_path / "signer.crt")})
    reference = convert(PASSTHROUGH, tmp_path / "reference.dcm", ConvertOptions(quality=False))
    chunks = pieces(PASSTHROUGH)
    with server.client() as client:
        rid = client.post("/recordings", json={"patient_id": "P-DASK"}).json()["id"]
        for n, data in enumerate(chunks):
            assert put(client, rid, n, data).status_code == 201
        time.sleep(1)
        assert client.get(f"/recordings/{rid}").json()["conversion"] == "not started"  # no live conversion
        assert end(client, rid, chunks).status_code == 202
        state = finished(client, rid)
        report = client.get(state["links"]["quality_json"])
    result = state["result"]
    assert state["state"] == "done" and result["stored"] is True, result
    assert result["converted_on"].startswith("tls://127.0.0.1:")  # a Dask worker, over TLS
    assert result["passthrough"] is True and result["elementary_stream_sha256"] == reference.elementary_stream_sha256
    assert report.status_code == 200 and report.json()["output"]["sop_instance_uid"] == result["uids"]["instance"]
    ds = pydicom.dcmread(result["dicom"])  # the signature (FFFA,FFFA) follows Pixel Data
    assert ds.PatientID == "P-DASK" and ds.DigitalSignaturesSequence[0].DigitalSignatureUID == result["signature"][
        "uid"]
    assert audit.verify(server.audit, AUDIT_KEY.encode()).ok
    records = audit.records(server.audit)
    assert [(r["command"], r["outcome"]) for r in records] == [("convert", "success"), ("pacs-store", "stored")]
    assert records[0]["worker"] == result["converted_on"] and records[0]["signature_uid"] == result["signature"]["uid"]
    assert records[0]["output"]["sha256"] == hashlib.sha256(Path(result["dicom"]).read_bytes()).hexdigest()
    assert records[1]["input"]["sha256"] == records[0]["output"]["sha256"]
    assert result["validation"]["layers"]["stream"] == "ran"  # converted elsewhere and signed here: read again


def test_a_remote_tls_scheduler_converts_ended_recordings_and_a_stranger_ca_is_refused_at_start(served, orthanc,
                                                                                                  tmp_path) -> None:
    """record.scheduler as a site sets it for a cluster of its own: a real `dask scheduler` and `dask worker` on
    127.0.0.1 over TLS with the site's CA. The recording is converted by that worker (the same stream as a local
    conversion) and stored; a server given another CA's credentials does not start, and says why in one line."""
    from dask_cluster import dask_cluster, pki

    site, stranger = pki(tmp_path / "pki"), pki(tmp_path / "stranger")
    reference = convert(PASSTHROUGH, tmp_path / "reference.dcm", ConvertOptions(quality=False))
    chunks = pieces(PASSTHROUGH)
    with dask_cluster(tmp_path, site) as (address, _, worker, _):
        worker()
        reach = {"address": address, "ca": str(site["ca"]), "cert": str(site["cert"]), "key": str(site["key"])}
        server = served({"pacs": to_orthanc(orthanc), "scheduler": reach})
        with server.client() as client:
            rid = client.post("/recordings", json={"patient_id": "P-REMOTE"}).json()["id"]
            for n, data in enumerate(chunks):
                assert put(client, rid, n, data).status_code == 201
            assert end(client, rid, chunks).status_code == 202
            result = finished(client, rid)["result"]
        assert result["stored"] is True and result["converted_on"].startswith("tls://127.0.0.1:"), result
        assert result["elementary_stream_sha256"] == reference.elementary_stream_sha256
        assert [r["command"] for r in audit.records(server.audit)] == ["convert", "pacs-store"]

        foreign = {**reach, "ca": str(stranger["ca"]), "cert": str(stranger["cert"]), "key": str(stranger["key"]),
                   "worker_timeout_s": 5}
        config = tmp_path / "foreign.yaml"
        config.write_text(yaml.safe_dump({"record": {
            "tokens_sha256": [hashlib.sha256(TOKEN.encode()).hexdigest()], "spool_dir": str(tmp_path / "spool2"),
            "scheduler": foreign}}))
        refused = subprocess.run([sys.executable, "-m", "dvqa", "serve", "--port", str(free_port()), "--config",
                                  str(config)], capture_output=True, text=True, timeout=120)
    errors = [line for line in refused.stderr.splitlines() if line.startswith("dvqa: error:")]
    assert refused.returncode == 4 and len(errors) == 1 and "TLS" in errors[0], refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_recording_stored_by_stow_to_the_gateways_pacs_is_ready_for_its_first_viewer(served, orthanc) -> None:
    """With the gateway's upstream as the recordings' STOW-RS target, the ingest process prepares the gateway
    cache (dvqa.serve.prewarm) before it removes the stored file: the header with its transfer syntax and the
    playable MP4 are there before any viewer asks, and the gateway answers from them."""
    from dvqa.serve import entries
    root = f"{orthanc['http']}/dicom-web"
    server = served({"pacs": {"stow": root, "retries": 0}}, upstream=root)
    chunks = pieces(PASSTHROUGH)
    with server.client() as client:
        created = client.post("/recordings", json={"patient_name": "Doe^Jane", "patient_id": "P-31"})
        assert created.status_code == 201, created.text
        rid = created.json()["id"]
        for n, data in enumerate(chunks):
            assert put(client, rid, n, data).status_code == 201
        assert end(client, rid, chunks).status_code == 202
        result = finished(client, rid)["result"]
        assert result["stored"] is True, result
        uids = result["uids"]
        header = server.folder / "cache" / f"{entries.header_key(uids['instance'])}.json"
        deadline = time.monotonic() + 30  # written after the client has its result, before the file is removed
        while not header.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert header.exists()
        assert (server.folder / "cache" / f"{entries.progressive_key(uids['instance'])}.mp4").exists()
        rendered = client.get(f"/dicom-web/studies/{uids['study']}/series/{uids['series']}/instances/"
                              f"{uids['instance']}/rendered", headers={"Accept": "video/mp4"})
    assert rendered.status_code == 200 and rendered.headers["content-type"] == "video/mp4"
    assert rendered.content[4:8] == b"ftyp"
