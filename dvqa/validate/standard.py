"""The DICOM Standard editions dvqa validates against, offline: the bundled one and any the user imports.

The bundled edition (dvqa/validate/editions/<edition>.json.gz, built by dvqa.validate.standard_build) travels with the
package, so a fresh install validates with no network. Its bytes are pinned here by SHA-256 and checked when
it is loaded: a changed file is an environment error, never a quietly different verdict. An edition imported
from NEMA's DocBook files (`dvqa standard import`, `dvqa standard fetch`, dvqa.validate.standard_install) is
kept in dicom-validator's own layout under the editions folder (DVQA_STANDARD_DIR, default
~/.local/share/dvqa/standard); nothing vouches for its tables, so it is used only when the user names it
(--standard, or the DVQA_STANDARD setting) and every output calls it "imported, unverified" beside the
hash of the tables actually loaded. Whichever is used is loaded once per process.

Loading is part of every `dvqa validate`'s start-up, and parsing 7.6 MB of JSON took a third of a second. So
the tables are also kept in a compiled form (dvqa.validate.compiled): one file per edition in dvqa's cache
folder, named by the SHA-256 of the tables it was made from, holding each module table as its own marshal
blob, unpacked only when a file's IOD uses that module. The source tables are still read and hashed on
every load (for the bundled edition, that is the pinned check), so a changed edition can never be served
from a stale compiled form.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from dicom_validator.validator.dicom_info import DicomInfo

from dvqa.core.errors import DvqaError, EnvironmentProblem, InputError, UsageError
from dvqa.core.regular import MIB, read_regular
from dvqa.validate import compiled

BUNDLED_DIR = Path(__file__).resolve().parent / "editions"
# The bundled editions and the SHA-256 of their files, as built by dvqa.validate.standard_build (which prints
# the digest). Pinned in the code so that a file changed after installation cannot pass as dvqa's edition.
BUNDLED_SHA256 = {"2020a": "f0ef4e4281366c565a4ae3ecdff33fd1f529b7e1338a5ead621e93e10bd62587"}
BUNDLED_SOURCE = "built from PyPI dicom-standard 0.1.0"
BUNDLED_TRUST = "bundled with dvqa, verified"
IMPORTED_TRUST = "imported, unverified"
DIR_VARIABLE = "DVQA_STANDARD_DIR"
DEFAULT_VARIABLE = "DVQA_STANDARD"  # the documented setting that names another default edition
EDITION_NAME = re.compile(r"20[0-9]{2}[a-h]")  # NEMA's edition names (2024b); a name is also a folder name
JSON_FILES = ("dict_info.json", "iod_info.json", "module_info.json", "uid_info.json")  # dicom-validator's
TABLE_CAP = 512 * MIB  # one JSON table of an imported edition (NEMA's largest are tens of MiB)
SOURCE_CAP = 64 * 1024  # the provenance note written at import


@dataclass(frozen=True)
class Edition:
    name: str  # e.g. "2020a"
    source: str  # where it came from, in words (for an imported edition: what the import recorded, unverified)
    path: Path
    bundled: bool
    trust: str = IMPORTED_TRUST  # shown beside the name in every output
    digest: str = ""  # SHA-256 of the tables (see tables_digest); "" until loaded, for an imported edition

    def files(self) -> list[Path]:
        return [self.path] if self.bundled else [self.path / name for name in JSON_FILES]

    def file_digests(self) -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in self.files()}

    def describe(self) -> dict[str, str]:
        """What every output prints about the tables used: name, trust, hash, provenance."""
        return {"edition": self.name, "trust": self.trust, "sha256": self.digest, "source": self.source}


def tables_digest(contents: dict[str, bytes]) -> str:
    """The SHA-256 that names a set of tables: of the one file of a bundled edition, else of the manifest
    `sha256sum dict_info.json iod_info.json module_info.json uid_info.json` prints (run in the json folder,
    piped to sha256sum), so that anyone can recompute it without dvqa."""
    if len(contents) == 1:
        return hashlib.sha256(next(iter(contents.values()))).hexdigest()
    manifest = "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in contents.items())
    return hashlib.sha256(manifest.encode("ascii")).hexdigest()


@dataclass
class Tables:
    """An edition loaded: dicom-validator's DicomInfo, plus what dvqa adds for its findings."""

    edition: Edition
    info: DicomInfo
    references: dict[str, dict[str, str]] = field(default_factory=dict)  # module ref -> name, table
    unevaluated: int = 0  # conditions dicom-validator's parser could not read
    prepared: dict = field(default_factory=dict)  # per module, what dvqa.validate.iodcheck needs on every file
    known: frozenset[str] | None = None  # known_tags, when the compiled form carries it

    @functools.cached_property
    def known_tags(self) -> frozenset[str] | set[str]:
        """Every attribute some module or macro of this edition lists (for "newer than the edition")."""
        if self.known is not None:
            return self.known
        return compiled.known_tags(self.info.modules)


