"""`dvqa report conformance`: a DICOM Conformance Statement (PS3.2's layout) generated from the code
that does the work - the syntax table, the IOD writer's table of what it writes, the presentation
contexts the PACS module proposes, its defaults and status handling, the signature profiles - so
that it cannot describe a dvqa other than the installed one. Tests compare it with what dvqa really
writes and proposes on the wire.

The document is a plain structure (sections of paragraphs and tables); Markdown, HTML and PDF
render the same structure.
"""

from __future__ import annotations

import datetime as dt
from typing import Sequence

import pynetdicom
from pydicom.datadict import tag_for_keyword
from pydicom.uid import UID
from pynetdicom.sop_class import StorageCommitmentPushModel, StudyRootQueryRetrieveInformationModelGet

from dvqa import __version__
from dvqa.dicom import syntaxes
from dvqa.dicom import implementation
from dvqa.dicom.iod import WRITTEN, VideoIOD
from dvqa.pacs import network
from dvqa.trust import signature
from dvqa.validate import standard

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"  # the DICOM Application Context Name (PS3.7 Annex A.2.1)


def _name(uid: str) -> str:
    name = UID(uid).name
    return name if name and name != uid else uid


def _table(caption: str, columns: list[str], rows: list[list[object]]) -> dict:
    return {"caption": caption, "columns": columns, "rows": [[str(c) for c in row] for row in rows]}


def _section(number: str, title: str, paragraphs: list[str] = (), tables: list[dict] = ()) -> dict:
    return {"number": number, "title": title, "paragraphs": list(paragraphs), "tables": list(tables)}


def written_syntax_uids() -> list[str]:
    """Every transfer syntax UID dvqa writes: each syntax, and its fragmentable variant for > 4 GiB."""
    uids = []
    for name in syntaxes.writable_names():
        s = syntaxes.BY_NAME[name]
        uids += [s.uid] + ([s.fragmentable_uid] if s.fragmentable_uid else [])
    return uids


def store_contexts() -> list[network.Context]:
    """The C-STORE contexts dvqa may propose: one per video SOP class and written syntax."""
    return network.store_contexts((iod.sop_class, uid) for iod in VideoIOD for uid in written_syntax_uids())


def _contexts_table(caption: str, contexts: list[network.Context], role: str = "SCU") -> dict:
    return _table(caption, ["Abstract syntax", "UID", "Transfer syntaxes", "Role", "Extended negotiation"],
                  [[_name(a), a, "; ".join(f"{_name(t)} ({t})" for t in ts), role, "None"] for a, ts in contexts])


def iod_contents(iod: VideoIOD, tables: standard.Tables) -> dict:
    types = standard.attribute_types(tables, iod.sop_class)
    rows = []
    for w in WRITTEN:
        tag = _tag(w.keyword)
        kind, module = types.get(tag, ("-", "(not in this IOD's modules)"))
        rows.append([module, w.keyword, tag, kind, w.presence, w.source, w.origin])
    return _table(f"{iod.title} ({iod.sop_class}): attributes dvqa writes (DICOM {tables.edition.name})",
                  ["Module", "Attribute", "Tag", "Type", "Presence", "Source", "Value"], rows)


