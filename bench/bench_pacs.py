"""Benchmark `dvqa pacs store` against DCMTK's storescu sending the same video files to a local Orthanc.

Run: python bench/bench_pacs.py [--files 100] [--repeat 3]

The files: one 10 s 1280x720 30 fps H.264 High@4.1 recording wrapped by `dvqa convert` (passthrough),
copied --files times with new SOP Instance UIDs into bench/.cache/pacs/ (same study and series, as a
procedure's clips would be). Each run starts a fresh Orthanc with empty storage (Debian's 1.10,
bench/orthanc.py), then times one command sending every file over one association:
  dvqa:     python -m dvqa pacs store FILES --port P --called-aet ORTHANC --retries 0
  storescu: storescu -aec ORTHANC -R -xn 127.0.0.1 P FILES   (-xn: propose H.264 HP@L4.1, -R: only the
            contexts the files need)
Both are whole commands (dvqa includes Python's start-up). Prints medians, files/s, MB/s and the ratio
dvqa / storescu of elapsed time (lower is better), at Orthanc's default maximum PDU (16 KiB) and at
its largest (128 KiB): pynetdicom's cost is per PDU, so the PDU size the PACS allows decides much of
the gap. Both go through the same Orthanc, which on a 2-core
machine shares the CPU with the sender: the ratio is what to compare, not the absolute rates.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE = HERE / ".cache" / "pacs"
sys.path.insert(0, str(ROOT / "reference_videos"))
sys.path.insert(0, str(ROOT))

import make_references as refs  # noqa: E402
from bench import orthanc  # noqa: E402
from bench_convert import timed  # noqa: E402


def make_files(count: int) -> list[Path]:
    import pydicom
    from pydicom.uid import generate_uid

    from dvqa.convert.pipeline import ConvertOptions, convert

    folder = CACHE / str(count)
    files = sorted(folder.glob("*.dcm")) if folder.is_dir() else []
    if len(files) == count:
        return files
    folder.mkdir(parents=True, exist_ok=True)
    clip = CACHE / "h264_720p_10s_vui30.mkv"
    if not clip.exists():
        refs.write_single(clip, "matroska", "libx264", 1280, 720, [round(i * 1000 / 30) for i in range(300)],
                          {"preset": "veryfast", "crf": "18", "profile": "high", "x264-params": "level=4.1:keyint=30"},
                          unseekable=False, full_range=False, cfr=30)
    base = CACHE / "base.dcm"
    if not base.exists():
        convert(clip, base, ConvertOptions(syntax="h264-high-4.1", quality=False))
    ds = pydicom.dcmread(str(base))
    for n in range(count):
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = n + 1
        ds.save_as(str(folder / f"{n:04d}.dcm"), enforce_file_format=True)
    return sorted(folder.glob("*.dcm"))


def timed_run(command: list[str], exe: str, max_pdu: int) -> float:
    """A fresh Orthanc, then the timed command; fails loudly if the command reports a failure."""
    with tempfile.TemporaryDirectory(prefix="dvqa-bench-orthanc-") as scratch, \
            orthanc.running(Path(scratch), exe, extra={"MaximumPduLength": max_pdu}) as server:
        return timed([part.replace("{port}", str(server["port"])) for part in command])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--max-pdu", type=int, nargs="+", default=[16384, 131072],
                        help="Orthanc's MaximumPduLength (its default 16384; 131072 is its maximum): the size of "
                             "every P-DATA PDU the senders may use")
    args = parser.parse_args()
    exe, storescu = shutil.which("Orthanc"), shutil.which("storescu")
    if not exe or not storescu:
        raise SystemExit("needs Orthanc and DCMTK: apt-get install orthanc orthanc-dicomweb dcmtk")
    files = make_files(args.files)
    megabytes = sum(f.stat().st_size for f in files) / 1e6
    names = [str(f) for f in files]
    commands = {
        "dvqa": [sys.executable, "-m", "dvqa", "pacs", "store", *names, "--port", "{port}", "--called-aet",
                 "ORTHANC", "--retries", "0"],
        "storescu": [storescu, "-aec", "ORTHANC", "-R", "-xn", "127.0.0.1", "{port}", *names],
    }
    print(f"{len(files)} files, {megabytes:.1f} MB in all; Orthanc {orthanc.version(exe)}; medians of {args.repeat}")
    for max_pdu in args.max_pdu:
        print(f"Orthanc MaximumPduLength {max_pdu}:")
        medians = {}
        for name, command in commands.items():
            times = [timed_run(command, exe, max_pdu) for _ in range(args.repeat)]
            medians[name] = statistics.median(times)
            print(f"  {name:<9} {medians[name]:7.2f} s  {len(files) / medians[name]:6.1f} files/s  "
                  f"{megabytes / medians[name]:6.1f} MB/s   (runs: {', '.join(f'{t:.2f}' for t in times)})")
        print(f"  ratio dvqa/storescu (time): {medians['dvqa'] / medians['storescu']:.2f}")


if __name__ == "__main__":
    main()
