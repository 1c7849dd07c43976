"""Start Debian's Orthanc (with its DICOMweb plugin) on free 127.0.0.1 ports with a throw-away
configuration and storage - for the tests, the PACS benchmark and the matrix in docs/.

dvqa's own code never starts a PACS; this module is tooling around it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Iterator

DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"  # Debian orthanc-dicomweb


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, what: str, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not open port {port}")


def version(exe: str) -> str:
    """The version the executable prints; `served` reads what a running server says of itself."""
    out = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    return out.splitlines()[0].split()[-1] if out else "?"


def served(http: str, user: tuple[str, str] | None = None) -> dict[str, str]:
    """What the running server says it is: Orthanc's version (REST /system) and its DICOMweb plugin's
    (/plugins/dicom-web) - the software that answered, not the file on the disk that may have changed since.
    `user`: (name, password) when it requires them."""
    headers = {"Authorization": "Basic " + base64.b64encode(":".join(user).encode()).decode()} if user else {}

    def get(path: str) -> dict:
        with urllib.request.urlopen(urllib.request.Request(f"{http}{path}", headers=headers), timeout=30) as response:
            return json.loads(response.read())

    return {"orthanc": str(get("/system")["Version"]), "dicomweb": str(get("/plugins/dicom-web")["Version"])}


@contextlib.contextmanager
def running(folder: Path, exe: str | None = None, calling_aet: str = "DVQA",
            extra: dict[str, object] | None = None, tls: tuple[Path, Path, Path] | None = None
            ) -> Iterator[dict[str, object]]:
    """Orthanc with AE title ORTHANC; `calling_aet` is registered at a free port for storage commitment
    reports and C-GET; `extra` overrides configuration keys. `tls` = (certificate, key, trusted CA): DICOM
    over TLS only, client certificates required, and TLS towards dvqa as well (REST/DICOMweb stay plain HTTP:
    Debian 12's Orthanc 1.10.1 segfaults in a civetweb worker on the first HTTPS request - seen 2026-11-25 -
    so HTTPS is put in front with a TLS-terminating proxy instead, as many sites do). Yields ports and URLs;
    stops Orthanc on exit."""
    exe = exe or shutil.which("Orthanc")
    if not exe or not Path(DICOMWEB_PLUGIN).exists():
        raise FileNotFoundError("Orthanc and its DICOMweb plugin are needed: apt-get install orthanc orthanc-dicomweb")
    dicom_port, http_port, listen_port = free_port(), free_port(), free_port()
    config = folder / "orthanc.json"
    config.write_text(json.dumps({
        "Name": "dvqa", "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
        "DicomAet": "ORTHANC", "DicomPort": dicom_port, "HttpPort": http_port, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "DicomCheckCalledAet": True, "StorageCompression": False,
        "Plugins": [DICOMWEB_PLUGIN], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "DicomModalities": {"dvqa": {"AET": calling_aet, "Host": "127.0.0.1", "Port": listen_port,
                                     "UseDicomTls": bool(tls)}},
        **({"DicomTlsEnabled": True, "DicomTlsCertificate": str(tls[0]), "DicomTlsPrivateKey": str(tls[1]),
            "DicomTlsTrustedCertificates": str(tls[2]), "DicomTlsRemoteCertificateRequired": True} if tls else {}),
        **(extra or {}),
    }))
    process = subprocess.Popen([exe, str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(dicom_port, process, "Orthanc")
        wait_for_port(http_port, process, "Orthanc")
        http = f"http://127.0.0.1:{http_port}"
        users = (extra or {}).get("RegisteredUsers") if (extra or {}).get("AuthenticationEnabled") else None
        said = served(http, next(iter(users.items())) if isinstance(users, dict) and users else None)
        yield {"port": dicom_port, "http": http, "http_port": http_port, "listen": listen_port,
               "version": said["orthanc"], "dicomweb_version": said["dicomweb"]}
    finally:
        process.terminate()
        process.wait(30)
