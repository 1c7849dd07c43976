"""The first viewer of a video dvqa stored gets the warm path: STOW-RS through `dvqa serve` (a real
Orthanc behind it) fills the gateway's cache with what a viewer's first visit would have (dvqa.serve.prewarm),
and the gateway then serves it without retrieving the instance from the PACS - proved by a relay between
the gateway and Orthanc that writes down every request the gateway sends."""

from __future__ import annotations

import io
import os
import re
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from dvqa.convert.pipeline import ConvertOptions, convert
from dvqa.serve import entries, prewarm, stow
from dvqa.serve.cache import Cache
from dvqa.serve.config import ServeConfig
from dvqa.serve.record_settings import PacsTarget, RecordSettings
from helpers import CLIPS, tool
from test_serve import Converted, Gateway, _check_rendered, _get, _progressive, _top_level_boxes



@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Converted:
    """A passthrough H.264 instance with B-pictures (display order differs from stream order)."""
    folder = tmp_path_factory.mktemp("video")
    result = convert(CLIPS / "h264_cfr_high.mkv", folder / "endo.dcm",
                     ConvertOptions(syntax="h264-high-4.1", iod="endoscopic", quality=False))
    return Converted(result.output, "h264-high-4.1", result.elementary_stream_sha256)


class Relay:
    """A TCP relay to `port` that passes every byte unchanged and writes down the request line (method
    and target) of each HTTP request its clients send."""

    _REQUEST = re.compile(rb"(GET|HEAD|POST|PUT|DELETE|PATCH|OPTIONS) (/\S*) HTTP/1\.[01]\r\n")

    def __init__(self, port: int) -> None:
        self.target = port
        self.requests: list[str] = []
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(32)
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, requests: bool) -> None:
        tail = b""  # a request line may straddle two reads
        try:
            while data := source.recv(1 << 16):
                if requests:
                    seen = tail + data
                    self.requests += [f"{m.group(1).decode()} {m.group(2).decode()}"
                                      for m in self._REQUEST.finditer(seen) if m.end() > len(tail)]
                    tail = seen[-4096:]
                target.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, target):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.server.close()


