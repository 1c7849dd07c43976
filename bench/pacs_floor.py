"""The floor under `dvqa serve`'s end -> stored: how long the PACS itself takes to store one large file.

Run: python bench/pacs_floor.py [--dicom FILE | --size 1080p --seconds 600] [--runs 3] [--max-pdu 16384 ...]
                                 [--only NAMES] [--smoke]
(bench/bench_serve.py --floor prints the same rows beside its own.)

The file: the passthrough DICOM of bench_serve's H.264 recording (`dvqa convert` without quality, cached in
bench/.cache/floor/), or --dicom. Each run starts a fresh Orthanc (bench/orthanc.py, empty storage, Debian's
1.10 with its defaults but MaximumPduLength = --max-pdu; SyncStorageArea stays on, Orthanc's default: it
fsyncs every file it stores) and times one send, from its start to the PACS's answer:
  storescu     DCMTK's storescu, one C-STORE (-R and the file's own transfer syntax), the whole command
  REST         curl POST of the file to Orthanc's /instances (streamed from the file: -T, no Expect)
  STOW-RS      curl POST of a multipart/related body (the file in one part, written beforehand) to
               /dicom-web/studies
  dvqa C-STORE dvqa.pacs.network.store in this process (what `dvqa serve` calls: pynetdicom, the file's own
               bytes in PDUs of the size Orthanc accepts)
  dvqa STOW-RS dvqa.pacs.network.stow in this process
Every send is checked: Orthanc must then hold exactly one instance. Medians of --runs, the load average
beside each: the machine has 2 cores, shared with Orthanc, so the numbers are this machine's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from bench import orthanc  # noqa: E402

CACHE = HERE / ".cache" / "floor"
BOUNDARY = "dvqa-floor-boundary-7d1f0c"
# storescu's option proposing a file's transfer syntax (DCMTK 3.6.7); any other is proposed with -R alone
STORESCU_SYNTAX = {"1.2.840.10008.1.2.4.102": "-xn", "1.2.840.10008.1.2.4.103": "-xl",
                   "1.2.840.10008.1.2.4.104": "-x2", "1.2.840.10008.1.2.4.105": "-x3",
                   "1.2.840.10008.1.2.4.100": "-xm", "1.2.840.10008.1.2.4.101": "-xh"}


def dicom_of(recording: Path) -> Path:
    """The passthrough DICOM of `recording` (quality off: only the file matters here), cached."""
    target = CACHE / f"{recording.stem}.dcm"
    if target.exists():
        return target
    from dvqa.convert.options import ConvertOptions
    from dvqa.convert.pipeline import convert

    CACHE.mkdir(parents=True, exist_ok=True)
    result = convert(recording, target, ConvertOptions(quality=False, force=True))
    if not result.plan.passthrough:
        raise SystemExit(f"{recording}: not passed through ({result.plan.passthrough_refusal})")
    return target


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command[:6])} ...\n{done.stdout[-800:]}{done.stderr[-800:]}")


def _instances(http: str) -> int:
    with urllib.request.urlopen(f"{http}/statistics", timeout=60) as answer:
        return int(json.loads(answer.read())["CountInstances"])


def senders(path: Path, body: Path) -> dict[str, Callable[[dict], None]]:
    """name -> a function sending `path` to the running Orthanc described by its argument."""
    from pydicom import dcmread

    from dvqa.pacs import network as pacs

    syntax = str(dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
    storescu = shutil.which("storescu") or "storescu"
    curl = [shutil.which("curl") or "curl", "-sS", "-f", "-o", "/dev/null", "-H", "Expect:", "-X", "POST"]

    def dcmtk(server: dict) -> None:
        _run([storescu, "-aec", "ORTHANC", "-R", *([STORESCU_SYNTAX[syntax]] if syntax in STORESCU_SYNTAX else []),
              "127.0.0.1", str(server["port"]), str(path)])

    def rest(server: dict) -> None:
        _run([*curl, "-H", "Content-Type: application/dicom", "-T", str(path), f"{server['http']}/instances"])

    def stow_curl(server: dict) -> None:
        _run([*curl, "-H", f'Content-Type: multipart/related; type="application/dicom"; boundary={BOUNDARY}',
              "-H", "Accept: application/dicom+json", "-T", str(body), f"{server['http']}/dicom-web/studies"])

    def dvqa_dimse(server: dict) -> None:
        result = pacs.store(pacs.Peer("127.0.0.1", int(server["port"]), "ORTHANC", "DVQA", 120), [path], 0)[0]
        if result.outcome != "stored":
            raise SystemExit(f"dvqa C-STORE: {result.outcome} {result.message}")

    def dvqa_stow(server: dict) -> None:
        result = pacs.stow(f"{server['http']}/dicom-web", [path], 0, timeout=120)[0]
        if result.outcome != "stored":
            raise SystemExit(f"dvqa STOW-RS: {result.outcome} {result.message}")

    return {"storescu (DCMTK)": dcmtk, "REST POST /instances (curl)": rest, "STOW-RS (curl)": stow_curl,
            "dvqa C-STORE": dvqa_dimse, "dvqa STOW-RS": dvqa_stow}


def multipart(path: Path, folder: Path) -> Path:
    """`path` as the one part of a STOW-RS request body (PS3.18 §10.5), written before anything is timed."""
    body = folder / "stow.body"
    with open(body, "wb") as out, open(path, "rb") as source:
        out.write(f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode())
        shutil.copyfileobj(source, out, 1 << 20)
        out.write(f"\r\n--{BOUNDARY}--\r\n".encode())
    return body


def once(send: Callable[[dict], None], max_pdu: int, exe: str) -> float:
    """One send to a fresh Orthanc; its seconds, after checking that Orthanc holds the one instance."""
    with tempfile.TemporaryDirectory(prefix="dvqa-floor-orthanc-") as scratch, \
            orthanc.running(Path(scratch), exe, extra={"MaximumPduLength": max_pdu}) as server:
        started = time.perf_counter()
        send(server)
        elapsed = time.perf_counter() - started
        if _instances(str(server["http"])) != 1:
            raise SystemExit("Orthanc does not hold the instance after the send")
        return elapsed


def floor(path: Path, max_pdu: int, runs: int = 3, only: list[str] | None = None,
          show: Callable[[str], None] = print) -> list[dict]:
    """Each sender's times (see the module), printed as they come and returned as rows."""
    exe = shutil.which("Orthanc")
    if not exe:
        raise SystemExit("needs Orthanc and its DICOMweb plugin: apt-get install orthanc orthanc-dicomweb")
    rows = []
    with tempfile.TemporaryDirectory(prefix="dvqa-floor-") as scratch:
        body = multipart(path, Path(scratch))
        show(f"floor: {path.name}, {path.stat().st_size / 1e6:.1f} MB, to a fresh Orthanc {orthanc.version(exe)} "
             f"each time (MaximumPduLength {max_pdu}, SyncStorageArea on: its default); medians of {runs}")
        for name, send in senders(path, body).items():
            if only and not any(o.lower() in name.lower() for o in only):
                continue
            before = load()
            times = [once(send, max_pdu, exe) for _ in range(runs)]
            row = {"sender": name, "median_s": round(statistics.median(times), 2),
                   "runs_s": [round(t, 2) for t in times], "max_pdu": max_pdu,
                   "size_mb": round(path.stat().st_size / 1e6, 1), "load_before": before}
            rows.append(row)
            show(f"  {name:<28} {row['median_s']:6.2f} s  ({', '.join(f'{t:.2f}' for t in times)})  "
                 f"{row['size_mb'] / row['median_s']:6.1f} MB/s  [{before}]")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dicom", type=Path, help="the file to send (default: bench_serve's recording, converted)")
    parser.add_argument("--size", default="1080p")
    parser.add_argument("--seconds", type=int, default=600)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-pdu", type=int, nargs="+", default=[16384])
    parser.add_argument("--only", help="comma-separated parts of sender names")
    parser.add_argument("--smoke", action="store_true", help="a short clip's file, once each, to check the bench runs")
    args = parser.parse_args()
    if args.smoke:
        path, args.runs, args.max_pdu = dicom_of(ROOT / "reference_videos" / "synthetic" / "h264_cfr_high.mkv"), 1, \
            [16384]
    elif args.dicom:
        path = args.dicom
    else:
        import bench_live

        path = dicom_of(bench_live.recording(args.size, args.seconds, "passthrough"))
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, {load()}", flush=True)
    for max_pdu in args.max_pdu:
        rows = floor(path, max_pdu, args.runs, args.only.split(",") if args.only else None,
                     show=lambda line: print(line, flush=True))
        if len(rows) != (len(args.only.split(",")) if args.only else 5) or not all(r["median_s"] > 0 for r in rows):
            raise SystemExit(f"unexpected rows: {rows}")
    print(f"done, {load()}")


if __name__ == "__main__":
    main()
