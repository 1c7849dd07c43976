"""A real Dask cluster for the tests that need one outside dvqa's own local:N: a `dask scheduler` on
127.0.0.1 (TLS or clear text) and `dask worker` processes, started and stopped by the test."""

from __future__ import annotations

import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from bench.orthanc import free_port, wait_for_port
from helpers import PEM, certificate, pem_key, write_pki

DASK = shutil.which("dask", path=str(Path(sys.executable).parent))


def pki(folder: Path) -> dict[str, Path]:
    """A CA and one certificate for 127.0.0.1 (server and client use), shared by scheduler, worker and client."""
    folder.mkdir()
    return write_pki(folder, lambda ca_key, key: {
        "cert": certificate("127.0.0.1", key, "dvqa test CA", ca_key, ip="127.0.0.1").public_bytes(PEM),
        "key": pem_key(key)})


@contextmanager
def dask_cluster(tmp_path: Path,
                 tls: dict[str, Path] | None) -> Iterator[tuple[str, list[str], callable, subprocess.Popen]]:
    """A real `dask scheduler` on 127.0.0.1 (TLS with `tls`, else tcp); yields its address, the options a
    dvqa or dask client needs, and a function that starts a `dask worker` (no nanny: a killed worker stays dead)."""
    assert DASK, "the dask command comes with the distributed package"
    port = free_port()
    scheme = "tls" if tls else "tcp"
    address = f"{scheme}://127.0.0.1:{port}"
    creds = ["--tls-ca-file", str(tls["ca"]), "--tls-cert", str(tls["cert"]), "--tls-key", str(tls["key"])] \
        if tls else []
    options = ["--cluster-ca", str(tls["ca"]), "--cluster-cert", str(tls["cert"]), "--cluster-key",
               str(tls["key"])] if tls else ["--allow-clear-text"]
    processes = [subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--protocol",
                                   scheme, "--dashboard-address", "127.0.0.1:0", "--no-show", *creds],
                                  cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]

    def worker() -> subprocess.Popen:
        processes.append(subprocess.Popen([DASK, "worker", address, "--no-nanny", "--nthreads", "1", "--host",
                                           "127.0.0.1", "--no-dashboard", *creds],
                                          cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        return processes[-1]

    try:
        wait_for_port(port, processes[0], "the dask scheduler", timeout_s=90)
        yield address, options, worker, processes[0]
    finally:
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(30)
