"""A DICOM file read as it arrives: its header up to Pixel Data, then the encapsulated stream's bytes.

Why: a PACS sends a 10-minute video as one half-gigabyte answer; waiting for all of it before the remux
starts made a viewer wait for the whole download. Fed the bytes in the order they arrive (`feed`), this
keeps only the header (File Meta Information and the data set before Pixel Data, where frame timing -
Frame Time, Frame Time Vector, Cine Rate - sits) and hands on the coded stream piece by piece as it
comes, without keeping it: memory does not grow with the video.

The layout it follows: PS3.10 §7.1 (128-byte preamble, "DICM", group 0002 in explicit VR little endian),
then the data set in explicit VR little endian - the encoding of every encapsulated (video) transfer
syntax (PS3.5 §A.4) - with Pixel Data (7FE0,0010) of undefined length: items (FFFE,E000) with a 32-bit
length, the first being the Basic Offset Table, closed by a Sequence Delimitation Item (FFFE,E0DD).
"""

from __future__ import annotations

import io
import struct

import pydicom
from pydicom.dataset import Dataset

from dvqa.core.errors import InputError

HEADER_LIMIT = 64 << 20  # a header bigger than this is not a video file's header
UNDEFINED = 0xFFFFFFFF
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"}
_ITEM, _ITEM_END, _SEQUENCE_END = (0xFFFE, 0xE000), (0xFFFE, 0xE00D), (0xFFFE, 0xE0DD)
_PIXEL_DATA = (0x7FE0, 0x0010)
DAMAGED = "the upstream's instance has a cut-short or damaged Pixel Data element"


class _More(Exception):
    """The element goes on past the bytes received so far."""


class DicomStream:
    """Feed the file's bytes in order; `header()` once `header_done`, the stream from `feed`'s answers,
    `done` once the Sequence Delimitation Item has come (a file that ends before is cut short)."""

    def __init__(self) -> None:
        self._head = bytearray()
        self._at = 132  # next top-level element to walk, in _head
        self._pixel_at = -1  # where Pixel Data's element starts, once found
        self._rest = b""  # bytes after the header not yet handed on (an item header cut in two)
        self._left = 0  # bytes of the current item still to come
        self._item = -1  # number of the current item (0: the Basic Offset Table)
        self.done = False

    @property
    def header_done(self) -> bool:
        return self._pixel_at >= 0

    def feed(self, chunk: bytes) -> list[bytes]:
        """The stream bytes (items after the Basic Offset Table) this chunk holds, in order."""
        if self.done or not chunk:
            return []
        if not self.header_done:
            self._head += chunk
            if not self._walk():
                if len(self._head) > HEADER_LIMIT:
                    raise InputError("the upstream's instance has no encapsulated Pixel Data within its first "
                                     f"{HEADER_LIMIT >> 20} MiB")
                return []
            chunk = bytes(self._head[self._pixel_at + 12:])
            del self._head[self._pixel_at:]
        return self._items(self._rest + chunk)

    def header(self) -> Dataset:
        """The data set up to Pixel Data (with its File Meta Information)."""
        try:
            return pydicom.dcmread(io.BytesIO(bytes(self._head)), stop_before_pixels=True)
        except Exception as exc:
            raise InputError(f"the upstream's instance is not a readable DICOM file ({type(exc).__name__})") from None

    def _walk(self) -> bool:
        """Walk top-level elements from where the last call stopped; True once Pixel Data is found."""
        head = self._head
        if len(head) < 132:
            return False
        if head[128:132] != b"DICM":
            raise InputError("the upstream's instance is not a DICOM file (no DICM prefix, PS3.10 §7.1)")
        while True:
            if len(head) < self._at + 12:
                return False
            group, element = struct.unpack_from("<HH", head, self._at)
            if (group, element) == _PIXEL_DATA:
                if struct.unpack_from("<I", head, self._at + 8)[0] != UNDEFINED:
                    raise InputError("the instance's Pixel Data is not encapsulated (not a video transfer syntax)")
                self._pixel_at = self._at
                return True
            try:
                end = _element_end(head, self._at)
            except _More:
                return False
            if end > len(head):
                return False
            self._at = end

    def _items(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        at = 0
        while at < len(data):
            if self._left:
                piece = data[at:at + self._left]
                self._left -= len(piece)
                at += len(piece)
                if self._item > 0:
                    out.append(piece)
                continue
            if len(data) - at < 8:
                break
            group, element, length = struct.unpack_from("<HHI", data, at)
            at += 8
            if (group, element) == _SEQUENCE_END:
                self.done = True
                self._rest = b""
                return out
            if (group, element) != _ITEM or length == UNDEFINED:
                raise InputError(DAMAGED)
            self._item += 1
            self._left = length
        self._rest = data[at:]
        return out


def _need(buffer: bytearray, end: int) -> None:
    if end > len(buffer):
        raise _More


def _element_end(buffer: bytearray, at: int) -> int:
    """Where the explicit VR little endian element at `at` ends (its value may not have arrived yet)."""
    _need(buffer, at + 8)
    vr = bytes(buffer[at + 4:at + 6])
    if vr in _LONG_VRS:
        _need(buffer, at + 12)
        length, at = struct.unpack_from("<I", buffer, at + 8)[0], at + 12
    else:
        length, at = struct.unpack_from("<H", buffer, at + 6)[0], at + 8
    if length != UNDEFINED:
        return at + length
    if vr not in (b"SQ", b"UN"):
        raise InputError("the upstream's instance holds an element of undefined length before Pixel Data "
                         "that is not a sequence")
    return _sequence_end(buffer, at)


def _sequence_end(buffer: bytearray, at: int) -> int:
    """Where a sequence of undefined length that starts (with its first item) at `at` ends."""
    while True:
        _need(buffer, at + 8)
        group, element, length = struct.unpack_from("<HHI", buffer, at)
        at += 8
        if (group, element) == _SEQUENCE_END:
            return at
        if (group, element) != _ITEM:
            raise InputError("the upstream's instance holds a damaged sequence before Pixel Data")
        if length != UNDEFINED:
            at += length
            continue
        while True:  # an item of undefined length: elements up to its Item Delimitation Item
            _need(buffer, at + 8)
            if struct.unpack_from("<HH", buffer, at) == _ITEM_END:
                at += 8
                break
            at = _element_end(buffer, at)
