"""Regenerate docs/pacs-matrix/: Orthanc measured, every PACS profile from its documents.

Run: python bench/make_pacs_matrix.py [-o docs/pacs-matrix]

Starts Debian's Orthanc (default configuration but for ports, AE title and the DICOMweb plugin;
bench/orthanc.py) with empty storage, then runs
  dvqa pacs matrix --target "Orthanc VERSION with DICOMweb plugin VERSION (...)=ORTHANC@127.0.0.1:PORT,wado=URL,get"
      --pacs-profile all
(both versions as the running server reports them over its REST API)
so every (video IOD x transfer syntax) file is stored, read back over WADO-RS and with C-GET, and
compared byte for byte; the profile rows are marked as from documents. Takes about a minute.
Whether the stored videos then play in a web viewer is the viewer matrix (docs/pacs-matrix/README.md
links it: docs/regulatory/viewer-matrix.md, written by the OHIF tests of tests/test_serve.py).
"""

from __future__ import annotations

import argparse
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import orthanc  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-o", "--output", dest="out", type=Path, default=ROOT / "docs" / "pacs-matrix")
    args = parser.parse_args()
    exe = shutil.which("Orthanc")
    if not exe:
        raise SystemExit("needs Orthanc: apt-get install orthanc orthanc-dicomweb")
    system = platform.freedesktop_os_release().get("PRETTY_NAME", platform.platform())
    with tempfile.TemporaryDirectory(prefix="dvqa-matrix-orthanc-") as scratch, \
            orthanc.running(Path(scratch), exe) as server:
        # the versions the running server reports (REST /system, /plugins/dicom-web), never typed in here
        name = (f"Orthanc {server['version']} with DICOMweb plugin {server['dicomweb_version']} ({system} package, "
                "default configuration)")
        target = f"{name}=ORTHANC@127.0.0.1:{server['port']},wado={server['http']}/dicom-web,get"
        proc = subprocess.run([sys.executable, "-m", "dvqa", "pacs", "matrix", "--target", target,
                               "--pacs-profile", "all", "-o", str(args.out)], cwd=ROOT)
    raise SystemExit(proc.returncode)


if __name__ == "__main__":
    main()
