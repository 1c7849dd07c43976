"""Reading a DICOM file all the way to its end, or saying exactly where and why it could not be read.

pydicom is forgiving by design: a damaged length or delimiter can make it stop early and return
part of the data set (or none of it) with at most a warning. For a tool that verifies signatures
and gates releases that is a pass it must not give: a signed file whose bytes were damaged read as
"no signature", garbage behind a valid preamble read as an empty, valid file. So every read here
checks, besides what pydicom checks:

- the path is a regular file (never a pipe, a device or a folder: opening a FIFO blocks forever);
- the File Meta Information has the elements PS3.10 §7.1 requires, its group length is right, and
  the Transfer Syntax UID is one dvqa knows;
- a data set follows it, with SOP Class and SOP Instance UID (PS3.10 §7.1: a DICOM file holds one
  SOP instance);
- the parse reaches the last byte of the file: Pixel Data items are walked to their Sequence
  Delimitation Item (by seeking, so a many-GiB video is not read into memory) and whatever follows
  them (a Digital Signatures Sequence) is parsed too;
- sequences nest at most MAX_DEPTH levels - dvqa's own limit, not the standard's, so that a hostile
  file cannot exhaust the parser's recursion. The video IODs nest 3 levels deep.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import struct
import warnings
from pathlib import Path
from typing import BinaryIO

import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import UID

from dvqa.core.errors import InputError
from dvqa.core.regular import kind

MAX_DEPTH = 64
REQUIRED_META = ((0x0002, 0x0001), (0x0002, 0x0002), (0x0002, 0x0003), (0x0002, 0x0010))
PIXEL_TAGS = (0x7FE00008, 0x7FE00009, 0x7FE00010)
PIXEL_VRS = {0x7FE00008: "OF", 0x7FE00009: "OD", 0x7FE00010: "OB"}
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
# pydicom warnings that mean it stopped before the end of what the file declares
DAMAGE_WARNINGS = ("End of file reached", "before delimiter", "Expected delimiter", "bytes were read",
                   "ended with an item of length")


class FileProblem(InputError):
    """A file that is not (or not all) readable DICOM; `code` is the finding code `validate` reports."""

    def __init__(self, path: Path | str, message: str, code: str = "file.damaged",
                 reference: str = "PS3.10 §7.1") -> None:
        super().__init__(f"{path}: {message}")
        self.code = code
        self.reason = message
        self.reference = reference


# What Python itself raises when pydicom's parser meets bytes it did not expect: its text ("can only
# concatenate str (not "int") to str") describes pydicom's code, not the file, so a user is told what it means.
PARSER_FAULTS = (TypeError, AttributeError, KeyError, IndexError, struct.error, ZeroDivisionError, OverflowError)
NOT_PARSED = "its data elements do not parse: the file is damaged or truncated"


def why_unreadable(exc: BaseException) -> str:
    """pydicom's reason a file is not DICOM, in dvqa's words and without Python's exception names: its
    advice to read with force=True is for programmers, and a file without the PS3.10 header is simply not
    a DICOM file for dvqa."""
    if isinstance(exc, pydicom.errors.InvalidDicomError):
        return "no DICOM file header: the 128-byte preamble and 'DICM' (PS3.10 §7.1) are missing"
    text = re.sub(r"\s*\.?\s*Use force=True[^.]*\.?", "", str(exc)).strip()
    if isinstance(exc, PARSER_FAULTS) or not text:
        return NOT_PARSED
    return text[0].lower() + text[1:].rstrip(".") if not text[:2].isupper() else text.rstrip(".")


def has_dicm_marker(path: Path) -> bool:
    """Whether "DICM" stands at byte 128 (PS3.10 §7.1): a DICOM file, whatever its name. Opens `path`
    without blocking and raises OSError for anything but a regular file (a FIFO swapped in after a check
    would block a plain open forever); callers decide what an unreadable or non-regular path means."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, f"not a regular file ({kind(mode)})", str(path))
        return os.pread(fd, 4, 128) == b"DICM"
    finally:
        os.close(fd)


