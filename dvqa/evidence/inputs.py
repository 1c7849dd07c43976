"""What `dvqa evidence build --inputs` names, sorted out before any work starts.

Recordings are converted, DICOM files collected, other files listed as not used. What cannot be
read - a folder without permission, a file that cannot be opened, a FIFO named on the command
line - is never silently left out or passed off as "not DICOM": it is listed, and the build's
"inputs not read" step fails, because the bundle would claim evidence it does not hold.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from dvqa.core.errors import DvqaError, InputError, UsageError
from dvqa.core.regular import kind, open_regular

RECORDING_SUFFIXES = frozenset({".webm", ".mkv", ".mp4", ".mov", ".m4v"})


@dataclass
class Inputs:
    """What --inputs named, sorted out before any work: recordings to convert, DICOM files to collect,
    files not used (and why), and what could not be read at all (which fails the build's input step)."""
    recordings: list[Path] = field(default_factory=list)
    dicom: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)


def classify(inputs: list[Path]) -> Inputs:
    """Named files are always used; in folders, files are DICOM by their DICM marker (PS3.10 §7.1) and
    recordings by their suffix. A folder or file dvqa cannot read is never silently left out: it is
    listed as unreadable, and the bundle says the evidence is incomplete."""
    found = Inputs()
    for given in inputs:
        if not os.path.lexists(given):
            raise InputError(f"--inputs {given}: no such file or folder; check the path.")
        for path in [given] if not given.is_dir() else _walk(given, found):
            _sort(path, given, found)
    if not found.recordings and not found.dicom and not found.unreadable:
        raise UsageError("--inputs: no recording or DICOM file found; name files or folders that hold them.")
    return found


def _walk(folder: Path, found: Inputs) -> list[Path]:
    """Every file below `folder`, sorted. Links are not followed (listed as not used); a folder that
    cannot be listed is unreadable rather than silently shrinking the evidence."""
    def failed(exc: OSError) -> None:
        found.unreadable.append(f"{exc.filename}: the folder cannot be read ({exc.strerror}); "
                                "give dvqa read access or leave it out of --inputs")

    files = []
    for root, folders, names in os.walk(folder, onerror=failed):
        found.skipped += [f"{Path(root) / name}: a symbolic link to a folder, not followed"
                          for name in folders if (Path(root) / name).is_symlink()]
        files += [Path(root) / name for name in names]
    return sorted(files)


def _sort(path: Path, given: Path, found: Inputs) -> None:
    """One file into recordings, DICOM, not used or unreadable. A file named in --inputs is followed
    if it is a link and must be readable; in a folder, only regular files are looked at."""
    named = path == given
    try:
        info = path.stat() if named else path.lstat()
        if not stat.S_ISREG(info.st_mode):
            what = "a symbolic link" if stat.S_ISLNK(info.st_mode) else kind(info.st_mode)
            (found.unreadable if named else found.skipped).append(f"{path}: {what}, not a regular file")
            return
        dicom = _is_dicom(path)
    except OSError as exc:
        found.unreadable.append(f"{path}: cannot be read ({exc.strerror}); give dvqa read access or leave "
                                "it out of --inputs")
        return
    except DvqaError as exc:
        found.unreadable.append(str(exc).rstrip("."))
        return
    if dicom:
        found.dicom.append(path)
    elif named or path.suffix.lower() in RECORDING_SUFFIXES:
        found.recordings.append(path)
    else:
        found.skipped.append(f"{path}: neither DICOM nor a recording ({path.suffix or 'no suffix'})")


def _is_dicom(path: Path) -> bool:
    """The DICM marker of a regular file, opened without waiting (a FIFO swapped in after the walk)."""
    fd = open_regular(path, "the input", InputError)
    with os.fdopen(fd, "rb") as handle:
        handle.seek(128)
        return handle.read(4) == b"DICM"
