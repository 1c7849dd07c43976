"""What every dvqa command shares: one-sentence errors, exit codes, passphrases, audit logs."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from dvqa.core import outputs
from dvqa.core.cluster import keep_from_workers
from dvqa.core.errors import DvqaError, ExitCode, UsageError

if TYPE_CHECKING:  # imported where used: the audit trail's cryptography is not every command's start-up
    from dvqa.trust.audit import AuditLog


def fail(exc: DvqaError, debug: bool) -> None:
    if debug:
        raise exc
    click.echo(f"dvqa: error: {exc}", err=True)
    sys.exit(int(exc.exit_code))


def warn(message: str) -> None:
    click.echo(f"dvqa: warning: {message}", err=True)


def audit_log(path: Path | None, key_env: str | None, debug: bool) -> AuditLog | None:
    """Opened before any work, so a bad --audit fails without converting or sending anything."""
    if path is None:
        return None
    from dvqa.trust.audit import AuditLog

    key = guarded(debug, lambda: audit_key(key_env)) if key_env else None
    if path.is_dir() or not path.parent.is_dir():
        fail(UsageError(f"--audit {path}: give a file in an existing folder."), debug)
    log = AuditLog(path, key)
    for message in guarded(debug, log.check):
        warn(message)
    return log


def refuse_same_files(written: Sequence[tuple[str, Path | None]],
                      read: Sequence[tuple[str, Path | None]] = ()) -> None:
    """Refuse, before any work, two files a command writes (or one it writes and one it reads) that are
    one file: a report named like the audit log would replace the whole chain, an output named like the
    input would destroy the recording. Files that are only read may be one file (a PEM holding both key
    and certificate). Options not given (None) and stdin (- as an input) are left out."""
    given = [(option, path) for option, path in written if path is not None]
    outputs.refuse_same_files(given)
    for option, path in read:
        if path is not None and str(path) != "-":
            outputs.refuse_same_files([*given, (option, path)])


def same_file(path: Path | None, others: Sequence[Path | None]) -> bool:
    """Whether `path` is one of `others` (by inode, or real folder and name): e.g. an audit log that a
    refused command must then leave alone rather than append its failure to."""
    if path is None:
        return False
    return any(other is not None and outputs.identity(other) == outputs.identity(path) for other in others)


def passphrase(variable: str | None, option: str = "--passphrase-env") -> str | None:
    """A secret from the environment variable `option` names (never from the command line)."""
    if variable is None:
        return None
    if variable not in os.environ:
        raise UsageError(f"{option} {variable}: that variable is not set.")
    keep_from_workers(variable)  # a secret: never in a local Dask worker's environment
    return os.environ[variable]


def audit_key(variable: str | None) -> bytes | None:
    """The audit HMAC key from --audit-key-env's variable: set, and at least MIN_KEY_BYTES long. An empty
    variable once switched the HMAC off without a word; now it is refused."""
    from dvqa.trust.audit import check_key

    value = passphrase(variable, "--audit-key-env")
    return None if value is None else check_key(value.encode(), f"--audit-key-env {variable}")


def guarded(debug: bool, work):
    """Run `work()`; a DvqaError becomes its one-sentence message and exit code, anything else exit 4."""
    try:
        return work()
    except DvqaError as exc:
        fail(exc, debug)
    except Exception as exc:  # a dvqa bug or an unforeseen environment failure
        problem = outputs.environment_error(exc) if isinstance(exc, OSError) else None
        if problem is not None and not debug:
            fail(problem, debug)
        if debug:
            raise
        click.echo(f"dvqa: internal error: {type(exc).__name__}: {exc} - rerun with --debug and report it.",
                   err=True)
        sys.exit(int(ExitCode.ENVIRONMENT))


