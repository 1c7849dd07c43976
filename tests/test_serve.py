"""`dvqa serve`: the DICOMweb video gateway as a real server process in front of a real Orthanc (with its
DICOMweb plugin) on 127.0.0.1, and in front of small fake upstreams that misbehave on purpose."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import av
import httpx
import pydicom
import pytest
from pydicom.encaps import encapsulate
from PIL import Image

from bench import orthanc as orthanc_server
from bench import viewer_matrix
from dvqa.convert.pipeline import ConvertOptions, convert
from dvqa.dicom import syntaxes
from dvqa.serve import gateway as gateway_module
from dvqa.serve import metadata, remux
import viewer
from cdp import Browser
from helpers import (CLIPS, PEM, RECORDED, certificate, decoded_luma, pem_key, stream_bytes, tool,
                     write_pki)

free_port, wait_for_port = orthanc_server.free_port, orthanc_server.wait_for_port

# (name, source clip, transfer syntax, IOD): every IOD, both H.264 syntaxes, passthrough (with B-pictures)
# and re-encoded streams, a Chromium recording, and one HEVC and one MPEG-2 instance
CASES = [
    ("endo-41", CLIPS / "h264_cfr_high.mkv", "h264-high-4.1", "endoscopic"),
    ("micro-42", CLIPS / "vp9_vfr.webm", "h264-high-4.2", "microscopic"),
    ("photo-41", RECORDED / "h264.mp4", "h264-high-4.1", "photographic"),
    ("photo-42", CLIPS / "h264_cfr_high.mkv", "h264-high-4.2", "photographic"),
    ("endo-hevc", CLIPS / "h264_cfr_high.mkv", "hevc-main", "endoscopic"),
    ("endo-mpeg2", CLIPS / "h264_cfr_high.mkv", "mpeg2-mp-ml", "endoscopic"),
]
MP4_CASES = [c[0] for c in CASES if syntaxes.get(c[2]).codec in ("h264", "hevc")]


class Converted:
    def __init__(self, path: Path, syntax: str, es_sha256: str) -> None:
        self.path = path
        self.syntax = syntaxes.get(syntax)
        self.es_sha256 = es_sha256
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
        self.study, self.series, self.instance = ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
        self.frames = int(ds.NumberOfFrames)
        self.frame_time = float(ds.FrameTime)
        self.transfer_syntax = str(ds.file_meta.TransferSyntaxUID)

    def url(self, root: str) -> str:
        return f"{root}/studies/{self.study}/series/{self.series}/instances/{self.instance}"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Converted]:
    folder = tmp_path_factory.mktemp("videos")
    made = {}
    for name, clip, syntax, iod in CASES:
        result = convert(clip, folder / f"{name}.dcm", ConvertOptions(syntax=syntax, iod=iod, quality=False))
        made[name] = Converted(result.output, syntax, result.elementary_stream_sha256)
    return made



class Gateway:
    """`dvqa serve` as a user starts it, in a child process; stderr (its log) goes to a file."""

    def __init__(self, folder: Path, upstream: str, *extra: str) -> None:
        self.port = free_port()
        self.root = f"http://127.0.0.1:{self.port}/dicom-web"
        self.cache = folder / "cache"
        self.log = folder / "serve.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dvqa", "serve", "--upstream", upstream, "--port", str(self.port),
             "--cache-dir", str(self.cache), *extra],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "wb"))
        wait_for_port(self.port, self.process, "dvqa serve")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)


@pytest.fixture(scope="module")
def ohif_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def gateway(orthanc, ohif_port, tmp_path_factory):
    folder = tmp_path_factory.mktemp("gateway")
    config = folder / "serve.yaml"  # the viewer is served from another origin: CORS for it only
    # a viewer's first visit (the cold path) is what these tests exercise: the STOW-RS of `stored` does not
    # prewarm here (that is tests/test_serve_prewarm.py)
    config.write_text(f"cors_origins: [http://127.0.0.1:{ohif_port}]\nprewarm: false\n")
    served = Gateway(folder, f"{orthanc['http']}/dicom-web", "--config", str(config))
    yield served
    assert served.stop() == 0


@pytest.fixture(scope="module")
def stored(gateway, orthanc, files) -> dict[str, Converted]:
    """Every file stored in Orthanc with STOW-RS through the gateway."""
    boundary = uuid.uuid4().hex
    body = b"".join(b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + f.path.read_bytes()
                    + b"\r\n" for f in files.values()) + b"--" + boundary.encode() + b"--\r\n"
    response = httpx.post(f"{gateway.root}/studies", content=body, timeout=60, headers={
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json"})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert not answer.get("00081198", {}).get("Value")  # no Failed SOP Sequence items (PS3.18 §10.5.3)
    assert len(answer["00081199"]["Value"]) == len(files)
    return files


def _get(url: str, **headers: str) -> httpx.Response:
    return httpx.get(url, headers=headers, timeout=60)


def _parts(response: httpx.Response) -> list[bytes]:
    """The bodies of a multipart/related answer."""
    boundary = response.headers["content-type"].split("boundary=")[1].split(";")[0].strip('"').encode()
    parts = []
    for chunk in response.content.split(b"--" + boundary)[1:-1]:
        parts.append(chunk.split(b"\r\n\r\n", 1)[1][:-2])
    return parts


@pytest.mark.requirement("DVQA-VIEW-002")
def test_stow_qido_and_wado_pass_through_unchanged(stored, gateway, orthanc) -> None:
    direct = f"{orthanc['http']}/dicom-web"
    for path in ("studies", "series", f"studies/{stored['endo-41'].study}/series"):
        via, straight = _get(f"{gateway.root}/{path}"), _get(f"{direct}/{path}")
        assert via.status_code == straight.status_code == 200
        assert via.headers["content-type"] == straight.headers["content-type"]
        # the one change: URLs that named the upstream name the gateway
        assert via.json() == json.loads(straight.text.replace(direct, gateway.root))
    sample = stored["micro-42"]
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    via, straight = _get(sample.url(gateway.root), Accept=accept), _get(sample.url(direct), Accept=accept)
    assert via.status_code == straight.status_code == 200
    assert via.headers["content-type"].split(";")[:2] == straight.headers["content-type"].split(";")[:2]
    assert _parts(via) == _parts(straight) == [sample.path.read_bytes()]
    # statuses are the upstream's, errors included
    for url in ("/studies/1.2.3.4/series/5.6/instances/7.8", "/studies/1.2.3.4/metadata"):
        assert _get(gateway.root + url).status_code == _get(direct + url).status_code == 404


@pytest.mark.parametrize("name", MP4_CASES)
@pytest.mark.requirement("DVQA-VIEW-001", "DVQA-CONV-002")
def test_rendered_is_mp4_holding_the_pixel_data_stream_byte_for_byte(stored, gateway, name, tmp_path) -> None:
    """Both forms: the fragmented MP4 written while the instance arrives, and the progressive one (its
    index first, no fragments) that replaces it in the cache for later viewers."""
    sample = stored[name]
    url = sample.url(gateway.root) + "/rendered"
    first = _get(url, Accept="video/mp4")
    assert first.status_code == 200 and first.headers["content-type"] == "video/mp4"
    progressive = _progressive(url)
    boxes = _top_level_boxes(progressive.content)
    assert "moof" not in boxes and boxes.index("moov") < boxes.index("mdat"), boxes
    for form, response in (("first", first), ("progressive", progressive)):
        _check_rendered(sample, response.content, tmp_path / form)


@pytest.mark.requirement("DVQA-VIEW-001")
def test_an_orthanc_upstream_can_be_read_through_its_own_file_route(stored, orthanc, tmp_path) -> None:
    """With `orthanc_rest` the instance comes from Orthanc's REST file route (its first byte comes
    seconds sooner than its WADO-RS answer's for a large instance): the same stream, the same checks.
    A route that is down fails the rendering with a one-line 502 while DICOMweb still answers, which
    shows the route is the one used."""
    sample = stored["endo-41"]
    for rest, folder in ((orthanc["http"], "up"), (f"http://127.0.0.1:{free_port()}", "down")):
        (tmp_path / folder).mkdir()
        config = tmp_path / folder / "serve.yaml"
        config.write_text(f"orthanc_rest: {rest}\n")
        served = Gateway(tmp_path / folder, f"{orthanc['http']}/dicom-web", "--config", str(config))
        try:
            response = _get(sample.url(served.root) + "/rendered")
            if folder == "up":
                assert response.status_code == 200, response.text
                _check_rendered(sample, response.content, tmp_path / "checked")
                metadata_answer = _get(f"{served.root}/studies/{sample.study}/series/{sample.series}/metadata")
                assert metadata_answer.json()[0]["00083002"]["Value"] == [sample.transfer_syntax]
            else:
                assert response.status_code == 502 and "unreachable" in response.text, response.text
                assert _get(f"{served.root}/studies/{sample.study}/series").status_code == 200
        finally:
            assert served.stop() == 0


def _progressive(url: str, timeout_s: float = 120) -> httpx.Response:
    """The rendering once the gateway has replaced the fragmented MP4 by the progressive one."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = _get(url)
        if response.headers.get("etag", "").endswith('-p"'):
            return response
        time.sleep(0.2)
    raise AssertionError("the rendering was never made progressive")


