"""The one record every check returns, and the one function that turns findings into an exit code."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum
from typing import Iterable

from dvqa.core.errors import ExitCode


class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True)
class Finding:
    severity: Severity
    code: str  # stable check id, e.g. "stream.rows-mismatch"
    message: str
    file: str = ""
    where: str = ""  # tag path, frame number, record number ...
    reference: str = ""  # e.g. "PS3.5 §8.2.7"

    def to_dict(self) -> dict[str, str]:
        d = asdict(self)
        d["severity"] = self.severity.value
        return d


def exit_code(findings: Iterable[Finding], fail_on: Severity = Severity.ERROR) -> ExitCode:
    """Exit 1 if any finding is at least as severe as `fail_on`, else 0."""
    failing = {Severity.ERROR} if fail_on is Severity.ERROR else {Severity.ERROR, Severity.WARNING}
    return ExitCode.CHECK_FAILED if any(f.severity in failing for f in findings) else ExitCode.OK
