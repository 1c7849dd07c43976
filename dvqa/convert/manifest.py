"""A batch manifest: one conversion per row, each with its own patient/study data and options.

CSV (a header row naming the columns) or JSON Lines (one object per line), chosen by the suffix
(.csv, .jsonl/.ndjson). Columns:

- `input`, `output`: required; a relative path is taken from the manifest's folder, so a manifest
  and its recordings can move together (and workers elsewhere get absolute paths);
- options of `dvqa convert`, by the option's name without dashes (`syntax`, `iod`, `profile`,
  `uid_root`, `source_range`, `rate`, `ssim`, `passthrough`, `quality`, `metadata_json`,
  `metadata_from`); an empty cell takes the batch's default (the command line's value);
- patient, study and series attributes by their DICOM keyword (`PatientID`, `PatientName`,
  `AccessionNumber`, `StudyInstanceUID`, ... - the attributes `dvqa convert` copies,
  dvqa.dicom.iod.COPYABLE), checked against their VR before any row is converted.

Every problem is found before the first conversion starts and named by manifest line and column.
A manifest is hostile input like any other: it is read as a regular file to a size cap, CSV is
parsed as a whole (a quoted line break stays inside its cell), a control character in any cell or
a duplicate column is refused, a JSON Lines value must be a string (an integer where the VR is
numeric, true/false for a switch), and no output may be another row's input or output, the
manifest, the audit log, or outside `--output-root`. Each row carries a digest of what it asks for,
recorded in its audit record, so `--resume` notices a row corrected since its output was made.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import unicodedata
import warnings
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Iterator

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset

from dvqa.convert.pipeline import ConvertOptions
from dvqa.core import profiles
from dvqa.core.errors import DvqaError, InputError, UsageError
from dvqa.core.outputs import identity
from dvqa.core.rates import parse_rate
from dvqa.core.regular import MIB, read_regular
from dvqa.dicom import syntaxes
from dvqa.dicom.iod import COPYABLE, Metadata, VideoIOD
from dvqa.quality.metrics import SSIM_DEFINITIONS

PATHS = ("input", "output")
CHOICES: dict[str, tuple[str, ...]] = {
    "syntax": ("auto", *syntaxes.writable_names()),
    "iod": tuple(i.option for i in VideoIOD),
    "source_range": ("auto", "full", "limited"),
    "ssim": tuple(SSIM_DEFINITIONS),
}
FREE = ("profile", "uid_root")
RATES = ("rate",)  # read as --rate reads it (dvqa.core.rates): 30, 29.97, 30000/1001
SWITCHES = ("passthrough", "quality")
METADATA_FILES = ("metadata_json", "metadata_from")
KEYWORDS = tuple(k for k in COPYABLE if not k.endswith("Sequence") and k != "SpecificCharacterSet")
COLUMNS = (*PATHS, *CHOICES, *FREE, *RATES, *SWITCHES, *METADATA_FILES, *KEYWORDS)
TRUE, FALSE = ("yes", "true", "1", "on"), ("no", "false", "0", "off")
NUMERIC_VRS = ("IS", "DS", "US", "UL", "SS", "SL", "UV", "SV")  # where a JSON integer is the value itself
# A row is a few hundred bytes, so 64 MiB is over a hundred thousand rows - more than one batch (all
# rows checked in memory before the first converts, one audit chain) should hold; beyond it the file
# is the wrong one (or /dev/zero), and reading on would only exhaust memory.
MANIFEST_CAP = 64 * MIB
# A DICOM JSON object of patient and study attributes is a few KiB; a QIDO-RS answer (its first
# study is taken) stays well under a MiB. 4 MiB leaves room and still refuses a wrong file at once.
METADATA_CAP = 4 * MIB
# What a manifest row asks for beyond its cells: the effective options, digested for --resume (the rate
# only when set, so that the digests of batches begun before --rate existed still match).
DIGESTED = ("syntax", "rate", "iod", "uid_root", "source_range", "passthrough", "ssim", "quality", "profile",
            "keep_failed")


class AboutTheLog(DvqaError):
    """A refusal about the audit log itself (an output that is the log, a log that does not verify):
    the batch appends no record of it, since the log is what is in question."""


class LogClash(AboutTheLog, UsageError):
    pass


@dataclass
class Row:
    """One conversion: what to read, where to write, and its own options (audit and signing are the batch's)."""

    line: int  # in the manifest, for messages and the audit record
    source: Path
    output: Path
    options: ConvertOptions
    metadata_files: tuple[Path, ...] = ()  # read here, never written: an output must not be one of them
    digest: str = ""  # SHA-256 of the row's cells and effective options and metadata (see _digest)

    @property
    def where(self) -> str:
        return f"line {self.line}"


def read(path: Path, defaults: ConvertOptions, audit: Path | None = None,
         output_root: Path | None = None) -> list[Row]:
    """Every row of the manifest at `path`, each with `defaults` (ConvertOptions) overridden by its cells.

    `audit` (the batch's log) and `output_root` (the folder every output must be inside) are checked
    here too, so that nothing runs unless every output is a new file of its own.
    """
    if audit is not None and identity(audit) == identity(path):
        raise LogClash(f"{path}: the manifest is the audit log {audit}; give the batch a log of its own.")
    records = list(_records(path))
    if not records:
        raise UsageError(f"{path}: the manifest has no rows; add one per recording (columns input, output).")
    rows = [_row(path, line, cells, defaults) for line, cells in records]
    if output_root is not None:
        _confine(path, rows, output_root)
    _refuse_clashes(path, rows, audit)
    return rows


def _text_of(path: Path) -> str:
    data = read_regular(path, "the manifest", MANIFEST_CAP)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise InputError(f"{path} line {line}: the manifest is not UTF-8 ({exc.reason}); save it as UTF-8.") \
            from None


def _records(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, {column: text}) for every non-empty row; a row spanning lines has its first line's number."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".ndjson"):
        raise UsageError(f"{path}: give the manifest a .csv or .jsonl suffix (CSV with a header, or JSON Lines).")
    text = _text_of(path)
    records = _csv(path, text) if suffix == ".csv" else _jsonl(path, text)
    for line, cells in records:
        for column, value in cells.items():
            _refuse_control(path, line, column, value)
        if any(v.strip() for v in cells.values()):
            yield line, {k: v.strip() for k, v in cells.items()}


def _csv(path: Path, text: str) -> Iterator[tuple[int, dict[str, str]]]:
    """The csv module reads the whole text (newline=''), so a quoted line break stays in its cell - where
    the control-character check refuses it - instead of joining two lines into another file's name."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, [])
        _refuse_duplicates(path, 1, header)
        _refuse_unknown(path, 1, [c for c in header if c not in COLUMNS])
        if "input" not in header or "output" not in header:
            raise UsageError(f"{path}: the first line must name the columns, including input and output.")
        end = reader.line_num
        for cells in reader:
            line, end = end + 1, reader.line_num
            if len(cells) > len(header):
                raise UsageError(f"{path} line {line}: more cells than the header names; quote a value that "
                                 "contains a comma.")
            yield line, dict(zip(header, cells + [""] * (len(header) - len(cells))))
    except csv.Error as exc:
        raise UsageError(f"{path} line {reader.line_num}: not CSV ({exc}); fix the quoting.") from None


def _jsonl(path: Path, text: str) -> Iterator[tuple[int, dict[str, str]]]:
    # split at \n only: str.splitlines() also splits at U+2028, U+0085 ..., which JSON strings may hold
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            cells = json.loads(line, object_pairs_hook=_pairs)
        except ValueError as exc:  # JSONDecodeError, or an integer too long to convert
            raise UsageError(f"{path} line {number}: not JSON ({getattr(exc, 'msg', exc)}); each line must be "
                             "one object.") from None
        except RecursionError:
            raise UsageError(f"{path} line {number}: the JSON is nested too deeply to be a manifest row; each "
                             "line must be one flat object of column: value.") from None
        if not isinstance(cells, _Pairs):  # a list of pairs written as JSON arrays is not an object either
            raise UsageError(f"{path} line {number}: each line must be one JSON object.")
        keys = [k for k, _ in cells]
        _refuse_duplicates(path, number, keys)
        _refuse_unknown(path, number, [c for c in keys if c not in COLUMNS])
        yield number, {k: _cell(path, number, k, v) for k, v in cells}


class _Pairs(list):
    """A JSON object as its (key, value) pairs in order, so a duplicate key is seen, not silently dropped."""


def _pairs(pairs: list) -> _Pairs:
    return _Pairs(pairs)


def _cell(path: Path, line: int, key: str, value: object) -> str:
    """A JSON value as the cell's text: strings; true/false for a switch; an integer for a numeric VR;
    null for "the default". Anything else would be coerced to text nobody wrote (an object as
    "{'a': 1}", NaN as "nan"), so it is refused."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        if key in SWITCHES:
            return "yes" if value else "no"
    elif isinstance(value, int) and key in KEYWORDS and dictionary_VR(key) in NUMERIC_VRS:
        return str(value)
    kind = {bool: "true/false", int: "a number", float: "a number", _Pairs: "an object", list: "a list"}
    raise UsageError(f"{path} line {line} key {key}: {kind.get(type(value), 'this value')} is not accepted here; "
                     "write the value as a JSON string" + (" (or true/false)" if key in SWITCHES else "") + ".")


def _refuse_control(path: Path, line: int, column: str, value: str) -> None:
    """A control character (a line break, a tab, NUL ...) is never part of a file name or a DICOM value a
    manifest means; in a path it names another file, so it is refused, not stripped."""
    for char in value:
        if unicodedata.category(char) in ("Cc", "Zl", "Zp"):
            raise UsageError(f"{path} line {line} column {column}: the value contains the control character "
                             f"U+{ord(char):04X}; remove it (a line break or tab is never part of a file name or "
                             "DICOM value).")


def _refuse_duplicates(path: Path, line: int, columns: list[str]) -> None:
    seen = set()
    for column in columns:
        if column in seen:
            raise UsageError(f"{path} line {line}: column {column!r} is named twice; keep one (dvqa does not "
                             "guess which value is meant).")
        seen.add(column)


def _refuse_unknown(path: Path, line: int, unknown: list[str]) -> None:
    if unknown:
        raise UsageError(f"{path} line {line}: unknown column {unknown[0]!r}; columns are input, output, "
                         f"{', '.join(c for c in COLUMNS if c not in PATHS and c not in KEYWORDS)}, "
                         "or a DICOM keyword such as PatientID.")


def _row(manifest: Path, line: int, cells: dict[str, str], defaults: ConvertOptions) -> Row:
    where = f"{manifest} line {line}"
    base = manifest.parent.absolute()
    paths = {}
    for column in PATHS:
        if not cells.get(column):
            raise UsageError(f"{where}: the {column} column is empty; every row needs an input and an output.")
        paths[column] = base / Path(cells[column]).expanduser()
    try:
        _check_paths(where, paths["input"], paths["output"])
    except OSError as exc:  # a name too long, a folder that cannot be searched: the manifest's path, one sentence
        raise UsageError(f"{where}: {exc.filename}: {exc.strerror}; fix the path.") from None
    settings: dict[str, object] = {}
    for column, allowed in CHOICES.items():
        if cells.get(column):
            if cells[column] not in allowed:
                raise UsageError(f"{where}: {column} {cells[column]!r} is not one of {', '.join(allowed)}.")
            settings[column] = cells[column]
    for column in FREE:
        if cells.get(column):
            settings[column] = cells[column]
    for column in RATES:
        if cells.get(column):
            try:
                settings[column] = parse_rate(cells[column])
            except ValueError as exc:
                raise UsageError(f"{where}: {column} {exc}.") from None
    for column in SWITCHES:
        value = cells.get(column, "").lower()
        if value:
            if value not in TRUE + FALSE:
                raise UsageError(f"{where}: {column} {cells[column]!r}: write yes or no.")
            settings[column] = value in TRUE
    metadata = Metadata()
    metadata.merge(defaults.metadata)
    files = []
    for column in METADATA_FILES:
        if cells.get(column):
            file = base / Path(cells[column]).expanduser()
            metadata.merge(_metadata_file(column, file, where))
            files.append(file)
    for keyword in KEYWORDS:
        if cells.get(keyword):
            metadata.set(keyword, cells[keyword], f"{where} column {keyword}")
    metadata.check()
    options = replace(defaults, metadata=metadata, **settings)
    if options.profile:
        profiles.load(options.profile)  # an unknown profile fails here, not on a worker
        if not options.quality:
            raise UsageError(f"{where}: profile {options.profile} checks quality floors; the row turns quality off.")
    return Row(line, paths["input"], paths["output"], options, tuple(files), _digest(cells, options))


def _check_paths(where: str, source: Path, output: Path) -> None:
    if not source.is_file():
        raise UsageError(f"{where}: input {source} is not a file; fix the path (relative paths start at the "
                         "manifest's folder).")
    if output.is_dir():
        raise UsageError(f"{where}: output {output} is a folder; give a file name such as {output / 'video.dcm'}.")
    if not output.parent.is_dir():
        raise UsageError(f"{where}: the output folder {output.parent} does not exist; create it first.")


def _metadata_file(column: str, file: Path, origin: str) -> Metadata:
    """A row's metadata_json or metadata_from file, read as --metadata-json/--metadata-from read theirs,
    but the JSON to METADATA_CAP: a manifest names many."""
    what, source = f"the {column} file named on {origin}", f"{origin} column {column} ({file})"
    if column == "metadata_json":
        return Metadata.from_json_file(file, what, METADATA_CAP, source)
    return Metadata.from_dicom_file(file, what, source)


def _digest(cells: dict[str, str], options: ConvertOptions) -> str:
    """SHA-256 of what the row asks for: every non-empty cell (an empty one means "the default"), the
    effective options (defaults from the command line included) and the patient/study values after
    the metadata files were merged - so a correction in the manifest, in a metadata file or in the
    command line's defaults makes a different digest, and --resume does not keep the old output."""
    ds = Dataset()
    try:  # the DICOM JSON model: one canonical text for strings, numbers, names and sequences alike
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for keyword, value in options.metadata.values.items():
                setattr(ds, keyword, value)
            metadata: object = ds.to_json_dict()
    except (TypeError, ValueError, AttributeError):  # check() passed it, so only its text form can be odd
        metadata = {k: str(v) for k, v in sorted(options.metadata.values.items())}
    body = {"cells": {k: v for k, v in cells.items() if v},
            "options": {name: _plain(getattr(options, name)) for name in DIGESTED
                        if getattr(options, name) is not None or name != "rate"}, "metadata": metadata}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _plain(value: object) -> object:
    """An option as JSON holds it (a rate is a Fraction: its text, 30000/1001)."""
    return str(value) if isinstance(value, Fraction) else value


def _confine(manifest: Path, rows: list[Row], root: Path) -> None:
    """--output-root: every output's real folder must be `root` or inside it (symlinks and `..` resolved),
    so a manifest cannot write - or with --force replace - a file elsewhere that this user can write."""
    if not root.is_dir():
        raise UsageError(f"--output-root {root}: not a folder; give the existing folder outputs must be inside.")
    real_root = os.path.realpath(root)
    for row in rows:
        real = os.path.join(os.path.realpath(row.output.parent), row.output.name)
        if os.path.commonpath([real_root, real]) != real_root:
            raise UsageError(f"{manifest} line {row.line}: output {row.output} is outside --output-root {root} "
                             f"(it resolves to {real}); write it inside that folder.")


def _refuse_clashes(manifest: Path, rows: list[Row], audit: Path | None) -> None:
    """No output may be a file something else in the batch needs: a row's input or metadata file (a
    source recording would be destroyed), the manifest, the audit log, or another row's output - with or
    without --force. Paths are compared as files (dvqa.core.outputs.identity: inode, or real folder and
    name), so `..`, a symlinked folder or a hard link does not hide a clash."""
    named: dict[tuple, str] = {identity(manifest): "the manifest"}
    if audit is not None:
        named[identity(audit)] = "the audit log"
    for row in rows:
        for path in (row.source, *row.metadata_files):
            named.setdefault(identity(path), f"read by line {row.line}")
    outputs: dict[tuple, Row] = {}
    for row in rows:
        key = identity(row.output)
        role = named.get(key)
        if role == "the audit log":
            raise LogClash(f"{manifest} line {row.line}: output {row.output} is the audit log {audit}; the log "
                           "would be replaced - give the row another output.")
        if role is not None:
            what = "the row's input" if role == f"read by line {row.line}" else (
                role if role == "the manifest" else f"a file {role}")
            raise UsageError(f"{manifest} line {row.line}: output {row.output} is {what}; it would be destroyed - "
                             "choose another output name (--force does not allow this).")
        if key in outputs:
            raise UsageError(f"{manifest} line {row.line}: output {row.output} is also the output of line "
                             f"{outputs[key].line}; give each row its own output.")
        outputs[key] = row
