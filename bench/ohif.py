"""OHIF's prebuilt viewer served on 127.0.0.1 and driven in headless Chromium through the DevTools
protocol - for the viewer tests and the viewer matrix in docs/.

dvqa's own code never starts a viewer; this module is tooling around it, like bench/orthanc.py.
OHIF comes from npm (`@ohif/app`, pinned; its package carries the built `dist/`), unpacked by .ci/run
into bench/.cache/ (`npm pack` fetches only that package: the viewer needs none of its dependencies
at run time, and some are not on every registry mirror).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import io
import json
import os
import shutil
import socketserver
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from bench.orthanc import free_port, wait_for_port

VERSION = "3.13.2"
CACHE = Path(__file__).resolve().parent / ".cache" / f"ohif-{VERSION}"
DIST = Path(os.environ.get("DVQA_OHIF_DIST", CACHE / "package" / "dist"))
INSTALL = (f"mkdir -p {CACHE} && npm pack --pack-destination {CACHE} @ohif/app@{VERSION} && "
           f"tar -xzf {CACHE}/ohif-app-{VERSION}.tgz -C {CACHE}")
_DEMO_ROOT = "https://d14fa38qiwhyfd.cloudfront.net/dicomweb"  # the data source OHIF's default config names


class _Site(http.server.SimpleHTTPRequestHandler):
    """OHIF is a single-page app: any path that is not a file is its index.html. With `proxy`, /dicom-web/
    is relayed to that DICOMweb root (same origin: a PACS without CORS, such as Orthanc, can be shown
    straight), and each relayed request's path and status is kept in `seen`."""

    root: Path
    proxy: str = ""
    seen: list[tuple[str, int]]

    def translate_path(self, path: str) -> str:
        found = super().translate_path(path)
        return found if os.path.isfile(found) else str(self.root / "index.html")

    def do_GET(self) -> None:
        if not (self.proxy and self.path.startswith("/dicom-web/")):
            super().do_GET()
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("accept", "range")}
        request = urllib.request.Request(self.proxy + self.path[len("/dicom-web"):], headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                status, kept, body = answer.status, answer.headers, answer.read()
        except urllib.error.HTTPError as error:
            status, kept, body = error.code, error.headers, error.read()
        self.seen.append((self.path.split("?")[0], status))
        self.send_response(status)
        for name in ("Content-Type", "Content-Range", "Accept-Ranges"):
            if kept.get(name):
                self.send_header(name, kept[name])
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def site(folder: Path, dicomweb_root: str, port: int | None = None, proxy: str = "",
         seen: list[tuple[str, int]] | None = None) -> Iterator[str]:
    """OHIF's dist/ copied to `folder` with its data source pointed at `dicomweb_root`; yields its URL.
    With `proxy` (a DICOMweb root), the site's own /dicom-web relays to it and `dicomweb_root` is ignored."""
    if not (DIST / "index.html").is_file():
        raise FileNotFoundError(f"OHIF {VERSION} is not unpacked at {DIST}: {INSTALL}")
    shutil.copytree(DIST, folder, dirs_exist_ok=True)
    port = port or free_port()
    if proxy:
        dicomweb_root = f"http://127.0.0.1:{port}/dicom-web"
    config = (DIST / "app-config.js").read_text()
    if _DEMO_ROOT not in config:
        raise RuntimeError(f"OHIF {VERSION}'s app-config.js no longer names {_DEMO_ROOT}; update bench/ohif.py")
    # a full DICOMweb service (QIDO filters server-side), not a static one
    (folder / "app-config.js").write_text(config.replace(_DEMO_ROOT, dicomweb_root)
                                          .replace("staticWado: true", "staticWado: false"))
    handler = type("Site", (_Site,), {"root": folder, "proxy": proxy, "seen": seen if seen is not None else []})
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    server = socketserver.ThreadingTCPServer(("127.0.0.1", port),
                                             functools.partial(handler, directory=str(folder)))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class Browser:
    """Headless Chromium and one page, driven over the DevTools protocol (a websocket)."""

    def __init__(self, exe: str, folder: Path) -> None:
        import websocket  # the test extra's websocket-client

        port = free_port()
        self.process = subprocess.Popen(
            [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--mute-audio", f"--remote-debugging-port={port}",
             f"--user-data-dir={folder}", "--autoplay-policy=no-user-gesture-required", "--window-size=1280,800",
             "--no-first-run", "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(port, self.process, "chromium")
        for _ in range(50):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json") as answer:
                pages = [t for t in json.load(answer) if t["type"] == "page"]
            if pages:
                break
            time.sleep(0.1)
        self.socket = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=60)
        self._next = 0
        self.version = self.call("Browser.getVersion")["product"]

    def call(self, method: str, **params) -> dict:
        self._next += 1
        self.socket.send(json.dumps({"id": self._next, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self._next:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"].get("text", "script failed"))
        return result["result"].get("value")

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.socket.close()
        self.process.terminate()
        self.process.wait(30)


# OHIF plays video in cornerstone's VideoViewport, which draws an off-document <video> element onto its
# canvas: the element is found through the rendering engines OHIF exposes as window.cornerstone
_VIDEO = ("(() => { if (!window.cornerstone) return null; for (const e of cornerstone.getRenderingEngines()) "
          "for (const p of e.getViewports()) { if (p.videoElement) return p.videoElement; } return null; })()")


def video_state(browser: Browser) -> dict | None:
    """readyState, currentTime, source and size of the video OHIF shows, or None when it shows none."""
    return browser.evaluate(f"(() => {{ const v = {_VIDEO}; return v && {{readyState: v.readyState, "
                            "currentTime: v.currentTime, src: v.currentSrc, paused: v.paused, "
                            "error: v.error && v.error.code, width: v.videoWidth, height: v.videoHeight}; })()")


def wait_playing(browser: Browser, expect: str, timeout_s: float = 60) -> tuple[dict | None, float]:
    """Wait until the video whose source names `expect` (a SOP Instance UID) has all it needs (readyState
    4) and its time has advanced by 0.3 s; returns the last state and the seconds it took (-1: never)."""
    started, first_time = time.monotonic(), None
    state = None
    while time.monotonic() - started < timeout_s:
        state = video_state(browser)
        if state and expect in (state["src"] or "") and state["readyState"] == 4:
            if first_time is None:
                first_time = state["currentTime"]
            elif state["currentTime"] - first_time >= 0.3:
                return state, time.monotonic() - started
        time.sleep(0.25)
    return state, -1.0


def grab(browser: Browser, seconds: float) -> np.ndarray:
    """The picture the <video> shows at `seconds` (paused, seeked, drawn on a canvas): RGB, HxWx3."""
    url = browser.evaluate(
        f"(async () => {{ const v = {_VIDEO}; v.pause(); await new Promise(r => {{ v.addEventListener('seeked', r, "
        f"{{once: true}}); v.currentTime = {seconds}; }}); await new Promise(r => setTimeout(r, 300)); "
        "const c = document.createElement('canvas'); c.width = v.videoWidth; c.height = v.videoHeight; "
        "c.getContext('2d').drawImage(v, 0, 0); return c.toDataURL('image/png'); })()")
    data = base64.b64decode(url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def luma(rgb: np.ndarray, matrix: str) -> np.ndarray:
    """Y' (limited range, as the stream codes it) of an RGB picture under the BT.709 or BT.601 matrix."""
    kr, kb = (0.2126, 0.0722) if matrix == "bt709" else (0.299, 0.114)
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    return 16 + 219 * (kr * r + (1 - kr - kb) * g + kb * b) / 255


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255 ** 2 / mse)
