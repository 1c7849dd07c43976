"""The benches in bench/ still run: they are not part of the suite's timing, so they rotted unnoticed once
(bench_validate.py imported a module that had moved; issue 31). Every bench script must at least import, and
one with a `--smoke` mode (tiny input, seconds) must run it to the end: a smoke mode checks the shape of its
own output (and exits non-zero when it is wrong), so a bench that prints the wrong thing fails here too."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import ROOT

BENCH = ROOT / "bench"
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if '__name__ == "__main__"' in p.read_text())
# Scripts without a --smoke mode yet: each needs a tiny input of its own plumbed through (a 1080p clip, a
# PACS, a Chromium); this list may only shrink (the test below fails when a new script lacks one).
NO_SMOKE_YET = {"bench_batch.py", "bench_cluster.py", "bench_convert.py", "bench_evidence.py", "bench_live.py",
                "bench_pacs.py", "bench_quality.py", "bench_serve_gateway.py", "format_table.py",
                "make_pacs_matrix.py", "timing_table.py", "wheel_libraries.py"}


def _has_smoke(path) -> bool:
    return '"--smoke"' in path.read_text()


def test_every_bench_script_has_a_smoke_mode_or_is_listed() -> None:
    assert len(SCRIPTS) >= 10  # the folder was found
    lacking = {p.name for p in SCRIPTS if not _has_smoke(p)}
    assert lacking <= NO_SMOKE_YET, f"give these a --smoke mode: {sorted(lacking - NO_SMOKE_YET)}"
    assert not NO_SMOKE_YET - lacking, f"these have one now, take them off NO_SMOKE_YET: {NO_SMOKE_YET - lacking}"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bench_script_imports(script) -> None:
    """Its module-level code (imports of dvqa modules among it) runs; its main() is not called."""
    code = (f"import runpy, sys; sys.path.insert(0, {str(script.parent)!r}); "  # as `python bench/X.py` does
            f"runpy.run_path({str(script)!r}, run_name='imported_by_test')")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]


@pytest.mark.parametrize("script", [p for p in SCRIPTS if _has_smoke(p)], ids=lambda p: p.name)
def test_bench_smoke_mode_runs(script) -> None:
    run = subprocess.run([sys.executable, str(script), "--smoke"], capture_output=True, text=True, timeout=600,
                         cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip(), "a smoke run prints its (meaningless) numbers like a real one"
