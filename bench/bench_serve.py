"""Capacity and latency of `dvqa serve`'s recording ingestion: K browsers uploading at once, at real time.

Run: python bench/bench_serve.py [--sizes 720p,1080p] [--kinds vp8,vp9,h264] [--seconds 60] [--k 1,2,3]
                                 [--max-pdu N] [--stow] [--floor] [--json FILE] [--smoke]

One `dvqa serve` (a real process, bench/record_server.py, as tests/test_record.py starts it) with a real
Orthanc on 127.0.0.1 as its PACS (bench/orthanc.py; DIMSE C-STORE, or STOW-RS with --stow), record.conversions and
record.max_recordings set to the largest K. The recordings, as a browser streams them (bench/bench_live.py
makes them: no Cues, no Duration):
  vp8   the camera-like VP8 WebM recording (Chrome's jittered timestamps, 0.1 bit per pixel): re-encoded
  vp9   the same pictures as VP9 WebM (libvpx-vp9, realtime): re-encoded
  h264  the same pictures as a camera's H.264 in Matroska: passed through (the bitstream is copied)
For each kind, size and K: K clients start together; each POSTs a recording, then PUTs chunk n (one second
of video: the file cut into as many byte ranges as it has seconds, as MediaRecorder's 1 s timeslice hands
them over) at n + 1 s after its start, POSTs end right after its last chunk, and polls GET every 50 ms
until the result. Measured:
  lag       every 0.5 s, per recording: the chunks acknowledged minus the chunk its conversion process is
            reading (found in /proc/PID/fd of the server's descendants; none open: waiting, lag 0) - in
            seconds of video, since a chunk is one second. A recording keeps up when its lag over the last
            half of the recording stays <= LAG_BOUND_S.
  latency   end -> stored: from just before POST end (the whole recording's SHA-256 made before, as a client
            that updates it chunk by chunk has it then) to the first GET that shows the result stored in
            Orthanc (client side, 50 ms polls); the server's own end_to_ready_s and end_to_stored_s beside,
            and its after_ready_s: the IOD check, then the send with its audit record.
  floor     with --floor: what Orthanc itself needs to take the passthrough recording's DICOM file, sent by
            DCMTK's storescu, curl (REST and STOW-RS) and dvqa's own C-STORE and STOW-RS, each to a fresh
            Orthanc (bench/pacs_floor.py): no server can store the recording sooner after its end than that.
  peak RSS  the largest sum of VmRSS over the server and all its descendants (the fork server and the
            conversion processes), sampled every 0.5 s.
The load average (uptime) is printed before and after: this machine has 2 cores and is shared.

--smoke: one short recording (reference_videos/synthetic/h264_cfr_high.mkv) streamed the same way, to check
the bench runs; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path

import av

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import bench_live  # noqa: E402
import pacs_floor  # noqa: E402
from bench import orthanc  # noqa: E402
from bench.record_server import RecordServer, end, put  # noqa: E402

LAG_BOUND_S = 3  # seconds of video: a conversion this far behind the upload, or less, keeps up
SAMPLE_S = 0.5
POLL_S = 0.05
SMOKE_CLIP = ROOT / "reference_videos" / "synthetic" / "h264_cfr_high.mkv"
KINDS = {"vp8": "reencode", "vp9": "reencode", "h264": "passthrough"}


def recording(kind: str, size: str, seconds: int) -> Path:
    """The recording `kind` (see the module) of `size`, `seconds` long."""
    if kind != "vp9":
        return bench_live.recording(size, seconds, KINDS[kind])
    return _as_vp9(bench_live.recording(size, seconds, "reencode"))


def _as_vp9(source: Path) -> Path:
    """`source`'s pictures and timestamps as VP9 in WebM at its bit rate (libvpx-vp9 realtime, as Chrome's
    MediaRecorder encodes), written to an unseekable sink like a browser's."""
    target = source.with_name(source.stem + "_vp9.webm")
    if target.exists():
        return target
    partial = target.with_suffix(".part")
    sink = bench_live._Unseekable(partial)
    with av.open(str(source)) as src, av.open(sink, "w", format="webm") as out:
        video = src.streams.video[0]
        seconds = float(sum(p.duration or 0 for p in src.demux(video)) * video.time_base) or 1.0
        src.seek(0)
        stream = out.add_stream("libvpx-vp9", rate=30, options={"deadline": "realtime", "cpu-used": "8",
                                                                  "row-mt": "1"})
        stream.width, stream.height, stream.pix_fmt = video.width, video.height, "yuv420p"
        stream.bit_rate = int(source.stat().st_size * 8 / seconds)
        stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        for frame in src.decode(video):
            frame.pts = round(frame.pts * video.time_base * 1000)
            frame.time_base = Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    sink.close()
    partial.rename(target)
    return target


