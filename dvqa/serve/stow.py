"""STOW-RS through the gateway: the videos the upstream stores are rendered into the cache at once, so
their first viewer gets the warm path (dvqa.serve.prewarm).

While the request body streams to the upstream unchanged, a copy goes to a private file in the cache's
work folder (`Tee.copy`; at most the cache's size: a bigger body is not copied). Once the upstream's
answer has been sent to the client, the instances it names as stored (Referenced SOP Sequence, PS3.18
§10.5.3, and not in the Failed SOP Sequence) are taken from the copy and prewarmed in a worker thread.
The client's answer is never waited for or changed; a failure is logged, never an error to the client.
An answer in XML (application/dicom+xml) is not read: nothing is prewarmed then.
"""

from __future__ import annotations

import json
import logging
import os
import re
import zlib
from typing import AsyncIterator, BinaryIO, Iterator

from dvqa.core.errors import DvqaError
from dvqa.serve.cache import Cache, private_file
from dvqa.serve.prewarm import PIECE, prewarm_pieces

log = logging.getLogger("dvqa.serve")
ANSWER_LIMIT = 1 << 20  # a STOW-RS answer is one small JSON object per request
_STOW_PATH = re.compile(r"^studies(/[^/]+)?/?$")
_REFERENCED, _FAILED, _SOP_INSTANCE = "00081199", "00081198", "00081155"


class Tee:
    """The copy of one STOW-RS request's body, and the upstream's answer to it."""

    @classmethod
    def of(cls, method: str, path: str, content_type: str, cache: Cache) -> "Tee | None":
        """A tee for a STOW-RS request of DICOM files (multipart/related), else None."""
        if method != "POST" or not _STOW_PATH.match(path):
            return None
        kind, *params = [p.strip() for p in content_type.split(";")]
        if kind.lower() != "multipart/related":
            return None
        found = {name.strip().lower(): value.strip().strip('"') for name, _, value in (p.partition("=") for p in params)}
        if not found.get("boundary") or found.get("type", "application/dicom").lower() != "application/dicom":
            return None
        return cls(cache, found["boundary"].encode())

    def __init__(self, cache: Cache, boundary: bytes) -> None:
        self.cache = cache
        self.boundary = boundary
        self.path = cache.temporary(Cache.key("stow"), ".stow")
        self._fd = private_file(self.path)
        self.size = 0
        self.whole = False  # the client's whole body was copied
        self.answer = bytearray()  # the upstream's answer, as relayed (up to ANSWER_LIMIT)

    async def copy(self, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """The body, unchanged, copied on the way."""
        async for chunk in body:
            if self._fd >= 0:
                if self.size + len(chunk) > self.cache.max_bytes:  # would not fit in the cache anyway
                    self.discard()
                else:
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(self._fd, view):]
                    self.size += len(chunk)
            yield chunk
        if self._fd >= 0:
            self.whole = True
            os.close(self._fd)
            self._fd = -1

    def discard(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.whole = False
        self.path.unlink(missing_ok=True)

    def stored(self, status: int, content_type: str, content_encoding: str = "") -> set[str]:
        """The SOP Instance UIDs the upstream's answer says it stored (none unless the copy is whole).
        The answer is relayed as it came (compressed if the client accepted that): read it decoded."""
        if not self.whole or status not in (200, 202) or "xml" in content_type.lower():
            return set()
        try:
            answer = json.loads(_decoded(bytes(self.answer), content_encoding.strip().lower()))
        except (ValueError, zlib.error):
            return set()
        if not isinstance(answer, dict):
            return set()
        return _uids(answer, _REFERENCED) - _uids(answer, _FAILED)

    def prewarm(self, wanted: set[str]) -> None:
        """Prewarm every DICOM part of the copy whose instance is in `wanted`; then remove the copy.
        Runs in a worker thread; logs, never raises. The copy is read in pieces (not mapped into memory:
        the gateway's memory stays flat whatever the instance's size)."""
        try:
            with open(self.path, "rb") as copy:
                for start, end in parts(copy, self.boundary):
                    try:
                        prewarm_pieces(self.cache, _pieces(copy, start, end), wanted)
                    except DvqaError as exc:
                        log.warning("a stored instance was not prepared for viewing: %s", exc)
        except Exception as exc:  # the upstream stored it all the same; the first viewer takes the cold path
            log.warning("stored instances were not prepared for viewing (%s)", type(exc).__name__)
        finally:
            self.path.unlink(missing_ok=True)


def parts(body: BinaryIO, boundary: bytes) -> list[tuple[int, int]]:
    """(start, end) offsets of each body part of a multipart/related body (RFC 2046 §5.1) whose type is
    DICOM (or not given: the request's type parameter names it)."""
    delimiter = b"\r\n--" + boundary  # the CRLF before a delimiter belongs to it (RFC 2046 §5.1.1)
    found: list[int] = []
    carry, at = b"\r\n", -2  # the first delimiter may follow no CRLF; `at`: the body offset of window[0]
    body.seek(0)
    while chunk := body.read(PIECE):
        window = carry + chunk
        hit = window.find(delimiter)
        while hit >= 0:
            found.append(at + hit + len(delimiter))  # just after the delimiter
            hit = window.find(delimiter, hit + 1)
        carry = window[-(len(delimiter) - 1):]  # too short to hold a whole delimiter: none is found twice
        at += len(window) - len(carry)
    out = []
    for after, following in zip(found, found[1:]):
        body.seek(after)
        head = body.read(min(following - after, 65536))
        if head.startswith(b"--"):  # the close delimiter
            break
        head_end = head.find(b"\r\n\r\n")
        if head_end < 0:
            break
        kinds = [line.split(b":", 1)[1].strip().lower() for line in head[:head_end].split(b"\r\n")
                 if line.lower().startswith(b"content-type:")]
        if not kinds or kinds[0].split(b";")[0] == b"application/dicom":
            out.append((after + head_end + 4, following - len(delimiter)))
    return out


def _decoded(answer: bytes, encoding: str) -> bytes:
    """The answer without its content coding (RFC 9110 §8.4.1): gzip or deflate; another is refused."""
    if encoding in ("", "identity"):
        return answer
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise ValueError(f"content coding {encoding} is not read")
    return zlib.decompressobj(wbits=47).decompress(answer, ANSWER_LIMIT)  # 47: zlib or gzip header


def _pieces(body: BinaryIO, start: int, end: int) -> Iterator[bytes]:
    body.seek(start)
    while start < end:
        piece = body.read(min(PIECE, end - start))
        if not piece:
            return
        start += len(piece)
        yield piece


def _uids(answer: dict, tag: str) -> set[str]:
    found = set()
    items = answer.get(tag, {}).get("Value", []) if isinstance(answer.get(tag), dict) else []
    for item in items if isinstance(items, list) else []:
        try:
            found.add(str(item[_SOP_INSTANCE]["Value"][0]))
        except (KeyError, IndexError, TypeError):
            continue
    return found