def editions_dir() -> Path:
    return Path(os.environ.get(DIR_VARIABLE) or Path.home() / ".local" / "share" / "dvqa" / "standard")


def bundled() -> list[Edition]:
    """The editions this dvqa ships, from the pinned list (a file added beside them is not one)."""
    return [Edition(name, BUNDLED_SOURCE, BUNDLED_DIR / f"{name}.json.gz", True, BUNDLED_TRUST, digest)
            for name, digest in sorted(BUNDLED_SHA256.items())]


def reserved(name: str) -> bool:
    """A bundled edition's name cannot be used by an imported one: outputs would name either."""
    return name in BUNDLED_SHA256


def _inside(path: Path, folder: Path) -> bool:
    real, root = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([real, root]) == root and real != root


def imported_edition(folder: Path, name: str) -> Edition | None:
    """The edition installed as folder/name, if it is one: a NEMA-style name that no bundled edition has,
    and every table a regular file inside the editions folder (a link out of it is not followed)."""
    if not EDITION_NAME.fullmatch(name) or reserved(name):
        return None
    json_dir = folder / name / "json"
    for table in JSON_FILES:
        if not (json_dir / table).is_file() or not _inside(json_dir / table, folder):
            return None
    try:
        note = read_regular(folder / name / "source.txt", "an edition's source note", SOURCE_CAP)
        recorded = note.decode("utf-8", "replace").strip() or "no source recorded"
    except (DvqaError, OSError):
        recorded = "no source recorded"
    return Edition(name, f"recorded at import: {recorded}", json_dir, False, IMPORTED_TRUST)


def installed() -> list[Edition]:
    """Bundled editions first, then imported ones, each sorted by name."""
    out = bundled()
    folder = editions_dir()
    try:
        entries = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    except OSError:  # another user's home, say: the bundled edition still serves (and outputs name it)
        entries = []
    for name in entries:
        found = imported_edition(folder, name)
        if found is not None:
            out.append(found)
    return out


def default() -> Edition:
    """The newest bundled edition, unless the DVQA_STANDARD setting names another: an edition that appears
    in the editions folder never becomes the default by itself."""
    chosen = os.environ.get(DEFAULT_VARIABLE, "").strip()
    if chosen:
        return find(chosen, f"{DEFAULT_VARIABLE}={chosen}")
    return bundled()[-1]


def find(name: str | None, what: str | None = None) -> Edition:
    """An edition by name (or a folder holding dicom-validator's JSON tables); None: the default one."""
    if name is None:
        return default()
    what = what or f"--standard {name}"
    for edition in bundled():
        if edition.name == name:
            return edition
    if EDITION_NAME.fullmatch(name):
        found = imported_edition(editions_dir(), name)
        if found is not None:
            return found
    path = Path(name)
    for candidate in (path, path / "json"):
        if all((candidate / f).is_file() for f in JSON_FILES):
            return Edition(path.name, f"JSON tables at {candidate}", candidate, False, "user's tables, unverified")
    names = ", ".join(e.name for e in installed()) or "none"
    raise UsageError(f"{what}: no such edition (installed: {names}); `dvqa standard import` adds one.")


