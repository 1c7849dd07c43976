"""Record real MediaRecorder output with Debian's headless Chromium.

Run: python reference_videos/record_chromium.py [OUTDIR]   (default: reference_videos/chromium)

Synthetic clips imitate what browsers write; these are what a browser really
wrote. A page served on 127.0.0.1 draws on a canvas (the same 16-cell frame
code as `dvqa.video.framecode`, plus texture and motion), records
`canvas.captureStream()` with `MediaRecorder` and a timeslice (so no Duration,
no Cues, as a web app streaming chunks to a server gets), and POSTs the blob
back. Each recording's settings and Chromium's version go into
`chromium/recordings.json`, next to the files.

Needs `apt-get install chromium`. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import http.server
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.parse
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Recording:
    name: str
    mime: str  # what the page asks MediaRecorder for
    width: int
    height: int
    seconds: float
    fps: int  # captureStream(fps); 0 = a frame whenever the page draws (requestAnimationFrame)
    audio: bool = False
    resize_at: float = 0.0  # seconds; 0 = never resize the canvas
    bits_per_second: int = 1_500_000


RECORDINGS = [
    Recording("vp8_opus.webm", "video/webm;codecs=vp8,opus", 320, 240, 2.0, 30, audio=True),
    Recording("vp9_raf.webm", "video/webm;codecs=vp9", 320, 240, 2.0, 0),
    Recording("av1.webm", "video/webm;codecs=av1", 320, 240, 2.0, 30),
    Recording("h264_opus.webm", "video/webm;codecs=h264,opus", 320, 240, 2.0, 30, audio=True),
    Recording("h264.mp4", "video/mp4;codecs=avc1", 320, 240, 2.0, 30),
    Recording("vp9_resize.webm", "video/webm;codecs=vp9", 320, 240, 2.0, 30, resize_at=1.0),
    Recording("h264_resize.webm", "video/webm;codecs=h264", 320, 240, 2.0, 30, resize_at=1.0),
    Recording("h264_resize.mp4", "video/mp4;codecs=avc1", 320, 240, 2.0, 30, resize_at=1.0),
]

PAGE = """<!doctype html><meta charset="utf-8"><title>dvqa recorder</title>
<canvas id="c"></canvas>
<script>
const cfg = JSON.parse(decodeURIComponent(location.hash.slice(1)));
const canvas = document.getElementById("c");
canvas.width = cfg.width; canvas.height = cfg.height;
const ctx = canvas.getContext("2d");
let index = 0;
function draw() {
  const w = canvas.width, h = canvas.height;
  const g = ctx.createLinearGradient(0, 0, w, h);
  g.addColorStop(0, `hsl(${(index * 3) % 360},70%,45%)`);
  g.addColorStop(1, `hsl(${(index * 3 + 180) % 360},70%,55%)`);
  ctx.fillStyle = g; ctx.fillRect(0, 0, w, h);
  for (let y = 0; y < h; y += 16) for (let x = (y / 16) % 2 * 16; x < w; x += 32) {
    ctx.fillStyle = "rgba(255,255,255,0.15)"; ctx.fillRect(x, y, 16, 16);
  }
  const side = Math.max(8, Math.floor(h / 5));
  ctx.fillStyle = "rgb(250,250,40)";
  ctx.fillRect((index * 7) % Math.max(1, w - side), Math.floor(h / 2 - side / 2), side, side);
  ctx.fillStyle = "#000"; ctx.fillRect(4, Math.floor(h * 0.7), 90, 18);
  ctx.fillStyle = "#fff"; ctx.font = "14px monospace";
  ctx.fillText("#" + String(index).padStart(4, "0"), 8, Math.floor(h * 0.7) + 14);
  // the frame code: 12 bits of index, 4 bits of popcount, one cell each (dvqa/video/framecode.py)
  let ones = 0; for (let b = 0; b < 12; b++) ones += (index >> b) & 1;
  const word = index | ((ones & 15) << 12);
  const band = Math.max(4, Math.floor(h * 0.12));
  for (let bit = 0; bit < 16; bit++) {
    const x0 = Math.floor(bit * w / 16), x1 = Math.floor((bit + 1) * w / 16);
    ctx.fillStyle = ((word >> bit) & 1) ? "#fff" : "#000";
    ctx.fillRect(x0, 0, x1 - x0, band);
  }
}
async function main() {
  const report = {userAgent: navigator.userAgent, supported: MediaRecorder.isTypeSupported(cfg.mime)};
  if (!report.supported) { await post("report", JSON.stringify(report)); return; }
  draw();
  const stream = canvas.captureStream(cfg.fps || undefined);
  if (cfg.audio) {
    const ac = new AudioContext();
    const osc = ac.createOscillator(); osc.frequency.value = 440;
    const dest = ac.createMediaStreamDestination(); osc.connect(dest); osc.start();
    // audio first, as Chrome often writes it: the video is then not track 0
    const mixed = new MediaStream([...dest.stream.getAudioTracks(), ...stream.getVideoTracks()]);
    return record(mixed, report);
  }
  return record(stream, report);
}
async function record(stream, report) {
  const chunks = [];
  const rec = new MediaRecorder(stream, {mimeType: cfg.mime, videoBitsPerSecond: cfg.bits_per_second});
  rec.ondataavailable = (e) => { if (e.data.size) chunks.push(e.data); };
  const done = new Promise((resolve) => { rec.onstop = resolve; });
  const start = performance.now();
  let resized = false;
  function tick() {
    const t = (performance.now() - start) / 1000;
    if (t >= cfg.seconds) { rec.stop(); return; }
    if (cfg.resize_at && !resized && t >= cfg.resize_at) {
      canvas.width = Math.floor(cfg.width * 3 / 4); canvas.height = Math.floor(cfg.height * 3 / 4);
      resized = true;
    }
    index++; draw();
    requestAnimationFrame(tick);
  }
  rec.start(250);  // a timeslice, as web apps that upload while recording use
  requestAnimationFrame(tick);
  await done;
  report.mimeWritten = rec.mimeType; report.framesDrawn = index + 1;
  await post("report", JSON.stringify(report));
  await post("video", new Blob(chunks));
}
async function post(kind, body) {
  await fetch("/upload?kind=" + kind, {method: "POST", body});
}
main().catch((e) => post("report", JSON.stringify({error: String(e)})));
</script>
"""


class _Server(http.server.ThreadingHTTPServer):
    received: dict[str, bytes]
    finished: threading.Event


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        body = PAGE.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802
        kind = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)["kind"][0]
        data = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received[kind] = data
        self.send_response(204)
        self.end_headers()
        report = json.loads(self.server.received.get("report", b"{}"))
        if kind == "video" or "error" in report or report.get("supported") is False:
            self.server.finished.set()

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        pass


def chromium() -> str:
    found = shutil.which("chromium")
    if not found:
        sys.exit("chromium not installed: apt-get install chromium")
    return found


def record(recording: Recording, browser: str, timeout: float = 60.0) -> tuple[bytes | None, dict]:
    """Serve the page, let Chromium record, return (video bytes or None, the page's report)."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.received, server.finished = {}, threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}/#" + urllib.parse.quote(json.dumps(asdict(recording)))
    with tempfile.TemporaryDirectory() as profile:
        process = subprocess.Popen(
            [browser, "--headless=new", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
             "--no-first-run", "--disable-background-networking", "--disable-sync",
             "--disable-extensions", "--disable-component-update", "--mute-audio",
             "--autoplay-policy=no-user-gesture-required",
             "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
             "--disable-backgrounding-occluded-windows", url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            if not server.finished.wait(timeout):
                raise RuntimeError(f"{recording.name}: Chromium sent nothing within {timeout:.0f} s")
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            server.shutdown()
    report = json.loads(server.received.get("report", b"{}"))
    return server.received.get("video"), report


def main(outdir: Path) -> None:
    browser = chromium()
    version = subprocess.run([browser, "--version"], capture_output=True, text=True).stdout.strip()
    outdir.mkdir(parents=True, exist_ok=True)
    made = []
    for recording in RECORDINGS:
        video, report = record(recording, browser)
        if "error" in report:
            raise RuntimeError(f"{recording.name}: the page failed: {report['error']}")
        if video is None:
            print(f"{recording.name}: {recording.mime} not supported by this Chromium, skipped")
            continue
        (outdir / recording.name).write_bytes(video)
        made.append({**asdict(recording), "mime_written": report["mimeWritten"],
                     "frames_drawn": report["framesDrawn"], "bytes": len(video)})
        print(f"{recording.name}: {len(video)} bytes, {report['mimeWritten']}")
    manifest = {"chromium": version, "user_agent": report.get("userAgent", ""), "recordings": made}
    (outdir / "recordings.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "chromium")
