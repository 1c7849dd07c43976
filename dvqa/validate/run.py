"""`dvqa validate`: every check on DICOM files someone else may have written, as one findings list.

Layers: the file itself (read to its last byte by dvqa.dicom.dicomread: meta header, structure, a data
set with a SOP instance); (1) the IOD against a DICOM edition through dicom-validator (dvqa.validate.iodcheck,
the edition from dvqa.validate.standard: bundled, or imported) and every value against its VR and VM
(dvqa.dicom.values); (2) the video stream against the header (dvqa.validate.streamcheck); (3) a profile's
per-modality rules (rules/*.yaml).
A file that is not DICOM is a finding, never a crash; a path that is not checked (a pipe, a folder
that cannot be read, a link loop) is a finding too. Files are checked in worker processes with
--jobs; the order of the results follows the input order.
"""

from __future__ import annotations

import fnmatch
import os
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import pydicom

from dvqa.core.findings import Finding, Severity
from dvqa.dicom import dicomread, values
from dvqa.dicom.iod import declared_rate
from dvqa.validate import iodcheck, standard, streamcheck
from dvqa.validate.standard import Edition

if TYPE_CHECKING:  # a profile is loaded (YAML) only when one is asked for
    from dvqa.core.profiles import Profile, Rule


# the stream layer's note when its findings came from the conversion that wrote the file (check_file's `stream`)
STREAM_BY_CONVERSION = "ran during the conversion, on these bytes"


@dataclass
class FileResult:
    path: str
    findings: list[Finding] = field(default_factory=list)
    layers: dict[str, str] = field(default_factory=dict)  # layer -> "ran" | why it did not


@dataclass(frozen=True)
class Skipped:
    """A path `walk` did not check, and why: reported as a finding, so a tree is never passed in part."""

    path: Path
    code: str
    reason: str
    severity: Severity = Severity.ERROR


# What dvqa and the tools around it write beside DICOM files: found by walking a folder, a file with
# one of these suffixes and no "DICM" at byte 128 (PS3.10 §7.1) is skipped (and listed), not failed.
NOT_DICOM_SUFFIXES = frozenset({
    ".json", ".jsonl", ".html", ".htm", ".xml", ".sarif", ".md", ".txt", ".csv", ".log", ".pdf", ".png",
    ".jpg", ".jpeg", ".svg", ".yaml", ".yml", ".webm", ".mkv", ".mp4", ".mov", ".zip", ".gz",
    ".pem", ".crt", ".cer", ".key", ".p12", ".pfx",  # keys and certificates kept beside signed files
})


def walk(targets: Iterable[Path], include_hidden: bool = False, include: tuple[str, ...] = (),
         exclude: tuple[str, ...] = ()) -> Iterator[Path | Skipped]:
    """Files as given, and every file below a folder (sorted); what is not checked comes out as Skipped.

    Symbolic links to folders are followed once (a loop is reported, not walked forever); names
    starting with a dot (dvqa's own temporary files among them) are skipped unless `include_hidden`;
    a walked file is skipped when it matches an `exclude` glob, matches no `include` glob, or is
    clearly not DICOM (NOT_DICOM_SUFFIXES); each skip is reported. A file named in `targets` is always
    checked. Anything that is not a regular file is never opened.
    """
    for target in targets:
        if not target.is_dir():
            yield target  # check_file reports a pipe, a device or a missing file
            continue
        seen: set[tuple[int, int]] = set()
        pending = [target]
        while pending:
            folder = pending.pop()
            try:
                info = folder.stat()
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError as exc:
                yield Skipped(folder, "file.unreadable-folder", f"the folder cannot be read ({exc.strerror}); "
                              "its files were not checked")
                continue
            if (info.st_dev, info.st_ino) in seen:
                yield Skipped(folder, "file.link-loop", "a link back to a folder already walked; not walked again",
                              Severity.WARNING)
                continue
            seen.add((info.st_dev, info.st_ino))
            folders = []
            for entry in entries:
                path = Path(entry.path)
                if entry.name.startswith(".") and not include_hidden:
                    yield Skipped(path, "file.hidden", "hidden (its name starts with a dot): not checked; "
                                  "--include-hidden checks it", Severity.WARNING)
                elif entry.is_dir():  # follows a link to a folder
                    folders.append(path)
                else:
                    yield _chosen(path, path.relative_to(target).as_posix(), include, exclude)
            pending.extend(reversed(folders))


