"""Which native libraries the pinned `av` wheel carries on each platform dvqa could be deployed on.

Run: python bench/wheel_libraries.py [--platform win_amd64 ...]

Downloads (PyPI, or a wheelhouse given to pip with --find-links) the wheel of the installed av
version for each platform tag into bench/.cache/wheels/, lists the shared libraries bundled in
it (Linux av.libs/*.so, macOS av/.dylibs/*.dylib, Windows av.libs/*.dll) and prints a Markdown
table: platform, wheel, size, FFmpeg libraries, codec libraries, and whether the GPL encoders
x264/x265 are inside. docs/regulatory/deployment.md quotes its output. This inspects what is
shipped; `dvqa report licenses` inspects what is installed and running.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

CACHE = Path(__file__).resolve().parent / ".cache" / "wheels"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_28_aarch64", "musllinux_1_2_x86_64",
             "macosx_14_0_arm64", "macosx_11_0_x86_64", "win_amd64", "win_arm64")
FFMPEG = ("avcodec", "avformat", "avutil", "avfilter", "avdevice", "swscale", "swresample")
LIBRARY = re.compile(r"^av(?:\.libs|/\.dylibs)/([^/]+\.(?:so[\w.]*|dylib|dll))$")


def library_name(file: str) -> str:
    """libopencore-amrnb-d72c54e2.so.0.0.5, libopencore-amrnb.0.dylib -> opencore-amrnb; avcodec-62-<hash>.dll -> avcodec."""
    words = []
    for word in file.split(".")[0].split("-"):
        if word.isdigit() or re.fullmatch(r"[0-9a-f]{8,}", word):  # soversion or the repair tool's hash
            break
        words.append(word)
    name = "-".join(words)
    return name[3:] if name.startswith("lib") else name


def wheel_for(platform: str, version: str) -> Path | None:
    folder = CACHE / platform
    found = sorted(folder.glob(f"av-{version}-*.whl")) if folder.exists() else []
    if not found:
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                               "--platform", platform, "--python-version", "3.11", "-d", str(folder),
                               f"av=={version}"], capture_output=True, text=True)
        if proc.returncode != 0:
            return None
        found = sorted(folder.glob(f"av-{version}-*.whl"))
    return found[0] if found else None


def libraries(wheel: Path) -> list[str]:
    names = []
    with zipfile.ZipFile(wheel) as archive:
        for entry in archive.namelist():
            match = LIBRARY.match(entry)
            if match:
                names.append(library_name(match.group(1)))
    return sorted(set(names), key=str.lower)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--platform", action="append", help="a wheel platform tag (default: the common ones)")
    args = parser.parse_args()
    version = metadata.version("av")
    print(f"av {version} wheels\n")
    print("| platform | wheel | MB | FFmpeg libraries | other native libraries | x264 / x265 (GPL) inside |")
    print("|---|---|--:|---|---|---|")
    for platform in args.platform or PLATFORMS:
        wheel = wheel_for(platform, version)
        if wheel is None:
            print(f"| {platform} | none published | | | | |")
            continue
        libs = libraries(wheel)
        ffmpeg = [name for name in libs if name in FFMPEG]
        other = [name for name in libs if name not in FFMPEG]
        gpl = [name for name in ("x264", "x265") if name in other]
        print(f"| {platform} | {wheel.name} | {wheel.stat().st_size / 1e6:.1f} | {len(ffmpeg)} of {len(FFMPEG)} "
              f"| {', '.join(other)} | {' and '.join(gpl) if gpl else 'neither'} |")


if __name__ == "__main__":
    main()