@functools.lru_cache(maxsize=4)
def load(edition: Edition) -> Tables:
    """The edition's tables, read once per process (validate's worker processes each read it once). The bytes
    read are the bytes hashed: the returned Tables' edition carries that digest, and an edition that already
    carries one (a bundled edition's pin, or a digest the parent process saw) must match it."""
    if edition.bundled:
        try:
            data = edition.path.read_bytes()
        except OSError as exc:
            raise EnvironmentProblem(f"{edition.path}: the bundled DICOM {edition.name} tables cannot be read "
                                     f"({exc.strerror or exc}); reinstall dvqa.") from None
        digest = tables_digest({edition.path.name: data})
        if digest != edition.digest:
            raise EnvironmentProblem(f"{edition.path}: the bundled DICOM {edition.name} tables were changed after "
                                     f"installation (sha256 {digest}, dvqa pins {edition.digest}); reinstall dvqa.")

        def parse_bundled() -> dict:
            try:
                parsed = json.loads(gzip.decompress(data))
            except (OSError, EOFError, ValueError) as exc:
                raise EnvironmentProblem(f"{edition.path}: the bundled DICOM {edition.name} tables cannot be read "
                                         f"({exc}); reinstall dvqa.") from None
            return {"dict_info": parsed["dict_info"], "iod_info": parsed["iod_info"],
                    "module_info": parsed["module_info"], "references": parsed.get("references", {}),
                    "unevaluated": parsed.get("unevaluated_conditions", 0)}

        return _tables(edition, parse_bundled)
    contents = {name: read_regular(edition.path / name, f"a table of DICOM edition {edition.name}", TABLE_CAP)
                for name in JSON_FILES}
    digest = tables_digest(contents)
    if edition.digest and digest != edition.digest:
        raise EnvironmentProblem(f"{edition.path}: the tables of DICOM edition {edition.name} changed while dvqa "
                                 f"used them (sha256 {digest}, was {edition.digest}); run again once nothing "
                                 "is importing it.")

    def parse_imported() -> dict:
        try:
            parts = {name: json.loads(data.decode("utf-8")) for name, data in contents.items()}
        except ValueError as exc:
            raise InputError(f"{edition.path}: a table of DICOM edition {edition.name} is not JSON ({exc}); import "
                             "the edition again with `dvqa standard import`.") from None
        return {"dict_info": parts["dict_info.json"], "iod_info": parts["iod_info.json"],
                "module_info": parts["module_info.json"], "references": {}, "unevaluated": 0}

    return _tables(dataclasses.replace(edition, digest=digest), parse_imported)


def _tables(edition: Edition, parse) -> Tables:
    """Tables from the compiled form of the edition's (already hashed) tables; see dvqa.validate.compiled."""
    form = compiled.load(edition.name, edition.digest, lambda: _value_numbers(parse()))
    info = DicomInfo(form.dict_info, form.iod_info, form.modules)
    return Tables(edition, info, form.references, form.unevaluated, known=form.known_tags)


def _value_numbers(source: dict) -> dict:
    """Conditions on one value of an attribute, counted as dicom-validator's evaluator counts them. Its parser
    (0.9) writes "Image Type (0008,0008) Value 3 is STATIC" as index 2 (from 0), its evaluator reads index 2 as
    Value 2 (from 1; 0: the first value), so every condition on a value after the first looked at the value
    before it: NM Image's Actual Frame Duration, "Required if Image Type (0008,0008) Value 3 is: WHOLE BODY or
    STATIC" (PS3.3 C.8.4.9), never held for a STATIC image. Editions built by dvqa and imported by dicom-
    validator share the parser, so the indexes are moved here, once, before the compiled form is made."""
    stack: list = [source["module_info"], source["iod_info"]]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "op" in node and "tag" in node and int(node.get("index", 0) or 0) > 0:
                node["index"] = int(node["index"]) + 1
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return source


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