def _stow(root: str, path: Path, study: str = "") -> httpx.Response:
    boundary = uuid.uuid4().hex
    body = (b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + path.read_bytes()
            + b"\r\n--" + boundary.encode() + b"--\r\n")
    return httpx.post(f"{root}/studies" + (f"/{study}" if study else ""), content=body, timeout=60, headers={
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json"})


def _wait_for_header(cache: Path, instance: str, timeout_s: float = 60) -> Path:
    """The header entry, which prewarming writes last (once the rendering and thumbnail are in place)."""
    path = cache / f"{entries.header_key(instance)}.json"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            return path
        time.sleep(0.1)
    raise AssertionError("the stored instance was never prewarmed")


def _entries(cache: Path) -> list[Path]:
    return sorted(p for p in cache.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def warmed(orthanc, sample, tmp_path_factory):
    """The sample stored with STOW-RS through a gateway whose upstream is Orthanc behind a Relay."""
    relay = Relay(orthanc["http_port"])
    served = Gateway(tmp_path_factory.mktemp("warm"), f"http://127.0.0.1:{relay.port}/dicom-web")
    try:
        answer = _stow(served.root, sample.path)
        assert answer.status_code == 200, answer.text
        assert sample.instance in answer.text  # the upstream's answer, relayed (Referenced SOP Sequence)
        _wait_for_header(served.cache, sample.instance)
        assert relay.requests == ["POST /dicom-web/studies"]  # the relay sees what the gateway sends, and
        yield served, relay                                    # prewarming asked the upstream for nothing
    finally:
        assert served.stop() == 0
        relay.close()


@pytest.mark.requirement("DVQA-VIEW-001")
def test_a_video_stored_through_the_gateway_is_served_without_a_retrieve(warmed, sample, tmp_path) -> None:
    served, relay = warmed
    cached = _entries(served.cache)
    assert {p.suffix for p in cached} == {".mp4", ".jpg", ".json"}, cached  # progressive video, thumbnail, header
    assert all(p.parent == served.cache for p in cached)  # nothing left in the work folder
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in cached)
    relay.requests.clear()
    url = sample.url(served.root)
    rendered = _get(url + "/rendered", Accept="video/mp4")
    metadata = _get(f"{served.root}/studies/{sample.study}/series/{sample.series}/metadata")
    thumbnail = _get(url + "/thumbnail")
    assert rendered.status_code == metadata.status_code == thumbnail.status_code == 200
    assert rendered.headers["etag"].endswith('-p"')  # the progressive form, as later viewers get it
    boxes = _top_level_boxes(rendered.content)
    assert "moof" not in boxes and boxes.index("moov") < boxes.index("mdat"), boxes
    _check_rendered(sample, rendered.content, tmp_path / "warm")  # the stream's SHA-256 is the file's
    asked = list(relay.requests)
    # the upstream was asked who may see the instance (QIDO-RS), and nothing else: no retrieve
    assert asked and all(r.startswith("GET ") and re.search(r"/instances\?", r) for r in asked), asked
    assert any(f"SOPInstanceUID={sample.instance}" in r for r in asked), asked
    assert not [r for r in asked if sample.instance + "/" in r or r.split("?")[0].endswith(sample.instance)]
    item = metadata.json()[0]
    assert item["00083002"]["Value"] == [sample.transfer_syntax]
    assert item["7FE00010"]["BulkDataURI"] == url + "/rendered"


@pytest.mark.requirement("DVQA-VIEW-001")
def test_what_is_prewarmed_is_what_a_cold_visit_makes(warmed, orthanc, sample) -> None:
    """A second gateway on the same Orthanc, cold (its own empty cache): its metadata answer is the same
    bytes, and once it has made its progressive rendering, that is the same bytes as the prewarmed one."""
    served, _ = warmed
    folder = served.cache.parent / "cold"
    folder.mkdir()
    cold = Gateway(folder, f"{orthanc['http']}/dicom-web")
    try:
        for path in (f"studies/{sample.study}/series/{sample.series}/metadata",
                     f"studies/{sample.study}/series/{sample.series}/instances/{sample.instance}/metadata",
                     f"studies/{sample.study}/series/{sample.series}/instances"):
            made_cold = _get(f"{cold.root}/{path}")
            made_warm = _get(f"{served.root}/{path}")
            assert made_cold.status_code == made_warm.status_code == 200
            assert made_cold.content.replace(cold.root.encode(), b"ROOT") == \
                made_warm.content.replace(served.root.encode(), b"ROOT"), path
        url = "/rendered"
        assert _progressive(sample.url(cold.root) + url).content == _get(sample.url(served.root) + url).content
        assert _get(sample.url(cold.root) + "/thumbnail").content == _get(sample.url(served.root) + "/thumbnail").content
    finally:
        assert cold.stop() == 0


@pytest.mark.requirement("DVQA-VIEW-002")
def test_a_stow_the_upstream_refuses_prewarms_nothing(orthanc, sample, tmp_path) -> None:
    """Orthanc refuses an instance stored under another study's URL (409, Failed SOP Sequence): the client
    gets Orthanc's answer, and the gateway's cache stays empty."""
    served = Gateway(tmp_path, f"{orthanc['http']}/dicom-web")
    try:
        direct = _stow(f"{orthanc['http']}/dicom-web", sample.path, study="1.2.3.999")
        answer = _stow(served.root, sample.path, study="1.2.3.999")
        assert answer.status_code == direct.status_code == 409
        assert answer.content == direct.content
        time.sleep(2)  # a prewarm would have started at once, and written its temporary files by now
        assert _entries(served.cache) == []
    finally:
        assert served.stop() == 0


def test_prewarm_writes_the_entries_once_and_refuses_what_is_not_video(sample, tmp_path) -> None:
    cache = Cache(tmp_path / "cache", 1 << 30)
    assert prewarm.prewarm(cache, sample.path)
    written = {p: p.stat().st_mtime_ns for p in _entries(cache.folder)}
    assert len(written) == 3
    assert prewarm.prewarm(cache, sample.path)  # already there: nothing is made again
    assert {p: p.stat().st_mtime_ns for p in _entries(cache.folder)}.keys() == written.keys()
    syntax, made = entries.read_header(cache, sample.instance)
    assert syntax == sample.transfer_syntax and made["00080018"]["Value"] == [sample.instance]
    not_video = Path(get_testdata_file("CT_small.dcm"))  # explicit VR little endian, native pixel data
    assert prewarm.prewarm(Cache(tmp_path / "other", 1 << 30), not_video) is False
    assert _entries(tmp_path / "other") == []


def test_ingest_warms_only_a_gateway_whose_upstream_is_the_pacs_it_stored_to(sample, tmp_path) -> None:
    root = "http://127.0.0.1:8042/dicom-web"
    same = ServeConfig(upstream=root, cache_dir=tmp_path / "cache", cache_max_mb=64,
                       record=RecordSettings(pacs=PacsTarget(stow=root + "/")))
    target = prewarm.warm_target(same)
    assert target == prewarm.WarmTarget(tmp_path / "cache", 64 * 1024 * 1024)
    assert prewarm.warm_target(ServeConfig(upstream=root, cache_dir=tmp_path, record=RecordSettings(
        pacs=PacsTarget(stow="http://other.example/dicom-web")))) is None
    assert prewarm.warm_target(ServeConfig(upstream=root, cache_dir=tmp_path, record=RecordSettings(
        pacs=PacsTarget(host="pacs", port=104)))) is None
    assert prewarm.warm_target(ServeConfig(upstream=root, cache_dir=tmp_path, prewarm=False,
                                           record=same.record)) is None
    assert prewarm.warm_target(ServeConfig(cache_dir=tmp_path, record=same.record)) is None
    assert prewarm.prewarm_stored(target, sample.path)  # as ingest's conversion process calls it
    assert (tmp_path / "cache" / f"{entries.header_key(sample.instance)}.json").exists()
    assert not prewarm.prewarm_stored(target, tmp_path / "missing.dcm")  # logged, never raised
    assert not prewarm.prewarm_stored(None, sample.path)


def test_a_second_process_on_the_cache_leaves_a_live_writers_files_alone(tmp_path) -> None:
    """Ingest's conversion process opens the server's cache: its start-up clean-up must not remove what
    the server is writing, only what an ended process left; and a trim copes with entries another
    process removed."""
    cache = Cache(tmp_path / "cache", 1 << 20)
    live = cache.temporary("a" * 40, ".mp4")
    live.write_bytes(b"being written")
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    left = cache.work / f"{'b' * 40}.{ended.pid}.0123456789ab.mp4"
    left.write_bytes(b"left by a process that has ended")
    subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; from dvqa.serve.cache import Cache; "
                    "Cache(Path(sys.argv[1]), 1 << 20)", str(cache.folder)], check=True,
                   env=os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert live.exists() and not left.exists()
    # two processes filling a small cache at once: each trim meets entries the other has just removed
    writer = ("import sys; from pathlib import Path; from dvqa.serve.cache import Cache\n"
              "cache = Cache(Path(sys.argv[1]), 50_000)\n"
              "for n in range(400):\n"
              "    t = cache.temporary(f'{sys.argv[2]}{n:039d}', '.bin'); t.write_bytes(b'x' * 10_000)\n"
              "    cache.put(t, f'{sys.argv[2]}{n:039d}', '.bin')\n")
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    writers = [subprocess.Popen([sys.executable, "-c", writer, str(cache.folder), name], env=env,
                                stderr=subprocess.PIPE) for name in "cd"]
    for process in writers:
        assert process.wait(60) == 0, process.stderr.read().decode()  # type: ignore[union-attr]
    assert live.exists()
    assert sum(p.stat().st_size for p in cache.folder.glob("*.bin")) <= 60_000


def test_the_parts_of_a_stow_body_are_found_whatever_their_size() -> None:
    """Parts of a STOW-RS body (RFC 2046 §5.1), read in pieces: delimiters across piece boundaries, a
    part without headers, one that is not DICOM (skipped), transport padding after a delimiter."""
    boundary = b"b0UnD4ry"
    first, second, third = os.urandom(stow.PIECE - 5), b"not dicom", os.urandom(2 * stow.PIECE + 7)
    body = (b"preamble\r\n--" + boundary + b"\r\nContent-Type: application/dicom\r\n\r\n" + first
            + b"\r\n--" + boundary + b"\r\nContent-Type: text/plain\r\n\r\n" + second
            + b"\r\n--" + boundary + b"  \r\n\r\n" + third + b"\r\n--" + boundary + b"--\r\nepilogue")
    found = stow.parts(io.BytesIO(body), boundary)
    assert [body[start:end] for start, end in found] == [first, third]


def _copy_with_new_uids(source: Path, target: Path) -> str:
    """The same video as another instance of another study (new UIDs); its SOP Instance UID."""
    ds = pydicom.dcmread(str(source))
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        setattr(ds, keyword, generate_uid())
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(str(target), enforce_file_format=True)
    return str(ds.SOPInstanceUID)


@pytest.mark.requirement("DVQA-VIEW-001", "DVQA-VIEW-002")
def test_a_video_a_modality_stores_in_orthanc_is_warmed_by_the_watch(sample, tmp_path, monkeypatch) -> None:
    """`orthanc_watch: true`: a video C-STOREd into Orthanc by another sender (DCMTK's storescu, as a
    modality would) is in the gateway's cache seconds later, without a viewer asking, read with the
    watch's own credentials (an Orthanc that requires them); a video stored before the server started
    and an instance that is not video are left alone, and the credentials appear in no log."""
    from bench import orthanc as orthanc_server

    before = tmp_path / "before.dcm"
    before_uid = _copy_with_new_uids(sample.path, before)
    for folder in ("orthanc", "gateway"):
        (tmp_path / folder).mkdir()
    with orthanc_server.running(tmp_path / "orthanc", tool("Orthanc"), extra={
            "AuthenticationEnabled": True, "RegisteredUsers": {"viewer": "v-secret", "watch": "w-secret"}}) as pacs:
        auth = ("viewer", "v-secret")
        stored = httpx.post(f"{pacs['http']}/instances", content=before.read_bytes(), auth=auth, timeout=60)
        assert stored.status_code == 200, stored.text
        config = tmp_path / "serve.yaml"
        config.write_text(f"orthanc_rest: {pacs['http']}\northanc_watch: true\n")
        monkeypatch.setenv("DVQA_ORTHANC_WATCH_AUTH", "watch:w-secret")
        served = Gateway(tmp_path / "gateway", f"{pacs['http']}/dicom-web", "--config", str(config))
        try:
            # the video proposed for its SOP Class in its own transfer syntax (H.264 High@4.1), the CT as usual
            for path, syntax in ((sample.path, ["-R", "-xn"]), (Path(get_testdata_file("CT_small.dcm")), [])):
                sent = subprocess.run([tool("storescu"), *syntax, "-aec", "ORTHANC", "127.0.0.1", str(pacs["port"]),
                                       str(path)], capture_output=True, text=True, timeout=60)
                assert sent.returncode == 0, sent.stderr
            _wait_for_header(served.cache, sample.instance)
            time.sleep(2)  # the CT instance was considered in the same poll; give a wrong write time to land
            names = {p.name for p in _entries(served.cache)}
            assert names == {f"{key}{suffix}" for key, suffix in (
                (entries.progressive_key(sample.instance), ".mp4"), (entries.picture_key(sample.instance), ".jpg"),
                (entries.header_key(sample.instance), ".json"))}, names  # not `before`'s, not the CT's
            rendered = httpx.get(sample.url(served.root) + "/rendered", headers={"Accept": "video/mp4"}, auth=auth,
                                 timeout=60)
            assert rendered.status_code == 200 and rendered.headers["etag"].endswith('-p"')
            _check_rendered(sample, rendered.content, tmp_path / "watched")
            refused = _get(sample.url(served.root) + "/rendered", Accept="video/mp4")  # no credentials
            assert refused.status_code == 401, refused.status_code
            assert before_uid not in "".join(names)
        finally:
            assert served.stop() == 0
    log = served.log.read_text()
    assert "w-secret" not in log and "d2F0Y2g6dy1zZWNyZXQ" not in log  # nor its Basic encoding
    assert "orthanc watch: a stored video was prepared for viewing" in log, log
    assert "cannot be read" not in log and "not prepared" not in log, log  # it never failed


def test_the_watch_is_refused_where_it_could_not_work() -> None:
    from dvqa.core.errors import UsageError

    root = "http://127.0.0.1:8042/dicom-web"
    for settings in ({"upstream": root, "orthanc_watch": True},  # no Orthanc REST root to follow
                     {"upstream": root, "orthanc_rest": "http://127.0.0.1:8042", "orthanc_watch": True,
                      "prewarm": False}):
        with pytest.raises(UsageError, match="orthanc_watch: true needs"):
            ServeConfig(**settings).checked()
    with pytest.raises(UsageError, match="give true or false"):
        ServeConfig(upstream=root, orthanc_rest="http://127.0.0.1:8042", orthanc_watch="yes").checked()
    assert ServeConfig(upstream=root, orthanc_rest="http://127.0.0.1:8042", orthanc_watch=True).checked().orthanc_watch
