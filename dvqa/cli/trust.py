"""`dvqa sign`, `dvqa verify`, `dvqa audit`: signatures and the audit trail."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import click
from pydicom.tag import BaseTag, Tag

from dvqa.cli import options
from dvqa.cli.common import audit_key, audit_log, guarded, passphrase, refuse_same_files, same_file
from dvqa.core.words import plural
from dvqa.core import outputs, signals
from dvqa.core.errors import DvqaError, ExitCode, UsageError
from dvqa.trust import atna
from dvqa.trust import audit as audit_trail
from dvqa.trust.signature import PURPOSES, SIGNING_ALGORITHMS, Signer, sign_file, signature_uid
from dvqa.trust.verification import REQUIRED_COVERED, VerifyPolicy, load_trust, verify_file


_EXPORTED = re.compile(r"record-[0-9]{6,}\.xml")  # the names `audit export` writes


def register(main: click.Group) -> None:
    main.add_command(sign_command)
    main.add_command(verify_command)
    main.add_command(audit_group)


@click.command("sign", cls=options.Command)
@click.argument("file", type=options.InputPath(dir_okay=False))
@click.option("--key", "key_path", required=True, type=options.InputPath(dir_okay=False),
              help="Private key: PEM (optionally encrypted) or PKCS#12 (.p12/.pfx).")
@click.option("--cert", "cert_path", type=options.InputPath(dir_okay=False),
              help="The signer's X.509 certificate (PEM or DER); not needed with PKCS#12.")
@options.passphrase
@options.signature_profile
@click.option("--mac", "mac", default="SHA256", show_default=True, type=click.Choice(list(SIGNING_ALGORITHMS)),
              help="Hash algorithm of the MAC (and of the signature).")
@click.option("--purpose", default=None, type=click.Choice(sorted(PURPOSES)),
              help="Add a Digital Signature Purpose Code Sequence item (CID 7007, ASTM E1762 code).")
@options.output("Write the signed file here (default: replace FILE, atomically).")
@click.option("--allow-invalid-certificate", is_flag=True,
              help="Sign even though the certificate is expired or not yet valid (verify will fail it).")
@click.option("--uid-root", default=None,
              help="Root for the Digital Signature UID, e.g. the device maker's registered root (default: pydicom's, "
                   "as convert --uid-root sets the root of the UIDs it generates).")
@options.audit
@options.output_format("text", "json")
@options.debug
def sign_command(file: Path, key_path: Path, cert_path: Path | None, passphrase_env: str | None,
                 signature_profile: str,
                 mac: str, purpose: str | None, output: Path | None, allow_invalid_certificate: bool,
                 uid_root: str | None,
                 audit_path: Path | None, audit_key_env: str | None, fmt: str, debug: bool) -> None:
    """Add a DICOM digital signature (PS3.15 Annex C) over every signable element of FILE."""
    target = output or file
    written = [("-o" if output else "FILE", target)]
    read = [("--key", key_path), ("--cert", cert_path)] + ([] if same_file(file, [target]) else [("FILE", file)])
    if same_file(audit_path, [path for _, path in written + read]):  # refused with nothing appended to it
        guarded(debug, lambda: refuse_same_files([*written, ("--audit", audit_path)], read))
    audit = audit_log(audit_path, audit_key_env, debug)

    def work():
        signer = None

        def record(result) -> None:
            if audit:
                audit.append({"command": "sign", "input": str(file), "output": str(target),
                              "signature_uid": result.uid, "signer": signer.certificate.subject.rfc4514_string(),
                              "profile": result.profile, "mac_algorithm": result.algorithm,
                              "outcome": "success", "exit_code": 0})

        try:
            refuse_same_files(written, read)  # recorded as a failed attempt, as a bad key is
            signer = Signer.load(key_path, cert_path, passphrase(passphrase_env), allow_invalid_certificate)
            signature_uid(uid_root)  # a bad root is refused before the key is read
            return sign_file(file, target, signer, signature_profile, mac, purpose, record=record, uid_root=uid_root)
        except KeyboardInterrupt as exc:
            if audit:
                audit.append({"command": "sign", "input": str(file), "output": str(target), "outcome": "failure",
                              "exit_code": signals.exit_code_of(exc),
                              "message": f"interrupted by {getattr(exc, 'name', 'SIGINT')}; {target} unchanged"})
            raise
        except Exception as exc:
            problem = outputs.environment_error(exc, target.parent) if isinstance(exc, OSError) else None
            failure = problem or exc
            if audit and not isinstance(failure, audit_trail.AuditWriteFailed):  # the log cannot take it then
                known = isinstance(failure, DvqaError)
                audit.append({"command": "sign", "input": str(file), "output": str(target), "outcome": "failure",
                              "exit_code": int(failure.exit_code) if known else int(ExitCode.ENVIRONMENT),
                              "message": str(failure) if known else f"internal error: {type(exc).__name__}: {exc}"})
            if problem:
                raise problem from exc
            raise

    result = guarded(debug, work)
    record = {"file": str(target), **result.__dict__}
    if fmt == "json":
        click.echo(json.dumps(record, indent=2))
    else:
        for note in result.notes:
            click.echo(f"note     {note}")
        click.echo(f"signed   {record['file']}: signature {result.uid} (MAC ID {result.mac_id}, "
                   f"{result.algorithm}, {result.profile} profile) over {len(result.signed_tags)} elements")


@click.command("verify", cls=options.Command)
@click.argument("files", nargs=-1, required=True, type=options.InputPath(dir_okay=False))
@click.option("--trust", type=options.InputPath(dir_okay=False),
              help="PEM file of CA certificates (trust anchors): the signer's certificate must chain to one, "
                   "every certificate valid at the signing time. Without it the signer is not authenticated.")
@click.option("--intermediates", type=options.InputPath(dir_okay=False),
              help="PEM file of intermediate CA certificates that may link the signer to a --trust anchor "
                   "(not trusted themselves).")
@click.option("--accept-unauthenticated-signer", is_flag=True,
              help="Without --trust, pass a signature whose signer cannot be authenticated (anyone can make a "
                   "certificate with any name): compare the printed SHA-256 fingerprint yourself.")
@click.option("--accept-weak-mac", is_flag=True,
              help="Pass signatures whose MAC is MD5 or SHA1 (PS3.15 lists them; they fail by default).")
@click.option("--require-covered", "require_covered", multiple=True, metavar="TAG",
              help="An element (keyword or GGGG,EEEE) every top-level signature must cover when the file has it, "
                   "besides Pixel Data, PatientName, PatientID, StudyInstanceUID, SeriesInstanceUID and "
                   "SOPInstanceUID; repeatable.")
@click.option("--require-signature", is_flag=True, help="Fail a file that carries no signature at all.")
@options.output_format("text", "json")
@options.debug
def verify_command(files: tuple[Path, ...], trust: Path | None, intermediates: Path | None,
                   accept_unauthenticated_signer: bool, accept_weak_mac: bool, require_covered: tuple[str, ...],
                   require_signature: bool, fmt: str, debug: bool) -> None:
    """Check every digital signature in FILES (also those inside sequence items); exit 1 if any fails, covers
    only part of the file (PARTIAL), or has a signer no --trust anchor authenticates."""
    def make_policy() -> VerifyPolicy:
        return VerifyPolicy(trust=tuple(load_trust(trust)) if trust else None,
                            intermediates=tuple(load_trust(intermediates, "--intermediates")) if intermediates else (),
                            accept_unauthenticated=accept_unauthenticated_signer, accept_weak_mac=accept_weak_mac,
                            require_covered=REQUIRED_COVERED + tuple(_tag_of(t) for t in require_covered))

    policy = guarded(debug, make_policy)
    report, failed = [], False
    for path in files:  # one file's failure is that file's result; the others are still checked
        try:
            results = verify_file(path, policy=policy)
            error = ""
        except DvqaError as exc:
            results, error = [], str(exc)
        except Exception as exc:  # noqa: BLE001 - never one file's crash instead of every file's result
            if debug:
                raise
            results, error = [], f"{path}: cannot be verified ({type(exc).__name__}: {exc})"
        bad = [r for r in results if not r.ok] or (["no signature"] if require_signature and not results else [])
        failed |= bool(bad) or bool(error)
        report.append({"file": str(path), "ok": not bad and not error, "error": error,
                       "signatures": [r.to_dict() for r in results]})
    if fmt == "json":
        click.echo(json.dumps(report, indent=2))
    else:
        for entry in report:
            _print_file(entry)
    sys.exit(int(ExitCode.CHECK_FAILED if failed else ExitCode.OK))


def _print_file(entry: dict) -> None:
    """One line per signature, its verdict first; then its other problems and its warnings."""
    if entry["error"]:
        click.echo(f"FAIL     {entry['error']}")
    elif not entry["signatures"]:
        click.echo(f"{'FAIL' if not entry['ok'] else 'none'}     {entry['file']}: no digital signature")
    for r in entry["signatures"]:
        where = f"{entry['file']}{' in ' + r['location'].rstrip('/') if r['location'] else ''}"
        label = f"signature {r['uid']}: " if r["uid"] else ""
        if r["verdict"] == "OK" or (r["ok"] and r["verdict"] == "UNAUTHENTICATED"):
            click.echo(f"{r['verdict']:<8} {where}: signed {r['datetime']} by {r['signer']} "
                       f"({r['algorithm']}{', purpose ' + r['purpose'] if r['purpose'] else ''}"
                       f"; certificate {r['certificate']}"
                       f"{'; ' + r['chain'] if r['chain'] else ''}"
                       f"{'; meets ' + ', '.join(r['profiles_met']) + ' profile' if r['profiles_met'] else ''}"
                       f"); covers {len(r['covered'])} "
                       f"elements, not covered: {', '.join(r['not_covered']) or 'none'}")
            for problem in r["problems"]:
                click.echo(f"{'':<8} {where}: {problem}; accepted by --accept-unauthenticated-signer")
        else:
            click.echo(f"{r['verdict']:<8} {where}: {label}{r['problem']}")
            for problem in r["problems"][1:]:
                click.echo(f"{'':<8} {where}: {problem}")
            if r["verdict"] != "FAIL" and r["signer"]:
                click.echo(f"{'':<8} {where}: the signature itself holds: signed {r['datetime']} by {r['signer']} "
                           f"({r['algorithm']}), certificate SHA-256 {r['fingerprint']}")
        for warning in r["warnings"]:
            click.echo(f"warning  {where}: {warning}")


def _tag_of(text: str) -> BaseTag:
    """--require-covered's TAG: a keyword (PatientBirthDate) or a tag (0010,0030), (0010,0030) or 00100030."""
    digits = text.strip().strip("()").replace(",", "")
    try:
        if re.fullmatch(r"[0-9A-Fa-f]{8}", digits):  # a tag; "Modality" is 8 letters too, but not hex
            return Tag(int(digits, 16))
        return Tag(text.strip())
    except (ValueError, OverflowError):
        raise UsageError(f"--require-covered {text}: not a DICOM keyword or tag; give e.g. PatientBirthDate or "
                         "(0010,0030).") from None


