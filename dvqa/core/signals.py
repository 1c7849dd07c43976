"""SIGTERM and SIGHUP are handled like Ctrl-C, and the moment a result is committed cannot be cut.

A service manager stops dvqa with SIGTERM and a closed terminal sends SIGHUP; by default either
kills the process at once, leaving temporary patient video beside the output and no audit record.
`install` turns both into an `Interrupted` exception (a KeyboardInterrupt, so every cleanup that
handles Ctrl-C handles them too). `deferred` holds all three signals back while the output is
renamed into place and its audit record is appended, so what is on disk and what the record and the
message say can never disagree; the signal is acted on right after.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from pathlib import Path
from typing import Iterator

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """A signal asked dvqa to stop. `exit_code` is 128 + the signal number, as shells report it."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.result: object | None = None  # set when the work was already committed
        self.held = False  # raised after a `deferred` block completed: the block's work is done

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


def exit_code_of(exc: KeyboardInterrupt) -> int:
    return exc.exit_code if isinstance(exc, Interrupted) else 128 + signal.SIGINT


def _raise(signum: int, frame) -> None:
    raise Interrupted(signum)


_early: dict[str, object] = {"holding": False, "signum": None}  # install_early's state: held, and what came


def install_early() -> None:
    """Until a command is ready to say what a signal did (while Python imports FFmpeg, NumPy, pydicom, and
    Click reads the arguments), a signal is held: recorded, never raised inside an import, and acted on by
    `install` or `take_pending` - so even a Ctrl-C in the first moments ends dvqa with its message and, for
    a conversion, its audit record. (Exiting at once, as dvqa did, left no message and no record.)

    Only in the `dvqa` program itself (python -m dvqa, or the console script): a process that merely
    imports the CLI (a test runner) keeps its own handling of Ctrl-C and SIGTERM."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if (spec is not None and spec.name == "dvqa.__main__") or Path(sys.argv[0] if sys.argv else "").name == "dvqa":
        hold()


def hold() -> None:
    """Hold SIGINT, SIGTERM and SIGHUP (record the first) until `install` or `take_pending`."""
    if threading.current_thread() is not threading.main_thread():
        return

    def held(signum: int, frame) -> None:
        if _early["signum"] is None:
            _early["signum"] = signum

    _early["holding"] = True
    for signum in HANDLED:
        signal.signal(signum, held)


def install() -> None:
    """SIGINT, SIGTERM and SIGHUP raise Interrupted in the main thread (call once, at start-up); a signal
    held since install_early is raised now."""
    if threading.current_thread() is not threading.main_thread():
        return
    _early["holding"] = False
    for signum in HANDLED:
        signal.signal(signum, _raise)
    held, _early["signum"] = _early["signum"], None
    if held is not None:
        raise Interrupted(int(held))  # type: ignore[arg-type]


def take_pending() -> None:
    """Where a command that records its attempts (convert) starts the attempt: if signals are still held
    since start-up, install the handlers now, raising a signal that came meanwhile - inside the attempt,
    where it is recorded. Does nothing in library use (no install_early) or once installed."""
    if _early["holding"]:
        install()


class _Caught:
    signum: int | None = None


@contextlib.contextmanager
def deferred() -> Iterator[_Caught]:
    """Run the block without being interrupted; afterwards raise Interrupted if a signal came meanwhile.

    The caller may catch that Interrupted and attach what it committed (`exc.result`).
    """
    caught = _Caught()
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return

    def hold(signum: int, frame) -> None:
        if caught.signum is None:
            caught.signum = signum

    previous = {signum: signal.signal(signum, hold) for signum in HANDLED}
    try:
        yield caught
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if caught.signum is not None:
        interrupted = Interrupted(caught.signum)
        interrupted.held = True
        raise interrupted