def open_checked(path: Path) -> tuple[BinaryIO, int]:
    """`path` opened for reading, and its size, checked as a regular file on the opened descriptor.

    `regular_file` checks the name, but the name can be swapped for a FIFO between that check (or
    `validate`'s walk) and the open, and a plain open() of a FIFO waits forever for a writer. Opened
    with O_NONBLOCK, a FIFO opens at once and fstat refuses it; the descriptor is then made blocking."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise FileProblem(path, "no such file", "file.missing", "") from None
    except OSError as exc:
        raise FileProblem(path, f"cannot be read ({exc.strerror})", "file.unreadable", "") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        if stat.S_ISDIR(info.st_mode):
            raise FileProblem(path, "is a folder, not a file", "file.not-regular", "")
        raise FileProblem(path, f"is {kind(info.st_mode)}, not a regular file (it may have been swapped in after "
                          "the check); it was not read", "file.not-regular", "")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb"), info.st_size


def regular_file(path: Path) -> os.stat_result:
    """stat(path), refusing anything that is not a regular file before it is ever opened."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise FileProblem(path, "no such file", "file.missing", "") from None
    except OSError as exc:
        raise FileProblem(path, f"cannot be read ({exc.strerror})", "file.unreadable", "") from None
    if stat.S_ISDIR(info.st_mode):
        raise FileProblem(path, "is a folder, not a file", "file.not-regular", "")
    if not stat.S_ISREG(info.st_mode):
        raise FileProblem(path, "is not a regular file (a pipe, socket or device); it was not opened",
                          "file.not-regular", "")
    return info


def read(path: Path | str, pixels: bool = False) -> Dataset:
    """The whole data set of `path` (without Pixel Data unless `pixels`), or FileProblem.

    The file's structure is walked first (dvqa.dicom.dicomread.walk: every element header to the last
    byte, by seeking), then pydicom parses it; either failing is a FileProblem naming the place.
    """
    return _read(Path(path), pixels)[0]


def read_header(path: Path | str) -> tuple[Dataset, int]:
    """`read` without Pixel Data, and the byte where the Pixel Data element starts (the file's size
    if it has none), so that a reader of the stream need not parse the header a second time."""
    return _read(Path(path), False)


def _read(path: Path, pixels: bool) -> tuple[Dataset, int]:
    regular_file(path)  # the name: the clearest message for what was named
    handle, size = open_checked(path)  # the descriptor: what is actually read
    with handle, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(handle, stop_before_pixels=not pixels)
            stopped = handle.tell()
            _check_meta(path, ds)
            walk(path, handle, size, ds.file_meta.TransferSyntaxUID)
            if not pixels and ds.file_meta.TransferSyntaxUID == pydicom.uid.DeflatedExplicitVRLittleEndian:
                # the file's offsets say nothing about the inflated data set: read it whole (deflated files
                # are small), then keep only placeholders of the Pixel Data, as for every other file
                handle.seek(0)
                ds = pydicom.dcmread(handle)
                stopped = size
                for tag in PIXEL_TAGS:
                    if tag in ds:
                        ds[tag].value = b""
            elif pixels:
                if stopped != size:
                    raise FileProblem(path, f"the data set ends at byte {stopped} of {size}", "file.damaged",
                                      "PS3.5 §7")
            else:
                handle.seek(stopped)
                _read_after_pixels(path, handle, ds, size)
            _convert_sequences(path, ds)
        except RecursionError:
            raise FileProblem(path, f"its sequences nest more than {MAX_DEPTH} levels deep; dvqa does not read "
                              "deeper nesting", "file.too-deep", "") from None
        except FileProblem:
            raise
        except Exception as exc:  # pydicom raises many types on damaged bytes: all mean "not readable"
            raise FileProblem(path, f"not a readable DICOM file ({why_unreadable(exc)})",
                              "file.not-dicom") from None
        damage = [str(w.message) for w in caught if any(d in str(w.message) for d in DAMAGE_WARNINGS)]
        if damage:
            raise FileProblem(path, f"the data set is damaged ({re.sub(r' in file .*$', '', damage[0])})",
                              "file.damaged", "PS3.5 §7")
    for w in caught:  # the rest are pydicom's remarks on values; passed on (`validate` reports them)
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if ("SOPClassUID" not in ds or "SOPInstanceUID" not in ds) and not is_directory(ds):
        what = "no data set at all" if len(ds) == 0 else "no SOP Class UID or SOP Instance UID"
        raise FileProblem(path, f"holds {what} after its File Meta Information; a DICOM file holds one SOP "
                          "instance", "file.no-dataset")
    return ds, stopped


