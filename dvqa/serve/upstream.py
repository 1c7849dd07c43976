"""Talking to the upstream DICOMweb service: streamed requests, one-line errors, and the instance
retrieve the gateway reads as it arrives (its File Meta Information first, then, for a video, the rest).

An upstream that is down, slow or broken must give the viewer a clear 502/504 at once, never a
hung request: every call has a connect and a read timeout, and every transport failure becomes an
`UpstreamError` carrying the status and one line naming the upstream (its base URL only - paths and
queries may carry patient data).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import AsyncIterator

import httpx

# hop-by-hop headers (RFC 9110 §7.6.1) and the ones the transport sets itself
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
              "transfer-encoding", "upgrade", "host", "proxy-connection"}
# PS3.18 §8.7.3.5.2: transfer-syntax=* asks for the instance as stored; without it a server may try to
# transcode to Explicit VR Little Endian, which no server can do for video (Orthanc 1.10 answers 500)
DICOM_AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'
META_PROBE_BYTES = 16384  # a File Meta Information group is a few hundred bytes


class UpstreamError(Exception):
    """A failure the client sees as `status` with this one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Upstream:
    """The upstream root (`base`, no trailing slash) and one pooled client for all requests; `orthanc_rest`:
    an Orthanc upstream's REST root, from which instances are read instead of WADO-RS (see
    `open_instance`)."""

    base: str
    client: httpx.AsyncClient
    orthanc_rest: str = ""

    @classmethod
    def create(cls, base: str, connect_timeout_s: float, read_timeout_s: float,
               orthanc_rest: str = "") -> "Upstream":
        timeout = httpx.Timeout(read_timeout_s, connect=connect_timeout_s)
        return cls(base, httpx.AsyncClient(timeout=timeout, follow_redirects=False), orthanc_rest)

    async def close(self) -> None:
        await self.client.aclose()

    def url(self, path: str, query: str = "", root: str = "") -> str:
        return f"{root or self.base}/{path.lstrip('/')}" + (f"?{query}" if query else "")

    def failure(self, exc: Exception) -> UpstreamError:
        """The transport failure as the client's 502/504, in one line without request details."""
        if isinstance(exc, UpstreamError):
            return exc
        if isinstance(exc, httpx.TimeoutException):
            return UpstreamError(504, f"upstream {self.base} did not answer in time ({type(exc).__name__})")
        if isinstance(exc, httpx.ConnectError):
            return UpstreamError(502, f"upstream {self.base} is unreachable (connection failed)")
        if isinstance(exc, (httpx.RemoteProtocolError, httpx.DecodingError, httpx.NetworkError)):
            return UpstreamError(502, f"upstream {self.base} sent a broken or cut-short response")
        return UpstreamError(502, f"upstream {self.base} failed ({type(exc).__name__})")

    async def open(self, method: str, path: str, query: str = "", headers: dict[str, str] | None = None,
                   body: AsyncIterator[bytes] | bytes | None = None, root: str = "") -> httpx.Response:
        """Send a request (to `root`, else the DICOMweb root) and return the response with its body still
        unread (the caller closes it)."""
        headers = dict(headers or {})
        if not any(k.lower() == "accept-encoding" for k in headers):
            headers["Accept-Encoding"] = "identity"  # not httpx's gzip default: bodies are relayed raw
        request = self.client.build_request(method, self.url(path, query, root), headers=headers, content=body)
        try:
            return await self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise self.failure(exc) from None

    async def open_instance(self, study: str, series: str, instance: str,
                            authorization: str | None) -> "InstanceBody":
        """Start a retrieve of one instance as stored (WADO-RS); its bytes are read from the answer."""
        if self.orthanc_rest:
            return await self._open_orthanc_file(instance, authorization)
        response = await self.open("GET", _instance_path(study, series, instance),
                                   headers=_headers(DICOM_AS_STORED, authorization))
        try:
            _check_status(self, response)
            return InstanceBody(self, response, FirstPart(_boundary(self, response)))
        except BaseException:
            await response.aclose()
            raise

    async def _open_orthanc_file(self, instance: str, authorization: str | None) -> "InstanceBody":
        """The stored file from Orthanc's REST API (/tools/lookup, then /instances/{id}/file), with the
        client's credentials. Why: Orthanc 1.10's WADO-RS builds its whole multipart answer before its
        first byte (4.6-7.2 s for a 476 MB instance here), its file route starts within 1-1.6 s."""
        headers = {"Accept": "application/json"} | ({"Authorization": authorization} if authorization else {})
        response = await self.open("POST", "tools/lookup", headers=headers, body=instance.encode(),
                                   root=self.orthanc_rest)
        try:
            _check_status(self, response)
            found = [item for item in json.loads(await response.aread())
                     if isinstance(item, dict) and item.get("Type") == "Instance" and isinstance(item.get("ID"), str)]
        except httpx.HTTPError as exc:
            raise self.failure(exc) from None
        except (ValueError, TypeError):
            raise UpstreamError(502, f"upstream {self.orthanc_rest} answered a lookup with JSON that does not "
                                     "parse") from None
        finally:
            await response.aclose()
        if not found:
            raise UpstreamError(404, "no such instance upstream")
        response = await self.open("GET", f"instances/{found[0]['ID']}/file",
                                   headers={"Accept": "application/dicom"} | headers, root=self.orthanc_rest)
        try:
            _check_status(self, response)
            return InstanceBody(self, response, WholeBody())
        except BaseException:
            await response.aclose()
            raise

    async def probe(self, study: str, series: str, instance: str,
                    authorization: str | None) -> tuple[str, "InstanceBody"]:
        """The instance's Transfer Syntax UID (0002,0010), from the start of a WADO-RS retrieve, and that
        retrieve still open (the caller reads on, or closes it).

        Standard DICOMweb metadata need not carry the transfer syntax (Orthanc's does not), and the File
        Meta Information comes first, so a few kilobytes say it; a caller that wants the video next reads
        on from the same answer instead of asking the PACS for it twice."""
        body = await self.open_instance(study, series, instance, authorization)
        try:
            syntax = meta_transfer_syntax(await body.head(META_PROBE_BYTES))
        except BaseException:
            await body.aclose()
            raise
        if syntax is None:
            await body.aclose()
            raise UpstreamError(502, f"upstream {self.base} sent an instance without a readable "
                                     "File Meta Information")
        return syntax, body

    async def transfer_syntax(self, study: str, series: str, instance: str, authorization: str | None) -> str:
        """The instance's Transfer Syntax UID, reading only the start of a WADO-RS retrieve."""
        syntax, body = await self.probe(study, series, instance, authorization)
        await body.aclose()
        return syntax


