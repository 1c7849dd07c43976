"""FFmpeg's log while a conversion unwinds after an error.

PyAV hands FFmpeg's log messages to Python through a callback that takes the interpreter lock. When
a conversion fails half-way (a full disk, an interruption), its decoders and encoders are closed
while the exception unwinds; closing one joins its worker threads, which may log as they stop - and
wait for the lock the unwinding thread holds while it waits for them. dvqa hung that way under load
(an evidence build on a full disk; an interrupted batch). `quiet_on_error` is placed last in the
`with` statement that opens the media, so on an error it runs first: FFmpeg's log goes nowhere
before anything is closed. The next conversion sets its own level again.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import av.logging


@contextlib.contextmanager
def quiet_on_error() -> Iterator[None]:
    try:
        yield
    except BaseException:
        av.logging.set_level(None)
        raise
