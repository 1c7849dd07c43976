"""The README's recipes run as written, in order, and each command ends as the text beside it says.

The README is the front door: a recipe that no longer works is the first thing a new user meets. The
shell blocks under "## Recipes" are run in one bash session in a scratch folder, a command at a time,
and each command's exit code is compared with what the README says of it. Only what a shared test
machine needs is changed in the text: free ports instead of Orthanc's and the gateway's fixed ones,
and a wait for Orthanc's port instead of a fixed `sleep 2`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.orthanc import DICOMWEB_PLUGIN, free_port
from helpers import ROOT, require

SECTION = re.compile(r"^## Recipes\n(.*?)^## ", re.S | re.M)
BLOCK = re.compile(r"^```sh\n(.*?)^```$", re.S | re.M)
# what the README says these commands end with; every other command must exit 0
EXPECTED = {
    "dvqa validate video.dcm --profile endoscopy --fail-on warning": 1,  # the profile warns, and says so
    "dvqa report licenses --expect baseline.json --fail-on gpl": 1,  # the pinned av wheel links x264/x265
}
# with the JUnit file of a run that verified nothing, the bundle's traceability step fails, and with it the
# build and the verification of the bundle (the README says both)
WITHOUT_JUNIT = {"dvqa evidence build": 1, "dvqa evidence verify": 1}


def commands(text: str) -> list[str]:
    """The recipe's commands, a logical line each (continuations joined; heredocs kept whole)."""
    out, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip():
            continue
        while line.endswith("\\"):
            line = line[:-1] + " " + lines[i].strip()
            i += 1
        heredoc = re.search(r"<<'(\w+)'", line)
        if heredoc:
            body = []
            while lines[i] != heredoc.group(1):
                body.append(lines[i])
                i += 1
            i += 1
            line = "\n".join([line, *body, heredoc.group(1)])
        out.append(line)
    return out


@pytest.mark.requirement("DVQA-DOC-001")
def test_every_readme_recipe_runs_as_the_readme_says(tmp_path: Path) -> None:
    for name in ("openssl", "Orthanc", "curl", "dcmdump"):
        require(shutil.which(name) is not None, f"{name} is needed by the README's recipes")
    require(Path(DICOMWEB_PLUGIN).exists(), "orthanc-dicomweb is needed by the README's recipes")
    section = SECTION.search((ROOT / "README.md").read_text())
    assert section, "the README has a Recipes section"
    script = [c for block in BLOCK.findall(section.group(1)) for c in commands(block)]
    assert len(script) >= 20, script
    ports = {"4242": str(free_port()), "8042": str(free_port()), "11113": str(free_port()), "8080": str(free_port())}
    # the JUnit file of a test run with no test in it: the recipe's mechanics are checked here, not a claim
    # that any requirement was verified (the bundle's traceability step must fail on it, and does)
    junit = tmp_path / "no-tests.xml"
    junit.write_text('<?xml version="1.0"?><testsuites/>')
    results = tmp_path / "results"
    lines = ["set -u", "trap 'kill $(jobs -p) 2>/dev/null' EXIT", f"cd {ROOT}"]
    for n, command in enumerate(script):
        for fixed, free in ports.items():
            command = re.sub(rf"(?<![\d.]){fixed}(?!\d)", free, command)
        command = command.replace(" & sleep 2", f" & until curl -sf -o /dev/null http://127.0.0.1:{ports['8042']}/system; "
                                                "do sleep 0.2; done")
        if command.startswith("dvqa serve"):
            command += (" " if command.endswith("&") else "; ") + (
                f"until curl -sf -o /dev/null http://127.0.0.1:{ports['8080']}/healthz; do sleep 0.2; done")
        if command.startswith("curl ") and "/rendered" in command:  # the UIDs the README says how to find
            command = ("STUDY=$(dcmdump +P 0020,000d video.dcm | sed 's/.*\\[\\(.*\\)\\].*/\\1/'); "
                       "SERIES=$(dcmdump +P 0020,000e video.dcm | sed 's/.*\\[\\(.*\\)\\].*/\\1/'); "
                       "SOP=$(dcmdump +P 0008,0018 video.dcm | sed 's/.*\\[\\(.*\\)\\].*/\\1/'); " + command)
        command = command.replace('"$REPO/test-results.xml"', str(junit))
        lines.append(command)
        lines.append(f'echo "{n} $?" >> {results}')
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "TMPDIR": str(tmp_path)}  # the recipe's mktemp -d folder, inside the test's
    env.pop("DVQA_AUDIT_KEY", None)
    done = subprocess.run(["bash", "-c", "\n".join(lines)], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=1500)
    codes = dict(line.split(" ", 1) for line in results.read_text().splitlines())
    for n, command in enumerate(script):
        wanted = next((code for start, code in EXPECTED.items() if command.startswith(start)), 0)
        wanted = next((code for start, code in WITHOUT_JUNIT.items() if command.startswith(start)), wanted)
        if command.startswith("cd ") or command.startswith("export "):
            continue
        got = int(codes.get(str(n), "-1"))
        assert got == wanted, f"{command[:160]!r} exited {got}, the README says {wanted}\n{done.stderr[-3000:]}"
    rendered = next(tmp_path.rglob("video.mp4"), None)
    assert rendered is not None and rendered.stat().st_size > 10_000  # the gateway's MP4 of video.dcm
