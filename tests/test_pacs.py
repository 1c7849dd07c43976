"""`dvqa pacs`: real servers on 127.0.0.1, started and stopped here - Orthanc, and DCMTK's storescp
configured as a PACS that takes only JPEG video."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pydicom
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bench import orthanc as orthanc_server
from dvqa.pacs import network as pacs
from dvqa.trust.audit import records
from dvqa.convert.pipeline import ConvertOptions, convert
from dvqa.dicom.dicomfile import read_fragments
from helpers import CLIPS, big_copy, bytes_read, certificate, dvqa, run, tool

SCHEMA = Path(__file__).resolve().parent / "data" / "dicom-audit-message.rnc"

# every transfer syntax dvqa writes (HEVC Main 10 is refused by convert: the VL IODs are 8-bit)
SYNTAXES = ["h264-high-4.1", "h264-high-4.2", "h264-bd-4.1", "hevc-main", "mpeg2-mp-ml", "mpeg2-mp-hl", "mjpeg"]


_free_port, _wait_for_port = orthanc_server.free_port, orthanc_server.wait_for_port


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("send")
    return {s: convert(CLIPS / "h264_cfr_high.mkv", d / f"{s}.dcm", ConvertOptions(syntax=s, quality=False)).output
            for s in SYNTAXES}



def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


@pytest.mark.requirement("DVQA-PACS-001")
def test_echo_and_store_every_syntax_to_orthanc_and_read_it_back(orthanc, files, tmp_path: Path) -> None:
    port = str(orthanc["port"])
    echo = dvqa("pacs", "echo", "--port", port, "--called-aet", "ORTHANC")
    assert echo.returncode == 0 and "OK       C-ECHO ORTHANC@127.0.0.1" in echo.stdout
    proc = dvqa("pacs", "store", *map(str, files.values()), "--port", port, "--called-aet", "ORTHANC",
                "--format", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [r["outcome"] for r in json.loads(proc.stdout)] == ["stored"] * len(files)
    stored = {}
    for instance in json.loads(_get(f"{orthanc['http']}/instances")):
        back = tmp_path / f"{instance}.dcm"
        back.write_bytes(_get(f"{orthanc['http']}/instances/{instance}/file"))
        stored[str(pydicom.dcmread(str(back), stop_before_pixels=True).SOPInstanceUID)] = back
    for syntax, sent in files.items():  # Orthanc 1.10 keeps each video byte for byte, in its syntax
        ds = pydicom.dcmread(str(sent), stop_before_pixels=True)
        back = stored[str(ds.SOPInstanceUID)]
        assert pydicom.dcmread(str(back), stop_before_pixels=True).file_meta.TransferSyntaxUID == \
            ds.file_meta.TransferSyntaxUID, syntax
        assert list(read_fragments(back)) == list(read_fragments(sent)), syntax


def test_wrong_called_ae_title_is_a_clear_environment_error(orthanc) -> None:
    proc = dvqa("pacs", "echo", "--port", str(orthanc["port"]), "--called-aet", "NOT-ORTHANC")
    assert proc.returncode == 4 and "association was rejected" in proc.stderr and "Traceback" not in proc.stderr


@pytest.fixture()
def launch():
    """Start a server process and wait for its port; whatever a test started is stopped after it."""
    started: list[subprocess.Popen] = []

    def start(command: list[str], port: int, what: str) -> subprocess.Popen:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(process)
        _wait_for_port(port, process, what)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.terminate()
            process.wait(30)


@pytest.fixture()
def jpeg_only_pacs(launch, tmp_path: Path):
    """DCMTK storescp accepting Video Endoscopic Image Storage in JPEG Baseline only."""
    exe = tool("storescp")
    config = tmp_path / "storescp.cfg"
    config.write_text("[[TransferSyntaxes]]\n[JPEGOnly]\nTransferSyntax1 = 1.2.840.10008.1.2.4.50\n\n"
                      "[[PresentationContexts]]\n[VideoJPEG]\n"
                      "PresentationContext1 = 1.2.840.10008.5.1.4.1.1.77.1.1.1\\JPEGOnly\n\n"
                      "[[Profiles]]\n[JPEGVideo]\nPresentationContexts = VideoJPEG\n")
    out = tmp_path / "received"
    out.mkdir()
    port = _free_port()
    launch([exe, "-xf", str(config), "JPEGVideo", "-od", str(out), "-aet", "STORESCP", str(port)], port, "storescp")
    return {"port": port, "out": out}


@pytest.mark.requirement("DVQA-PACS-002")
def test_a_pacs_that_refuses_video_says_what_it_refused(jpeg_only_pacs, files, tmp_path: Path) -> None:
    before = {p: p.read_bytes() for p in (files["h264-high-4.1"], files["mjpeg"])}
    log = tmp_path / "audit.jsonl"
    proc = dvqa("pacs", "store", str(files["h264-high-4.1"]), str(files["mjpeg"]), "--port",
                str(jpeg_only_pacs["port"]), "--called-aet", "STORESCP", "--audit", str(log))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("rejected") and "MPEG-4 AVC/H.264 High Profile / Level 4.1" in lines[0]
    assert "dvqa proposed Video Endoscopic Image Storage (1.2.840.10008.5.1.4.1.1.77.1.1.1) in MPEG-4 AVC/H.264" \
        in lines[0] and "the PACS refused that presentation context (transfer syntax not supported)" in lines[0]
    assert lines[1].startswith("stored")
    # the refusal of a file says the same whatever else was in the batch (here: the JPEG the PACS took)
    alone = dvqa("pacs", "store", str(files["h264-high-4.1"]), "--port", str(jpeg_only_pacs["port"]),
                 "--called-aet", "STORESCP")
    assert alone.returncode == 1 and alone.stdout.splitlines()[0] == lines[0]
    assert len(list(jpeg_only_pacs["out"].iterdir())) == 1  # the JPEG one arrived
    assert all(p.read_bytes() == data for p, data in before.items())  # nothing local moved or changed
    # the audit trail says what happened to each file, and exports as DICOM Instances Transferred
    refused, sent = records(log)
    assert (refused["outcome"], refused["exit_code"], sent["outcome"]) == ("rejected", 1, "stored")
    assert refused["destination"].startswith("STORESCP@127.0.0.1") and refused["input"]["sha256"]
    assert dvqa("audit", "verify", str(log)).returncode == 0
    assert dvqa("audit", "export", str(log), "-o", str(tmp_path / "atna")).returncode == 0
    for message in sorted((tmp_path / "atna").iterdir()):
        check = run(tool("jing"), "-c", str(SCHEMA), str(message))
        assert check.returncode == 0, check.stdout
        assert 'csd-code="110104"' in message.read_text() and 'csd-code="110152"' in message.read_text()


@pytest.mark.requirement("DVQA-PACS-002")
def test_unreachable_pacs_is_retried_then_exit_4(files) -> None:
    port = _free_port()  # nothing listens here
    started = time.monotonic()
    proc = dvqa("pacs", "store", str(files["mjpeg"]), "--port", str(port), "--retries", "2", "--timeout", "2",
                "--format", "json")
    elapsed = time.monotonic() - started
    assert proc.returncode == 4, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)[0]
    assert result["outcome"] == "failed" and result["attempts"] == 3 and "no DICOM association" in result["message"]
    assert elapsed >= 3.0  # backoff 1 s + 2 s between the three attempts
    assert files["mjpeg"].exists()


@pytest.mark.requirement("DVQA-PACS-001")
def test_stow_rs_to_orthanc_dicomweb(orthanc, files, tmp_path: Path) -> None:
    proc = dvqa("pacs", "store", *map(str, files.values()), "--stow", f"{orthanc['http']}/dicom-web",
                "--format", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(proc.stdout)
    assert [r["outcome"] for r in results] == ["stored"] * len(files)
    assert all("/dicom-web/studies/" in r["message"] for r in results)  # the RetrieveURL Orthanc gave
    unreachable = dvqa("pacs", "store", str(files["mjpeg"]), "--stow", f"http://127.0.0.1:{_free_port()}/dicom-web",
                       "--retries", "0")
    assert unreachable.returncode == 4 and "cannot connect" in unreachable.stdout


@pytest.mark.requirement("DVQA-PACS-001")
def test_storage_commitment_with_orthanc(orthanc, files) -> None:
    proc = dvqa("pacs", "store", str(files["mjpeg"]), str(files["hevc-main"]), "--port", str(orthanc["port"]),
                "--called-aet", "ORTHANC", "--commit", "--listen-port", str(orthanc["listen"]),
                "--commit-wait", "30", "--format", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [r["outcome"] for r in json.loads(proc.stdout)] == ["committed", "committed"]
    # a file the PACS lost between store and commitment is reported, not assumed archived
    peer = pacs.Peer("127.0.0.1", orthanc["port"], "ORTHANC", "DVQA", 30)
    results = pacs.store(peer, [files["h264-high-4.2"]])
    assert results[0].outcome == "stored"
    found = json.loads(_post(f"{orthanc['http']}/tools/find",
                             {"Level": "Instance", "Query": {"SOPInstanceUID": results[0].sop_instance}}))
    urllib.request.urlopen(urllib.request.Request(f"{orthanc['http']}/instances/{found[0]}", method="DELETE"))
    pacs.commit(peer, results, ("127.0.0.1", orthanc["listen"]), wait=30)
    assert results[0].outcome == "not committed" and "0x0112" in results[0].message  # no such instance
    missing = dvqa("pacs", "store", str(files["mjpeg"]), "--port", str(orthanc["port"]), "--called-aet", "ORTHANC",
                   "--commit")
    assert missing.returncode == 2 and "--listen-port" in missing.stderr


def _post(url: str, body: dict) -> bytes:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read()


def test_compatibility_matrix_measured_and_documented(orthanc, jpeg_only_pacs, tmp_path: Path) -> None:
    out = tmp_path / "matrix"
    proc = dvqa("pacs", "matrix",
                "--target", f"Orthanc=ORTHANC@127.0.0.1:{orthanc['port']},wado={orthanc['http']}/dicom-web,get",
                "--target", f"JPEG only=STORESCP@127.0.0.1:{jpeg_only_pacs['port']}",
                "--pacs-profile", "dcm4chee-arc", "--pacs-profile", "ge-centricity",
                "--iod", "endoscopic", "--syntax", "h264-high-4.1", "--syntax", "hevc-main", "--syntax", "mjpeg",
                "-o", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    made = json.loads((out / "matrix.json").read_text())
    assert made["pynetdicom"] and made["measured"].startswith(time.strftime("%Y-", time.gmtime()))
    cells = {(c["target"], c["syntax"]): c for c in made["cells"]}
    for syntax in ("h264-high-4.1", "hevc-main", "mjpeg"):  # read back both ways, byte for byte
        cell = cells[("Orthanc", syntax)]
        assert (cell["outcome"], cell["evidence"]) == ("stored", "measured")
        assert cell["retrieved"] == "identical (WADO-RS, C-GET)", cell
    assert cells[("JPEG only", "h264-high-4.1")]["outcome"] == "rejected"
    assert (cells[("JPEG only", "mjpeg")]["outcome"], cells[("JPEG only", "mjpeg")]["retrieved"]) == \
        ("stored", "not retrieved")
    # documented rows: dcm4chee's statement lists H.264 High Profile 4.1 and JPEG for video, not HEVC
    dcm4chee = "dcm4chee-arc-light (dcm4che Archive 5)"
    assert [cells[(dcm4chee, s)]["outcome"] for s in ("h264-high-4.1", "hevc-main", "mjpeg")] == \
        ["stored", "rejected", "stored"]
    assert {cells[(dcm4chee, s)]["evidence"] for s in ("h264-high-4.1", "mjpeg")} == {"conformance statement"}
    assert cells[("GE Centricity PACS", "mjpeg")]["outcome"] == "unknown"
    markdown = (out / "matrix.md").read_text()
    assert "| h264-high-4.1 (1.2.840.10008.1.2.4.102) | stored, identical (WADO-RS, C-GET) |" in markdown
    assert "| h264-high-4.1 (1.2.840.10008.1.2.4.102) | rejected |" in markdown
    assert "| hevc-main (1.2.840.10008.1.2.4.107) | refused |" in markdown  # documented: worded apart
    # what answered, read from the server (DCMTK inside both Orthanc and storescp), not from the name given
    assert markdown.count("**Measured** against a running server: on the wire it names its implementation "
                          "`OFFIS_DCMTK_") == 2, markdown
    assert "**From documents (conformance statement)**, not measured" in markdown and "**Unknown**" in markdown
    assert "| GE Centricity PACS | none found | unknown | unknown | unknown |" in markdown
    html = (out / "matrix.html").read_text()
    assert '<td class="rejected"' in html and '<table class="documented">' in html
    assert "`" not in html and "<code>dvqa pacs simulate</code>" in html  # Markdown's marks rendered, not shown
    assert "<strong>Measured</strong> against a running server: on the wire it names its implementation " \
           "<code>OFFIS_DCMTK_" in html
    assert dvqa("pacs", "matrix", "-o", str(out)).returncode == 2  # nothing to test


@pytest.mark.requirement("DVQA-PACS-002")
def test_fallback_sends_a_converted_copy_when_video_is_refused(jpeg_only_pacs, files, tmp_path: Path) -> None:
    original = files["h264-high-4.1"]
    before = original.read_bytes()
    kept = tmp_path / "fallbacks"
    log = tmp_path / "audit.jsonl"
    proc = dvqa("pacs", "store", str(original), "--port", str(jpeg_only_pacs["port"]), "--called-aet", "STORESCP",
                "--fallback", "mjpeg", "--fallback-dir", str(kept), "--audit", str(log), "--format", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr  # delivered, as its fallback copy
    result = json.loads(proc.stdout)[0]
    assert result["outcome"] == "rejected" and "(transfer syntax not supported)" in result["message"]
    fallback = result["fallback"]
    assert fallback["outcome"] == "stored" and fallback["transfer_syntax"] == "1.2.840.10008.1.2.4.50"
    assert fallback["psnr_y_mean"] > 35  # measured against the decoded original
    copy = pydicom.dcmread(fallback["path"], stop_before_pixels=True)
    first = pydicom.dcmread(str(original), stop_before_pixels=True)
    assert (copy.StudyInstanceUID, copy.SeriesInstanceUID) == (first.StudyInstanceUID, first.SeriesInstanceUID)
    assert copy.SOPInstanceUID != first.SOPInstanceUID and copy.NumberOfFrames == first.NumberOfFrames
    received = list(jpeg_only_pacs["out"].iterdir())
    assert len(received) == 1 and pydicom.dcmread(str(received[0])).SOPInstanceUID == copy.SOPInstanceUID
    assert original.read_bytes() == before
    assert records(log)[0]["fallback"]["sop_instance"] == copy.SOPInstanceUID


VIDEO_ENDOSCOPIC = "1.2.840.10008.5.1.4.1.1.77.1.1.1"


@pytest.fixture()
def simulated(launch, files, tmp_path: Path):
    """`dvqa pacs simulate` in its own process, one fault at a time."""
    def start(fault: str, profile: str | None = None) -> int:
        port = _free_port()
        accept = ["--pacs-profile", profile] if profile else \
            ["--accept", f"{VIDEO_ENDOSCOPIC}=1.2.840.10008.1.2.4.102,1.2.840.10008.1.2.4.50"]
        launch([sys.executable, "-m", "dvqa", "pacs", "simulate", "--port", str(port), "--fault", fault, *accept,
                "--store-dir", str(tmp_path / (profile or fault))], port, "dvqa pacs simulate")
        return port

    return start


def test_faults_out_of_resources_abort_and_silence(simulated, files, tmp_path: Path) -> None:
    sent = str(files["h264-high-4.1"])
    ok = dvqa("pacs", "store", sent, "--port", str(simulated("none")), "--called-aet", "SIMULATED")
    assert ok.returncode == 0 and len(list((tmp_path / "none").iterdir())) == 1
    full = dvqa("pacs", "store", sent, "--port", str(simulated("out-of-resources")), "--format", "json")
    result = json.loads(full.stdout)[0]
    assert full.returncode == 1 and result["status"] == 0xA700 and "out of resources" in result["message"]
    assert result["attempts"] == 1  # an answer is not retried
    aborted = dvqa("pacs", "store", sent, "--port", str(simulated("abort")), "--retries", "1", "--format", "json")
    result = json.loads(aborted.stdout)[0]
    assert aborted.returncode == 4 and result["outcome"] == "failed" and result["attempts"] == 2
    assert len(result["history"]) == 2 and all("aborted during the transfer" in h for h in result["history"])
    started = time.monotonic()
    silent = dvqa("pacs", "store", sent, "--port", str(simulated("silent")), "--retries", "0", "--timeout", "3",
                  "--format", "json")
    assert silent.returncode == 4 and time.monotonic() - started < 60
    result = json.loads(silent.stdout)[0]
    assert result["outcome"] == "failed" and "no progress or answer for 3 s" in result["message"]
    assert Path(sent).exists()


NAMED_SYSTEMS = {"philips-intellispace", "ge-centricity", "siemens-syngo-plaza", "fujifilm-synapse", "agfa-impax",
                 "dcm4chee-arc", "conquest", "clearcanvas", "google-cloud-healthcare", "aws-healthimaging",
                 "azure-dicom-service"}


def test_every_named_pacs_has_a_profile_with_sources_or_says_unknown() -> None:
    proc = dvqa("pacs", "profiles", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    listed = {p["id"]: p for p in json.loads(proc.stdout)}
    assert NAMED_SYSTEMS <= set(listed)
    for p in listed.values():
        if p["transfer_syntaxes"] == "unknown":
            assert p["evidence"] in ("none found", "conformance statement") and p["notes"], p["id"]
            continue
        assert p["sources"], p["id"]  # a documented list always names where it comes from, dated or saying why not
        assert all(s["title"] and s["where"] and s["dated"] and s["read"] and s["says"] for s in p["sources"])
    text = dvqa("pacs", "profiles").stdout
    assert "conquest                 default configuration  mjpeg" in text


def test_simulated_profiles_accept_exactly_what_their_documents_say(simulated, files) -> None:
    def outcomes(port: int) -> list[str]:
        proc = dvqa("pacs", "store", *(str(files[s]) for s in SYNTAXES), "--port", str(port),
                    "--called-aet", "SIMULATED", "--format", "json")
        return [r["outcome"] for r in json.loads(proc.stdout)]

    # SYNTAXES: h264-high-4.1, h264-high-4.2, h264-bd-4.1, hevc-main, mpeg2-mp-ml, mpeg2-mp-hl, mjpeg
    assert outcomes(simulated("none", "dcm4chee-arc")) == \
        ["stored", "rejected", "stored", "rejected", "stored", "stored", "stored"]
    assert outcomes(simulated("none", "conquest")) == ["rejected"] * 6 + ["stored"]
    assert outcomes(simulated("none", "aws-healthimaging")) == ["stored"] * 7
    unknown = dvqa("pacs", "simulate", "--port", str(_free_port()), "--pacs-profile", "ge-centricity")
    assert unknown.returncode == 2 and "nothing to simulate" in unknown.stderr and "Traceback" not in unknown.stderr


@pytest.fixture(scope="module")
def tls_pki(tmp_path_factory) -> dict[str, Path]:
    """A site CA with a server and a client certificate for 127.0.0.1, and a stranger CA."""
    d = tmp_path_factory.mktemp("tls")
    ca_key, other_key, server_key, client_key = (rsa.generate_private_key(65537, 2048) for _ in range(4))
    pem = serialization.Encoding.PEM
    made = {"ca": certificate("dvqa site CA", ca_key, "dvqa site CA", ca_key, ca=True),
            "other_ca": certificate("another CA", other_key, "another CA", other_key, ca=True),
            "server": certificate("pacs.test", server_key, "dvqa site CA", ca_key, ip="127.0.0.1"),
            "client": certificate("dvqa workstation", client_key, "dvqa site CA", ca_key, ip="127.0.0.1")}
    paths = {}
    for name, cert in made.items():
        paths[name] = d / f"{name}.pem"
        paths[name].write_bytes(cert.public_bytes(pem))
    for name, key in (("server_key", server_key), ("client_key", client_key)):
        paths[name] = d / f"{name}.pem"
        paths[name].write_bytes(key.private_bytes(pem, serialization.PrivateFormat.TraditionalOpenSSL,
                                                  serialization.NoEncryption()))
    return paths


@pytest.fixture()
def tls_storescp(launch, tls_pki, tmp_path: Path):
    """DCMTK storescp over TLS, requiring a client certificate from the site CA (its default, -rc)."""
    exe = tool("storescp")
    out = tmp_path / "received-tls"
    out.mkdir()
    port = _free_port()
    launch([exe, "+tls", str(tls_pki["server_key"]), str(tls_pki["server"]), "-pw", "+cf", str(tls_pki["ca"]), "+xa",
            "-od", str(out), "-aet", "TLSSCP", str(port)], port, "storescp +tls")
    return {"port": port, "out": out}


def test_tls_echo_and_store_with_a_client_certificate(tls_storescp, tls_pki, files) -> None:
    peer = ["--port", str(tls_storescp["port"]), "--called-aet", "TLSSCP"]
    mine = ["--tls-ca", str(tls_pki["ca"]), "--tls-cert", str(tls_pki["client"]), "--tls-key", str(tls_pki["client_key"])]
    echo = dvqa("pacs", "echo", *peer, *mine)
    assert echo.returncode == 0 and "TLSSCP@127.0.0.1" in echo.stdout and "(TLS)" in echo.stdout, echo.stderr
    stored = dvqa("pacs", "store", str(files["h264-high-4.1"]), *peer, *mine)
    assert stored.returncode == 0, stored.stdout + stored.stderr
    received = list(tls_storescp["out"].iterdir())
    assert len(received) == 1 and list(read_fragments(received[0])) == list(read_fragments(files["h264-high-4.1"]))
    # the PACS's certificate is not from the CA dvqa trusts: refused before any DICOM is sent
    stranger = dvqa("pacs", "echo", *peer, "--tls-ca", str(tls_pki["other_ca"]), "--tls-cert",
                    str(tls_pki["client"]), "--tls-key", str(tls_pki["client_key"]))
    assert stranger.returncode == 4 and "TLS handshake failed" in stranger.stderr
    assert "certificate verify failed" in stranger.stderr and "Traceback" not in stranger.stderr
    # the PACS requires a client certificate and dvqa has none
    anonymous = dvqa("pacs", "echo", *peer, "--tls-ca", str(tls_pki["ca"]))
    assert anonymous.returncode == 4 and "TLS handshake failed" in anonymous.stderr and "--tls-cert" in anonymous.stderr
    plain = dvqa("pacs", "echo", *peer, "--timeout", "5")
    assert plain.returncode == 4 and "Traceback" not in plain.stderr
    assert len(list(tls_storescp["out"].iterdir())) == 1
    unreadable = dvqa("pacs", "echo", *peer, "--tls-ca", str(files["mjpeg"]))
    assert unreadable.returncode == 2 and "--tls-ca" in unreadable.stderr


def _kill_mid_transfer(server: subprocess.Popen, sender: subprocess.Popen) -> None:
    """SIGKILL the PACS once 25 MB of the 250 MB file have arrived: no A-ABORT, no answer, just gone."""
    baseline = bytes_read(server.pid)
    deadline = time.monotonic() + 120
    while bytes_read(server.pid) - baseline < 25 * 1024 * 1024:
        assert time.monotonic() < deadline and sender.poll() is None, "the transfer never got going"
        time.sleep(0.02)
    server.kill()
    server.wait(30)


def _storescp(launch, port: int, out: Path) -> subprocess.Popen:
    return launch([tool("storescp"), "+xa", "-od", str(out), "-aet", "STORESCP", str(port)], port, "storescp")


@pytest.mark.requirement("DVQA-PACS-002")
def test_pacs_stopped_mid_transfer_then_back_loses_nothing(launch, files, tmp_path: Path) -> None:
    big = big_copy(files["h264-high-4.1"], tmp_path / "big.dcm", 250)
    digest = hashlib.sha256(big.read_bytes()).hexdigest()
    port, first, second = _free_port(), tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    server = _storescp(launch, port, first)
    log = tmp_path / "audit.jsonl"
    sender = subprocess.Popen([sys.executable, "-m", "dvqa", "pacs", "store", str(big), "--port", str(port),
                               "--called-aet", "STORESCP", "--retries", "2", "--audit", str(log), "--format", "json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _kill_mid_transfer(server, sender)
    _storescp(launch, port, second)  # and comes back before dvqa's first retry (1 s backoff)
    stdout, stderr = sender.communicate(timeout=240)
    assert sender.returncode == 0, stdout + stderr
    result = json.loads(stdout)[0]
    assert (result["outcome"], result["attempts"]) == ("stored", 2)
    assert "aborted during the transfer" in result["history"][0] and result["history"][1] == "attempt 2: stored"
    received = list(second.iterdir())
    assert len(received) == 1 and list(read_fragments(received[0])) == list(read_fragments(big))
    assert hashlib.sha256(big.read_bytes()).hexdigest() == digest  # the local file is untouched
    record = records(log)[0]
    assert (record["outcome"], record["attempts"], record["exit_code"]) == ("stored", 2, 0)
    assert record["history"] == result["history"]


def test_pacs_stopped_mid_transfer_for_good_is_exit_4(launch, files, tmp_path: Path) -> None:
    big = big_copy(files["h264-high-4.1"], tmp_path / "big.dcm", 250)
    port = _free_port()
    (tmp_path / "in").mkdir()
    server = _storescp(launch, port, tmp_path / "in")
    sender = subprocess.Popen([sys.executable, "-m", "dvqa", "pacs", "store", str(big), "--port", str(port),
                               "--called-aet", "STORESCP", "--retries", "1", "--format", "json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _kill_mid_transfer(server, sender)
    stdout, stderr = sender.communicate(timeout=240)
    assert sender.returncode == 4 and "Traceback" not in stderr, stdout + stderr
    result = json.loads(stdout)[0]
    assert result["outcome"] == "failed" and result["attempts"] == 2
    assert "aborted during the transfer" in result["history"][0]
    assert "cannot connect" in result["history"][1] and big.exists()


@pytest.fixture()
def https_proxy(launch, tls_pki, tmp_path: Path):
    """socat terminating TLS (the site's server certificate) and forwarding to a plain HTTP port."""
    exe = tool("socat")
    pem = tmp_path / "proxy.pem"
    pem.write_bytes(tls_pki["server"].read_bytes() + tls_pki["server_key"].read_bytes())

    def start(http_port: int) -> int:
        port = _free_port()
        launch([exe, f"OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={pem},verify=0",
                f"TCP:127.0.0.1:{http_port}"], port, "socat")
        return port

    return start


@pytest.fixture()
def tls_orthanc(tls_pki, tmp_path: Path):
    """Orthanc speaking DICOM over TLS only (its server certificate from the site CA, client certificates
    required), and delivering storage commitment reports to dvqa over TLS as well."""
    exe = tool("Orthanc")
    if not Path(orthanc_server.DICOMWEB_PLUGIN).exists():
        tool("orthanc-dicomweb")
    with orthanc_server.running(tmp_path, exe,
                                tls=(tls_pki["server"], tls_pki["server_key"], tls_pki["ca"])) as server:
        yield server


@pytest.mark.requirement("DVQA-PACS-001")
def test_orthanc_over_tls_store_commit_c_get_and_https_stow(tls_orthanc, tls_pki, https_proxy, files,
                                                             tmp_path: Path) -> None:
    peer = ["--port", str(tls_orthanc["port"]), "--called-aet", "ORTHANC"]
    mine = ["--tls-ca", str(tls_pki["ca"]), "--tls-cert", str(tls_pki["client"]), "--tls-key", str(tls_pki["client_key"])]
    stored = dvqa("pacs", "store", str(files["h264-high-4.1"]), *peer, *mine, "--commit", "--listen-port",
                  str(tls_orthanc["listen"]), "--commit-wait", "30", "--format", "json")
    assert stored.returncode == 0, stored.stdout + stored.stderr
    assert json.loads(stored.stdout)[0]["outcome"] == "committed"  # the report came back over TLS too
    out = tmp_path / "matrix"
    matrix = dvqa("pacs", "matrix", "--target", f"Orthanc TLS=ORTHANC@127.0.0.1:{tls_orthanc['port']},get", *mine,
                  "--iod", "endoscopic", "--syntax", "hevc-main", "-o", str(out))
    assert matrix.returncode == 0, matrix.stdout + matrix.stderr
    cell = json.loads((out / "matrix.json").read_text())["cells"][0]
    assert (cell["outcome"], cell["retrieved"]) == ("stored", "identical (C-GET)")
    plain = dvqa("pacs", "echo", *peer, "--timeout", "5")
    assert plain.returncode == 4 and "add --tls" in plain.stderr
    # STOW-RS over HTTPS, through socat terminating TLS in front of Orthanc's DICOMweb (a reverse proxy, as
    # sites run it): the server's certificate is checked against the site CA; a failure is not retried
    stow = f"https://127.0.0.1:{https_proxy(tls_orthanc['http_port'])}/dicom-web"
    https = dvqa("pacs", "store", str(files["mjpeg"]), "--stow", stow, "--tls-ca", str(tls_pki["ca"]), "--format",
                 "json")
    assert https.returncode == 0 and json.loads(https.stdout)[0]["outcome"] == "stored", https.stdout + https.stderr
    untrusted = dvqa("pacs", "store", str(files["mjpeg"]), "--stow", stow, "--retries", "3", "--format", "json")
    result = json.loads(untrusted.stdout)[0]
    assert untrusted.returncode == 4 and result["attempts"] == 1 and "certificate verify failed" in result["message"]
    assert len(result["history"]) == 1 and result["history"][0].startswith("attempt 1: failed - ")
    plain_url = dvqa("pacs", "store", str(files["mjpeg"]), "--stow", stow.replace("https", "http"), "--tls-ca",
                     str(tls_pki["ca"]))
    assert plain_url.returncode == 2 and "need an https:// URL" in plain_url.stderr
    no_cert = dvqa("pacs", "store", str(files["mjpeg"]), *peer, "--tls-ca", str(tls_pki["ca"]), "--commit",
                   "--listen-port", str(tls_orthanc["listen"]))
    assert no_cert.returncode == 2 and "--commit over TLS needs --tls-cert" in no_cert.stderr


@pytest.mark.requirement("DVQA-PACS-002")
def test_simulate_accept_takes_syntax_and_iod_names_like_every_other_option() -> None:
    from dvqa.cli.pacs import _accepted
    from dvqa.core.errors import UsageError

    assert _accepted("endoscopic=h264-high-4.1,mjpeg") == (
        "1.2.840.10008.5.1.4.1.1.77.1.1.1", ["1.2.840.10008.1.2.4.102", "1.2.840.10008.1.2.4.50"])
    assert _accepted("1.2.840.10008.5.1.4.1.1.77.1.1.1=1.2.840.10008.1.2.1") == (
        "1.2.840.10008.5.1.4.1.1.77.1.1.1", ["1.2.840.10008.1.2.1"])  # any UID still goes (a non-video syntax)
    for bad, said in (("endoscopic", "write SOP=TS"), ("endoscopy=mjpeg", "neither a video IOD"),
                      ("endoscopic=h265", "neither a transfer syntax name")):
        with pytest.raises(UsageError, match=said):
            _accepted(bad)
    proc = dvqa("pacs", "simulate", "--port", "0", "--accept", "endoscopic=h265")
    assert proc.returncode == 2 and "'h265' is neither a transfer syntax name (h264-high-4.1" in proc.stderr


def test_audit_export_format_help_says_what_the_format_is() -> None:
    proc = dvqa("audit", "export", "--help")
    text = " ".join(proc.stdout.split())
    assert proc.returncode == 0 and "a DICOM Audit Message (PS3.15 A.5" in text and "IHE ATNA" in text