class InstanceBody:
    """A WADO-RS answer for one instance, being read: the bytes of its first part, in order, as they
    arrive (`pieces`), the ones `head` already read included. A stream that ends before its part does
    raises a 502: the instance was cut short."""

    def __init__(self, upstream: Upstream, response: httpx.Response, parts: "FirstPart | WholeBody") -> None:
        self.upstream = upstream
        self.response = response
        self.parts = parts
        self._raw = response.aiter_raw()
        self._read: list[bytes] = []

    async def _next(self) -> bool:
        """Read one more chunk of the answer; False at its end."""
        try:
            chunk = await self._raw.__anext__()
        except StopAsyncIteration:
            self.parts.ended()
            return False
        except httpx.HTTPError as exc:
            raise self.upstream.failure(exc) from None
        self._read += self.parts.feed(chunk)
        return True

    async def head(self, size: int) -> bytes:
        """At least the first `size` bytes of the instance (fewer only if it is shorter); kept for `pieces`."""
        while sum(map(len, self._read)) < size and not self.parts.done and await self._next():
            pass
        return b"".join(self._read)[:size]

    async def pieces(self) -> AsyncIterator[bytes]:
        while True:
            while self._read:
                yield self._read.pop(0)
            if self.parts.done or not await self._next():
                break
        if not self.parts.done:
            raise UpstreamError(502, f"upstream {self.upstream.base} cut the instance short")

    async def aclose(self) -> None:
        await self.response.aclose()


_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"}