def is_directory(ds: Dataset) -> bool:
    """A DICOMDIR: a Media Storage Directory (PS3.10 §8.6, PS3.3 Annex F), whose data set is the Basic
    Directory IOD - directory records, no SOP Class UID or SOP Instance UID of its own (the File Meta
    Information names the class and the file-set's instance)."""
    return str(ds.file_meta.get("MediaStorageSOPClassUID", "")) == MEDIA_STORAGE_DIRECTORY


def _check_meta(path: Path, ds: Dataset) -> None:
    meta = ds.file_meta
    missing = [f"({g:04X},{e:04X})" for g, e in REQUIRED_META if (g << 16 | e) not in meta]
    if missing:
        raise FileProblem(path, f"its File Meta Information lacks {', '.join(missing)} (the meta header is "
                          "damaged or not DICOM)", "file.meta")
    syntax = UID(str(meta.TransferSyntaxUID).strip("\x00 "))
    if not syntax.is_transfer_syntax:
        raise FileProblem(path, f"Transfer Syntax UID {str(syntax)[:70]!r} is not a transfer syntax dvqa knows "
                          "(a damaged meta header, or a private syntax)", "file.meta", "PS3.5 §10")


def walk(path: Path, handle, size: int, syntax: UID) -> None:
    """Walk every element header from the File Meta Information to the last byte, without reading values.

    Every length must fit inside what contains it (the file, a defined-length sequence or item),
    every undefined length must end in its delimiter (whose length is zero), sequences nest at most
    MAX_DEPTH deep, and the walk must end exactly at the end of the file (PS3.5 §7.1-§7.5, §A.4;
    PS3.10 §7.1). Deflated data sets are left to pydicom.
    """
    handle.seek(132)  # preamble and "DICM" (pydicom has checked them)
    meta_end = _walk_meta(path, handle, size)
    if syntax == pydicom.uid.DeflatedExplicitVRLittleEndian:
        return
    little, implicit = syntax.is_little_endian, syntax.is_implicit_VR
    order = "<" if little else ">"
    handle.seek(meta_end)
    # containers: [kind, end offset or None (undefined length), byte where it started, implicit VR inside]
    # (a sequence of VR UN with undefined length holds implicit VR little endian items, PS3.5 §6.2.2)
    stack: list[list] = []
    depth = 0
    while True:
        at = handle.tell()
        while stack and stack[-1][1] is not None and at >= stack[-1][1]:
            kind, end, started, _ = stack.pop()
            if at > end:
                raise _damaged(path, f"the {kind} that starts at byte {started} ends at byte {end}, but its "
                                     f"contents run on to byte {at}")
            depth -= kind == "sequence"
        if at == size:
            if stack:
                kind, _, started, _ = stack[-1]
                raise FileProblem(path, f"the file ends inside the {kind} that starts at byte {started} (no "
                                  "delimiter): it is cut short", "file.truncated", "PS3.5 §7.5")
            return
        here_implicit = stack[-1][3] if stack else implicit
        tag, vr, length = _header(path, handle, size, order, here_implicit)
        end = handle.tell() + length if length != UNDEFINED else None
        if end is not None and end > size:
            raise FileProblem(path, f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) at byte {at} declares {length} "
                              f"bytes but the file ends after {size - handle.tell()}: it is damaged or cut short",
                              "file.truncated", "PS3.5 §7.1")
        inside = stack[-1][0] if stack else "data set"
        if tag in (ITEM_END, SEQUENCE_END):
            want = {"item": ITEM_END, "sequence": SEQUENCE_END, "pixel data": SEQUENCE_END}.get(inside)
            if tag != want or stack[-1][1] is not None:
                raise _damaged(path, f"byte {at} holds a delimiter ({tag >> 16:04X},{tag & 0xFFFF:04X}) where none "
                                     f"belongs (inside the {inside})")
            if length != 0:
                raise _damaged(path, f"the delimiter at byte {at} has length {length}; it must be 0")
            stack.pop()
            depth -= inside == "sequence"
            continue
        if inside in ("sequence", "pixel data"):
            if tag != ITEM:
                raise _damaged(path, f"byte {at} holds ({tag >> 16:04X},{tag & 0xFFFF:04X}) where an item of the "
                                     f"{inside} belongs")
            if inside == "pixel data":
                if end is None:
                    raise _damaged(path, f"the Pixel Data item at byte {at} has an undefined length (PS3.5 §A.4)")
                handle.seek(end)
            else:
                stack.append(["item", end, at, here_implicit])
            continue
        if tag == ITEM:
            raise _damaged(path, f"byte {at} holds an item tag outside any sequence")
        if vr == "SQ" or (end is None and vr in ("UN", "")):
            depth += 1
            if depth > MAX_DEPTH:
                raise FileProblem(path, f"its sequences nest more than {MAX_DEPTH} levels deep; dvqa does not "
                                  "read deeper nesting", "file.too-deep", "")
            stack.append(["sequence", end, at, here_implicit or vr == "UN"])
        elif end is None:
            if tag not in PIXEL_TAGS:
                raise _damaged(path, f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) at byte {at} has an undefined "
                                     f"length, which only sequences and encapsulated Pixel Data may have")
            if not syntax.is_encapsulated:  # fragments under a native syntax (Odil re-writing a JPEG image)
                raise _damaged(path, f"the Pixel Data at byte {at} has an undefined length (encapsulated fragments), "
                                     f"which only an encapsulated transfer syntax allows, not {syntax.name} "
                                     "(PS3.5 §A.4)")
            stack.append(["pixel data", None, at, here_implicit])
        else:
            handle.seek(end)


