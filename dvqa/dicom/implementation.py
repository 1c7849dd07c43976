"""Who wrote a file or asked for an association: the Implementation Class UID and Version Name.

Both go into every file's meta information (PS3.10 §7.1, (0002,0012) and (0002,0013)) and every
A-ASSOCIATE-RQ (PS3.7 D.3.3.2). They name the implementation, so a PACS team can tell which product
and version wrote a file. pydicom and pynetdicom put their own there by default, which would name the
toolkit rather than dvqa. dvqa's own default is a UUID-derived UID (PS3.5 B.2) fixed for the project.
A device maker that ships dvqa in its product sets its own for the whole site with
DVQA_IMPLEMENTATION_CLASS_UID (under its registered root) and DVQA_IMPLEMENTATION_VERSION_NAME.
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass

from dvqa import __version__
from dvqa.core.errors import UsageError

UID_VARIABLE = "DVQA_IMPLEMENTATION_CLASS_UID"
VERSION_VARIABLE = "DVQA_IMPLEMENTATION_VERSION_NAME"
# fixed forever: a new dvqa version changes the version name, not the class UID (PS3.7 D.3.3.2)
DEFAULT_UID = f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, 'urn:dvqa:implementation-class').int}"
DEFAULT_VERSION = f"DVQA_{__version__}"[:16]
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")


@dataclass(frozen=True)
class Implementation:
    class_uid: str
    version_name: str


def current() -> Implementation:
    """The site's implementation identity, checked (an invalid value is exit 2 naming the variable)."""
    uid = os.environ.get(UID_VARIABLE, "").strip() or DEFAULT_UID
    version = os.environ.get(VERSION_VARIABLE, "").strip() or DEFAULT_VERSION
    if len(uid) > 64 or not _UID.fullmatch(uid):
        raise UsageError(f"{UID_VARIABLE}={uid}: not a UID (digits and dots, at most 64 characters, no leading "
                         "zeros; PS3.5 §9.1); give one under your organisation's root.")
    if len(version) > 16 or not re.fullmatch(r"[\x20-\x5b\x5d-\x7e]+", version):
        raise UsageError(f"{VERSION_VARIABLE}={version}: an Implementation Version Name is at most 16 printable "
                         "characters without a backslash (SH, PS3.5 Table 6.2-1).")
    return Implementation(uid, version)