def _top_level_boxes(data: bytes) -> list[str]:
    boxes, at = [], 0
    while at + 8 <= len(data):
        size, kind = int.from_bytes(data[at:at + 4], "big"), data[at + 4:at + 8].decode("latin-1")
        if size == 1:
            size = int.from_bytes(data[at + 8:at + 16], "big")
        boxes.append(kind)
        if size < 8:
            break
        at += size
    return boxes


def _check_rendered(sample: Converted, content: bytes, folder: Path) -> None:
    folder.mkdir()
    mp4 = folder / "rendered.mp4"
    mp4.write_bytes(content)
    codec = sample.syntax.codec
    out = folder / "stream.es"
    proc = subprocess.run([tool("ffmpeg"), "-v", "error", "-i", str(mp4), "-c", "copy", "-bsf:v",
                           f"{codec}_mp4toannexb", "-f", codec, str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    extracted, pixel_data = out.read_bytes(), stream_bytes(sample.path)
    if codec == "hevc":  # MP4 samples hold NAL units, not Annex B start codes (ISO/IEC 14496-15): x265 writes
        # some 3-byte ones, and ffmpeg 5.1's hevc_mp4toannexb writes 4-byte ones and repeats the parameter
        # sets, so the NAL units of the MP4's samples themselves are compared
        assert _sample_nal_units(mp4) == _nal_units(pixel_data)
        return
    assert hashlib.sha256(extracted).hexdigest() == hashlib.sha256(pixel_data).hexdigest()
    # convert recorded the stream before DICOM's pad byte to an even length (PS3.5 §A.4)
    unpadded = extracted[:-1] if extracted.endswith(b"\x00") and len(extracted) % 2 == 0 else extracted
    assert sample.es_sha256 in (hashlib.sha256(extracted).hexdigest(), hashlib.sha256(unpadded).hexdigest())
    probe = json.loads(subprocess.run(
        [tool("ffprobe"), "-v", "error", "-count_frames", "-select_streams", "v", "-show_entries",
         "stream=nb_read_frames,r_frame_rate,avg_frame_rate,start_time", "-of", "json", str(mp4)],
        capture_output=True, text=True, check=True).stdout)["streams"][0]
    assert int(probe["nb_read_frames"]) == sample.frames
    num, den = map(int, probe["avg_frame_rate"].split("/"))
    assert abs(1000 * den / num - sample.frame_time) < 0.01
    assert float(probe["start_time"]) == 0.0  # the edit list hides the reorder delay: frame 0 shows at 0


def _sample_nal_units(mp4: Path) -> list[bytes]:
    units = []
    with av.open(str(mp4)) as container:
        for packet in container.demux(video=0):
            data, at = bytes(packet), 0
            while at < len(data):
                size = int.from_bytes(data[at:at + 4], "big")
                units.append(data[at + 4:at + 4 + size].rstrip(b"\x00"))
                at += 4 + size
    return units


def _nal_units(stream: bytes) -> list[bytes]:
    return [unit.rstrip(b"\x00") for unit in stream.split(b"\x00\x00\x01")[1:]]


@pytest.mark.parametrize("name", [c[0] for c in CASES if syntaxes.get(c[2]).codec == "h264"])
@pytest.mark.requirement("DVQA-VIEW-001")
def test_display_order_from_slice_headers_is_the_decoders(files, name, tmp_path) -> None:
    es = tmp_path / "stream.h264"
    es.write_bytes(stream_bytes(files[name].path))
    assert remux.presentation_order(es, "h264") == remux.decoded_order(es, "h264")


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.requirement("DVQA-VIEW-001")
def test_a_long_video_streams_while_remuxed_and_memory_stays_flat(stored, orthanc, tmp_path) -> None:
    """~100 MB, 63,000 pictures (35 minutes at 30 fps): the stream of a B-picture clip repeated (each copy
    starts with an IDR picture, so the whole is a valid stream)."""
    source = stored["endo-41"]
    copies = 700
    ds = pydicom.dcmread(str(source.path))
    stream = stream_bytes(source.path) * copies
    ds.PixelData = encapsulate([stream])
    ds.NumberOfFrames = source.frames * copies
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):  # its own study: the viewer
        setattr(ds, keyword, pydicom.uid.generate_uid())  # tests open the sample's study
    big = tmp_path / "long.dcm"
    ds.save_as(str(big), enforce_file_format=True)
    del stream, ds.PixelData
    request = __import__("urllib.request").request
    stored = request.urlopen(request.Request(f"{orthanc['http']}/instances", data=big.read_bytes(), method="POST"))
    assert stored.status == 200
    served = Gateway(tmp_path, f"{orthanc['http']}/dicom-web")
    try:
        assert _get(source.url(served.root) + "/rendered").status_code == 200  # warm: libraries loaded
        baseline = _peak_rss_mb(served.process.pid)
        url = (f"{served.root}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/"
               f"{ds.SOPInstanceUID}/rendered")
        started, first = time.monotonic(), None
        mp4 = tmp_path / "long.mp4"
        with httpx.stream("GET", url, timeout=120) as response, open(mp4, "wb") as out:
            assert response.status_code == 200
            for chunk in response.iter_raw():
                first = first or time.monotonic() - started
                out.write(chunk)
        total = time.monotonic() - started
        growth = _peak_rss_mb(served.process.pid) - baseline
        print(f"long video: first byte {first:.2f} s, whole {total:.2f} s, {mp4.stat().st_size / 1e6:.0f} MB, "
              f"gateway peak RSS +{growth:.0f} MB over {baseline:.0f} MB")
        assert growth < 60, f"the gateway's peak RSS grew {growth:.0f} MB for a {big.stat().st_size >> 20} MB instance"
        assert _get(url).content == mp4.read_bytes()  # the cached copy is what was streamed
        packets = json.loads(subprocess.run(
            [tool("ffprobe"), "-v", "error", "-count_packets", "-select_streams", "v", "-show_entries",
             "stream=nb_read_packets", "-of", "json", str(mp4)], capture_output=True, text=True,
            check=True).stdout)["streams"][0]["nb_read_packets"]
        assert int(packets) == source.frames * copies
    finally:
        assert served.stop() == 0


def test_rendered_mpeg2_is_its_elementary_stream(stored, gateway) -> None:
    sample = stored["endo-mpeg2"]
    response = _get(sample.url(gateway.root) + "/rendered")
    assert response.status_code == 200 and response.headers["content-type"] == "video/mpeg"
    assert response.content == stream_bytes(sample.path)


def test_rendered_answers_ranges_etag_and_304_from_a_private_cache(stored, gateway) -> None:
    url = stored["endo-41"].url(gateway.root) + "/rendered"
    whole = _progressive(url)
    assert whole.status_code == 200 and whole.headers["accept-ranges"] == "bytes"
    etag = whole.headers["etag"]
    part = _get(url, Range="bytes=100-1099")
    assert part.status_code == 206 and part.content == whole.content[100:1100]
    assert part.headers["content-range"] == f"bytes 100-1099/{len(whole.content)}"
    tail = _get(url, Range="bytes=-500")
    assert tail.status_code == 206 and tail.content == whole.content[-500:]
    assert _get(url, Range=f"bytes={len(whole.content)}-").status_code == 416
    again = _get(url, **{"If-None-Match": etag})
    assert again.status_code == 304 and again.headers["etag"] == etag and not again.content
    assert _get(url, Accept="image/jpeg").status_code == 406
    assert stat.S_IMODE(gateway.cache.stat().st_mode) == 0o700
    cached = [p for p in gateway.cache.iterdir() if p.is_file()]
    assert cached and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in cached)
    assert not any(str(stored["endo-41"].instance) in p.name for p in cached)  # named by hash


