"""What every dvqa command shares: one-sentence errors, exit codes, passphrases, audit logs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from dvqa.core import outputs
from dvqa.core.cluster import keep_from_workers
from dvqa.core.errors import DvqaError, ExitCode, UsageError
from dvqa.trust.audit import AuditLog, check_key


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
    key = guarded(debug, lambda: audit_key(key_env)) if key_env else None
    if path.is_dir() or not path.parent.is_dir():
        fail(UsageError(f"--audit {path}: give a file in an existing folder."), debug)
    log = AuditLog(path, key)
    for message in guarded(debug, log.check):
        warn(message)
    return log


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