UNDEFINED = 0xFFFFFFFF
VRS = {"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "OB", "OD", "OF", "OL", "OV",
       "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI", "UL", "UN", "UR", "US", "UT", "UV"}


def _damaged(path: Path, message: str) -> FileProblem:
    return FileProblem(path, f"{message}: the file is damaged", "file.damaged", "PS3.5 §7")


def _header(path: Path, handle, size: int, order: str, implicit: bool) -> tuple[int, str, int]:
    """(tag, VR or "" when implicit, length) of the element header at the current position."""
    at = handle.tell()
    head = handle.read(8)
    if len(head) < 8:
        raise FileProblem(path, f"the file ends inside an element header at byte {at}: it is cut short",
                          "file.truncated", "PS3.5 §7.1")
    group, element = struct.unpack(order + "HH", head[:4])
    tag = group << 16 | element
    if implicit or group == 0xFFFE:
        return tag, "", struct.unpack(order + "L", head[4:])[0]
    vr = head[4:6].decode("latin-1")
    if vr not in VRS:
        raise _damaged(path, f"element ({group:04X},{element:04X}) at byte {at} has VR {vr!r}, which is no VR")
    if vr.encode() in LONG_VRS:
        if head[6:8] != b"\0\0":
            raise _damaged(path, f"the reserved bytes of element ({group:04X},{element:04X}) at byte {at} are not zero")
        more = handle.read(4)
        if len(more) < 4:
            raise FileProblem(path, f"the file ends inside an element header at byte {at}", "file.truncated",
                              "PS3.5 §7.1")
        return tag, vr, struct.unpack(order + "L", more)[0]
    return tag, vr, struct.unpack(order + "H", head[6:8])[0]


