"""Benchmark the `dvqa serve` gateway on a long 1080p30 H.264 instance against Orthanc's own download.

Run: python bench/bench_serve_gateway.py [--minutes 10]

The instance: a 10 s 1920x1080 30 fps H.264 High@4.1 recording (B-pictures, key frame every second)
wrapped by `dvqa convert` (passthrough), its stream repeated to --minutes (each copy starts with an IDR
picture, so the whole is one valid stream), cached in bench/.cache/serve/. A fresh Orthanc (Debian's
1.10 with its DICOMweb plugin, bench/orthanc.py) stores it; `dvqa serve` stands in front. Timed, as a
client sees them:
  orthanc file:   GET /instances/ID/file from Orthanc (the DICOM file, nothing to play)
  rendered cold:  GET .../rendered through the gateway, empty cache (download, remux, stream): time to
                  the first byte and to the last
  rendered warm:  the same again (from the gateway's cache, with Content-Length and Range)
and the gateway's peak RSS (VmHWM). On this 2-core machine Orthanc, the gateway and the client share
the CPU: compare the rows, not the absolute rates.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=10)
    args = parser.parse_args()
    import pydicom

    instance = long_instance(args.minutes)
    ds = pydicom.dcmread(str(instance), stop_before_pixels=True)
    with tempfile.TemporaryDirectory() as scratch, orthanc.running(Path(scratch)) as pacs:
        request = urllib.request.Request(f"{pacs['http']}/instances", data=instance.read_bytes(), method="POST")
        with urllib.request.urlopen(request, timeout=600) as answer:
            orthanc_id = __import__("json").load(answer)["ID"]
        port = orthanc.free_port()
        gateway = subprocess.Popen([sys.executable, "-m", "dvqa", "serve", "--upstream", f"{pacs['http']}/dicom-web",
                                    "--port", str(port), "--cache-dir", str(Path(scratch) / "cache")],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            orthanc.wait_for_port(port, gateway, "dvqa serve")
            rendered = (f"http://127.0.0.1:{port}/dicom-web/studies/{ds.StudyInstanceUID}/series/"
                        f"{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}/rendered")
            rows = [("orthanc file", *fetch(f"{pacs['http']}/instances/{orthanc_id}/file")),
                    ("rendered cold", *fetch(rendered)),
                    ("rendered warm", *fetch(rendered))]
            rss = peak_rss_mb(gateway.pid)
        finally:
            gateway.send_signal(signal.SIGTERM)
            gateway.wait(30)
    print(f"{args.minutes} min 1080p30 H.264, {instance.stat().st_size / 1e6:.0f} MB DICOM, "
          f"{int(ds.NumberOfFrames)} frames")
    print(f"{'':<14} {'first byte s':>12} {'total s':>8} {'MB':>6} {'MB/s':>6}")
    for name, first, total, size in rows:
        print(f"{name:<14} {first:>12.2f} {total:>8.2f} {size / 1e6:>6.0f} {size / 1e6 / total:>6.0f}")
    print(f"dvqa serve peak RSS: {rss:.0f} MB")


if __name__ == "__main__":
    main()
