"""`dvqa validate`: every check on DICOM files someone else may have written, as one findings list.

Layers: (1) the IOD against the DICOM standard through dicom-validator, which needs the
standard's data offline - not bundled yet, so this layer reports that it did not run instead of
passing silently; (2) the video stream against the header (dvqa.streamcheck); (3) a profile's
per-modality rules (rules/*.yaml). A file that is not DICOM is a finding, never a crash. Files
are checked in worker processes with --jobs; the order of the results follows the input order.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import pydicom

from dvqa import streamcheck
from dvqa.findings import Finding, Severity
from dvqa.profiles import Profile, Rule

IOD_LAYER_NOTE = ("IOD layer not run: the DICOM standard's data that dicom-validator needs offline is not "
                  "bundled yet; only stream and profile checks ran")


@dataclass
class FileResult:
    path: str
    findings: list[Finding] = field(default_factory=list)
    layers: dict[str, str] = field(default_factory=dict)  # layer -> "ran" | why it did not


def walk(targets: Iterable[Path]) -> Iterator[Path]:
    """Files as given, and every file below a folder (sorted, hidden files skipped)."""
    for target in targets:
        if target.is_dir():
            for root, dirs, files in os.walk(target):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith("."):
                        yield Path(root) / name
        else:
            yield target


def check_file(path: Path, profile: Profile | None = None) -> FileResult:
    """All layers for one file; pydicom's parse warnings become info findings, not stderr noise."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = _check_file(path, profile)
    for warning in {str(w.message) for w in caught}:
        result.findings.append(Finding(Severity.INFO, "file.parse-warning", warning, str(path), "", ""))
    return result


def _check_file(path: Path, profile: Profile | None) -> FileResult:
    result = FileResult(str(path))
    add = result.findings.append
    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
        ds.file_meta.get("TransferSyntaxUID")  # parse the meta header now, inside the guard
    except Exception as exc:  # pydicom raises many types on damaged bytes: all mean "not readable"
        add(Finding(Severity.ERROR, "file.not-dicom", f"not a readable DICOM file ({type(exc).__name__}: {exc})",
                    str(path), "", "PS3.10 §7.1"))
        return result
    result.layers["iod"] = IOD_LAYER_NOTE
    try:
        result.findings += streamcheck.check(path, ds)
        result.layers["stream"] = "ran" if "TransferSyntaxUID" in ds.file_meta else "no transfer syntax"
    except Exception as exc:  # a damaged file must give a finding, never a traceback
        add(Finding(Severity.ERROR, "stream.unreadable", f"the stream could not be checked ({type(exc).__name__}: "
                    f"{exc})", str(path), "(7FE0,0010)", ""))
    if profile:
        try:
            result.findings += [f for rule in profile.rules for f in _apply(rule, ds, path)]
        except Exception as exc:  # a damaged attribute value
            add(Finding(Severity.ERROR, "profile.unreadable", f"an attribute the {profile.name} rules need "
                        f"cannot be read ({type(exc).__name__}: {exc})", str(path), "", ""))
        result.layers["profile"] = profile.name
    return result


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
        rate = streamcheck.declared_rate(ds)
        return float(rate) if rate is not None else None
    if attribute not in ds:
        return None
    value = ds[attribute].value
    return "" if value is None else value


def validate(targets: Iterable[Path], profile: Profile | None = None, jobs: int = 1,
             progress: Callable[[int], None] | None = None) -> list[FileResult]:
    files = list(walk(targets))
    if jobs <= 1:
        results = []
        for path in files:
            results.append(check_file(path, profile))
            if progress:
                progress(1)
        return results
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        results = []
        for result in pool.map(check_file, files, [profile] * len(files), chunksize=4):
            results.append(result)
            if progress:
                progress(1)
        return results
