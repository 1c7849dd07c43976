"""`dvqa evidence build --deidentify` (issue 28 item 8): a bundle that holds no patient name, ID,
accession number, original UID or input file name anywhere - DICOM, JSON, HTML, XML, PDF text -
while its collected file's signature was verified on the original, and the manifest says which
profile was applied. Without it, the build says the bundle holds patient data."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pydicom
import pytest

from helpers import CLIPS, PEM, certificate, dvqa, pem_key, require, run, tool, write_pki

PHI = {"--patient-name": "Doe^Jane", "--patient-id": "MRN-4711", "--accession-number": "ACC-31337"}
# '^', '_' and '-' are not in the base64 alphabet of the pictures embedded in HTML: a find is a real leak
MARKERS = ("Doe^Jane", "Doe_Jane", "MRN-4711", "ACC-31337")


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    def make(ca_key, key) -> dict[str, bytes]:
        return {"cert": certificate("signer", key, "dvqa test CA", ca_key).public_bytes(PEM), "key": pem_key(key)}
    return write_pki(tmp_path_factory.mktemp("pki"), make)


@pytest.fixture(scope="module")
def inputs(pki, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("inputs")
    named = folder / "Doe_Jane_MRN-4711.dcm"
    args = [a for pair in PHI.items() for a in pair]
    done = dvqa("convert", str(CLIPS / "h264_cfr_high.mkv"), "-o", str(named), "--no-quality", *args,
                "--sign", str(pki["key"]), "--cert", str(pki["cert"]))
    assert done.returncode == 0, done.stderr
    shutil.copy(CLIPS / "vp9_vfr.webm", folder / "Doe_Jane_clip.webm")
    return folder


def _texts(bundle: Path) -> dict[str, bytes]:
    out = {}
    for path in sorted(p for p in bundle.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if path.suffix == ".pdf":
            data += run(tool("pdftotext"), str(path), "-").stdout.encode()
        out[path.relative_to(bundle).as_posix()] = data
    return out


@pytest.mark.requirement("DVQA-EVI-001")
def test_a_deidentified_bundle_names_no_patient_and_no_input(inputs: Path, pki, tmp_path: Path) -> None:
    require(shutil.which("pdftotext") is not None, "pdftotext (poppler-utils) reads the PDFs' text")
    original = pydicom.dcmread(inputs / "Doe_Jane_MRN-4711.dcm")
    bundle = tmp_path / "bundle"
    built = dvqa("evidence", "build", str(bundle), "--inputs", str(inputs), "--deidentify",
                 "--key", str(pki["key"]), "--cert", str(pki["cert"]), "--trust", str(pki["ca"]))
    assert built.returncode == 1, built.stderr  # only the traceability step fails: no --junit here
    assert [line.split(":")[0] for line in built.stdout.splitlines() if line.startswith("failed ")] == [
        "failed   traceability"], built.stdout
    assert "patient data" not in built.stderr  # nothing to warn about
    leaks = {name: [m for m in (*MARKERS, original.StudyInstanceUID, original.SeriesInstanceUID,
                                original.SOPInstanceUID) if m.encode() in data]
             for name, data in _texts(bundle).items()}
    assert {name: found for name, found in leaks.items() if found} == {}
    assert sorted(p.name for p in (bundle / "dicom").iterdir()) == ["dicom-001.dcm", "recording-001.dcm"]
    copy = pydicom.dcmread(bundle / "dicom" / "dicom-001.dcm")
    assert copy.PatientIdentityRemoved == "YES" and copy.PatientName == "" and copy.PixelData == original.PixelData
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["deidentification"]["profile"].startswith("PS3.15 Annex E Basic Application Level")
    assert "never written" in manifest["deidentification"]["uids"]
    signatures = json.loads((bundle / "validation" / "signatures.json").read_text())
    before = next(r for r in signatures["files"] if r["file"] == "dicom/dicom-001.dcm")
    assert [v["ok"] for v in before["signatures_of_the_original_before_deidentification"]] == [True]
    checked = dvqa("evidence", "verify", str(bundle), "--trust", str(pki["ca"]))
    # every hash and the signature hold: the one problem is the build's own verdict (no --junit given)
    assert checked.returncode == 1 and "1 problem" in checked.stdout and "1 problems" not in checked.stdout, checked.stdout + checked.stderr
    assert "the build failed 1 of 9 steps (traceability)" in checked.stdout


def test_a_bundle_of_patient_files_says_so_without_deidentify(inputs: Path, tmp_path: Path) -> None:
    built = dvqa("evidence", "build", str(tmp_path / "bundle"), "--inputs", str(inputs / "Doe_Jane_MRN-4711.dcm"))
    assert "holds the 1 collected DICOM file(s) as they are, patient data included" in built.stderr, built.stderr
    assert "--deidentify" in built.stderr
    assert json.loads((tmp_path / "bundle" / "manifest.json").read_text())["deidentification"] is None


@pytest.mark.requirement("DVQA-EVI-001", "DVQA-OUT-002")
def test_a_file_that_cannot_be_collected_is_named_neutrally_in_one_sentence(inputs: Path, tmp_path: Path) -> None:
    """Found by a new user: a damaged DICOM file's failed step showed a Python exception as its finding
    ("TypeError: can only concatenate str ..."), and with --deidentify the finding named the input."""
    require(shutil.which("pdftotext") is not None, "pdftotext (poppler-utils) reads the PDFs' text")
    damaged = tmp_path / "inputs"
    damaged.mkdir()
    whole = (inputs / "Doe_Jane_MRN-4711.dcm").read_bytes()
    (damaged / "Doe_Jane_MRN-4711.dcm").write_bytes(whole[:3000])  # cut short inside its data set
    (damaged / "Doe_Jane_notes.txt").write_text("not evidence")
    bundle = tmp_path / "bundle"
    built = dvqa("evidence", "build", str(bundle), "--inputs", str(damaged), "--deidentify")
    assert built.returncode == 1, built.stderr
    steps = {s["name"]: s for s in json.loads((bundle / "index.json").read_text())["steps"]}
    failed = steps["collect dicom-001"]
    assert failed["status"] == "failed" and failed["summary"].startswith("dicom-001 (its name withheld): ")
    assert "damaged or truncated" in failed["summary"], failed
    assert not re.search(r"[A-Z]\w*(Error|Exception)\b", failed["summary"]), failed  # no Python exception
    assert steps["inputs not used"]["summary"] == "1 input(s), names withheld: neither DICOM nor a recording (.txt)"
    leaks = {name: [m for m in (*MARKERS, "Doe_Jane_notes") if m.encode() in data]
             for name, data in _texts(bundle).items()}
    assert {name: found for name, found in leaks.items() if found} == {}
