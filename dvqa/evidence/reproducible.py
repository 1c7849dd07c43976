"""What two builds of a bundle from the same inputs with the same software must share.

A bundle cannot be byte-identical twice: the audit trail records when and by which process, the
DICOM files carry their creation date and their signature's time, the SBOM gets a serial number.
So each file also gets a content digest: the SHA-256 of its content with those fields - times,
process ids, signatures and MACs, the name of the private folder the bundle was built in - taken
out, and with every hash of another bundle file replaced by that file's content digest. Two builds
agree when every file's content digest does; a file whose content cannot be separated from a time
(a PDF rendering of the page that shows the build time) is marked volatile, with the reason.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from dvqa.dicom.dicomread import has_dicm_marker

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?")
DICOM_DT = re.compile(r"\b\d{14}(?:\.\d{1,6})?[+-]\d{4}\b")
SIGNATURE_UID = re.compile(r"1\.2\.826\.0\.1\.3680043\.8\.498\.\d+")  # pydicom's root: dvqa's signature UIDs
SHA256 = re.compile(r"\b[0-9a-f]{64}\b")
ELAPSED = re.compile(r'((?:"|&#34;|&quot;)elapsed_s(?:"|&#34;|&quot;)): [0-9.]+')  # also inside HTML
# keys whose values are times, process facts, or hashes/MACs chaining records that hold times
VOLATILE_KEYS = frozenset({"elapsed_s", "time_utc", "created_utc", "timestamp", "datetime", "serialNumber", "pid",
                           "hmac", "prev", "head", "signature_uid", "built_in", "seconds"})
VOLATILE_FILES = {"index.pdf": "the PDF rendering of index.html, which shows the build time"}
TEXT_SUFFIXES = frozenset({".html", ".md", ".xml", ".sarif", ".txt", ".svg", ".crt", ".pem"})
DICOM_VOLATILE_TAGS = (0xFFFAFFFA, 0x4FFE0001)  # Digital Signatures Sequence, MAC Parameters Sequence


def content_digests(folder: Path, raw: dict[str, str], stage_name: str) -> dict[str, str]:
    """path -> content digest, given path -> SHA-256 of every file; DICOM first, so the other files'
    references to them can be replaced."""
    files = list(raw)
    digests: dict[str, str] = {}
    for path in files:
        if has_dicm_marker(folder / path):
            try:
                digests[path] = _dicom_digest(folder / path)
            except Exception:  # noqa: BLE001 - a damaged file (validation fails it): its bytes are its content
                digests[path] = raw[path]
    replace = {raw[p]: digests[p] for p in digests}
    for path in files:
        if path in digests:
            continue
        if path in VOLATILE_FILES:
            digests[path] = ""
            continue
        data = (folder / path).read_bytes()
        suffix = Path(path).suffix.lower()
        if suffix == ".jsonl":
            lines = [line for line in data.decode().splitlines() if line.strip()]
            text = "\n".join(_json_line(line, stage_name, replace) for line in lines)
        elif suffix == ".json":
            text = _json_line(data.decode(), stage_name, replace)
        elif suffix in TEXT_SUFFIXES:
            text = _text(data.decode(errors="replace"), stage_name, replace)
        else:
            digests[path] = raw[path]
            continue
        digests[path] = hashlib.sha256(text.encode()).hexdigest()
    return digests


def _dicom_digest(path: Path) -> str:
    """The data set without DA/DT/TM values and signatures, serialised again, with its pixel data."""
    ds = pydicom.dcmread(path)

    def strip(dataset: Dataset) -> None:
        for element in list(dataset):
            if element.tag in DICOM_VOLATILE_TAGS or element.VR in ("DA", "DT", "TM"):
                del dataset[element.tag]
            elif element.VR == "SQ":
                for item in element.value:
                    strip(item)

    strip(ds)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def _json_line(text: str, stage_name: str, replace: dict[str, str]) -> str:
    def clean(value):
        if isinstance(value, dict):
            signature = "mac_id" in value  # a DICOM signature: its UID and time are drawn at signing
            return {k: clean(v) for k, v in value.items()
                    if k not in VOLATILE_KEYS and not (signature and k in ("uid", "datetime"))}
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, str):
            return _text(value, stage_name, replace)
        return value

    return json.dumps(clean(json.loads(text)), sort_keys=True)


def _text(text: str, stage_name: str, replace: dict[str, str]) -> str:
    # <wbr> is where a line may break (dvqa.report.htmltext), not content: names and digests are read whole
    text = text.replace("<wbr>", "").replace(stage_name, "{bundle}")
    text = SHA256.sub(lambda m: replace.get(m.group(0), m.group(0)), text)
    text = TIMESTAMP.sub("{time}", text)
    text = DICOM_DT.sub("{time}", text)
    text = SIGNATURE_UID.sub("{signature uid}", text)
    return ELAPSED.sub(r"\1: {time}", text)
