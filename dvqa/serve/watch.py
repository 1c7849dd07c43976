"""Follow an Orthanc upstream's change log and put each video it stores into the gateway's cache, so the
first viewer of a video that reached the PACS by any route - a modality's or `dvqa pacs store`'s DIMSE
C-STORE, Orthanc's own REST upload, another gateway - takes the warm path, as one stored through this
gateway does (dvqa.serve.prewarm, dvqa.serve.stow).

Why: a cold first view waits for the PACS to send the instance. Orthanc 1.10 reads the whole file before
its first byte (0.6-0.8 s for a 476 MB instance here, on its fastest route), and OHIF in a browser that
has opened it before starts in about 0.6 s, so a cold first frame is at 1.2-1.5 s before the gateway has
done anything, and 1.9-6.6 s measured; warm, it is 1.2-1.5 s (bench/bench_serve_gateway.py, docs/serve.md).

How: Orthanc numbers every change it makes (GET /changes?since=N, "NewInstance" for a stored instance;
Orthanc Book, REST API, "Changes"). The watch starts at the change log's end when the server starts (what
was stored before is not rendered: a whole archive is not re-read at start-up), polls every `poll_s`,
and for each new instance whose transfer syntax (Orthanc's own metadata "TransferSyntax", no file read)
is a video the gateway renders, waits `settle_s` (a STOW-RS through this gateway is answered, and
prewarmed from its own copy, within that time: the instance is not read twice), then reads the file from
Orthanc's /instances/{id}/file and writes the entries a viewer's visit would write, by the same code
(prewarm.prewarm_pieces). One instance at a time, in a worker thread; an instance bigger than the cache
is skipped. Orthanc unreachable: one log line per outage, and the watch keeps trying.

Credentials: the watch reads instances no client asked for, so it cannot use a client's Authorization
header. When Orthanc's REST API needs one, put "user:password" in the environment variable named by
WATCH_CREDENTIALS (never in the config file); they are sent as HTTP Basic and never logged. Access to
what is cached stays the PACS's decision: the gateway still asks it, with each client's credentials,
before it serves an entry.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from typing import Callable

import httpx

from dvqa.serve import remux
from dvqa.serve.cache import Cache
from dvqa.serve.prewarm import PIECE, cached, prewarm_pieces

log = logging.getLogger("dvqa.serve")
WATCH_CREDENTIALS = "DVQA_ORTHANC_WATCH_AUTH"  # "user:password" for Orthanc's REST API, when it needs them
PAGE = 100  # changes asked for at a time


@dataclass
class Pending:
    """A stored video the watch will read once it has settled."""

    orthanc_id: str
    instance: str  # SOP Instance UID
    due: float  # loop time at which it is read


class OrthancWatch:
    """The watch over one Orthanc (its REST root, `rest`) for one gateway cache.

    `busy(uid)`: True while the gateway already renders or prewarms that instance (it is then skipped)."""

    def __init__(self, rest: str, cache: Cache, busy: Callable[[str], bool], poll_s: float = 1.0,
                 settle_s: float = 2.0, timeout_s: float = 60.0) -> None:
        self.rest = rest.rstrip("/")
        self.cache = cache
        self.busy = busy
        self.poll_s = poll_s
        self.settle_s = settle_s
        credentials = os.environ.get(WATCH_CREDENTIALS, "")
        user, _, password = credentials.partition(":")
        # identity: Orthanc gzips a file for a client that accepts it (httpx's default), at about 40 MB/s
        # here - 11.9 s instead of 1.5 s for a 476 MB instance
        self.client_options: dict = {"timeout": httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
                                     "headers": {"Accept-Encoding": "identity"},
                                     "auth": httpx.BasicAuth(user, password) if credentials else None}
        self.since: int | None = None  # the last change seen
        self.pending: list[Pending] = []
        self._task: asyncio.Task | None = None
        self._down = False

    async def start(self) -> None:
        """Note where the change log ends now (before the server answers: what is stored from then on is
        warmed), and start following it. An Orthanc that does not answer yet is read from when it does."""
        async with httpx.AsyncClient(**self.client_options) as client:
            try:
                await self._read_end(client)
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                log.warning("orthanc watch: %s cannot be read yet (%s)", self.rest, type(exc).__name__)
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        async with httpx.AsyncClient(**self.client_options) as client:
            while True:
                try:
                    await self._step(client)
                    if self._down:
                        log.info("orthanc watch: %s answers again", self.rest)
                    self._down = False
                except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                    if not self._down:
                        log.warning("orthanc watch: %s cannot be read (%s); trying again every %g s", self.rest,
                                    type(exc).__name__, self.poll_s)
                    self._down = True
                await asyncio.sleep(self.poll_s)

    async def _step(self, client: httpx.AsyncClient) -> None:
        """Read the new changes, then warm what has settled."""
        if self.since is None:  # Orthanc did not answer at start-up
            await self._read_end(client)
        while True:
            page = await self._json(client, f"changes?since={self.since}&limit={PAGE}")
            for change in page["Changes"]:
                if change.get("ChangeType") == "NewInstance" and change.get("ResourceType") == "Instance":
                    await self._consider(client, str(change["ID"]))
            self.since = int(page["Last"])
            if page.get("Done", True) or not page["Changes"]:
                break
        now = asyncio.get_running_loop().time()
        while self.pending and self.pending[0].due <= now:
            item = self.pending.pop(0)
            if self.busy(item.instance) or cached(self.cache, item.instance):
                continue
            await asyncio.to_thread(self._warm, item)

    async def _consider(self, client: httpx.AsyncClient, orthanc_id: str) -> None:
        """Queue a new instance if it is a video that fits in the cache."""
        syntax = await client.get(f"{self.rest}/instances/{orthanc_id}/metadata/TransferSyntax")
        if syntax.status_code != 200 or remux.renderable(syntax.text.strip()) is None:
            return  # not a video (or deleted since): nothing to do
        found = await self._json(client, f"instances/{orthanc_id}")
        instance = str(found.get("MainDicomTags", {}).get("SOPInstanceUID", ""))
        size = int(found.get("FileSize", 0) or 0)
        if not instance:
            return
        if size > self.cache.max_bytes:
            log.info("orthanc watch: a stored video is larger than the cache (cache_max_mb); not prepared")
            return
        self.pending.append(Pending(orthanc_id, instance, asyncio.get_running_loop().time() + self.settle_s))

    async def _read_end(self, client: httpx.AsyncClient) -> None:
        """Start after the change log's last entry: what was stored before is left."""
        self.since = int((await self._json(client, "changes?last"))["Last"])

    async def _json(self, client: httpx.AsyncClient, path: str) -> dict:
        answer = await client.get(f"{self.rest}/{path}")
        answer.raise_for_status()
        found = answer.json()
        if not isinstance(found, dict):
            raise ValueError("not a JSON object")
        return found

    def _warm(self, item: Pending) -> None:
        """Read the file from Orthanc and write its cache entries (worker thread; logs, never raises)."""
        started = time.monotonic()
        try:
            with httpx.Client(**self.client_options) as client, \
                    client.stream("GET", f"{self.rest}/instances/{item.orthanc_id}/file") as answer:
                answer.raise_for_status()
                if prewarm_pieces(self.cache, answer.iter_bytes(PIECE), {item.instance}):
                    log.info("orthanc watch: a stored video was prepared for viewing (%.1f MB in %.1f s)",
                             answer.num_bytes_downloaded / 1e6, time.monotonic() - started)
        except Exception as exc:  # the instance is stored all the same; its first viewer takes the cold path
            log.warning("orthanc watch: a stored video was not prepared for viewing (%s)", type(exc).__name__)