@click.group("audit", cls=options.Group)
def audit_group() -> None:
    """The tamper-evident audit trail written by --audit."""


@audit_group.command("verify")
@click.argument("log", type=options.InputPath(dir_okay=False))
@options.audit_key
@click.option("--expect-head", metavar="RECORDS:SHA256", default=None,
              help="The head 'dvqa audit head' printed earlier and you kept elsewhere: fail when the log no longer "
                   "holds that record (cut short) or holds another one there (rewritten).")
@options.output_format("text", "json")
@options.debug
def audit_verify_command(log: Path, audit_key_env: str | None, expect_head: str | None, fmt: str,
                         debug: bool) -> None:
    """Prove LOG's hash chain (and HMACs); name the first record that breaks it. Exit 1 if one does.

    Without --audit-key-env or --expect-head the log is not tamper-evident: anyone who can write it can
    rewrite it and recompute the chain, and verify says so."""
    def work():
        pinned = audit_trail.parse_head(expect_head) if expect_head else None
        return audit_trail.verify(log, audit_key(audit_key_env), pinned)

    check = guarded(debug, work)
    if fmt == "json":
        click.echo(json.dumps(check.to_dict(), indent=2))
    else:
        for w in check.warnings:
            click.echo(f"warning  {log}: {w}")
        for e in check.errors:
            click.echo(f"FAIL     {log}: {e}")
        if check.ok:
            how = " and ".join(what for what, done in (("every HMAC checked with the key", check.keyed),
                                                        ("the head you kept is in it", check.pinned)) if done)
            if check.tamper_evident:
                click.echo(f"OK       {log}: {plural(check.records, 'record')} chained, {how}; head {check.head_text}")
            else:
                click.echo(f"CHAINED  {log}: {plural(check.records, 'record')} chained, but NOT tamper-evident: without "
                           "--audit-key-env (a keyed log) or --expect-head (a head kept elsewhere), anyone who can "
                           f"write the file can rewrite it and its chain undetected; head {check.head_text}")
    sys.exit(int(ExitCode.OK if check.ok else ExitCode.CHECK_FAILED))


