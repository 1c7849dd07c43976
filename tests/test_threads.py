"""A frame-threaded decoder dropped after an error: PyAV hangs, dvqa parks it first (dvqa/video/threads.py).

The loaded runs of the suite hung now and then after a conversion was refused half-way: PyAV frees a
codec context holding the interpreter lock, freeing waits for FFmpeg's frame threads, and a thread
logging the damage waits for the lock in PyAV's log callback. A damaged H.264 recording makes it
happen at once, on an idle machine too.
"""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
from pathlib import Path

import av
import numpy as np
import pytest

from helpers import dvqa

LOOP = """
import gc, sys
import av, av.logging
from dvqa.video.threads import frame_threaded, parking

class Refused(Exception):
    pass

def refuse_at_first_error(path, park):
    av.logging.set_level(av.logging.ERROR)
    with av.logging.Capture(False) as logs, av.open(path) as container:
        stream = container.streams.video[0]
        if park:
            frame_threaded(stream.codec_context)
        else:
            stream.thread_type = "AUTO"
        for packet in container.demux(stream):
            try:
                list(packet.decode())
            except av.error.FFmpegError:
                raise Refused()
            if logs:
                raise Refused()

park = sys.argv[2] == "park"
for _ in range(int(sys.argv[3])):
    try:
        if park:
            with parking():
                refuse_at_first_error(sys.argv[1], True)
        else:
            refuse_at_first_error(sys.argv[1], False)
    except Refused:
        pass
    gc.collect()
print("finished")
"""


@pytest.fixture(scope="module")
def damaged(tmp_path_factory) -> Path:
    """A 720p H.264 MP4 (one GOP, so every frame depends on damaged ones) with 400 bytes flipped."""
    folder = tmp_path_factory.mktemp("threads")
    clean = folder / "clean.mp4"
    with av.open(str(clean), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        stream.options = {"preset": "ultrafast", "g": "300"}
        y, x = np.mgrid[0:720, 0:1280]
        for n in range(150):
            picture = ((x + 7 * n) ^ (y + 3 * n)).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(np.dstack([picture, np.roll(picture, n, 1), 255 - picture]),
                                               format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    data = bytearray(clean.read_bytes())
    rng = random.Random(1)
    for _ in range(400):
        data[rng.randrange(len(data) // 10, len(data) - 1000)] ^= 0xFF
    path = folder / "damaged.mp4"
    path.write_bytes(bytes(data))
    return path


def _loop(path: Path, mode: str, times: int, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(LOOP), str(path), mode, str(times)],
                          capture_output=True, text=True, timeout=timeout)


def test_pyav_alone_hangs_when_a_frame_threaded_decoder_is_dropped_after_an_error(damaged):
    """The defect as PyAV 18 has it: if this stops hanging, PyAV fixed it (and threads.py may go)."""
    with pytest.raises(subprocess.TimeoutExpired):
        _loop(damaged, "plain", 30, timeout=10)


def test_a_parked_decoder_is_freed_without_hanging(damaged):
    done = _loop(damaged, "park", 30, timeout=240)  # the timeout only detects the hang
    assert done.returncode == 0 and done.stdout.strip() == "finished", done.stderr


def test_convert_refuses_the_damaged_recording_and_exits(damaged, tmp_path):
    # passthrough with quality (the written stream's meter), and a re-encode (the source's decoder)
    for options in ([], ["--no-passthrough", "--no-quality"]):
        out = tmp_path / "out.dcm"
        done = dvqa("convert", str(damaged), "-o", str(out), *options)
        assert done.returncode == 3, done.stderr
        assert "does not decode cleanly" in done.stderr and "Traceback" not in done.stderr
        assert not out.exists()


def test_a_frame_threaded_decoder_outside_a_parking_block_is_refused():
    from dvqa.video.threads import frame_threaded
    with pytest.raises(RuntimeError, match="parking"):
        frame_threaded(av.CodecContext.create("h264", "r"))
