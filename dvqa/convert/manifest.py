"""A batch manifest: one conversion per row, each with its own patient/study data and options.

CSV (a header row naming the columns) or JSON Lines (one object per line), chosen by the suffix
(.csv, .jsonl/.ndjson). Columns:

- `input`, `output`: required; a relative path is taken from the manifest's folder, so a manifest
  and its recordings can move together (and workers elsewhere get absolute paths);
- options of `dvqa convert`, by the option's name without dashes (`syntax`, `iod`, `profile`,
  `uid_root`, `source_range`, `ssim`, `passthrough`, `quality`, `metadata_json`, `metadata_from`);
  an empty cell takes the batch's default (the command line's value);
- patient, study and series attributes by their DICOM keyword (`PatientID`, `PatientName`,
  `AccessionNumber`, `StudyInstanceUID`, ... - the attributes `dvqa convert` copies,
  dvqa.dicom.iod.COPYABLE), checked against their VR before any row is converted.

Every problem is found before the first conversion starts and named by manifest line and column.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, replace
from pathlib import Path

from dvqa.convert.pipeline import ConvertOptions
from dvqa.core import profiles
from dvqa.core.errors import InputError, UsageError
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
SWITCHES = ("passthrough", "quality")
METADATA_FILES = ("metadata_json", "metadata_from")
KEYWORDS = tuple(k for k in COPYABLE if not k.endswith("Sequence") and k != "SpecificCharacterSet")
COLUMNS = (*PATHS, *CHOICES, *FREE, *SWITCHES, *METADATA_FILES, *KEYWORDS)
TRUE, FALSE = ("yes", "true", "1", "on"), ("no", "false", "0", "off")


@dataclass
class Row:
    """One conversion: what to read, where to write, and its own options (audit and signing are the batch's)."""

    line: int  # in the manifest, for messages and the audit record
    source: Path
    output: Path
    options: ConvertOptions

    @property
    def where(self) -> str:
        return f"line {self.line}"


def read(path: Path, defaults: ConvertOptions) -> list[Row]:
    """Every row of the manifest at `path`, each with `defaults` (ConvertOptions) overridden by its cells."""
    records = list(_records(path))
    if not records:
        raise UsageError(f"{path}: the manifest has no rows; add one per recording (columns input, output).")
    rows = [_row(path, line, cells, defaults) for line, cells in records]
    seen: dict[Path, int] = {}
    for row in rows:
        if row.output in seen:
            raise UsageError(f"{path} line {row.line}: output {row.output} is also the output of line "
                             f"{seen[row.output]}; give each row its own output.")
        seen[row.output] = row.line
    return rows


def _records(path: Path):
    """(line number, {column: text}) for every non-empty row."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the manifest ({exc}); give a UTF-8 CSV or JSON Lines file.") from None
    suffix = path.suffix.lower()
    if suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        unknown = [c for c in reader.fieldnames or [] if c not in COLUMNS]
        if not reader.fieldnames or "input" not in reader.fieldnames or "output" not in reader.fieldnames:
            raise UsageError(f"{path}: the first line must name the columns, including input and output.")
        _refuse_unknown(path, 1, unknown)
        for cells in reader:
            if None in cells:  # more cells than the header has columns
                raise UsageError(f"{path} line {reader.line_num}: more cells than the header names; quote a "
                                 "value that contains a comma.")
            if any((v or "").strip() for v in cells.values()):
                yield reader.line_num, {k: (v or "").strip() for k, v in cells.items()}
        return
    if suffix not in (".jsonl", ".ndjson"):
        raise UsageError(f"{path}: give the manifest a .csv or .jsonl suffix (CSV with a header, or JSON Lines).")
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            cells = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path} line {number}: not JSON ({exc.msg}); each line must be one object.") from None
        if not isinstance(cells, dict):
            raise UsageError(f"{path} line {number}: each line must be one JSON object.")
        _refuse_unknown(path, number, [c for c in cells if c not in COLUMNS])
        yield number, {k: _text(v) for k, v in cells.items()}


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "" if value is None else str(value).strip()


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
    if not paths["input"].is_file():
        raise UsageError(f"{where}: input {paths['input']} is not a file; fix the path (relative paths start at "
                         "the manifest's folder).")
    if paths["output"].resolve() == paths["input"].resolve():
        raise UsageError(f"{where}: output {paths['output']} is the row's input; choose another output name.")
    if paths["output"].is_dir():
        raise UsageError(f"{where}: output {paths['output']} is a folder; give a file name such as "
                         f"{paths['output'] / 'video.dcm'}.")
    if not paths["output"].parent.is_dir():
        raise UsageError(f"{where}: the output folder {paths['output'].parent} does not exist; create it first.")
    settings: dict[str, object] = {}
    for column, allowed in CHOICES.items():
        if cells.get(column):
            if cells[column] not in allowed:
                raise UsageError(f"{where}: {column} {cells[column]!r} is not one of {', '.join(allowed)}.")
            settings[column] = cells[column]
    for column in FREE:
        if cells.get(column):
            settings[column] = cells[column]
    for column in SWITCHES:
        value = cells.get(column, "").lower()
        if value:
            if value not in TRUE + FALSE:
                raise UsageError(f"{where}: {column} {cells[column]!r}: write yes or no.")
            settings[column] = value in TRUE
    metadata = Metadata()
    metadata.merge(defaults.metadata)
    for column in METADATA_FILES:
        if cells.get(column):
            file = base / cells[column]
            loaded = Metadata.from_json_file(file) if column == "metadata_json" else Metadata.from_dicom_file(file)
            metadata.merge(loaded)
    for keyword in KEYWORDS:
        if cells.get(keyword):
            metadata.set(keyword, cells[keyword], f"{where} column {keyword}")
    metadata.check()
    options = replace(defaults, metadata=metadata, **settings)
    if options.profile:
        profiles.load(options.profile)  # an unknown profile fails here, not on a worker
        if not options.quality:
            raise UsageError(f"{where}: profile {options.profile} checks quality floors; the row turns quality off.")
    return Row(line, paths["input"], paths["output"], options)
