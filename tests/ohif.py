"""OHIF's prebuilt viewer (npm `@ohif/app`, its `dist/`), pinned, for the web-viewing tests.

`python tests/ohif.py --install` (run by .ci/run) fetches the package tarball with `npm pack` - only
the tarball, no dependency tree: `dist/` is self-contained - checks it against the registry's SHA-512
pinned here, and unpacks it under .cache/ohif/VERSION/. Tests call `dist()`, which skips locally (and
fails in CI) when it is missing.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE, VERSION = "@ohif/app", "3.13.2"
INTEGRITY = "sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA=="
FOLDER = ROOT / ".cache" / "ohif" / VERSION


def dist() -> Path:
    from helpers import require

    index = FOLDER / "dist" / "index.html"
    require(index.is_file(), f"OHIF {VERSION} is not installed: python tests/ohif.py --install (needs npm)")
    return index.parent


def install() -> Path:
    if (FOLDER / "dist" / "index.html").is_file():
        return FOLDER / "dist"
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("npm is missing: apt-get install npm")
    with tempfile.TemporaryDirectory() as work:
        name = subprocess.run([npm, "pack", f"{PACKAGE}@{VERSION}", "--silent"], cwd=work, check=True,
                              capture_output=True, text=True).stdout.strip().splitlines()[-1]
        tarball = Path(work) / name
        digest = "sha512-" + base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
        if digest != INTEGRITY:
            raise SystemExit(f"{tarball.name}: SHA-512 {digest} is not the pinned {INTEGRITY}")
        staging = Path(tempfile.mkdtemp(dir=FOLDER.parent.parent if FOLDER.parent.parent.is_dir() else None))
        try:
            with tarfile.open(tarball) as archive:
                archive.extractall(staging, filter="data")  # refuses absolute paths and links out of the folder
            FOLDER.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(FOLDER, ignore_errors=True)
            (staging / "package").rename(FOLDER)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return FOLDER / "dist"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--install", action="store_true", required=True)
    parser.parse_args()
    print(install())
    sys.exit(0)