def test_metadata_and_qido_name_the_video_syntax_and_point_at_the_gateway(stored, gateway) -> None:
    for sample in stored.values():
        study_level = _get(f"{gateway.root}/studies/{sample.study}/metadata").json()
        instance_level = _get(sample.url(gateway.root) + "/metadata").json()
        qido = _get(f"{gateway.root}/studies/{sample.study}/series/{sample.series}/instances").json()
        for answer in (study_level, instance_level, qido):
            item = next(i for i in answer if i["00080018"]["Value"][0] == sample.instance)
            assert item["00083002"] == {"vr": "UI", "Value": [sample.transfer_syntax]}
            uri = item["7FE00010"]["BulkDataURI"]
            assert uri.startswith(gateway.root) and _get(uri).status_code == 200
            for value in item.get("00081190", {}).get("Value", []):
                assert value.startswith(gateway.root)


@pytest.mark.requirement("DVQA-VIEW-001")
def test_the_metadata_the_gateway_makes_is_the_pacs_metadata(stored, gateway, orthanc) -> None:
    """A video series' metadata, made by the gateway from the header it reads (sooner than Orthanc 1.10
    answers metadata), holds every attribute Orthanc's own answer holds, with the same values; it adds
    only what makes a viewer play it (0008,3002 and Pixel Data's BulkDataURI)."""
    direct = f"{orthanc['http']}/dicom-web"
    for sample in stored.values():
        path = f"studies/{sample.study}/series/{sample.series}/metadata"
        via, straight = _get(f"{gateway.root}/{path}"), _get(f"{direct}/{path}")
        assert via.status_code == straight.status_code == 200
        assert via.headers["content-type"].startswith("application/dicom+json")
        made, pacs = via.json()[0], json.loads(straight.text.replace(direct, gateway.root))[0]
        assert set(made) - set(pacs) <= {"00083002", "7FE00010"}, set(made) - set(pacs)
        assert {tag: value for tag, value in made.items() if tag in pacs} == pacs
        # what makes the gateway use a header it read: Orthanc's index agrees with it
        index = _get(f"{direct}/studies/{sample.study}/series/{sample.series}/instances?includefield=all").json()[0]
        assert gateway_module._agrees(index, metadata.dicom_json(pydicom.dcmread(sample.path, stop_before_pixels=True)))


