"""Frame-threaded FFmpeg decoders, parked before they can be freed.

With frame threads a decoder goes on working on the packets it was given after `decode()` has
returned. PyAV frees a codec context while it holds the interpreter lock (`CodecContext.__dealloc__`
calls `avcodec_free_context`), and freeing waits for those threads. A thread that logs an error in
the meantime - a damaged or cut stream makes them log - enters PyAV's log callback, which waits for
the same lock: the process hung, forever, after a conversion was refused half-way (seen under load in
an evidence build on a full disk, a batch and a follow whose source was rewritten; reproduced at once
by dropping a frame-threaded decoder of a damaged H.264 stream after its first error, see
tests/test_threads.py). `flush_buffers()` waits for the threads with the lock released, so a parked
decoder is freed without waiting on anything. Slice threads need none of this: they work only inside
`decode()`. A block that ends normally has drained its decoders (the demuxer's last empty packet, or
`decode(None)`), so only a block that fails parks them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_local = threading.local()


def frame_threaded(context: Any) -> Any:
    """`context` (a decoder) on FFmpeg's frame threads, parked if the innermost `parking` block of
    this thread fails. Outside such a block it is a dvqa bug: nothing would park it."""
    scopes: list[list[Any]] = getattr(_local, "scopes", [])
    if not scopes:
        raise RuntimeError("a frame-threaded decoder outside dvqa.video.threads.parking(); report this as a dvqa bug")
    context.thread_type = "AUTO"
    scopes[-1].append(context)
    return context


@contextmanager
def parking() -> Iterator[None]:
    """Every decoder made `frame_threaded` in this block, by this thread, is parked if the block
    ends with an exception (a refusal, an interruption, a closed generator)."""
    contexts: list[Any] = []
    if not hasattr(_local, "scopes"):
        _local.scopes = []
    _local.scopes.append(contexts)
    try:
        yield
    except BaseException:
        for context in contexts:
            context.flush_buffers()
        raise
    finally:
        _local.scopes.pop()
