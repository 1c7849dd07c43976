"""`dvqa serve` with recording ingestion as a child process, and the client side of its recording API - for the
tests (tests/test_record.py) and the bench (bench/bench_serve.py), which must drive the server the same way.

dvqa's own code never starts itself; this module is tooling around it, like bench/orthanc.py.
"""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from bench.orthanc import free_port, wait_for_port


class RecordServer:
    """`dvqa serve` with recording ingestion, as a site starts it: a config file (`record` is its `record:`
    mapping, with the token's digest, the spool and an audit chain added), a child process; without an upstream
    (no DICOMweb gateway) unless one is given. `audit_key` is put in the server's environment as
    DVQA_TEST_AUDIT_KEY."""

    def __init__(self, folder: Path, record: dict, token: str, audit_key: str, upstream: str | None = None,
                 extra: dict | None = None) -> None:
        self.folder, self.record, self.upstream, self.token, self.audit_key = folder, record, upstream, token, \
            audit_key
        self.spool = folder / "spool"
        self.audit = folder / "audit.jsonl"
        self.log = folder / "serve.log"
        self.config = folder / "serve.yaml"
        settings = {"tokens_sha256": [hashlib.sha256(token.encode()).hexdigest()], "spool_dir": str(self.spool),
                    "audit": str(self.audit), "audit_key_env": "DVQA_TEST_AUDIT_KEY", **record}
        self.config.write_text(yaml.safe_dump({"record": settings, **(extra or {})}))
        self.port = free_port()
        self.start()

    def start(self) -> None:
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dvqa", "serve", *(["--upstream", self.upstream] if self.upstream else []),
             "--port", str(self.port),
             "--cache-dir", str(self.folder / "cache"), "--config", str(self.config)],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"),
            env={**os.environ, "DVQA_TEST_AUDIT_KEY": self.audit_key})
        wait_for_port(self.port, self.process, "dvqa serve")

    def client(self, token: str | None = "") -> httpx.Client:
        """A client sending `token` (by default the server's own; None: no Authorization header)."""
        token = self.token if token == "" else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)


def digest(data: bytes) -> dict[str, str]:
    """The Content-Digest header of a chunk (RFC 9530)."""
    return {"Content-Digest": f"sha-256=:{base64.b64encode(hashlib.sha256(data).digest()).decode()}:"}


def put(client: httpx.Client, rid: str, n: int, data: bytes, headers: dict | None = None) -> httpx.Response:
    return client.put(f"/recordings/{rid}/chunks/{n}", content=data,
                      headers=digest(data) if headers is None else headers)


def end(client: httpx.Client, rid: str, chunks: list[bytes], sha256: str | None = None) -> httpx.Response:
    """POST end; `sha256`: the whole recording's, when the caller has it already (else made here)."""
    if sha256 is None:
        sha256 = hashlib.sha256(b"".join(chunks)).hexdigest()
    return client.post(f"/recordings/{rid}/end", json={"chunks": len(chunks), "sha256": sha256})


def finished(client: httpx.Client, rid: str, timeout: float = 120, every: float = 0.1) -> dict:
    """GET's answer once the recording is no longer receiving or finishing (polled every `every` s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.get(f"/recordings/{rid}").json()
        if state["state"] not in ("receiving", "finishing"):
            return state
        time.sleep(every)
    raise AssertionError(f"recording {rid} did not finish in {timeout} s: {state}")


__all__ = ["RecordServer", "digest", "end", "finished", "free_port", "put", "wait_for_port"]
