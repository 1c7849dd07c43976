"""Writing the DICOM file: dataset header, then the stream, streamed from disk (PS3.5 §A.4).

pydicom's EncapsulatedBuffer reads the elementary stream from its file while
writing, so memory does not depend on the video's size. MPEG-2, H.264 and HEVC
streams are one fragment (PS3.5 §8.2.5-§8.2.8) with an empty Basic Offset
Table, or several fragments under the fragmentable syntax when the stream does
not fit one; Motion JPEG puts each frame in its own fragment with a Basic
Offset Table (PS3.5 §8.2.1, §A.4).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Iterator

from pydicom import config, dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import EncapsulatedBuffer

from dvqa.dicom import dicomread

_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"
_UNDEFINED_LENGTH = b"\xff\xff\xff\xff"
_ITEM_TAG = b"\xfe\xff\x00\xe0"
_SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0"
# pydicom copies buffered Pixel Data in pieces of settings.buffered_read_size (8 KiB by default);
# 1 MiB pieces write a 1 GB stream in a thousand Python steps instead of 120,000.
COPY_CHUNK = 1 << 20


class FileSlice(io.BufferedIOBase):
    """A read-only window onto part of a file, so one stream file can feed many fragments."""

    def __init__(self, path: Path, start: int, length: int) -> None:
        super().__init__()
        self._file = open(path, "rb")
        self._start, self._length, self._pos = start, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._length}[whence]
        self._pos = max(0, min(self._length, base + offset))
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        remaining = self._length - self._pos
        if size is None or size < 0 or size > remaining:
            size = remaining
        self._file.seek(self._start + self._pos)
        data = self._file.read(size)
        self._pos += len(data)
        return data

    def close(self) -> None:
        self._file.close()
        super().close()


def fragments(path: Path, size: int, frame_offsets: list[int], frame_lengths: list[int],
              per_frame: bool, max_bytes: int) -> list[FileSlice]:
    """One fragment per JPEG frame, or the stream cut into pieces of at most `max_bytes`."""
    if per_frame:
        return [FileSlice(path, o, n) for o, n in zip(frame_offsets, frame_lengths)]
    if max_bytes % 2:
        raise ValueError("fragment lengths must be even (PS3.5 §A.4)")
    return [FileSlice(path, start, min(max_bytes, size - start)) for start in range(0, size, max_bytes)]


def write(ds: Dataset, target: Path, pieces: list[FileSlice], basic_offset_table: bool, sync: bool = True) -> None:
    """Write `ds` with the pieces as encapsulated Pixel Data, fsync'd (unless `sync` is false: the caller syncs
    it, dvqa.core.outputs.BackgroundSync), to `target`."""
    ds.PixelData = EncapsulatedBuffer(pieces, use_bot=basic_offset_table)
    ds["PixelData"].VR = "OB"
    chunk = config.settings.buffered_read_size
    config.settings.buffered_read_size = COPY_CHUNK
    try:
        with open(target, "wb") as out:
            ds.save_as(out, enforce_file_format=True)
            out.flush()
            if sync:
                os.fsync(out.fileno())
    finally:
        config.settings.buffered_read_size = chunk
        for piece in pieces:
            piece.close()
        del ds.PixelData


def read_chunks(path: Path, size: int = COPY_CHUNK, start: int | None = None) -> Iterator[tuple[int, bytes]]:
    """(item number, piece) for the items of a file's encapsulated Pixel Data, from disk.

    Item 0 is the Basic Offset Table. Pieces are at most `size` bytes, so a many-GiB stream in one
    fragment never sits in memory. Encapsulated transfer syntaxes are explicit VR little endian
    (PS3.5 §A.4): each item is (FFFE,E000) with a 32-bit length, the last is followed by
    (FFFE,E0DD). A file cut short, or an item that is not an item, raises ValueError naming the
    byte offset. `start`: where the Pixel Data element is, when the caller has read the header.
    """
    handle, _ = dicomread.open_checked(path)  # a FIFO swapped in since the header was read: refused, not waited on
    with handle:
        if start is None:
            dcmread(handle, stop_before_pixels=True)
        else:
            handle.seek(start)
        header = handle.read(12)  # pydicom stops at the Pixel Data tag
        if header[:4] != _PIXEL_DATA_TAG or header[8:12] != _UNDEFINED_LENGTH:
            raise ValueError(f"{path}: no encapsulated Pixel Data (7FE0,0010) of undefined length")
        number = 0
        while True:
            at = handle.tell()
            item = handle.read(8)
            if len(item) < 8:
                raise ValueError(f"{path}: the Pixel Data is cut short at byte {at} (no Sequence Delimitation Item)")
            tag, length = item[:4], int.from_bytes(item[4:], "little")
            if tag == _SEQUENCE_DELIMITER:
                return
            if tag != _ITEM_TAG:
                raise ValueError(f"{path}: byte {at} holds {tag.hex()} where a Pixel Data item (FFFE,E000) belongs")
            left = length
            if not left:
                yield number, b""
            while left:
                piece = handle.read(min(size, left))
                if not piece:
                    raise ValueError(f"{path}: the Pixel Data item at byte {at} declares {length} bytes but the "
                                     f"file ends after {length - left}: the file is cut short")
                left -= len(piece)
                yield number, piece
            number += 1


def read_fragments(path: Path, start: int | None = None) -> Iterator[bytes]:
    """Whole items (Basic Offset Table first): for small fragments, such as one JPEG frame each."""
    current, pieces = 0, []
    for number, piece in read_chunks(path, start=start):
        if number != current:
            yield b"".join(pieces)
            current, pieces = number, []
        pieces.append(piece)
    yield b"".join(pieces)


def stream_pieces(path: Path) -> Iterator[bytes]:
    """The encapsulated stream after the Basic Offset Table, piece by piece."""
    return (piece for number, piece in read_chunks(path) if number > 0)