@audit_group.command("head")
@click.argument("log", type=options.InputPath(dir_okay=False))
@options.audit_key
@options.debug
def audit_head_command(log: Path, audit_key_env: str | None, debug: bool) -> None:
    """Print LOG's head (RECORDS:SHA256 of its last record) after verifying it. Keep it somewhere the log's
    writers cannot reach; 'dvqa audit verify LOG --expect-head HEAD' later fails on truncation or rewrite."""
    check = guarded(debug, lambda: audit_trail.verify(log, audit_key(audit_key_env)))
    if not check.ok:
        click.echo(f"dvqa: error: {log}: the log does not verify ({check.errors[0]}); a head of it would pin a "
                   "broken log - see dvqa audit verify.", err=True)
        sys.exit(int(ExitCode.CHECK_FAILED))
    click.echo(check.head_text)


@audit_group.command("export")
@click.argument("log", type=options.InputPath(dir_okay=False))
@options.output_format("dicom-audit", help="The kind of file written per record into -o. dicom-audit: a DICOM "
                       "Audit Message (PS3.15 A.5: the XML an IHE ATNA audit repository takes), one record-SEQ.xml per "
                       "record - DICOM Instances Transferred for a PACS send, DICOM Instances Accessed for a "
                       "conversion. The only format so far; stdout says how many were written.")
@options.output("Folder for one XML message per record (record-SEQ.xml); created if missing.", required=True,
                folder=True, dest="out_dir")
@options.debug
def audit_export_command(log: Path, fmt: str, out_dir: Path, debug: bool) -> None:
    """Write LOG's records as DICOM audit messages (PS3.15 A.5, IHE ATNA) for an audit repository."""
    def work():
        if _EXPORTED.fullmatch(log.name) and same_file(log, [out_dir / log.name]):
            raise UsageError(f"LOG {log}: is in the -o folder under a name the export writes, so the export "
                             "would replace the audit log; give another folder.")
        out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        written = 0
        for record in audit_trail.records(log):  # PHI: each file private, never written through a link
            outputs.write_atomic(out_dir / f"record-{record['seq']:06d}.xml", atna.to_xml(record))
            written += 1
        return written

    count = guarded(debug, work)
    click.echo(f"exported {plural(count, 'audit message')} to {out_dir}")


