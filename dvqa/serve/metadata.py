"""A video instance's DICOMweb metadata made by the gateway from the instance's own header.

Why: a viewer opening a study waits for its metadata before anything else, and a PACS may take far
longer to answer metadata than to begin sending the instance - Debian 12's Orthanc 1.10 reads and
parses the whole file for it (8 s for a 95 MB instance here, against 0.1 s to the first byte of the
file). The gateway reads the instance's first bytes anyway, to learn its transfer syntax and to render
it; the data set up to Pixel Data is all the metadata of a video instance (PS3.18 §10.4.1.2.1: the
metadata resource is every attribute but bulk data, which is referenced by a BulkDataURI).

The JSON follows PS3.18 Annex F: an attribute without a value has no "Value" (F.2.5); binary values
are inline (InlineBinary, F.2.7) whatever their size - the header of a video instance is small (its
parser stops at a few MiB), and an inline value needs no bulk data route nested paths would have to
name; Pixel Data is the gateway's to reference (the rendered video).
"""

from __future__ import annotations

from pydicom.dataset import Dataset


def dicom_json(ds: Dataset) -> dict:
    """The data set (File Meta Information and Pixel Data excluded) as a DICOM JSON object."""
    found = ds.to_json_dict()
    found.pop("7FE00010", None)
    _drop_empty(found)
    return found


def _drop_empty(value: object) -> None:
    """PS3.18 F.2.5: an empty attribute carries no Value (pydicom writes an empty list for a sequence)."""
    if isinstance(value, dict):
        if value.get("Value") == []:
            del value["Value"]
        for item in value.values():
            _drop_empty(item)
    elif isinstance(value, list):
        for item in value:
            _drop_empty(item)