def meta_transfer_syntax(head: bytes) -> str | None:
    """Transfer Syntax UID (0002,0010) from the start of a DICOM file (PS3.10 §7.1: 128-byte preamble,
    "DICM", then group 0002 in explicit VR little endian), or None if it is not there."""
    if head[128:132] != b"DICM":
        return None
    at = 132
    while at + 8 <= len(head):
        group, element = int.from_bytes(head[at:at + 2], "little"), int.from_bytes(head[at + 2:at + 4], "little")
        if group != 2:
            return None
        vr = head[at + 4:at + 6]
        if vr in _LONG_VRS:
            length, at = int.from_bytes(head[at + 8:at + 12], "little"), at + 12
        else:
            length, at = int.from_bytes(head[at + 6:at + 8], "little"), at + 8
        if element == 0x0010:
            value = head[at:at + length]
            return value.rstrip(b"\x00 ").decode("ascii", "replace") if len(value) == length else None
        at += length
    return None


def _instance_path(study: str, series: str, instance: str) -> str:
    return f"studies/{study}/series/{series}/instances/{instance}"


def _headers(accept: str, authorization: str | None) -> dict[str, str]:
    headers = {"Accept": accept}
    if authorization:
        headers["Authorization"] = authorization
    return headers


def _check_status(upstream: Upstream, response: httpx.Response) -> None:
    if response.status_code in (401, 403, 404):
        raise UpstreamError(response.status_code, f"upstream {upstream.base} answered {response.status_code}")
    if response.status_code != 200:
        raise UpstreamError(502, f"upstream {upstream.base} answered {response.status_code} to a retrieve")


def _boundary(upstream: Upstream, response: httpx.Response) -> bytes:
    content_type = response.headers.get("content-type", "")
    for param in content_type.split(";")[1:]:
        name, _, value = param.strip().partition("=")
        if name.lower() == "boundary" and value:
            return value.strip('"').encode()
    raise UpstreamError(502, f"upstream {upstream.base} answered a retrieve without a multipart boundary")


class WholeBody:
    """A body that is the instance itself (Orthanc's file route): complete when the answer ended normally
    (httpx raises on a connection closed before its Content-Length or last chunk)."""

    def __init__(self) -> None:
        self.done = False

    def feed(self, chunk: bytes) -> list[bytes]:
        return [chunk] if chunk else []

    def ended(self) -> None:
        self.done = True


class FirstPart:
    """The body of the first part of a multipart/related stream (RFC 2046 §5.1), fed in chunks.

    Only the first part is wanted (one instance). Its end is its Content-Length when the part header
    gives one (then the delimiter must follow), else the next delimiter; `done` says the end was
    seen - a stream that ends before that was cut short.
    """

    def __init__(self, boundary: bytes) -> None:
        self._delimiter = b"\r\n--" + boundary
        self._buffer = b"\r\n"  # the first delimiter may follow no CRLF
        self._state = "header"  # -> "counted" or "scan" -> "delimiter" -> done
        self._left = 0
        self.done = False

    def feed(self, chunk: bytes) -> list[bytes]:
        """The body bytes this chunk completes (possibly none)."""
        if self.done:
            return []
        self._buffer += chunk
        out: list[bytes] = []
        if self._state == "header":
            start = self._buffer.find(self._delimiter)
            end = self._buffer.find(b"\r\n\r\n", start + len(self._delimiter)) if start >= 0 else -1
            if end < 0:
                if len(self._buffer) > 65536:
                    raise UpstreamError(502, "the upstream's multipart answer has no part header")
                return out
            self._state = "scan"
            for line in self._buffer[start:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length" and value.strip().isdigit():
                    self._state, self._left = "counted", int(value)
            self._buffer = self._buffer[end + 4:]
        if self._state == "counted":
            piece = self._buffer[: self._left]
            self._left -= len(piece)
            self._buffer = self._buffer[len(piece):]
            if piece:
                out.append(piece)
            if self._left == 0:
                self._state = "delimiter"
        if self._state == "delimiter":
            if len(self._buffer) >= len(self._delimiter):
                if not self._buffer.startswith(self._delimiter):
                    raise UpstreamError(502, "the upstream's multipart part does not end at its Content-Length")
                self.done = True
            return out
        if self._state == "scan":
            at = self._buffer.find(self._delimiter)
            if at >= 0:
                out.append(self._buffer[:at])
                self._buffer, self.done = b"", True
            else:
                keep = len(self._delimiter) - 1  # a delimiter may straddle two chunks
                if len(self._buffer) > keep:
                    out.append(self._buffer[:-keep])
                    self._buffer = self._buffer[-keep:]
        return [piece for piece in out if piece]

    def ended(self) -> None:
        """The answer ended: the part is whole only if its end was seen (`done`)."""
