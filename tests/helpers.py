"""Shared test helpers: the reference clips, independent tools, and reading DICOM video back."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
import pydicom
import pytest
from pydicom.encaps import encapsulate, generate_fragments

from dvqa.video import framecode

ROOT = Path(__file__).resolve().parent.parent
CLIPS = ROOT / "reference_videos" / "synthetic"
RECORDED = ROOT / "reference_videos" / "chromium"

APT_PACKAGE = {"dciodvfy": "dicom3tools", "dcmdump": "dcmtk", "dcmsign": "dcmtk", "ffprobe": "ffmpeg", "ffmpeg": "ffmpeg",
               "chromium": "chromium", "jing": "jing", "Orthanc": "orthanc", "storescp": "dcmtk",
               "orthanc-dicomweb": "orthanc-dicomweb", "socat": "socat", "pdftotext": "poppler-utils",
               "node": "nodejs"}


def tool(name: str) -> str:
    """Path of an independent cross-check tool; skip (locally) or fail (CI) when it is missing."""
    found = shutil.which(name)
    if found:
        return found
    message = f"{name} not installed: apt-get install {APT_PACKAGE.get(name, name)}"
    if os.environ.get("DVQA_REQUIRE_TOOLS") == "1":
        pytest.fail(message)
    pytest.skip(message)


def dvqa(*args: str) -> subprocess.CompletedProcess:
    """The real command line, in a child process, as a user runs it."""
    return run(sys.executable, "-m", "dvqa", *args)


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=300)


def read_offset(pid: int, path: Path) -> int | None:
    """How far process `pid` has read `path` (its descriptor's offset), or None before it opened it."""
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd) == str(path):
                return int(Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text().split()[1])
        except (OSError, IndexError, ValueError):  # a descriptor closed meanwhile
            continue
    return None


def wait_until_read(process: subprocess.Popen, path: Path, size: int, timeout_s: float = 240) -> None:
    """Readiness observed, not assumed from a fixed sleep: `process` has read `path` to `size` bytes (a
    `convert --follow` then waits for the next chunk), however loaded the machine is."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the process ended early: {process.communicate()}")
        offset = read_offset(process.pid, path)
        if offset is not None and offset >= size:
            return
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"the process did not read {path} to {size} bytes in {timeout_s} s")


def wait_for_handler(process: subprocess.Popen, signum: int, timeout_s: float = 240) -> None:
    """Readiness observed: `process` catches `signum` (its SigCgt mask in /proc), so a signal sent now is
    dvqa's to handle, not the interpreter's default."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the process ended early: {process.communicate()}")
        try:
            status = Path(f"/proc/{process.pid}/status").read_text()
        except OSError:
            status = ""
        caught = next((line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), "0")
        if int(caught, 16) >> (signum - 1) & 1:
            return
        time.sleep(0.005)
    process.kill()
    raise AssertionError(f"the process did not install a handler for signal {signum} in {timeout_s} s")


def stream_bytes(path: Path) -> bytes:
    """The encapsulated video stream of a single-stream (MPEG-2/H.264/HEVC) DICOM file."""
    ds = pydicom.dcmread(str(path))
    items = list(generate_fragments(ds.PixelData))
    assert items[0] == b"", "video syntaxes have an empty Basic Offset Table (PS3.5 §8.2)"
    return b"".join(items[1:])


def jpeg_frames(path: Path) -> list[bytes]:
    ds = pydicom.dcmread(str(path))
    items = list(generate_fragments(ds.PixelData))
    return items[1:]  # after the Basic Offset Table


ES_FORMAT = {"h264": "h264", "hevc": "hevc", "mpeg2video": "mpegvideo"}


def decoded_luma(path: Path, codec: str, tmp: Path) -> list[np.ndarray]:
    """Decode every frame the DICOM file holds, with PyAV, and return their luma planes."""
    planes = []
    if codec == "mjpeg":
        cc = av.CodecContext.create("mjpeg", "r")
        for data in jpeg_frames(path):
            for frame in cc.decode(av.Packet(data)):
                planes.append(_luma(frame))
        return planes
    es = tmp / f"{path.stem}.es"
    es.write_bytes(stream_bytes(path))
    with av.open(str(es), format=ES_FORMAT[codec]) as container:
        for frame in container.decode(video=0):
            planes.append(_luma(frame))
    return planes


def source_codes(path: Path) -> list[int | None]:
    """The frame code each source frame shows, in the order dvqa numbers source frames.

    Synthetic clips show their own index; a Chromium recording shows the page's draw count,
    which skips where the recorder dropped a canvas frame.
    """
    with av.open(str(path)) as container:
        return [framecode.read(_luma(frame)) for frame in container.decode(video=0)]


