"""What each PACS the user named says it accepts, read from `rules/pacs/*.yaml`.

Most of these systems cannot run here, so their rows in the compatibility matrix come from
documents, not measurements. Each file names its sources (title, where, date, what it says);
anything no source states is "unknown" - a guess would be worse than a gap, because a QA
pipeline would trust it. `dvqa pacs simulate --profile` serves exactly what a file documents.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from dvqa.core.errors import UsageError
from dvqa.core.resources import data_dir

EVIDENCE = ("conformance statement", "documentation", "default configuration", "none found")
ANSWERS = ("yes", "no", "unknown")
UNKNOWN = "unknown"
ANY = "any"


@dataclass(frozen=True)
class Source:
    title: str
    where: str
    dated: str  # as the document gives it, or why it is unknown
    read: str  # when dvqa's authors read it
    says: str  # what of it this profile rests on, in our words


@dataclass(frozen=True)
class PacsProfile:
    id: str
    name: str
    evidence: str  # one of EVIDENCE
    protocols: dict[str, str]  # dimse / stow-rs -> yes | no | unknown
    sop_classes: tuple[str, ...] | str  # UIDs, ANY, or UNKNOWN
    transfer_syntaxes: tuple[str, ...] | str  # UIDs or UNKNOWN
    sources: tuple[Source, ...]
    notes: str
    path: Path

    @property
    def documented(self) -> bool:
        """Whether the sources say which transfer syntaxes are accepted (else nothing can be simulated)."""
        return self.transfer_syntaxes != UNKNOWN and self.sop_classes != UNKNOWN

    def accepts(self, sop_class: str, syntax: str) -> bool | None:
        """True/False as documented; None when the sources do not say."""
        if not self.documented:
            return None
        return (self.sop_classes == ANY or sop_class in self.sop_classes) and syntax in self.transfer_syntaxes

    def accept_map(self, sop_classes: list[str]) -> dict[str, list[str]]:
        """SOP class -> accepted syntaxes, for a simulated SCP; `sop_classes` fills in ANY."""
        if not self.documented:
            raise UsageError(f"PACS profile {self.id!r}: its sources do not say which transfer syntaxes it accepts "
                             f"(\"unknown\" in {self.path}); there is nothing to simulate.")
        classes = sop_classes if self.sop_classes == ANY else list(self.sop_classes)
        return {sop: list(self.transfer_syntaxes) for sop in classes}

    def to_dict(self) -> dict[str, object]:
        return {"id": self.id, "name": self.name, "evidence": self.evidence, "protocols": self.protocols,
                "sop_classes": self.sop_classes if isinstance(self.sop_classes, str) else list(self.sop_classes),
                "transfer_syntaxes": self.transfer_syntaxes if isinstance(self.transfer_syntaxes, str)
                else list(self.transfer_syntaxes),
                "sources": [s.__dict__ for s in self.sources], "notes": self.notes, "path": str(self.path)}


def folder() -> Path:
    return data_dir("rules") / "pacs"


def available() -> list[str]:
    return sorted(p.stem for p in folder().glob("*.yaml"))


def load_all() -> list[PacsProfile]:
    return [load(name) for name in available()]


def load(name_or_path: str) -> PacsProfile:
    """A profile by id (`rules/pacs/ID.yaml`) or by path to such a file."""
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        path = folder() / f"{name_or_path}.yaml"
        if not path.is_file():
            raise UsageError(f"no PACS profile {name_or_path!r}; choose one of {', '.join(available())} "
                             "or give a path to a YAML file.")
    try:
        data = yaml.safe_load(path.read_text())
        return _parse(data, path)
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"{path}: not a valid PACS profile ({type(exc).__name__}: {exc}); "
                         "see rules/pacs/README.md for the format.") from None


def _parse(data: dict, path: Path) -> PacsProfile:
    evidence = data["evidence"]
    if evidence not in EVIDENCE:
        raise ValueError(f"evidence must be one of {', '.join(EVIDENCE)}")
    protocols = {str(k): str(v) for k, v in data["protocols"].items()}
    if any(v not in ANSWERS for v in protocols.values()):
        raise ValueError(f"protocol answers must be one of {', '.join(ANSWERS)}")
    storage = data["storage"]
    if storage == UNKNOWN:
        sop_classes: tuple[str, ...] | str = UNKNOWN
        syntaxes: tuple[str, ...] | str = UNKNOWN
    else:
        raw = storage["sop_classes"]
        sop_classes = ANY if raw == ANY else tuple(str(u) for u in raw)
        syntaxes = tuple(str(u) for u in storage["transfer_syntaxes"])
    sources = tuple(Source(**{k: str(v) for k, v in s.items()}) for s in data["sources"])
    if syntaxes != UNKNOWN and not sources:
        raise ValueError("documented transfer syntaxes need at least one source")
    return PacsProfile(str(data["id"]), str(data["name"]), evidence, protocols, sop_classes, syntaxes, sources,
                       str(data.get("notes", "")), path)