def _chosen(path: Path, relative: str, include: tuple[str, ...], exclude: tuple[str, ...]) -> Path | Skipped:
    def matches(globs: tuple[str, ...]) -> str | None:
        return next((g for g in globs if fnmatch.fnmatch(path.name, g) or fnmatch.fnmatch(relative, g)), None)

    if (glob := matches(exclude)) is not None:
        return Skipped(path, "file.excluded", f"excluded by --exclude {glob!r}", Severity.INFO)
    if include and matches(include) is None:
        return Skipped(path, "file.not-included", f"matches no --include ({', '.join(include)})", Severity.INFO)
    if path.suffix.lower() in NOT_DICOM_SUFFIXES and not _has_dicm(path):
        return Skipped(path, "file.not-dicom-skipped", f"a {path.suffix} file without the DICM marker of a DICOM "
                       "file (PS3.10 §7.1): not checked; name it explicitly to check it", Severity.INFO)
    return path


def _has_dicm(path: Path) -> bool:
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return True  # a pipe or a device is never opened: check_file reports it
        return dicomread.has_dicm_marker(path)
    except OSError:
        return True  # unreadable: check_file reports it


def check_file(path: Path | Skipped, profile: Profile | None = None, edition: Edition | None = None,
               stream: list[Finding] | None = None) -> FileResult:
    """All layers for one file; pydicom's parse warnings become info findings, not stderr noise.

    `stream`: the stream layer's findings when the caller has them for these very bytes (`dvqa serve`: the
    conversion ran streamcheck.check on the file it wrote, and nothing has written to it since); that layer
    reads the whole file, which is what a 10-minute recording's wait after its end would otherwise spend."""
    if isinstance(path, Skipped):
        return FileResult(str(path.path), [Finding(path.severity, path.code, path.reason, str(path.path))],
                          {"file": "skipped"})
    tables = standard.load(edition or standard.default())  # once per process: cached
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = _check_file(path, profile, tables, stream)
    for warning in {str(w.message) for w in caught}:
        result.findings.append(Finding(Severity.INFO, "file.parse-warning", warning, str(path), "", ""))
    return result


def _check_file(path: Path, profile: Profile | None, tables: standard.Tables, stream: list[Finding] | None = None
                ) -> FileResult:
    result = FileResult(str(path))
    add = result.findings.append
    try:
        ds, pixel_data_at = dicomread.read_header(path)
    except dicomread.FileProblem as exc:
        add(Finding(Severity.ERROR, exc.code, exc.reason, str(path), "", exc.reference))
        result.layers["file"] = "failed"
        return result
    result.layers["file"] = "ran"
    result.findings += _meta_agrees(ds, path)
    try:
        for problem in [*values.check_dataset(ds.file_meta), *values.check_dataset(ds)]:
            add(Finding(Severity.ERROR, f"value.{problem.kind}", problem.message, str(path), problem.where,
                        values.REFERENCE))
        result.layers["value"] = "ran"
    except Exception as exc:  # noqa: BLE001 - a value that breaks the checker is still that file's finding
        add(Finding(Severity.ERROR, "value.unreadable", f"the values could not be checked ({type(exc).__name__}: "
                    f"{exc})", str(path), "", values.REFERENCE))
        result.layers["value"] = "failed"
    try:
        result.findings += iodcheck.check(ds, str(path), tables)
        result.layers["iod"] = "ran"
    except Exception as exc:  # noqa: BLE001 - a data set that breaks the IOD check is still that file's finding
        add(Finding(Severity.ERROR, "iod.unreadable", f"the IOD could not be checked ({type(exc).__name__}: {exc})",
                    str(path), "", tables.edition.name))
        result.layers["iod"] = "failed"
    try:
        if stream is not None:
            result.findings += stream
            result.layers["stream"] = STREAM_BY_CONVERSION
        else:
            result.findings += streamcheck.check(path, ds, pixel_data_at)
            result.layers["stream"] = "ran" if "TransferSyntaxUID" in ds.file_meta else "no transfer syntax"
    except Exception as exc:  # a damaged file must give a finding, never a traceback
        add(Finding(Severity.ERROR, "stream.unreadable", f"the stream could not be checked ({type(exc).__name__}: "
                    f"{exc})", str(path), "(7FE0,0010)", ""))
        result.layers["stream"] = "failed"
    if profile:
        try:
            result.findings += [f for rule in profile.rules for f in _apply(rule, ds, path)]
        except Exception as exc:  # a damaged attribute value
            add(Finding(Severity.ERROR, "profile.unreadable", f"an attribute the {profile.name} rules need "
                        f"cannot be read ({type(exc).__name__}: {exc})", str(path), "", ""))
        result.layers["profile"] = profile.name
    return result


