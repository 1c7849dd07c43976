"""Per-modality profiles, read from `rules/*.yaml`: the data, not code, decides the floors.

A profile names its quality floors (and, for `validate`, its rules). Every entry
carries an id, a severity, a message and the source that justifies it; a value
that no standard or study gives must say so in its source, never pass for one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import yaml

from dvqa.core.errors import UsageError
from dvqa.core.findings import Finding, Severity
from dvqa.core.rates import parse_rate
from dvqa.core.resources import data_dir

METRICS = ("psnr_y", "psnr_cb", "psnr_cr", "psnr", "ssim_y")
STATISTICS = ("mean", "min", "p1", "p5")


@dataclass(frozen=True)
class QualityFloor:
    id: str
    metric: str  # one of METRICS
    statistic: str  # one of STATISTICS
    minimum: float
    severity: Severity
    message: str
    source: str


RULE_CHECKS = ("attribute_in", "range", "required")


@dataclass(frozen=True)
class Rule:
    """One per-modality rule: `attribute_in` (values), `range` (min/max) or `required` (non-empty)."""

    id: str
    check: str
    attributes: tuple[str, ...]  # DICOM keywords, or "frame_rate" (from Frame Time / Cine Rate)
    severity: Severity
    message: str
    source: str
    values: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    path: Path
    quality_floors: tuple[QualityFloor, ...]
    rules: tuple[Rule, ...] = ()
    output_rate: Fraction | None = None  # the rate `convert` writes at (`output_rate:`), None: measured
    output_rate_source: str = ""  # why that rate (required with it, like every value's source)

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "description": self.description, "path": str(self.path),
                "quality_floors": [{**f.__dict__, "severity": f.severity.value} for f in self.quality_floors],
                "rules": [{**r.__dict__, "severity": r.severity.value} for r in self.rules],
                "output_rate": str(self.output_rate) if self.output_rate else None,
                "output_rate_source": self.output_rate_source or None}


def available() -> list[str]:
    return sorted(p.stem for p in data_dir("rules").glob("*.yaml"))


def load_all() -> list[Profile]:
    return [load(name) for name in available()]


def load(name_or_path: str) -> Profile:
    """A profile by name (`rules/NAME.yaml`) or by path to a YAML file."""
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        path = data_dir("rules") / f"{name_or_path}.yaml"
        if not path.is_file():
            raise UsageError(f"--profile {name_or_path}: no such profile; choose one of "
                             f"{', '.join(available())} or give a path to a YAML file.")
    try:
        data = yaml.safe_load(path.read_text())
        floors = tuple(_floor(entry, path) for entry in data.get("quality_floors", []))
        rules = tuple(_rule(entry) for entry in data.get("rules", []))
        rate, rate_source = _output_rate(data.get("output_rate"))
        return Profile(str(data["profile"]), str(data.get("description", "")), path, floors, rules, rate,
                       rate_source)
    except (yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UsageError(f"{path}: not a valid dvqa profile ({exc}); see rules/README.md.") from None


def _floor(entry: dict, path: Path) -> QualityFloor:
    metric, statistic = entry["metric"], entry["statistic"]
    if metric not in METRICS or statistic not in STATISTICS:
        raise ValueError(f"floor {entry.get('id')}: metric must be one of {METRICS}, "
                         f"statistic one of {STATISTICS}")
    if not str(entry.get("source", "")).strip():
        raise ValueError(f"floor {entry.get('id')}: every floor needs a source")
    return QualityFloor(id=str(entry["id"]), metric=metric, statistic=statistic,
                        minimum=float(entry["min"]), severity=Severity(entry.get("severity", "error")),
                        message=str(entry["message"]), source=str(entry["source"]))


def _output_rate(entry: dict | None) -> tuple[Fraction | None, str]:
    """`output_rate: {fps: 30, source: why}`: the rate every conversion with this profile writes."""
    if entry is None:
        return None, ""
    if not str(entry.get("source", "")).strip():
        raise ValueError("output_rate needs a source")
    try:
        return parse_rate(entry["fps"]), str(entry["source"])
    except ValueError as exc:
        raise ValueError(f"output_rate: {exc}") from None


def _rule(entry: dict) -> Rule:
    if entry["check"] not in RULE_CHECKS:
        raise ValueError(f"rule {entry.get('id')}: check must be one of {RULE_CHECKS}")
    if not str(entry.get("source", "")).strip():
        raise ValueError(f"rule {entry.get('id')}: every rule needs a source")
    attributes = entry["attributes"] if isinstance(entry["attributes"], list) else [entry["attributes"]]
    return Rule(id=str(entry["id"]), check=entry["check"], attributes=tuple(map(str, attributes)),
                severity=Severity(entry.get("severity", "error")), message=str(entry["message"]),
                source=str(entry["source"]), values=tuple(map(str, entry.get("values", []))),
                minimum=entry.get("min"), maximum=entry.get("max"))


def check_quality(profile: Profile, quality, file: str) -> list[Finding]:
    """One finding per floor not met, naming the worst frames of that metric."""
    findings = []
    for floor in profile.quality_floors:
        value = quality.statistic(floor.metric, floor.statistic)
        if value >= floor.minimum:
            continue
        worst = ", ".join(f"{k} ({_fmt(quality.values(floor.metric)[k])})"
                          for k in quality.worst(floor.metric))
        findings.append(Finding(
            severity=floor.severity, code=floor.id,
            message=(f"{floor.message}: {floor.statistic} {floor.metric} {_fmt(value)} < "
                     f"{_fmt(floor.minimum)} ({profile.name} profile); worst output frames: {worst}"),
            file=file, where=f"frames {', '.join(str(k) for k in quality.worst(floor.metric))}",
            reference=floor.source,
        ))
    return findings


def _fmt(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:.4f}" if value < 2 else f"{value:.2f}"
