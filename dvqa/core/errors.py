"""Exit codes and the exceptions that carry them (DESIGN.md: one function maps to exit codes).

Every error dvqa raises for a user to read is a `DvqaError`: one sentence that
names the file and says what to do, plus the exit code the CLI returns.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    CHECK_FAILED = 1  # quality, validation, signature ... did not pass
    USAGE = 2  # bad command line or options
    BAD_INPUT = 3  # unreadable or unsupported input
    ENVIRONMENT = 4  # missing tool, PACS unreachable, output not writable


class DvqaError(Exception):
    """An error with a one-sentence message meant for the user."""

    exit_code: ExitCode = ExitCode.BAD_INPUT

    def __init__(self, message: str, exit_code: ExitCode | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class InputError(DvqaError):
    exit_code = ExitCode.BAD_INPUT


class UsageError(DvqaError):
    exit_code = ExitCode.USAGE


class EnvironmentProblem(DvqaError):
    exit_code = ExitCode.ENVIRONMENT