def test_thumbnail_is_a_jpeg_of_the_video(stored, gateway) -> None:
    for name in ("endo-41", "endo-mpeg2"):
        response = _get(stored[name].url(gateway.root) + "/thumbnail")
        assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
        image = Image.open(__import__("io").BytesIO(response.content))
        assert image.format == "JPEG" and max(image.size) <= 256


@pytest.mark.parametrize("name", ["endo-41", "endo-mpeg2"])
@pytest.mark.requirement("DVQA-VIEW-001")
def test_a_rendered_frame_is_the_frame_dvqa_decodes_from_the_file(stored, gateway, name, tmp_path) -> None:
    """Frame n as a JPEG (PS3.18 rendered frames) shows the picture the decoder gives at display position
    n - 1 of the Pixel Data stream, and not its neighbours (the passthrough H.264 case has B-pictures, so
    stream order and display order differ)."""
    sample = stored[name]
    reference = decoded_luma(sample.path, sample.syntax.codec, tmp_path)
    assert len(reference) == sample.frames
    for number in (1, sample.frames // 2 + 1, sample.frames):
        response = _get(f"{sample.url(gateway.root)}/frames/{number}/rendered", Accept="image/jpeg")
        assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
        import numpy as np
        picture = np.asarray(Image.open(__import__("io").BytesIO(response.content)).convert("RGB"))
        assert picture.shape[:2] == reference[0].shape

        def score(k: int) -> float:
            return max(viewer.psnr(viewer.luma(picture, m), reference[k]) for m in ("bt709", "bt601"))

        shown = score(number - 1)
        assert shown > 35, (number, shown)
        neighbours = [k for k in (number - 2, number) if 0 <= k < sample.frames]
        assert all(score(k) < shown for k in neighbours), (number, shown, [score(k) for k in neighbours])
    url = sample.url(gateway.root)
    assert _get(f"{url}/frames/{sample.frames + 1}/rendered").status_code == 404
    for bad in ("0", "1,2", "x"):
        refused = _get(f"{url}/frames/{bad}/rendered")
        assert refused.status_code == 400 and refused.text.count("\n") == 1
    assert _get(f"{url}/frames/1/rendered", Accept="image/png").status_code == 406


@pytest.mark.requirement("DVQA-VIEW-002")
def test_access_log_holds_no_query_strings(stored, gateway) -> None:
    assert _get(f"{gateway.root}/studies?PatientName=SECRET^NAME&PatientID=SECRET-ID").status_code == 200
    time.sleep(0.3)
    log = gateway.log.read_text()
    assert "/dicom-web/studies?<query> 200" in log
    assert "SECRET" not in log and "Traceback" not in log


# -- a bad upstream ------------------------------------------------------------------------------

class FakeUpstream:
    """A tiny HTTP/1.1 server that misbehaves as told: answers queries, then for an instance retrieve
    sends `mode`: "truncated" (half the body its Content-Length promises, then closes), "cut-late" (the
    same after a 3 s pause, long enough for the gateway to have begun its answer), "short-dicom" (a
    complete answer holding a DICOM file cut in half), "garbage" (bytes that are not HTTP), "silent"
    (never answers), "index" (answers QIDO-RS from its index, never metadata), "guarded" (401 unless the request carries "Authorization: Bearer good", then
    well-behaved)."""

    def __init__(self, mode: str, dicom: bytes) -> None:
        self.mode, self.dicom = mode, dicom
        self.patient_name = str(pydicom.dcmread(__import__("io").BytesIO(dicom), stop_before_pixels=True).PatientName
                                ) if mode == "index" else ""
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.port = self.server.getsockname()[1]
        self.open: list[socket.socket] = []
        self.heads: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.open.append(conn)
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            data = conn.recv(65536)
            if not data:
                return
            head += data
        target = head.split(b" ")[1].decode()
        if self.mode == "garbage":
            conn.sendall(b"\x00\x17 this is not HTTP \xff\r\n\r\n")
        elif self.mode == "silent":
            return  # keep the connection open, say nothing
        elif self.mode == "index" and "/metadata" in target:
            return  # metadata that never comes (the gateway must not need it)
        elif self.mode == "index" and (target.split("?")[0].endswith("/instances") or "SOPInstanceUID=" in target):
            body = json.dumps([self.index_item()]).encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/dicom+json\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        elif self.mode == "guarded" and b"authorization: bearer good" not in head.lower():
            conn.sendall(b"HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
        elif self.mode == "empty":  # a well-behaved upstream with nothing stored; remembers the requests
            self.heads.append(head.decode("latin-1"))
            conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/dicom+json\r\n"
                         b"Content-Length: 2\r\n\r\n[]")
        elif "SOPInstanceUID=" in target or target.endswith("/metadata"):
            body = b"[{}]"
            conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/dicom+json\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\n\r\n" + body)
        elif target.startswith("/tools/lookup"):  # Orthanc's REST API: the instance's Orthanc ID
            body = b'[{"ID": "0a1b", "Path": "/instances/0a1b", "Type": "Instance"}]'
            conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\n\r\n" + body)
        else:
            dicom = self.dicom[: len(self.dicom) // 2] if self.mode == "short-dicom" else self.dicom
            if target.startswith("/instances/"):  # Orthanc's file route: the file itself
                body, kind = dicom, b"application/dicom"
            else:
                body = (b"--B\r\nContent-Type: application/dicom\r\n\r\n" + dicom + b"\r\n--B--\r\n")
                kind = b'multipart/related; type="application/dicom"; boundary=B'
            sent = body[: len(body) // 2] if self.mode in ("truncated", "cut-late") else body
            conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: " + kind + b"\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\n\r\n" + sent)
            if self.mode == "cut-late":
                time.sleep(3)
        conn.close()

    def index_item(self) -> dict:
        """The instance as a PACS index lists it (QIDO-RS), with today's `patient_name`."""
        ds = pydicom.dcmread(__import__("io").BytesIO(self.dicom), stop_before_pixels=True)
        item = {tag: value for tag, value in ds.to_json_dict().items()
                if tag in ("0020000D", "0020000E", "00080018", "00080016", "00280008", "00100020")}
        return item | {"00100010": {"vr": "PN", "Value": [{"Alphabetic": self.patient_name}]}}

    def close(self) -> None:
        self.server.close()
        for conn in self.open:
            conn.close()


@pytest.fixture(scope="module")
def sample_file(files) -> Converted:
    return files["endo-41"]


@pytest.mark.parametrize("mode,status,words", [
    ("truncated", 502, "cut"),
    ("short-dicom", 502, "cut-short"),
    ("garbage", 502, "broken"),
    ("silent", 504, "did not answer in time"),
    ("orthanc-truncated", 502, "cut"),
    ("orthanc-short-dicom", 502, "cut-short"),
])
@pytest.mark.requirement("DVQA-VIEW-002")
def test_a_bad_upstream_gives_a_one_line_error_never_a_half_video(mode, status, words, sample_file, tmp_path) -> None:
    """The orthanc- modes: the same faults on Orthanc's file route (`orthanc_rest`)."""
    fake = FakeUpstream(mode.removeprefix("orthanc-"), sample_file.path.read_bytes())
    config = tmp_path / "serve.yaml"
    config.write_text("read_timeout_s: 2\nconnect_timeout_s: 2\ncache_max_mb: 10\n"
                      + (f"orthanc_rest: http://127.0.0.1:{fake.port}\n" if mode.startswith("orthanc-") else ""))
    served = Gateway(tmp_path, f"http://127.0.0.1:{fake.port}/dicom-web", "--config", str(config))
    try:
        started = time.monotonic()
        response = _get(sample_file.url(served.root) + "/rendered")
        assert time.monotonic() - started < 15
        assert response.status_code == status, response.text
        assert response.headers["content-type"].startswith("text/plain")
        assert response.text.count("\n") == 1 and words in response.text, response.text
        assert not [p for p in served.cache.rglob("*") if p.is_file()]  # nothing half-made is kept
    finally:
        assert served.stop() == 0
        fake.close()


@pytest.mark.requirement("DVQA-VIEW-002")
def test_an_upstream_cut_after_the_answer_began_breaks_the_answer_and_caches_nothing(sample_file, tmp_path) -> None:
    """The video is remuxed while it arrives, so the viewer's answer (200) begins before the upstream's has
    ended; an upstream that then stops must leave the viewer with a broken transfer it cannot take for a
    whole video (no final chunk), and the cache without an entry."""
    ds = pydicom.dcmread(str(sample_file.path))
    ds.PixelData = encapsulate([stream_bytes(sample_file.path) * 40])
    ds.NumberOfFrames = sample_file.frames * 40
    long = tmp_path / "long.dcm"
    ds.save_as(str(long), enforce_file_format=True)
    fake = FakeUpstream("cut-late", long.read_bytes())
    served = Gateway(tmp_path, f"http://127.0.0.1:{fake.port}/dicom-web")
    try:
        received = 0
        with httpx.stream("GET", sample_file.url(served.root) + "/rendered", timeout=30) as response:
            assert response.status_code == 200 and response.headers["content-type"] == "video/mp4"
            with pytest.raises(httpx.RemoteProtocolError):
                for chunk in response.iter_raw():
                    received += len(chunk)
        assert 0 < received < len(long.read_bytes())
        time.sleep(0.5)
        assert not [p for p in served.cache.rglob("*") if p.is_file()]  # nothing half-made is kept
        try:  # asked again: rendered again (and cut again), never served from a cache as if whole
            assert _get(sample_file.url(served.root) + "/rendered").status_code == 502
        except httpx.RemoteProtocolError:
            pass
    finally:
        assert served.stop() == 0
        fake.close()


@pytest.mark.requirement("DVQA-VIEW-002")
def test_a_cached_video_is_served_only_to_clients_the_upstream_admits(sample_file, tmp_path) -> None:
    fake = FakeUpstream("guarded", sample_file.path.read_bytes())
    served = Gateway(tmp_path, f"http://127.0.0.1:{fake.port}/dicom-web")
    try:
        rendered = sample_file.url(served.root) + "/rendered"
        admitted = _get(rendered, Authorization="Bearer good")
        assert admitted.status_code == 200 and admitted.headers["content-type"] == "video/mp4"
        assert _get(sample_file.url(served.root) + "/thumbnail", Authorization="Bearer good").status_code == 200
        assert [p for p in served.cache.rglob("*.mp4")]  # the video is now in the gateway's cache
        for headers in ({}, {"Authorization": "Bearer other"}):
            for what in ("/rendered", "/thumbnail"):
                refused = _get(sample_file.url(served.root) + what, **headers)
                assert refused.status_code == 401 and b"ftyp" not in refused.content, (what, headers)
    finally:
        assert served.stop() == 0
        fake.close()


@pytest.mark.requirement("DVQA-VIEW-001")
def test_metadata_is_made_from_the_header_and_never_from_an_outdated_one(sample_file, tmp_path) -> None:
    """An upstream that lists the instance but never answers metadata: the viewer still gets the
    metadata, from the header the gateway read. Once the PACS's index names the patient otherwise (a
    correction under the same UIDs), the kept header is not used: the upstream must answer (here: 504)."""
    fake = FakeUpstream("index", sample_file.path.read_bytes())
    config = tmp_path / "serve.yaml"
    config.write_text("read_timeout_s: 3\n")
    served = Gateway(tmp_path, f"http://127.0.0.1:{fake.port}/dicom-web", "--config", str(config))
    try:
        url = f"{served.root}/studies/{sample_file.study}/series/{sample_file.series}/metadata"
        for _ in range(2):  # read now, then kept
            response = _get(url)
            assert response.status_code == 200, response.text
            item = response.json()[0]
            assert item["00100010"].get("Value", [{}])[0].get("Alphabetic", "") == fake.patient_name
            assert item["00280008"]["Value"][0] == sample_file.frames
            assert item["00083002"]["Value"][0] == sample_file.transfer_syntax
        fake.patient_name = "Corrected^Name"
        assert _get(url).status_code == 504
    finally:
        assert served.stop() == 0
        fake.close()


@pytest.mark.requirement("DVQA-VIEW-002", "DVQA-SEC-002")
def test_tls_and_the_clients_authorization_reaches_the_upstream(tmp_path) -> None:
    def make(ca_key, key) -> dict[str, bytes]:
        return {"cert": certificate("127.0.0.1", key, "dvqa test CA", ca_key, ip="127.0.0.1").public_bytes(PEM),
                "key": pem_key(key)}

    pki = write_pki(tmp_path, make)
    fake = FakeUpstream("empty", b"")
    served = Gateway(tmp_path, f"http://127.0.0.1:{fake.port}/dicom-web", "--tls-cert", str(pki["cert"]),
                     "--tls-key", str(pki["key"]))
    try:
        root = served.root.replace("http://", "https://")
        response = httpx.get(f"{root}/studies?PatientID=X", verify=ssl.create_default_context(cafile=pki["ca"]),
                             timeout=30,
                             headers={"Authorization": "Bearer site-token-1"})
        assert response.status_code == 200 and response.json() == []
        assert any("authorization: bearer site-token-1" in head.lower() for head in fake.heads), fake.heads
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{served.root}/studies", timeout=10)  # plain HTTP is not served beside TLS
    finally:
        assert served.stop() == 0
        fake.close()


def test_upstream_down_is_a_one_line_502_and_sigterm_stops_with_exit_0(sample_file, tmp_path) -> None:
    served = Gateway(tmp_path, f"http://127.0.0.1:{free_port()}/dicom-web")
    for path in ("/studies", sample_file.url("") + "/rendered", sample_file.url("") + "/metadata"):
        response = _get(served.root + path)
        assert response.status_code == 502
        assert response.text.endswith("is unreachable (connection failed)\n") and response.text.count("\n") == 1
    assert _get(f"http://127.0.0.1:{served.port}/healthz").json()["status"] == "ok"
    started = time.monotonic()
    assert served.stop() == 0
    assert time.monotonic() - started < 20  # ends, does not wait out a client (idle: well under a second)
    assert "Traceback" not in served.log.read_text()


def test_serve_refuses_bad_options_in_one_sentence(tmp_path) -> None:
    for args in (["--upstream", "ftp://pacs"], ["--upstream", "http://x/dicom-web", "--tls-cert", str(tmp_path)], []):
        proc = subprocess.run([sys.executable, "-m", "dvqa", "serve", *args], capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
        assert args or "nothing to serve" in proc.stderr  # neither a gateway nor recordings
    bad = tmp_path / "serve.yaml"
    bad.write_text("upstreem: http://x\n")
    proc = subprocess.run([sys.executable, "-m", "dvqa", "serve", "--config", str(bad)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "unknown setting 'upstreem'" in proc.stderr


# -- OHIF, the web viewer, through the gateway -----------------------------------------------------

VIEWER_RESULTS: dict[str, dict] = {}


ORTHANC_SEEN: list[tuple[str, int]] = []  # what OHIF asked Orthanc, and Orthanc's status


@pytest.fixture(scope="module")
def ohif_viewer(stored, gateway, orthanc, ohif_port, tmp_path_factory):
    tool("chromium")
    with viewer.site(tmp_path_factory.mktemp("ohif"), gateway.root, ohif_port) as url, \
            viewer.site(tmp_path_factory.mktemp("ohif-orthanc"), "", proxy=f"{orthanc['http']}/dicom-web",
                      seen=ORTHANC_SEEN) as straight:
        browser = Browser("--mute-audio", "--window-size=1280,800")
        try:
            yield url, browser, straight
        finally:
            versions = {"chromium": browser.call("Browser.getVersion")["product"], "ohif": viewer.VERSION,
                        "orthanc": orthanc["version"]}
            browser.close()
    matrix = _viewer_matrix(stored, versions)
    (tmp_path_factory.getbasetemp() / "viewer-matrix.md").write_text(viewer_matrix.render(matrix))
    complete = len(VIEWER_RESULTS) == len(CASES) and all(
        str(r.get("ohif", "")).startswith("plays") for n, r in VIEWER_RESULTS.items() if stored[n].syntax.codec == "h264")
    if os.environ.get("DVQA_WRITE_VIEWER_MATRIX") == "1" and complete:
        viewer_matrix.write(matrix)  # docs/regulatory/viewer-matrix.json and .md


def _plays_directly(browser, url: str, timeout_s: float) -> bool:
    """Chromium's own player (a <video> document) on the rendered file."""
    browser.navigate(url)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = browser.evaluate("(() => { const v = document.querySelector('video'); "
                                 "return v && {rs: v.readyState, error: v.error && v.error.code}; })()")
        if state and state["rs"] == 4:
            return True
        if state and state["error"]:
            return False
        time.sleep(0.25)
    return False


@pytest.mark.parametrize("name", [c[0] for c in CASES])
@pytest.mark.requirement("DVQA-VIEW-001")
def test_ohif_plays_every_h264_video_through_the_gateway_as_dvqa_measured(ohif_viewer, stored, gateway, name,
                                                                          tmp_path) -> None:
    """OHIF shows a video, it plays, it comes from the gateway, and the picture at time t is the one dvqa
    decodes from the DICOM file at t. HEVC and MPEG-2 are recorded for the matrix (Debian's Chromium
    decodes neither), not asserted."""
    url, browser, straight = ohif_viewer
    sample = stored[name]
    h264 = sample.syntax.codec == "h264"
    result = VIEWER_RESULTS.setdefault(name, {})
    result["direct"] = _plays_directly(browser, sample.url(gateway.root) + "/rendered", 30 if h264 else 8)
    if not h264:
        result.update(ohif="not tried (Chromium does not decode it)", psnr=None)
        return
    browser.navigate("about:blank")
    browser.navigate(f"{url}/viewer?StudyInstanceUIDs={sample.study}")
    state, took = viewer.wait_playing(browser, str(sample.instance))
    pressed = bool(state and state.get("pressed_play"))
    result.update(ohif=("plays" + (" (after play was pressed)" if pressed else "")) if took >= 0
                  else f"does not play ({state})", seconds=took)
    assert result["direct"] and took >= 0, state
    assert state["src"].startswith(f"{gateway.root}/studies/{sample.study}/")  # through the gateway
    shown = sample.frames // 3
    picture = viewer.grab(browser, (shown + 0.5) * sample.frame_time / 1000)
    reference = decoded_luma(sample.path, "h264", tmp_path)[shown]
    assert picture.shape[:2] == reference.shape
    result["psnr"] = max(viewer.psnr(viewer.luma(picture, m), reference) for m in ("bt709", "bt601"))
    assert result["psnr"] > 35, result
    # the same file straight from Orthanc (OHIF on the same origin as Orthanc's DICOMweb): recorded, not
    # asserted - the matrix says what happens today
    ORTHANC_SEEN.clear()
    browser.navigate("about:blank")
    browser.navigate(f"{straight}/viewer?StudyInstanceUIDs={sample.study}")
    state, took = viewer.wait_playing(browser, str(sample.instance), timeout_s=10)
    asked = [(path.rsplit("/", 1)[-1] if "/frames/" not in path else "frames", status)
             for path, status in ORTHANC_SEEN if f"/instances/{sample.instance}/" in path]
    failed = sorted({f"/{what} {status}" for what, status in asked if status >= 400})
    result["orthanc"] = ("plays" if took >= 0 else "no video shown" if state is None else "does not play") + \
        (f" (Orthanc answered {', '.join(failed)})" if failed else "")


def _viewer_matrix(stored: dict[str, Converted], versions: dict[str, str]) -> dict:
    """The runs' results as bench/viewer_matrix.py's data (rendered there as the page)."""
    from dvqa import __version__

    rows = []
    for name, clip, syntax, iod in CASES:
        result = dict(VIEWER_RESULTS.get(name, {}))
        if result.get("psnr") == float("inf"):
            result["psnr"] = "inf"  # JSON has no infinity
        rows.append({"file": clip.name, "iod": iod, "syntax": syntax, "transfer_syntax": stored[name].transfer_syntax,
                     **result})
    return {"versions": {"dvqa": __version__, **versions}, "rows": rows}