def _tag(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def statement(services: Sequence[dict] = ()) -> dict:
    """The whole Conformance Statement as a document structure.

    `services`: sections on the HTTP services of `dvqa serve` (dvqa.serve.conformance.sections: title, summary,
    paragraphs, tables), which the commands that write the statement pass in - this layer may not import
    that one. They become sections 3.5 onward, and the overview names them."""
    tables = standard.load(standard.default())
    aet, ae = network.DEFAULT_AET, pynetdicom.AE()
    storage_rows = [[iod.title, iod.sop_class, "Yes", "Yes (C-GET sub-operations only)"] for iod in VideoIOD]
    overview = _table("Network services", ["SOP Class", "UID", "User of service (SCU)", "Provider (SCP)"], [
        ["Verification", "1.2.840.10008.1.1", "Yes", "No"], *storage_rows,
        [_name(StorageCommitmentPushModel), StorageCommitmentPushModel, "Yes", "No"],
        [_name(StudyRootQueryRetrieveInformationModelGet), StudyRootQueryRetrieveInformationModelGet,
         "Yes (dvqa pacs matrix only)", "No"]])
    syntax_table = _table("Transfer syntaxes of the files dvqa writes", ["Name", "UID", "Fragmentable variant (> 4 GiB)"],
                          [[syntaxes.BY_NAME[n].title, syntaxes.BY_NAME[n].uid, syntaxes.BY_NAME[n].fragmentable_uid or "-"]
                           for n in syntaxes.writable_names()])
    status_rows = [[f"0x{code:04X}", meaning, "stored: reported as stored (warnings named)"]
                   for code, meaning in network.STORED_STATUSES.items()]
    status_rows += [["0xA700-0xA7FF", "Refused: out of resources", "rejected, not retried; exit 1"],
                    ["any other", "Failure", "rejected with the status named, not retried; exit 1"]]
    failure_rows = [
        ["Connection refused, host unreachable", f"retried --retries times (default {network.DEFAULT_RETRIES}), "
         "1 s, 2 s, 4 s ... apart; then the file is failed, exit 4"],
        ["No answer or no progress for --timeout seconds", "association aborted; retried as above"],
        ["Association rejected (A-ASSOCIATE-RJ)", "not retried (it is the PACS's answer); exit 1"],
        ["Presentation context refused", "that file is rejected, the others are sent; exit 1"],
        ["Association aborted during a transfer", "retried as above; no partial success is reported as stored"]]
    config = _table("Configuration", ["Parameter", "Default", "Option"], [
        ["Calling AE title (dvqa)", aet, "--aet"], ["Called AE title (the PACS)", network.DEFAULT_CALLED_AET,
                                                      "--called-aet"],
        ["PACS host / port", f"{network.DEFAULT_HOST} / none (required)", "--host / --port"],
        ["ACSE, DIMSE, network and connection timeouts", f"{network.DEFAULT_TIMEOUT:g} s", "--timeout"],
        ["Maximum PDU length received", f"{ae.maximum_pdu_size} bytes (pynetdicom's default)", "-"],
        ["Retries after a network failure", f"{network.DEFAULT_RETRIES} (1 s, 2 s, 4 s ... apart)", "--retries"],
        ["Storage commitment: listening address / port", f"{network.DEFAULT_LISTEN_HOST} / none (required)",
         "--listen-host / --listen-port"],
        ["Storage commitment: wait for the report", f"{network.DEFAULT_COMMIT_WAIT:g} s", "--commit-wait"],
        ["Maximum associations accepted (commitment listener)", str(ae.maximum_associations), "-"]])
    identity = implementation.current()
    identification = _table(
        "Implementation identification (DVQA_IMPLEMENTATION_CLASS_UID / DVQA_IMPLEMENTATION_VERSION_NAME set a "
        "device maker's own)", ["Where", "Implementation Class UID", "Version Name"], [
            ["Associations (A-ASSOCIATE-RQ and -AC)", identity.class_uid, identity.version_name],
            ["Files (File Meta Information)", identity.class_uid, identity.version_name]])
    profiles = _table("Digital signatures (`dvqa sign`, `dvqa convert --sign`; PS3.15 Annex C)",
                      ["Profile", "Written by", "Confirmed by dvqa verify"],
                      [[p, f"--signature-profile {p}", "yes" if p in signature.VERIFIED_PROFILES else "no"]
                       for p in signature.PROFILES if p != "none"])
    served = [f"Besides, {'; and '.join(s['summary'] for s in services)} (sections 3.5 onward)."] if services else []
    sections = [
        _section("1", "Overview", [
            f"dvqa {__version__} converts browser recordings to DICOM video, validates, signs and sends them to a "
            "PACS. On the network it is a Storage SCU (it sends each file in the transfer syntax it was written "
            "in, never converting), a Verification SCU, a Storage Commitment SCU, and - only in `dvqa pacs matrix`, "
            "to read files back - a Query/Retrieve GET SCU that accepts the C-STORE sub-operations on its own "
            "association. It writes PS3.10 files but no media (no DICOMDIR).", *served], [overview, syntax_table]),
        _section("2", "Introduction", [
            f"Generated by `dvqa report conformance` from the installed dvqa {__version__} on "
            f"{dt.date.today().isoformat()}: every table below is read from the code that does the work. The IOD "
            f"tables' Types are from DICOM {tables.edition.name} ({tables.edition.trust}; tables sha256 "
            f"{tables.edition.digest}; {tables.edition.source}). References: PS3.2 "
            "(conformance), PS3.4 (service classes), PS3.5 (encoding), PS3.7/PS3.8 (messages, network), PS3.15 "
            "(security), PS3.18 (web services)."]),
        _section("3", "Networking"),
        _section("3.1", "Implementation model", [
            "One application entity, the dvqa process. `dvqa pacs echo` verifies a PACS; `dvqa pacs store` "
            "opens one association per attempt, proposes the contexts of the files given, sends them in order and "
            "releases; with --commit it then sends one N-ACTION and listens for the PACS's N-EVENT-REPORT; "
            "`dvqa pacs matrix ...,get` retrieves a sent instance with C-GET. Associations are opened one at a "
            "time; no asynchronous operations (maximum 1 outstanding)."]),
        _section("3.2", "AE specification: association policies", [
            f"Application context name {APPLICATION_CONTEXT}. dvqa initiates at most one association at a time. "
            "It accepts associations only while `dvqa pacs store --commit` waits for the commitment report, on "
            "--listen-host/--listen-port, for the Storage Commitment Push Model's N-EVENT-REPORT; C-GET "
            "sub-operations arrive on the association dvqa opened (SCP/SCU role selection, PS3.7 D.3.3.4), so "
            "no other association is ever accepted."], [identification]),
        _section("3.2.1", "Activity: verify (dvqa pacs echo)", [],
                 [_contexts_table("Proposed presentation contexts", network.echo_contexts())]),
        _section("3.2.2", "Activity: send (dvqa pacs store)", [
            "One presentation context per SOP class and transfer syntax among the files sent, each proposing "
            "only the file's own syntax; the table lists every combination dvqa can write. A refused context "
            "refuses its files only."], [
            _contexts_table("Proposed presentation contexts (C-STORE)", store_contexts()),
            _table("C-STORE status handling", ["Status", "Meaning", "dvqa's behaviour"], status_rows),
            _table("Communication failures", ["Failure", "dvqa's behaviour"], failure_rows)]),
        _section("3.2.3", "Activity: storage commitment (dvqa pacs store --commit)", [
            "After the files are stored, one N-ACTION (Request Storage Commitment) for all of them; dvqa then "
            "accepts the PACS's association on --listen-port and waits --commit-wait seconds for N-EVENT-REPORT. "
            "Each file is reported committed, failed (with the PACS's reason) or without an answer (exit 1)."], [
            _contexts_table("Proposed presentation contexts (N-ACTION)", network.commitment_contexts()),
            _contexts_table("Accepted presentation contexts (N-EVENT-REPORT listener)", network.commitment_contexts(),
                            "SCU/SCP")]),
        _section("3.2.4", "Activity: read back (dvqa pacs matrix with ,get)", [
            "C-GET at IMAGE level of one instance dvqa sent, accepting its C-STORE sub-operation in the "
            "instance's own syntax, or Explicit/Implicit VR Little Endian if the PACS transcoded it."],
            [_contexts_table("Proposed presentation contexts (example: a Video Endoscopic instance in H.264 4.1)",
                             network.get_contexts(VideoIOD.ENDOSCOPIC.sop_class, syntaxes.BY_NAME["h264-high-4.1"].uid))]),
        _section("3.3", "DICOMweb", [
            "STOW-RS client (`dvqa pacs store --stow URL`, PS3.18 §10.5): POST to {URL}/studies, one part per "
            "file, media type application/dicom, the file's own transfer syntax. WADO-RS client (`dvqa pacs "
            "matrix`, wado=URL): retrieve instance with application/dicom; transfer-syntax=* (PS3.18 §8.7.3), "
            "so the server returns what it stored. No QIDO-RS client in these commands"
            + ("; `dvqa serve` is a DICOMweb server and client, below." if services else "; no DICOMweb server.")]),
        _section("3.4", "Network interfaces and configuration", [
            "TCP/IP; the PACS host may be an IPv4 or IPv6 address or a name. DICOM over TLS on request "
            "(--tls, --tls-ca, --tls-cert, --tls-key; PS3.15 B.1): the PACS's certificate and host name are "
            "always verified; --require-tls (or DVQA_REQUIRE_TLS=1) forbids sending patient data in clear text."],
            [config]),
        *(_section(f"3.{5 + n}", s["title"], s["paragraphs"], s["tables"]) for n, s in enumerate(services)),
        _section("4", "Media interchange", ["None: dvqa writes PS3.10 files, not media (no DICOMDIR)."]),
        _section("5", "Character sets", [
            "Files are written with Specific Character Set ISO_IR 192 (UTF-8), unless copied patient/study "
            "metadata brings its own; every value is checked against its VR before anything is written."]),
        _section("6", "Security", [
            "Digital signatures: RSA PKCS#1 v1.5 (the PS3.15 RSA profiles; ECDSA with profile none), MAC "
            f"{', '.join(signature.SIGNING_ALGORITHMS)}. Audit trail: every conversion, signing and send appended "
            "to a hash-chained JSON Lines log (optional HMAC), exportable as DICOM audit messages (PS3.15 A.5).",
            "DICOM edition: the bundled tables are pinned by SHA-256 and checked whenever they are loaded; an "
            "imported edition is used only when named and every validation output calls it unverified, with the "
            "SHA-256 of the tables used; `dvqa standard fetch` downloads over https only, into the editions "
            "folder only, within size limits.",
            "What `dvqa verify` guarantees: a signature passes (OK) only when its MAC and signature match, its "
            "certificate was valid at the signing time, and the signer's certificate chains to a --trust anchor "
            "(path built by the cryptography library's X.509 verification: CA basicConstraints and keyUsage, "
            "no CA or pinned certificate as signer, RSA >= 2048 and EC >= 256 bits). Without --trust the signer "
            "is not authenticated (anyone can make a certificate with any name): the verdict is UNAUTHENTICATED, "
            "with the certificate's SHA-256 fingerprint, and fails unless --accept-unauthenticated-signer. A "
            "top-level signature must cover Pixel Data, PatientName, PatientID, Study, Series and SOP Instance "
            "UID (--require-covered adds more), else PARTIAL. MD5 and SHA-1 MACs fail unless --accept-weak-mac; "
            "RIPEMD-160 (DCMTK's default) passes with a warning. Not guaranteed: the file meta (Transfer Syntax "
            "UID) is outside every PS3.15 signature; dvqa only checks that an encapsulated file's syntax is the "
            "one its MAC was computed in. Certificate revocation (CRL, OCSP) and certified timestamps are not "
            "checked: the signing time is the one the signer wrote.",
            "What `dvqa audit verify` guarantees: with --audit-key-env (a key of 32 bytes or more) an edited, "
            "inserted, deleted or reordered record is named; with --expect-head (the RECORDS:SHA256 `dvqa audit "
            "head` printed, kept where the log's writers cannot reach) records cut off the end or a rewrite up to "
            "there are caught too. A log without a key is NOT tamper-evident (verify says so): anyone who can "
            "write it can rewrite it and its chain. A key holder can still forge records, and records after the "
            "last head kept can be cut; batch --resume accepts only a keyed log.",
            "Clusters (validate and batch convert --scheduler, --jobs): every member of a Dask cluster is fully "
            "trusted (Dask runs pickled code both ways); a remote scheduler is reached over tls:// with the site's "
            "CA and a client certificate only (tcp:// needs --allow-clear-text, never under --require-tls), a "
            "local cluster uses credentials made for the run and serves no HTTP routes, and the client signs only "
            "files it staged and validated itself. Not guaranteed: `dvqa report traceability` trusts the JUnit "
            "file it is given. De-identification (evidence build --deidentify): PS3.15 Annex E Basic Profile on "
            "attributes; text burned into the pictures is not removed."],
            [profiles]),
        _section("A", "Annex: IOD contents", [
            "Presence (PS3.2): ALWAYS always present with a value; VNAP value not always present (sent empty "
            "when unknown); ANAP attribute not always present; EMPTY always sent empty. Source: USER an "
            "option, AUTO generated by dvqa, MWL copied from a worklist result (--metadata-from) or DICOM JSON, "
            "CONFIG chosen by an option that is configuration (--iod)."],
            [iod_contents(iod, tables) for iod in VideoIOD]),
    ]
    return {"command": "report conformance", "title": f"DICOM Conformance Statement: dvqa {__version__}",
            "dvqa_version": __version__, "edition": tables.edition.name,
            "edition_sha256": tables.edition.digest, "sections": sections}
