"""The Implementation Class UID and Version Name in files and on the wire are dvqa's (or the device
maker's, set for a site), never pydicom's or pynetdicom's (dvqa/dicom/implementation.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pydicom
import pynetdicom
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification

from bench.orthanc import free_port
from dvqa.dicom import implementation
from helpers import CLIPS, ROOT

SITE = {"DVQA_IMPLEMENTATION_CLASS_UID": "1.2.826.0.1.3680043.10.1234.7",
        "DVQA_IMPLEMENTATION_VERSION_NAME": "ENDOCAM_4.2"}


def _dvqa(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvqa", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})}, timeout=300)


def test_files_name_dvqa_by_default_and_the_site_when_it_says_so(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "default.dcm", tmp_path / "site.dcm"
    assert _dvqa("convert", str(CLIPS / "h264_cfr_high.mkv"), "-o", str(ours), "--no-quality").returncode == 0
    meta = pydicom.dcmread(ours).file_meta
    assert meta.ImplementationClassUID == implementation.DEFAULT_UID != PYDICOM_IMPLEMENTATION_UID
    assert meta.ImplementationVersionName.startswith("DVQA_")
    done = _dvqa("convert", str(CLIPS / "h264_cfr_high.mkv"), "-o", str(theirs), "--no-quality", env=SITE)
    assert done.returncode == 0, done.stderr
    meta = pydicom.dcmread(theirs).file_meta
    assert (meta.ImplementationClassUID, meta.ImplementationVersionName) == tuple(SITE.values())


def test_an_invalid_site_value_is_refused_naming_the_variable(tmp_path: Path) -> None:
    for variable, value in (("DVQA_IMPLEMENTATION_CLASS_UID", "1.2.03.4"),
                            ("DVQA_IMPLEMENTATION_VERSION_NAME", "A_NAME_LONGER_THAN_16")):
        done = _dvqa("convert", str(CLIPS / "h264_cfr_high.mkv"), "-o", str(tmp_path / "x.dcm"), "--no-quality",
                     env={variable: value})
        assert done.returncode == 2 and variable in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert not (tmp_path / "x.dcm").exists()


def test_associations_carry_the_same_identity() -> None:
    heard: list[tuple[str, str]] = []

    def on_request(event) -> None:
        heard.append((event.assoc.requestor.implementation_class_uid,
                      event.assoc.requestor.implementation_version_name))

    scp = AE(ae_title="LISTENER")
    scp.add_supported_context(Verification)
    port = free_port()
    server = scp.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_REQUESTED, on_request)])
    try:
        for env in ({}, SITE):
            done = _dvqa("pacs", "echo", "--port", str(port), "--called-aet", "LISTENER", env=env)
            assert done.returncode == 0, done.stderr
    finally:
        server.shutdown()
    assert heard == [(implementation.DEFAULT_UID, implementation.DEFAULT_VERSION), tuple(SITE.values())]
    assert pynetdicom.PYNETDICOM_IMPLEMENTATION_UID not in {uid for uid, _ in heard}


def test_the_conformance_statement_names_what_is_written() -> None:
    done = _dvqa("report", "conformance", "--format", "json", env=SITE)
    assert done.returncode == 0, done.stderr
    assert SITE["DVQA_IMPLEMENTATION_CLASS_UID"] in done.stdout and SITE["DVQA_IMPLEMENTATION_VERSION_NAME"] in done.stdout
    assert json.loads(done.stdout)
