"""docs/regulatory/deployment.md is run: the baseline check, and the air-gapped installation with
the offline half inside a network namespace that has no network at all."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import RECORDED, ROOT, require, tool

PAGE = ROOT / "docs" / "regulatory" / "deployment.md"
BLOCK = re.compile(r"^```sh\n(.*?)^```$", re.S | re.M)


@pytest.mark.requirement("DVQA-DOC-001")
def test_every_deployment_step_on_the_page_runs(tmp_path: Path) -> None:
    blocks = BLOCK.findall(PAGE.read_text())
    assert len(blocks) == 4, ("the test knows four blocks: baseline, vulnerability-scan input, connected machine, "
                              "air-gapped machine")
    baseline, scan_input, connected, offline = blocks
    require(shutil.which("unshare") is not None and
            subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0,
            "unshare -n (a network namespace) needs root: the air-gapped steps run without any network")
    shutil.copy(RECORDED / "vp8_opus.webm", tmp_path / "recording.webm")
    # a clean pip: no site configuration, no extra find-links or constraints from this machine
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    source = tmp_path / "dvqa-source"  # the release as checked out: tracked files only, no build/ leftovers
    for name in subprocess.run([tool("git"), "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True,
                               text=True).stdout.split("\0"):
        if name and (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    env.update({"PIP_CONFIG_FILE": os.devnull, "DVQA_SOURCE": str(source), "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"})

    def run(code: str, *prefix: str) -> subprocess.CompletedProcess:
        done = subprocess.run([*prefix, "bash", "-euo", "pipefail", "-c", code], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"failed:\n{code}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done

    checked = run(baseline)
    assert "this installation is the one validated" in checked.stderr
    run(scan_input)  # what a site feeds pip-audit: every Python package of the SBOM, pinned
    pinned = (tmp_path / "audit-requirements.txt").read_text().split()
    assert "av==18.1.0" in pinned and "pydicom==3.0.2" in pinned and all("==" in line for line in pinned), pinned
    run(connected)
    wheels = sorted(p.name for p in (tmp_path / "wheelhouse").glob("*.whl"))
    assert any(w.startswith("dvqa-") for w in wheels) and any(w.startswith("av-18.1.0-") for w in wheels)
    installed = run(offline, "unshare", "-n")  # no route anywhere: pip must find everything in the wheelhouse
    assert "dvqa, version" in installed.stdout and (tmp_path / "check.dcm").stat().st_size > 10_000
    assert "0 errors" in installed.stdout, installed.stdout
    assert (tmp_path / "dvqa-venv" / "share" / "dvqa" / "rules" / "endoscopy.yaml").is_file()
