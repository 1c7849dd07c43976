"""The command line as a terminal user and a pipeline see it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from helpers import CLIPS, dvqa


def _stderr_on_a_terminal(args: list[str]) -> tuple[int, str]:
    """Run dvqa with stderr on a pseudo-terminal, as in an interactive shell."""
    master, slave = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "dvqa", *args], stdout=subprocess.PIPE,
                            stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    proc.stdout.read()
    return proc.wait(60), b"".join(chunks).decode(errors="replace")


def test_progress_bar_on_a_terminal_only(tmp_path: Path) -> None:
    args = ["convert", str(CLIPS / "vp9_vfr.webm"), "-o", str(tmp_path / "a.dcm")]
    rc, terminal = _stderr_on_a_terminal(args)
    assert rc == 0
    assert "converting" in terminal and "100%" in terminal
    piped = dvqa("convert", str(CLIPS / "vp9_vfr.webm"), "-o", str(tmp_path / "b.dcm"))
    assert piped.returncode == 0 and "converting" not in piped.stderr and piped.stderr == ""
