"""Benchmark the `dvqa serve` gateway on a long 1080p30 H.264 instance against Orthanc's own download,
and OHIF's time from opening the viewer URL to the first frame of the video.

Run: python bench/bench_serve_gateway.py [--minutes 10] [--no-viewer] [--timeline] [--repeat N]

The instance: a 10 s 1920x1080 30 fps H.264 High@4.1 recording (B-pictures, key frame every second)
wrapped by `dvqa convert` (passthrough), its stream repeated to --minutes (each copy starts with an IDR
picture, so the whole is one valid stream), cached in bench/.cache/serve/. A fresh Orthanc (Debian's
1.10 with its DICOMweb plugin, bench/orthanc.py) stores it; `dvqa serve` stands in front. Timed, as a
client sees them:
  orthanc file:   GET /instances/ID/file from Orthanc (the DICOM file, nothing to play)
  rendered cold:  GET .../rendered through the gateway, empty cache (download, remux, stream): time to
                  the first byte and to the last
  rendered warm:  the same again (from the gateway's cache, with Content-Length and Range)
and the gateway's peak RSS (VmHWM). Then OHIF's prebuilt viewer (tests/ohif.py, served as the viewer
tests serve it, tests/viewer.py) pointed at a second gateway with an empty cache, opened in headless
Chromium (tests/cdp.py) on the instance's study: the time from the navigation's start to OHIF's first
DICOMweb request (the end of its own start-up), its metadata answer, the gateway's first answer for the
video, OHIF's video having its first frame (readyState >= 2; its viewport draws it at the next animation
frame) and the video playing (its time advancing by 0.3 s, tests/viewer.py) - once with the gateway's
cache empty (the first viewer of the video), once warm; both through WADO-RS and through Orthanc's file
route (orthanc_rest). Each of those in two browsers:
  returning browser: one that has shown OHIF on another video study (the 10 s clip, also in Orthanc)
                     twice before, as a clinician's browser that has opened the viewer before: OHIF's
                     JavaScript comes from the HTTP cache with the code V8 compiled from it
  new browser:       a fresh profile: its first visit compiles OHIF's JavaScript (the gateway-warm row
                     is its second visit, from the HTTP cache but compiled again)
Then the paths that fill the gateway's cache before anyone asks: the instance is deleted from Orthanc
and stored again, "stored through the gateway (STOW-RS)" (a fresh gateway renders it into its cache
once Orthanc has answered, dvqa.serve.prewarm) and "C-STORE into Orthanc, gateway watching" (DCMTK's
storescu sends it to Orthanc by DIMSE, as a modality would; a fresh gateway with orthanc_watch follows
Orthanc's changes and renders it, dvqa.serve.watch); once the cache holds it, OHIF is opened on it by
its first viewers, a returning browser and then a new one. --repeat N does all that N times, each with a fresh gateway and
cache, and prints medians. The last lines are the floors for a cold first frame that no gateway can
beat: OHIF's own start-up plus Orthanc's first byte of the instance. On this 2-core machine Orthanc,
the gateway, Chromium and the client share the CPU: compare the rows, not the absolute rates.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE = HERE / ".cache" / "serve"
sys.path.insert(0, str(ROOT / "reference_videos"))
sys.path.insert(0, str(ROOT))

import make_references as refs  # noqa: E402
from bench import orthanc  # noqa: E402

# OHIF's video (cornerstone's VideoViewport holds the <video> it draws onto its canvas each animation frame)
_FIRST_FRAME = ("(() => { if (!window.cornerstone) return null; for (const e of cornerstone.getRenderingEngines()) "
                "for (const p of e.getViewports()) { const v = p.videoElement; "
                "if (v && v.readyState >= 2) return {t: performance.now() / 1000, src: v.currentSrc}; } "
                "return null; })()")


def first_frame(browser, expect: str, timeout_s: float = 300) -> float:
    """Seconds from the navigation's start until OHIF's video has its first frame decoded (readyState >= 2,
    HAVE_CURRENT_DATA), which its viewport draws at the next animation frame. Polled every 50 ms. (OHIF's
    canvas reads back empty in headless Chromium, and DevTools screenshots of it stayed black, so the
    paint itself is not observed.)"""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = browser.evaluate(_FIRST_FRAME)
        if found and expect in (found["src"] or ""):
            return found["t"]
        time.sleep(0.05)
    raise SystemExit(f"OHIF's video never had its first frame (last seen: {browser.evaluate(_FIRST_FRAME)})")


def long_instance(minutes: int) -> Path:
    import pydicom
    from pydicom.encaps import encapsulate, generate_fragments
    from pydicom.uid import generate_uid

    from dvqa.convert.pipeline import ConvertOptions, convert

    CACHE.mkdir(parents=True, exist_ok=True)
    target = CACHE / f"h264_1080p30_{minutes}min.dcm"
    if target.exists():
        return target
    clip = CACHE / "h264_1080p_10s.mkv"
    if not clip.exists():
        refs.write_single(clip, "matroska", "libx264", 1920, 1080, [round(i * 1000 / 30) for i in range(300)],
                          {"preset": "veryfast", "crf": "20", "profile": "high", "x264-params": "level=4.1:keyint=30"},
                          unseekable=False, full_range=False, cfr=30)
    base = CACHE / "base.dcm"
    if not base.exists():
        convert(clip, base, ConvertOptions(syntax="h264-high-4.1", quality=False))
    ds = pydicom.dcmread(str(base))
    stream = b"".join(list(generate_fragments(ds.PixelData))[1:])
    copies = minutes * 6
    ds.PixelData = encapsulate([stream * copies])
    ds.NumberOfFrames = int(ds.NumberOfFrames) * copies
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        setattr(ds, keyword, generate_uid())
    ds.save_as(str(target), enforce_file_format=True)
    return target


def fetch(url: str) -> tuple[float, float, int]:
    """(seconds to the first byte, seconds to the last, bytes)."""
    started = time.monotonic()
    first, size = -1.0, 0
    with urllib.request.urlopen(url, timeout=600) as answer:
        while True:
            piece = answer.read(1 << 20)
            if not piece:
                break
            if first < 0:
                first = time.monotonic() - started
            size += len(piece)
    return first, time.monotonic() - started, size


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return -1.0


def start_gateway(upstream: str, cache: Path, config: Path | None = None) -> tuple[subprocess.Popen, int]:
    port = orthanc.free_port()
    extra = ["--config", str(config)] if config else []
    gateway = subprocess.Popen([sys.executable, "-m", "dvqa", "serve", "--upstream", upstream, "--port", str(port),
                                "--cache-dir", str(cache), *extra], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    orthanc.wait_for_port(port, gateway, "dvqa serve")
    return gateway, port


def stop(gateway: subprocess.Popen) -> None:
    gateway.send_signal(signal.SIGTERM)
    gateway.wait(30)


def viewer_rows(upstream: str, ds, scratch: Path, timeline: bool = False, orthanc_rest: str = "",
                other=None) -> list[tuple[str, dict[str, float]]]:
    """OHIF opened on the instance's study through a fresh gateway: cold, then warm (a new page). With
    `other` (a second video study's data set), in a returning browser: one that has shown that study
    twice before, as a clinician's browser has (see `returning`); without, in a new browser."""
    sys.path.insert(0, str(ROOT / "tests"))
    import viewer  # noqa: E402 - the test suite's OHIF site
    from cdp import Browser  # noqa: E402

    ohif_port = orthanc.free_port()
    config = scratch / "serve.yaml"
    config.write_text(f"cors_origins: [http://127.0.0.1:{ohif_port}]\n"
                      + (f"orthanc_rest: {orthanc_rest}\n" if orthanc_rest else ""))
    kind = "returning" if other is not None else "new"
    gateway, port = start_gateway(upstream, scratch / f"viewer-cache-{kind}{'-rest' if orthanc_rest else ''}", config)
    rows = []
    try:
        with viewer.site(scratch / f"ohif-{kind}", f"http://127.0.0.1:{port}/dicom-web", ohif_port) as site, \
                Browser("--mute-audio", "--window-size=1280,800") as browser:
            if other is not None:
                returning(browser, site, other)
            route = ", file route" if orthanc_rest else ""
            second = "returning browser" if other is not None else "the browser's 2nd visit"
            for name in (f"gateway cold, {kind} browser{route}", f"gateway warm, {second}{route}"):
                rows.append((name, _open_viewer(browser, site, ds, name, timeline)))
    finally:
        stop(gateway)
    return rows


def returning(browser, site: str, other) -> None:
    """Make `browser` a returning one: OHIF shown twice on another video study, to its first frame.

    Chromium keeps the compiled code of a script with the script in its HTTP cache once it has run it
    twice (V8's code cache), so from the third visit on OHIF's 17 MB of JavaScript is not compiled again:
    measured here, its start-up to the first DICOMweb request falls from about 1.5 s to about 0.7 s. A
    clinician's browser that has opened the viewer before is in that state; a new profile is not."""
    for _ in range(2):
        browser.navigate("about:blank")
        browser.drain()
        browser.navigate(f"{site}/viewer?StudyInstanceUIDs={other.StudyInstanceUID}")
        first_frame(browser, str(other.SOPInstanceUID))


def _open_viewer(browser, site: str, ds, name: str, timeline: bool) -> dict[str, float]:
    """Open OHIF on the instance's study; the times of _answers, the first frame and playing."""
    sys.path.insert(0, str(ROOT / "tests"))
    import viewer  # noqa: E402 - the test suite's OHIF site

    browser.navigate("about:blank")
    browser.drain()
    browser.events.clear()
    browser.navigate(f"{site}/viewer?StudyInstanceUIDs={ds.StudyInstanceUID}")
    shown = first_frame(browser, str(ds.SOPInstanceUID))
    state, took = viewer.wait_playing(browser, str(ds.SOPInstanceUID), timeout_s=30)
    # OHIF does not always start playing on its own (seen paused at readyState 4): nan then
    playing = browser.evaluate("performance.now() / 1000") if took >= 0 else float("nan")
    if timeline:
        _print_timeline(name, browser)
    print(f"  {name}: first frame {shown:.2f} s", file=sys.stderr, flush=True)  # progress on a long run
    return {"first frame": shown, "playing": playing, **_answers(browser)}


STORED_ROW = {"stow": "stored through the gateway (STOW-RS), {} browser",
              "dimse": "C-STORE into Orthanc, gateway watching, {} browser"}


def stored_rows(how: str, pacs: dict, orthanc_id: str, instance: Path, ds, other, scratch: Path,
                timeline: bool = False) -> tuple[list[tuple[str, dict[str, float]]], float, float]:
    """The instance stored again through a fresh gateway's cache-filling paths - `how` "stow": STOW-RS
    through the gateway (dvqa.serve.stow); "dimse": a DIMSE C-STORE straight into Orthanc by DCMTK's
    storescu, as a modality stores, with the gateway following Orthanc's changes (orthanc_watch,
    dvqa.serve.watch) - then, once the gateway has prepared it, opened in OHIF by its first viewers: a
    returning browser (see `returning`), then a new one. Returns the rows, the store's seconds and the
    seconds from its end until the gateway's cache held the instance."""
    import httpx

    sys.path.insert(0, str(ROOT / "tests"))
    import viewer  # noqa: E402 - the test suite's OHIF site
    from cdp import Browser  # noqa: E402

    from dvqa.serve import entries

    pacs_http = pacs["http"]
    with urllib.request.urlopen(urllib.request.Request(f"{pacs_http}/instances/{orthanc_id}", method="DELETE"),
                                timeout=60):
        pass  # stored anew below, not found already there
    ohif_port = orthanc.free_port()
    config = scratch / f"serve-{how}.yaml"
    config.write_text(f"cors_origins: [http://127.0.0.1:{ohif_port}]\n"
                      + (f"orthanc_rest: {pacs_http}\northanc_watch: true\n" if how == "dimse" else ""))
    cache = scratch / f"{how}-cache"
    gateway, port = start_gateway(f"{pacs_http}/dicom-web", cache, config)
    try:
        root = f"http://127.0.0.1:{port}/dicom-web"
        started = time.monotonic()
        if how == "dimse":  # proposed for its SOP Class in its own transfer syntax (H.264 High@4.1)
            sent = subprocess.run(["storescu", "-R", "-xn", "-aec", "ORTHANC", "127.0.0.1", str(pacs["port"]),
                                   str(instance)], capture_output=True, text=True, timeout=600)
            if sent.returncode != 0:
                raise SystemExit(f"storescu failed: {sent.stderr.strip()[-300:]}")
        else:
            boundary = "dvqa-bench-boundary"

            def body():
                yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                with open(instance, "rb") as source:
                    while piece := source.read(1 << 20):
                        yield piece
                yield f"\r\n--{boundary}--\r\n".encode()

            answer = httpx.post(f"{root}/studies", content=body(), timeout=600, headers={
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                "Accept": "application/dicom+json"})
            if answer.status_code != 200:
                raise SystemExit(f"STOW-RS through the gateway answered {answer.status_code}: {answer.text[:200]}")
        stored_s = time.monotonic() - started
        header = cache / f"{entries.header_key(str(ds.SOPInstanceUID))}.json"
        answered = time.monotonic()
        while not header.exists():  # written last, once the rendering and thumbnail are in the cache
            if time.monotonic() - answered > 600:
                raise SystemExit("the gateway never prepared the stored instance")
            time.sleep(0.05)
        prepared_s = time.monotonic() - answered
        print(f"  {how}: stored in {stored_s:.2f} s, prepared {prepared_s:.2f} s later", file=sys.stderr, flush=True)
        rows = []
        with viewer.site(scratch / f"ohif-{how}", root, ohif_port) as site:
            for kind in ("returning", "new"):
                with Browser("--mute-audio", "--window-size=1280,800") as browser:
                    if kind == "returning":
                        returning(browser, site, other)
                    name = STORED_ROW[how].format(kind)
                    rows.append((name, _open_viewer(browser, site, ds, name, timeline)))
    finally:
        stop(gateway)
    return rows, stored_s, prepared_s


def _print_timeline(name: str, browser) -> None:
    """Every request of the page: seconds from the navigation's start to its answer, status and path
    (where the time to the first frame goes)."""
    sent = {e["params"]["requestId"]: e["params"] for e in browser.events
            if e.get("method") == "Network.requestWillBeSent"}
    start = next((p["timestamp"] for p in sent.values() if "/viewer?" in p["request"]["url"]), None)
    print(f"-- {name}: requests (sent s, answered s, status, path)")
    for event in browser.events:
        if event.get("method") != "Network.responseReceived" or start is None:
            continue
        asked = sent.get(event["params"]["requestId"], {}).get("timestamp", float("nan"))
        response = event["params"]["response"]
        path = "/" + response["url"].split("/", 3)[-1].split("?")[0][-90:]
        print(f"{asked - start:7.2f} {event['params']['timestamp'] - start:7.2f} {response['status']:>4} {path}")


def _answers(browser) -> dict[str, float]:
    """Seconds from the navigation's start to the first /metadata and /rendered answers (DevTools events)."""
    browser.drain()
    sent = {e["params"]["requestId"]: e["params"] for e in browser.events
            if e.get("method") == "Network.requestWillBeSent"}
    start = next((p["timestamp"] for p in sent.values() if "/viewer?" in p["request"]["url"]), None)
    found: dict[str, float] = {}
    asked = [p["timestamp"] for p in sent.values() if "/dicom-web/" in p["request"]["url"]]
    if asked and start is not None:
        found["asks"] = min(asked) - start  # OHIF's own start-up ends with its first DICOMweb request
    for event in browser.events:
        if event.get("method") != "Network.responseReceived" or start is None:
            continue
        url = event["params"]["response"]["url"].split("?")[0]
        for what in ("metadata", "rendered"):
            if url.endswith("/" + what) and what not in found and event["params"]["response"]["status"] == 200:
                found[what] = event["params"]["timestamp"] - start
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--no-viewer", action="store_true", help="skip the OHIF measurement")
    parser.add_argument("--timeline", action="store_true", help="print every request OHIF made, with times")
    parser.add_argument("--repeat", type=int, default=1,
                        help="OHIF measurements per row, each through a fresh gateway and cache (medians printed)")
    args = parser.parse_args()
    import pydicom

    instance = long_instance(args.minutes)
    ds = pydicom.dcmread(str(instance), stop_before_pixels=True)
    other = pydicom.dcmread(str(CACHE / "base.dcm"), stop_before_pixels=True)  # the 10 s clip: another study
    with tempfile.TemporaryDirectory() as scratch, orthanc.running(Path(scratch)) as pacs:
        orthanc_id = ""
        for stored in (CACHE / "base.dcm", instance):
            request = urllib.request.Request(f"{pacs['http']}/instances", data=stored.read_bytes(), method="POST")
            with urllib.request.urlopen(request, timeout=600) as answer:
                orthanc_id = __import__("json").load(answer)["ID"]
        rows = [("orthanc file", *fetch(f"{pacs['http']}/instances/{orthanc_id}/file"))]
        rss = {}
        for route, rest in (("", ""), (", file route", pacs["http"])):
            config = Path(scratch) / f"gateway{route.strip(', ')}.yaml"
            config.write_text(f"orthanc_rest: {rest}\n" if rest else "{}\n")
            gateway, port = start_gateway(f"{pacs['http']}/dicom-web", Path(scratch) / f"cache{route}", config)
            try:
                rendered = (f"http://127.0.0.1:{port}/dicom-web/studies/{ds.StudyInstanceUID}/series/"
                            f"{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}/rendered")
                rows += [(f"rendered cold{route}", *fetch(rendered)), (f"rendered warm{route}", *fetch(rendered))]
                rss[route] = peak_rss_mb(gateway.pid)
            finally:
                stop(gateway)
        runs: list[tuple[str, dict[str, float]]] = []
        stows: list[tuple[str, float, float]] = []
        for number in range(0 if args.no_viewer else args.repeat):
            folder = Path(scratch) / f"viewer-{number}"
            folder.mkdir()
            for browser_other in (other, None):  # a returning browser, then a new one
                for rest in ("", pacs["http"]):
                    runs += viewer_rows(f"{pacs['http']}/dicom-web", ds, folder, args.timeline, rest, browser_other)
            for how in STORED_ROW:
                stored, *times = stored_rows(how, pacs, orthanc_id, instance, ds, other, folder, args.timeline)
                runs += stored
                stows.append((how, *times))
    print(f"{args.minutes} min 1080p30 H.264, {instance.stat().st_size / 1e6:.0f} MB DICOM, "
          f"{int(ds.NumberOfFrames)} frames")
    print(f"{'':<27} {'first byte s':>12} {'total s':>8} {'MB':>6} {'MB/s':>6}")
    for name, first, total, size in rows:
        print(f"{name:<27} {first:>12.2f} {total:>8.2f} {size / 1e6:>6.0f} {size / 1e6 / total:>6.0f}")
    print("dvqa serve peak RSS: " + ", ".join(f"{mb:.0f} MB{route}" for route, mb in rss.items()))
    for how, what in (("stow", "STOW-RS through the gateway"), ("dimse", "C-STORE by storescu into Orthanc")):
        times = [(s, p) for h, s, p in stows if h == how]
        if times:
            print(f"{what}: stored in {_median([s for s, _ in times]):.2f} s, in the gateway's cache "
                  f"{_median([p for _, p in times]):.2f} s after that (medians of {len(times)}); its OHIF rows "
                  "below are timed from then")
    if runs:
        print(f"seconds from opening the OHIF viewer URL to: its first DICOMweb request (the end of its own "
              "start-up), the metadata and /rendered answers, the video's first frame, playing; and from its "
              f"first request to the first frame (the gateway's and the PACS's share); medians of {args.repeat}, "
              "first frame's range in brackets")
        keys = ("asks", "metadata", "rendered", "first frame", "playing")
        print(f"{'':<51} " + " ".join(f"{k:>11}" for k in keys) + f" {'asks->frame':>11} {'first frame range':>17}")
        for name in dict.fromkeys(name for name, _ in runs):
            measured = [times for row, times in runs if row == name]
            for times in measured:
                times["asks->frame"] = times.get("first frame", float("nan")) - times.get("asks", float("nan"))
            middle = {k: _median([t.get(k, float("nan")) for t in measured]) for k in (*keys, "asks->frame")}
            frames = [t.get("first frame", float("nan")) for t in measured]
            print(f"{name:<51} " + " ".join(f"{middle[k]:>11.2f}" for k in (*keys, "asks->frame"))
                  + f" {f'[{min(frames):.2f}-{max(frames):.2f}]':>17}")
        for kind in ("returning", "new"):
            asks = _median([t.get("asks", float("nan")) for name, t in runs if f"{kind} browser" in name])
            print(f"floor for a cold first frame in a {kind} browser: OHIF's start-up ({asks:.2f} s, median) + "
                  f"Orthanc's own first byte of the instance on its fastest route ({rows[0][1]:.2f} s) = "
                  f"{asks + rows[0][1]:.2f} s, before the gateway does anything")


def _median(values: list[float]) -> float:
    """The median of the measured values (a run where OHIF never played gives nan: left out)."""
    kept = [v for v in values if v == v]
    return statistics.median(kept) if kept else float("nan")


if __name__ == "__main__":
    main()