def seconds_of(path: Path) -> int:
    """Whole seconds of video in `path` (its last packet's end), at least 1."""
    with av.open(str(path)) as src:
        video = src.streams.video[0]
        last = max((p.pts + (p.duration or 0)) for p in src.demux(video) if p.pts is not None)
        return max(1, round(float(last * video.time_base)))


# --- watching the server's processes -----------------------------------------------------------------------

def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _rss_mb(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        return int(status.split("VmRSS:")[1].split()[0]) / 1024
    except (OSError, IndexError):
        return 0.0


CHUNK_OPEN = re.compile(r"/recordings/([0-9a-f]{32})/chunks/(\d{8})$")


def _reading(pids: list[int]) -> dict[str, int]:
    """recording id -> the chunk number a conversion process has open."""
    reading = {}
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                found = CHUNK_OPEN.search(os.readlink(f"/proc/{pid}/fd/{fd}"))
            except OSError:
                continue
            if found:
                reading[found.group(1)] = max(reading.get(found.group(1), -1), int(found.group(2)))
    return reading


class Upload:
    """One client's recording: its chunks sent at real time, then end, then GET until the result."""

    def __init__(self, server: RecordServer, pieces: list[bytes], name: str) -> None:
        self.server, self.pieces, self.name = server, pieces, name
        self.rid = ""
        self.acknowledged = 0
        self.lags: list[tuple[float, int]] = []  # (seconds since the first chunk was due, lag in chunks)
        self.ended = self.stored_seen = 0.0
        self.state: dict = {}
        self.error: str | None = None

    def run(self, start: float) -> None:
        try:
            with self.server.client() as client:
                created = client.post("/recordings", json={"patient_id": self.name})
                created.raise_for_status()
                self.rid = created.json()["id"]
                for n, data in enumerate(self.pieces):
                    time.sleep(max(0.0, start + n + 1 - time.monotonic()))  # chunk n is handed over at n + 1 s
                    answer = put(client, self.rid, n, data)
                    if answer.status_code != 201:
                        raise RuntimeError(f"chunk {n}: {answer.status_code} {answer.text}")
                    self.acknowledged = n + 1
                whole = hashlib.sha256()  # as each chunk went out, by a client that keeps it up to date
                for piece in self.pieces:
                    whole.update(piece)
                self.ended = time.monotonic()
                answer = end(client, self.rid, self.pieces, whole.hexdigest())
                if answer.status_code != 202:
                    raise RuntimeError(f"end: {answer.status_code} {answer.text}")
                while True:
                    state = client.get(f"/recordings/{self.rid}").json()
                    if state["state"] not in ("receiving", "finishing"):
                        self.stored_seen, self.state = time.monotonic(), state
                        return
                    time.sleep(POLL_S)
        except Exception as exc:  # noqa: BLE001 - reported with the run, not a traceback from a thread
            self.error = f"{type(exc).__name__}: {exc}"

    @property
    def result(self) -> dict:
        return self.state.get("result") or {}

    def keeps_up(self, seconds: int) -> bool:
        late = [lag for at, lag in self.lags if at >= seconds / 2]
        return bool(self.result.get("stored")) and max(late, default=0) <= LAG_BOUND_S


def run_k(server: RecordServer, pieces: list[bytes], k: int, label: str) -> dict:
    """K uploads of the same recording at once; what they measured."""
    uploads = [Upload(server, pieces, f"BENCH-{label}-{k}-{i}") for i in range(k)]
    start = time.monotonic() + 0.5
    threads = [threading.Thread(target=u.run, args=(start,)) for u in uploads]
    for thread in threads:
        thread.start()
    peak = 0.0
    while any(t.is_alive() for t in threads):
        pids = _descendants(server.process.pid)
        peak = max(peak, sum(_rss_mb(pid) for pid in pids))
        reading = _reading(pids[1:])
        now = time.monotonic() - start
        for u in uploads:
            if u.rid and not u.ended:
                u.lags.append((now, u.acknowledged - reading.get(u.rid, u.acknowledged)))
        time.sleep(SAMPLE_S)
    for thread in threads:
        thread.join()
    failed = [f"{u.name}: {u.error or u.result.get('reason')}" for u in uploads
              if u.error or not u.result.get("stored")]
    if failed:
        raise SystemExit(f"{label} K={k}: not stored: {'; '.join(failed)}")
    seconds = len(pieces)
    latencies = [u.stored_seen - u.ended for u in uploads]
    return {
        "kind": label, "k": k, "seconds": seconds, "keep_up": sum(u.keeps_up(seconds) for u in uploads),
        "max_lag_s": max((lag for u in uploads for _, lag in u.lags), default=0),
        "end_lag_s": max((u.lags[-1][1] if u.lags else 0) for u in uploads),
        "latency_median_s": round(statistics.median(latencies), 2), "latency_worst_s": round(max(latencies), 2),
        "server_end_to_ready_s": [u.result.get("end_to_ready_s") for u in uploads],
        "server_end_to_stored_s": [u.result.get("end_to_stored_s") for u in uploads],
        "server_after_ready_s": [u.result.get("after_ready_s") for u in uploads],
        "passthrough": [u.result.get("passthrough") for u in uploads], "syntax": uploads[0].result.get("syntax"),
        "peak_rss_mb": round(peak),
    }


def show(row: dict) -> str:
    how = "passthrough" if all(row["passthrough"]) else f"re-encoded to {row['syntax']}"
    return (f"  K={row['k']}: {row['keep_up']}/{row['k']} keep up (lag max {row['max_lag_s']} s, at end "
            f"{row['end_lag_s']} s); end->stored median {row['latency_median_s']:.2f} s, worst "
            f"{row['latency_worst_s']:.2f} s (server: ready {row['server_end_to_ready_s']}, stored "
            f"{row['server_end_to_stored_s']}; after ready {_phases(row['server_after_ready_s'])}); peak RSS "
            f"{row['peak_rss_mb']} MB; {how}")


def _phases(phases: list[dict | None]) -> str:
    """The server's own split of the time after the DICOM was ready: the IOD check, then the send and its
    audit record."""
    return "; ".join(", ".join(f"{k} {v:.2f} s" for k, v in p.items()) if p else "-" for p in phases)


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="720p,1080p")
    parser.add_argument("--kinds", default="vp8,vp9,h264")
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--k", default="1,2,3", help="numbers of recordings at once, comma-separated")
    parser.add_argument("--json", type=Path, help="also write every row to this file")
    parser.add_argument("--max-pdu", type=int, default=16384,
                        help="Orthanc's MaximumPduLength (its default 16384, at most 131072): pynetdicom's cost of a "
                             "C-STORE is per PDU")
    parser.add_argument("--stow", action="store_true",
                        help="store with STOW-RS to Orthanc's DICOMweb instead of DIMSE C-STORE")
    parser.add_argument("--floor", action="store_true",
                        help="first, for each passthrough recording, what Orthanc itself needs to take its DICOM file "
                             "(bench/pacs_floor.py: storescu, curl REST and STOW-RS, dvqa's own sends; medians of 3)")
    parser.add_argument("--smoke", action="store_true", help="one short recording, to check the bench runs")
    args = parser.parse_args()
    cases = [(kind, size) for size in args.sizes.split(",") for kind in args.kinds.split(",")]
    ks = [int(k) for k in args.k.split(",")]
    if args.smoke:
        cases, ks = [("smoke", "")], [1]
    pacs_exe = shutil.which("Orthanc")
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, {load()}", flush=True)
    rows: list[dict] = []
    if args.floor:
        for kind, size in cases:
            if KINDS.get(kind) == "passthrough":
                dicom = pacs_floor.dicom_of(recording(kind, size, args.seconds))
                rows += [{"floor": f"{kind} {size}30", **row} for row in pacs_floor.floor(
                    dicom, args.max_pdu, show=lambda line: print(line, flush=True))]
    with tempfile.TemporaryDirectory(prefix="dvqa-bench-serve-") as scratch:
        folder = Path(scratch)
        (folder / "orthanc").mkdir()
        with orthanc.running(folder / "orthanc", pacs_exe, extra={"MaximumPduLength": args.max_pdu}) as pacs:
            (folder / "serve").mkdir()
            target = ({"stow": f"{pacs['http']}/dicom-web", "retries": 0} if args.stow else
                      {"host": "127.0.0.1", "port": pacs["port"], "called_aet": "ORTHANC", "retries": 0})
            server = RecordServer(folder / "serve", {"pacs": target, "conversions": max(ks), "max_recordings": max(ks)},
                                  secrets.token_hex(32), secrets.token_hex(32))
            try:
                how = "STOW-RS" if args.stow else f"DIMSE C-STORE, maximum PDU {args.max_pdu} bytes"
                print(f"dvqa serve pid {server.process.pid}, Orthanc {pacs['version']} ({how}; SyncStorageArea on, "
                      "its default)", flush=True)
                for kind, size in cases:
                    source = SMOKE_CLIP if kind == "smoke" else recording(kind, size, args.seconds)
                    seconds = seconds_of(source) if kind == "smoke" else args.seconds
                    pieces = bench_live.chunks(source, seconds)
                    label = kind if kind == "smoke" else f"{kind} {size}30"
                    print(f"{label}: {source.name}, {seconds} s, {source.stat().st_size / 1e6:.1f} MB in "
                          f"{len(pieces)} chunks", flush=True)
                    for k in ks:
                        row = run_k(server, pieces, k, label)
                        rows.append(row)
                        print(show(row), f"[{load()}]", flush=True)
            finally:
                server.stop()
    print(f"done, {load()}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