def _meta_agrees(ds: pydicom.Dataset, path: Path) -> list[Finding]:
    """The File Meta Information names the SOP instance the data set holds (PS3.10 §7.1); a DICOMDIR's data set
    holds none, its meta names the file-set (PS3.10 §8.6)."""
    out = []
    if dicomread.is_directory(ds) and "SOPClassUID" not in ds and "SOPInstanceUID" not in ds:
        return out
    for meta, own in (("MediaStorageSOPClassUID", "SOPClassUID"), ("MediaStorageSOPInstanceUID", "SOPInstanceUID")):
        stated, actual = str(ds.file_meta.get(meta, "")), str(ds.get(own, ""))
        if not stated:  # Type 1 in the meta header (PS3.10 Table 7.1-1), also when the data set's is empty too
            out.append(Finding(Severity.ERROR, "file.meta-empty", f"the File Meta Information's {meta} is empty; it "
                               "is Type 1", str(path), f"{meta} (0002,{'0002' if 'Class' in meta else '0003'})",
                               "PS3.10 §7.1"))
        elif stated != actual:
            out.append(Finding(Severity.ERROR, "file.meta-mismatch", f"the File Meta Information's {meta} is "
                               f"{stated!r} but the data set's {own} is {actual!r}", str(path),
                               f"{meta} (0002,{'0002' if 'Class' in meta else '0003'})", "PS3.10 §7.1"))
    return out


def _apply(rule: Rule, ds: pydicom.Dataset, path: Path) -> list[Finding]:
    out = []
    for attribute in rule.attributes:
        value = _value(ds, attribute)
        problem = None
        if rule.check == "required" and value in (None, ""):
            problem = f"{attribute} is absent or empty"
        elif rule.check == "attribute_in" and str(value) not in rule.values:
            problem = f"{attribute} is {value!r}, expected one of {', '.join(rule.values)}"
        elif rule.check == "range":
            try:
                number = float(value) if value not in (None, "") else None
            except (TypeError, ValueError):
                number = None
            if number is None:
                problem = f"{attribute} is absent or not a number"
            elif (rule.minimum is not None and number < rule.minimum) or (
                    rule.maximum is not None and number > rule.maximum):
                problem = f"{attribute} is {number:g}, outside {rule.minimum:g}-{rule.maximum:g}"
        if problem:
            out.append(Finding(rule.severity, rule.id, f"{rule.message}: {problem}", str(path),
                               attribute, rule.source))
    return out


def _value(ds: pydicom.Dataset, attribute: str):
    if attribute == "frame_rate":
        rate = declared_rate(ds)
        return float(rate) if rate is not None else None
    if attribute not in ds:
        return None
    value = ds[attribute].value
    return "" if value is None else value


def validate(targets: Iterable[Path | Skipped], profile: Profile | None = None, jobs: int = 1,
             progress: Callable[[int], None] | None = None, edition: Edition | None = None) -> list[FileResult]:
    """Check `targets` (paths, or what `walk` yields) in order; one FileResult each."""
    files = [t for t in targets]
    if jobs <= 1:
        results = []
        for path in files:
            results.append(check_file(path, profile, edition))
            if progress:
                progress(1)
        return results
    from concurrent.futures import ProcessPoolExecutor  # multiprocessing: imported only when it is used

    with ProcessPoolExecutor(max_workers=jobs) as pool:
        results = []
        for result in pool.map(check_file, files, [profile] * len(files), [edition] * len(files), chunksize=4):
            results.append(result)
            if progress:
                progress(1)
        return results
