"""docs/regulatory/examples.md is run: every sh and python block, in order, must succeed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.orthanc import free_port, wait_for_port
from dvqa.dicom import syntaxes
from dvqa.dicom.iod import VideoIOD
from helpers import PEM, RECORDED, ROOT, certificate, pem_key, write_pki

PAGE = ROOT / "docs" / "regulatory" / "examples.md"
BLOCK = re.compile(r"^```(sh|python)\n(.*?)^```$", re.S | re.M)


@pytest.mark.requirement("DVQA-DOC-001")
def test_every_example_on_the_page_runs(tmp_path: Path) -> None:
    blocks = BLOCK.findall(PAGE.read_text())
    assert len(blocks) >= 6 and {kind for kind, _ in blocks} == {"sh", "python"}
    shutil.copy(RECORDED / "vp9_raf.webm", tmp_path / "recording.webm")

    def make(ca_key, key) -> dict[str, bytes]:
        return {"signer_cert": certificate("signer", key, "dvqa test CA", ca_key).public_bytes(PEM),
                "signer_key": pem_key(key)}

    pki = write_pki(_pki_folder(tmp_path), make)
    shutil.copy(pki["signer_key"], tmp_path / "signer.key")
    shutil.copy(pki["signer_cert"], tmp_path / "signer.crt")
    shutil.copy(pki["ca"], tmp_path / "ca.crt")
    port = free_port()
    mpeg2 = syntaxes.BY_NAME["mpeg2-mp-ml"].uid
    pacs = subprocess.Popen([sys.executable, "-m", "dvqa", "pacs", "simulate", "--port", str(port), "--aet", "ANY-SCP",
                             "--accept", f"{VideoIOD.ENDOSCOPIC.sop_class}={mpeg2}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {**os.environ, "PACS_PORT": str(port), "SERVE_PORT": str(free_port()),
           "DVQA_AUDIT_KEY": "examples-page-key-of-at-least-32-bytes",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    try:
        wait_for_port(port, pacs, "dvqa pacs simulate")
        for number, (kind, code) in enumerate(blocks, 1):
            command = ["bash", "-euo", "pipefail", "-c", code] if kind == "sh" else [sys.executable, "-c", code]
            done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, f"block {number} ({kind}) failed:\n{code}\n{done.stdout}\n{done.stderr}"
    finally:
        pacs.terminate()
        pacs.wait(10)
    assert (tmp_path / "video.dcm").is_file() and list((tmp_path / "fallback").glob("*.dcm"))
    assert (tmp_path / "conformance.pdf").stat().st_size > 10_000
    # the HTTP recipe: the recording reached the PACS (as its fallback), with its report and its audit records
    assert "dvqa quality report" in (tmp_path / "recording-quality.html").read_text()
    chain = json.loads((tmp_path / "recording-audit.json").read_text())["records"]
    assert [e["record"]["command"] for e in chain][0] == "convert" and all(e["unchanged"] for e in chain)
    assert "Doe" not in json.dumps(json.loads((tmp_path / "recording-state.json").read_text()))


def _pki_folder(tmp_path: Path) -> Path:
    folder = tmp_path.parent / f"{tmp_path.name}-pki"  # keys outside the folder the page validates
    folder.mkdir(exist_ok=True)
    return folder
