"""dvqa.core.deferred: a deferred module runs on its first use and is then the module it would have been.

Each case runs in a fresh interpreter (a deferral lasts for the process) on a small package written here,
whose import-time code announces itself on stderr."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers import ROOT

PACKAGE = {
    "noisy/__init__.py": "import sys\nsys.stderr.write('RAN noisy\\n')\nVALUE = 42\nfrom . import helper\n",
    "noisy/helper.py": "def twice(x):\n    return 2 * x\n",
    "noisy/sub.py": "import sys\nsys.stderr.write('RAN noisy.sub\\n')\nfrom noisy import VALUE\nTOTAL = VALUE + 1\n",
    "broken.py": "import sys\nsys.stderr.write('RAN broken\\n')\nraise RuntimeError('broken at import')\n",
}


def _run(tmp_path: Path, code: str) -> subprocess.CompletedProcess:
    for name, text in PACKAGE.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    prelude = (f"import sys; sys.path[:0] = [{str(tmp_path)!r}, {str(ROOT)!r}]\n"
               "from dvqa.core import deferred\n")
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, timeout=60)


def test_import_runs_nothing_and_first_use_runs_the_module_once(tmp_path: Path) -> None:
    run = _run(tmp_path, "deferred.defer(['noisy'])\n"
                         "import noisy\n"
                         "sys.stderr.write('IMPORTED\\n')\n"
                         "print(noisy.VALUE, noisy.helper.twice(3), noisy.VALUE)\n"
                         "import types; print(type(noisy) is types.ModuleType, noisy.__name__, noisy.__package__)\n")
    assert run.returncode == 0, run.stderr
    assert run.stderr.splitlines() == ["IMPORTED", "RAN noisy"]  # after the import, and only once
    assert run.stdout.split() == ["42", "6", "42", "True", "noisy", "noisy"]


def test_a_submodule_or_a_from_import_runs_the_package_first(tmp_path: Path) -> None:
    run = _run(tmp_path, "deferred.defer(['noisy'])\nimport noisy.sub\nprint(noisy.sub.TOTAL)\n")
    assert run.returncode == 0, run.stderr
    assert run.stderr.splitlines() == ["RAN noisy", "RAN noisy.sub"] and run.stdout.split() == ["43"]
    run = _run(tmp_path, "deferred.defer(['noisy'])\nfrom noisy import VALUE\nprint(VALUE)\n")
    assert run.returncode == 0 and run.stdout.split() == ["42"], run.stderr


def test_a_module_already_imported_is_left_alone(tmp_path: Path) -> None:
    run = _run(tmp_path, "import noisy\ndeferred.defer(['noisy'])\nimport importlib; importlib.reload(noisy)\n"
                         "print(type(noisy).__name__)\n")
    assert run.returncode == 0 and run.stdout.split() == ["module"], run.stderr
    assert run.stderr.splitlines() == ["RAN noisy", "RAN noisy"]  # imported, then reloaded: never deferred


def test_a_module_that_fails_fails_on_first_use_and_is_tried_again(tmp_path: Path) -> None:
    run = _run(tmp_path, "deferred.defer(['broken'])\nimport broken\n"
                         "for _ in range(2):\n"
                         "    try:\n        broken.anything\n"
                         "    except RuntimeError as exc:\n        print('FAILED', exc)\n"
                         "    import broken\n")
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["FAILED broken at import"] * 2
    assert run.stderr.splitlines() == ["RAN broken"] * 2
