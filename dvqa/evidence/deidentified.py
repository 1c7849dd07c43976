"""`dvqa evidence build --deidentify`: a bundle that may leave the hospital.

A bundle goes to a regulator, an auditor or a vendor's support team, none of whom may receive
patient data. With --deidentify:

- every collected DICOM file is written into the bundle through PS3.15 Annex E's Basic Application
  Level Confidentiality Profile (dvqa.dicom.deidentify), with UIDs replaced consistently across the
  bundle under a key that exists only during the build - the mapping is never written;
- the signatures of a collected file cannot survive that (the profile removes them, and the bytes
  they covered change), so they are verified on the original first and the verdicts kept beside the
  de-identified copy, named by its bundle path;
- file names, step names and the index never carry an input's name (a recording is often named after
  its patient): inputs become recording-NNN and dicom-NNN, and converted recordings are read through a
  link of that name, so their reports and audit records name it too;
- the manifest records the profile, the table it came from, the choices dvqa made and what is not
  covered (the pictures themselves).

Conversions made by the build carry no patient attributes (the build gives none), so they are kept
as converted and signed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import pydicom

from dvqa.core import outputs
from dvqa.dicom import deidentify


@dataclass
class Deidentification:
    uids: deidentify.UidMap = field(default_factory=deidentify.UidMap)
    signatures_before: dict[str, list[dict]] = field(default_factory=dict)  # bundle path -> verdicts
    notes: list[str] = field(default_factory=list)

    def record(self) -> dict:
        """What the manifest says of the de-identification (never the UID mapping)."""
        return {
            "profile": deidentify.PROFILE,
            "table": {"file": deidentify.TABLE.name,
                      "sha256": hashlib.sha256(deidentify.TABLE.read_bytes()).hexdigest()},
            "options": [],
            "choices": {**deidentify.CHOICE, "private elements": "removed"},
            "uids": "replaced by an HMAC-SHA256 of the original under a key made for this build and never "
                    "written: consistent inside the bundle, not reversible from it",
            "not_covered": "the pictures: identifying text or faces in the video are not removed",
            "notes": sorted(set(self.notes)),
        }


def collect(source: Path, target: Path, stage: Path, d: Deidentification, policy) -> str:
    """Write the de-identified copy of `source` at `target`; its original's signature verdicts are kept."""
    from dvqa.trust.verification import verify_file

    name = target.relative_to(stage).as_posix()
    d.signatures_before[name] = [v.to_dict() for v in verify_file(source, policy=policy)]
    ds = pydicom.dcmread(source, defer_size="1 MB")  # the pixels stream from the source as it is written
    d.notes.extend(deidentify.deidentify(ds, d.uids))
    with outputs.atomic_file(target) as handle:
        ds.save_as(handle, enforce_file_format=True)
    signed = len(d.signatures_before[name])
    return ("de-identified copy (PS3.15 Basic Profile)"
            + (f"; its {signed} signature(s) verified on the original first" if signed else ""))
