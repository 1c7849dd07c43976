"""OHIF's prebuilt viewer (tests/ohif.py) served on 127.0.0.1 for the viewer tests, and what they read
from the video it plays in headless Chromium (tests/cdp.py): its state, a picture at a time, PSNR.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import io
import os
import shutil
import socketserver
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from bench.orthanc import free_port
from cdp import Browser
from ohif import VERSION, dist

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
    source = dist()  # skips (locally) or fails (CI) when OHIF is not installed
    shutil.copytree(source, folder, dirs_exist_ok=True)
    port = port or free_port()
    if proxy:
        dicomweb_root = f"http://127.0.0.1:{port}/dicom-web"
    config = (source / "app-config.js").read_text()
    if _DEMO_ROOT not in config:
        raise RuntimeError(f"OHIF {VERSION}'s app-config.js no longer names {_DEMO_ROOT}; update tests/viewer.py")
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


# OHIF plays video in cornerstone's VideoViewport, which draws an off-document <video> element onto its
# canvas: the element is found through the rendering engines OHIF exposes as window.cornerstone
_VIDEO = ("(() => { if (!window.cornerstone) return null; for (const e of cornerstone.getRenderingEngines()) "
          "for (const p of e.getViewports()) { if (p.videoElement) return p.videoElement; } return null; })()")


def video_state(browser: Browser) -> dict | None:
    """readyState, currentTime, source and size of the video OHIF shows, or None when it shows none."""
    return browser.evaluate(f"(() => {{ const v = {_VIDEO}; return v && {{readyState: v.readyState, "
                            "currentTime: v.currentTime, src: v.currentSrc, paused: v.paused, "
                            "error: v.error && v.error.code, width: v.videoWidth, height: v.videoHeight}; })()")


def wait_playing(browser: Browser, expect: str, timeout_s: float = 60,
                 press_play_after_s: float = 5.0) -> tuple[dict | None, float]:
    """Wait until the video whose source names `expect` (a SOP Instance UID) has all it needs (readyState
    4) and its time has advanced by 0.3 s; returns the last state and the seconds it took (-1: never).

    OHIF 3.13 now and then leaves a loaded video paused at its first frame (seen in about one run in
    twenty, any syntax): after `press_play_after_s` at readyState 4 and paused, play() is called as the
    user's play button would, and the state says so ("pressed_play": True)."""
    started, first_time, ready_at, pressed = time.monotonic(), None, None, False
    state = None
    while time.monotonic() - started < timeout_s:
        state = video_state(browser)
        if state and expect in (state["src"] or "") and state["readyState"] == 4:
            ready_at = ready_at or time.monotonic()
            if first_time is None:
                first_time = state["currentTime"]
            elif state["currentTime"] - first_time >= 0.3:
                return state | {"pressed_play": pressed}, time.monotonic() - started
            if state["paused"] and not pressed and time.monotonic() - ready_at >= press_play_after_s:
                browser.evaluate(f"(() => {{ const v = {_VIDEO}; v && v.play(); }})()")
                pressed = True
        time.sleep(0.25)
    return (state | {"pressed_play": pressed}) if state else state, -1.0


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