def source_pts(path: Path) -> list[float]:
    """Presentation times (s) of the decoded source frames, in the order dvqa numbers them."""
    with av.open(str(path)) as container:
        return [float(f.pts * f.time_base) for f in container.decode(video=0) if f.pts is not None]


def _luma(frame: av.VideoFrame) -> np.ndarray:
    plane = frame.planes[0]
    raw = np.frombuffer(plane, dtype=np.uint8).reshape(plane.height, plane.line_size)
    return raw[:, : plane.width].copy()


def frame_codes(planes: list[np.ndarray], box: tuple[int, int, int, int] | None) -> list[int | None]:
    """Read the frame counter from each plane, inside the picture box (x, y, w, h) if letterboxed."""
    codes = []
    for plane in planes:
        if box:
            x, y, w, h = box
            plane = plane[y : y + h, x : x + w]
        codes.append(framecode.read(plane))
    return codes


def certificate(subject: str, key, issuer: str, issuer_key, ca: bool = False, days: tuple[int, int] = (-1, 30),
                ip: str | None = None) -> x509.Certificate:
    """A test certificate: a CA, a signer, or (with `ip`) a TLS server/client certificate for that address."""
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now + dt.timedelta(days=days[0])).not_valid_after(now + dt.timedelta(days=days[1]))
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                              critical=False))
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        builder = builder.add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False),
                                        critical=True)
    if ip:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                                        critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                                ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def require(condition: bool, message: str) -> None:
    """Skip (locally) or fail (CI, DVQA_REQUIRE_TOOLS=1) when something a test needs is not here."""
    if condition:
        return
    if os.environ.get("DVQA_REQUIRE_TOOLS") == "1":
        pytest.fail(message)
    pytest.skip(message)


class SmallFilesystem:
    """A tmpfs of `kib` KiB at `mountpoint` (root only), so a test can run dvqa on a full disk."""

    def __init__(self, mountpoint: Path, kib: int) -> None:
        self.path = mountpoint
        mountpoint.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k,mode=0755", "tmpfs", str(mountpoint)],
                              capture_output=True, text=True)
        require(proc.returncode == 0, f"cannot mount a tmpfs here ({proc.stderr.strip() or 'not root'}); the "
                                      "full-disk tests need root (CI runs them)")

    def fill(self, leave: int = 0) -> None:
        """Fill the file system, then free `leave` bytes again (a file of that size is removed)."""
        if leave:
            (self.path / ".spare").write_bytes(bytes(leave))
        with open(self.path / ".filler", "wb", buffering=0) as handle:
            try:
                while True:
                    handle.write(bytes(4096))
            except OSError:
                pass
        if leave:
            (self.path / ".spare").unlink()

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], capture_output=True)


def as_nobody(*args: str) -> list[str]:
    """Prefix a command so it runs as user nobody (root can read everything; permission tests cannot run as root)."""
    if os.geteuid() != 0:
        return list(args)
    setpriv = shutil.which("setpriv")
    require(setpriv is not None, "setpriv not installed: apt-get install util-linux")
    return [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", *args]


PEM = serialization.Encoding.PEM


def pem_key(key, passphrase: str | None = None) -> bytes:
    encryption = serialization.BestAvailableEncryption(passphrase.encode()) if passphrase else \
        serialization.NoEncryption()
    return key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, encryption)


def write_pki(folder: Path, make) -> dict[str, Path]:
    """A test CA ("dvqa test CA", as `ca.pem`) and one RSA key; `make(ca_key, key)` returns the other files
    as {name: PEM bytes}. Written as folder/NAME.pem; returns NAME -> path."""
    ca_key, key = rsa.generate_private_key(65537, 2048), rsa.generate_private_key(65537, 2048)
    files = {"ca": certificate("dvqa test CA", ca_key, "dvqa test CA", ca_key, ca=True).public_bytes(PEM),
             **make(ca_key, key)}
    for name, data in files.items():
        (folder / f"{name}.pem").write_bytes(data)
    return {name: folder / f"{name}.pem" for name in files}


def big_copy(source: Path, out: Path, megabytes: int) -> Path:
    """`source` with one Pixel Data fragment of `megabytes` MB: a transfer long enough to interrupt."""
    ds = pydicom.dcmread(str(source))
    ds.PixelData = encapsulate([bytes(megabytes * 1024 * 1024)])
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(str(out), enforce_file_format=True)
    return out


def bytes_read(pid: int) -> int:
    """Bytes the process has read so far (Linux /proc/PID/io), sockets included."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/PID/io")