def pixel_data_header(path: Path, at: int, syntax: UID) -> tuple[int, str, int] | None:
    """(tag, VR or "" when implicit, length) of the element at byte `at`, where read_header found the Pixel
    Data, or None when the file ends there; for checks of native Pixel Data against the image attributes."""
    handle, size = open_checked(path)
    with handle:
        if at >= size:
            return None
        handle.seek(at)
        return _header(path, handle, size, "<" if syntax.is_little_endian else ">", syntax.is_implicit_VR)


def _walk_meta(path: Path, handle, size: int) -> int:
    """Where the data set starts: after the group 0002 elements (explicit VR little endian, PS3.10 §7.1),
    whose group length must match them."""
    declared = None
    while True:
        at = handle.tell()
        head = handle.read(8)
        if len(head) < 8 or struct.unpack("<H", head[:2])[0] != 0x0002:
            handle.seek(at)
            break
        handle.seek(at)
        tag, vr, length = _header(path, handle, size, "<", False)
        if length == UNDEFINED or handle.tell() + length > size:
            raise FileProblem(path, f"meta element ({tag >> 16:04X},{tag & 0xFFFF:04X}) at byte {at} declares "
                              f"{length} bytes, more than the file holds: the meta header is damaged and would "
                              "swallow the data set", "file.meta")
        if tag == 0x00020000:
            declared = (handle.tell() + length, struct.unpack("<L", handle.read(4))[0] if length == 4 else None)
            continue
        handle.seek(length, os.SEEK_CUR)
    end = handle.tell()
    if declared is not None and declared[1] is not None and declared[0] + declared[1] != end:
        raise FileProblem(path, f"(0002,0000) File Meta Information Group Length says {declared[1]} bytes, the "
                          f"meta elements after it take {end - declared[0]}: the meta header is damaged", "file.meta")
    return end


def _read_after_pixels(path: Path, handle, ds: Dataset, size: int) -> None:
    """pydicom stopped before Pixel Data: step over it (its structure is already walked) and parse what
    follows - a Digital Signatures Sequence, trailing padding - into `ds`.

    (7FE0,0010) itself (or the float pixel data that stands in its place) is kept as an empty
    placeholder: the IOD's conditions ask whether Pixel Data is present (Pixel Padding Value, the Image
    Pixel module), and it is - only not read into memory."""
    if handle.tell() >= size:
        return
    syntax = ds.file_meta.TransferSyntaxUID
    order, implicit = ("<" if syntax.is_little_endian else ">"), syntax.is_implicit_VR
    tag, _, length = _header(path, handle, size, order, implicit)
    if tag in PIXEL_VRS:  # Float and Double Float Pixel Data too: conditions and the IOD ask for them alike
        ds[tag] = DataElement(tag, PIXEL_VRS[tag], b"", already_converted=True)  # as converted: no NumPy check
    if length != UNDEFINED:
        handle.seek(length, os.SEEK_CUR)
    else:
        while True:
            tag, _, length = _header(path, handle, size, order, implicit)
            if tag == SEQUENCE_END:
                break
            handle.seek(length, os.SEEK_CUR)
    if handle.tell() < size:
        for elem in read_dataset(handle, implicit, syntax.is_little_endian):
            ds[elem.tag] = elem


def _convert_sequences(path: Path, ds: Dataset) -> None:
    """Parse every sequence now (pydicom parses defined-length ones only when first used), without
    recursion and to at most MAX_DEPTH levels, leaving every other element's raw bytes untouched (a
    signature's MAC is computed over them)."""
    stack: list[tuple[Dataset, int]] = [(ds, 0)]
    while stack:
        current, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise FileProblem(path, f"its sequences nest more than {MAX_DEPTH} levels deep; dvqa does not read "
                              "deeper nesting", "file.too-deep", "")
        for tag in list(current.keys()):
            if current.get_item(tag).VR != "SQ":
                continue
            try:
                items = current[tag].value
            except RecursionError:
                raise
            except Exception as exc:
                raise FileProblem(path, f"sequence ({tag.group:04X},{tag.element:04X}) cannot be read "
                                  f"({type(exc).__name__}: {exc})", "file.damaged", "PS3.5 §7.5") from None
            stack.extend((item, depth + 1) for item in items)
