"""dvqa audit records as DICOM audit messages (PS3.15 A.5, the IHE ATNA format), for a hospital's
audit repository.

One AuditMessage per record, following the A.5.1 schema (tests validate every message with jing).
Events (A.5.3, codes from PS3.16's DCM scheme): a conversion creates a DICOM instance -
"DICOM Instances Accessed" (110103) with action C; a signature updates one - the same event with
action U. The study and the patient are participant objects (A.5.2: Study Instance UID 110180;
patient number, RFC 3881 code 2).
"""

from __future__ import annotations

import base64
from xml.etree import ElementTree as ET

INSTANCES_ACCESSED = ("110103", "DCM", "DICOM Instances Accessed")
INSTANCES_TRANSFERRED = ("110104", "DCM", "DICOM Instances Transferred")
SOURCE_ROLE = ("110153", "DCM", "Source Role ID")
DESTINATION_ROLE = ("110152", "DCM", "Destination Role ID")
STUDY_UID = ("110180", "DCM", "Study Instance UID")
PATIENT_NUMBER = ("2", "RFC-3881", "Patient Number")
ACTIONS = {"convert": "C", "sign": "U", "pacs-store": "R"}  # the sender reads what it sends (A.5.3.4)


def _coded(parent: ET.Element, tag: str, code: tuple[str, str, str]) -> ET.Element:
    return ET.SubElement(parent, tag, {"csd-code": code[0], "codeSystemName": code[1], "originalText": code[2]})


def _participant(root: ET.Element, object_id: str, type_code: str, role: str, id_type: tuple[str, str, str],
                 name: str) -> ET.Element:
    """A ParticipantObjectIdentification; the schema requires an ID type code and a name (or query)."""
    element = ET.SubElement(root, "ParticipantObjectIdentification", {
        "ParticipantObjectID": object_id, "ParticipantObjectTypeCode": type_code,
        "ParticipantObjectTypeCodeRole": role})
    _coded(element, "ParticipantObjectIDTypeCode", id_type)
    ET.SubElement(element, "ParticipantObjectName").text = name
    return element


def outcome_indicator(exit_code: int) -> str:
    """0 success; 4 a check failed (minor: the tool worked, the file did not pass); 8 anything else."""
    return {0: "0", 1: "4"}.get(int(exit_code), "8")


def message(record: dict) -> ET.Element:
    root = ET.Element("AuditMessage")
    event = ET.SubElement(root, "EventIdentification", {
        "EventActionCode": ACTIONS.get(record.get("command", ""), "E"),
        "EventDateTime": record["time_utc"],
        "EventOutcomeIndicator": outcome_indicator(record.get("exit_code", 8)),
    })
    sending = record.get("command") == "pacs-store"
    _coded(event, "EventID", INSTANCES_TRANSFERRED if sending else INSTANCES_ACCESSED)
    if record.get("message"):
        ET.SubElement(event, "EventOutcomeDescription").text = record["message"]
    user = ET.SubElement(root, "ActiveParticipant", {
        "UserID": record.get("user", "unknown"), "UserIsRequestor": "true",
        "NetworkAccessPointID": record.get("host", "unknown"), "NetworkAccessPointTypeCode": "1"})
    if sending:
        _coded(user, "RoleIDCode", SOURCE_ROLE)
        destination = ET.SubElement(root, "ActiveParticipant", {
            "UserID": record.get("destination", "unknown"), "UserIsRequestor": "false"})
        _coded(destination, "RoleIDCode", DESTINATION_ROLE)
    ET.SubElement(root, "ActiveParticipant", {
        "UserID": f"dvqa {record.get('versions', {}).get('dvqa', '')} pid {record.get('pid', '')}".strip(),
        "UserIsRequestor": "false"})
    source = ET.SubElement(root, "AuditSourceIdentification", {"AuditSourceID": record.get("host", "unknown")})
    ET.SubElement(source, "AuditSourceTypeCode", {"csd-code": "4"})  # application server process
    uids = record.get("uids") or {}
    if uids.get("study_instance"):
        study = _participant(root, uids["study_instance"], "2", "3", STUDY_UID, record["output"]["path"])
        for kind, value in (("input SHA-256", (record.get("input") or {}).get("sha256")),
                            ("output SHA-256", record["output"].get("sha256"))):
            if value:
                ET.SubElement(study, "ParticipantObjectDetail",
                              {"type": kind.replace(" ", "-"), "value": base64.b64encode(value.encode()).decode()})
        description = ET.SubElement(study, "ParticipantObjectDescription")
        accession = (record.get("patient") or {}).get("AccessionNumber")
        if accession:
            ET.SubElement(description, "Accession", {"Number": accession})
        sop_class = {"UID": uids["sop_class"]} if uids.get("sop_class") else {}
        sop = ET.SubElement(description, "SOPClass", {**sop_class, "NumberOfInstances": "1"})
        ET.SubElement(sop, "Instance", {"UID": uids["sop_instance"]})
    patient = record.get("patient") or {}
    if patient.get("PatientID"):
        _participant(root, patient["PatientID"], "1", "1", PATIENT_NUMBER,
                     patient.get("PatientName") or patient["PatientID"])
    return root


def to_xml(record: dict) -> bytes:
    return ET.tostring(message(record), encoding="utf-8", xml_declaration=True)
