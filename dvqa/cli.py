"""The `dvqa` command: a thin Click layer over the library. No decisions are made here."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import click

from dvqa import __version__, atna, matrix, pacs, profiles, reports, simulate, syntaxes
from dvqa.pacs import Peer
from dvqa.audit import AuditLog, conversion_event
from dvqa import audit as audit_trail
from dvqa.convert import ConvertOptions, convert
from dvqa.errors import DvqaError, ExitCode, InputError, UsageError
from dvqa.findings import Severity, exit_code
from dvqa.formats import RENDERERS
from dvqa.iod import Metadata, VideoIOD
from dvqa.metrics import SSIM_DEFINITIONS
from dvqa.recheck import measure_files
from dvqa.validate import validate, walk
from dvqa.signature import PROFILES, PURPOSES, SIGNING_ALGORITHMS, Signer, load_trust, sign_file, verify_file


def _fail(exc: DvqaError, debug: bool) -> None:
    if debug:
        raise exc
    click.echo(f"dvqa: error: {exc}", err=True)
    sys.exit(int(exc.exit_code))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dvqa")
def main() -> None:
    """DICOM video quality assurance: convert, validate, sign, audit.

    Exit codes: 0 pass, 1 a check failed, 2 usage error, 3 unreadable or
    unsupported input, 4 environment problem.
    """


@main.command("convert")
@click.argument("source", type=click.Path(path_type=Path, dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="DICOM file to write.")
@click.option("--syntax", default="auto", show_default=True,
              help=f"auto or one of: {', '.join(syntaxes.names())}.")
@click.option("--iod", "iod_name", default="endoscopic", show_default=True,
              type=click.Choice([i.option for i in VideoIOD]), help="Video IOD to write.")
@click.option("--uid-root", default=None, help="Root for generated UIDs (default: 2.25 UUID-derived).")
@click.option("--patient-name", default=None)
@click.option("--patient-id", default=None)
@click.option("--patient-birth-date", default=None, help="YYYYMMDD.")
@click.option("--patient-sex", default=None, type=click.Choice(["M", "F", "O"]))
@click.option("--accession-number", default=None)
@click.option("--study-uid", default=None, help="Study Instance UID to file the video under.")
@click.option("--study-description", default=None)
@click.option("--metadata-json", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="Patient/study attributes as DICOM JSON (PS3.18 F.2).")
@click.option("--metadata-from", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="Copy patient/study attributes from this DICOM file (e.g. a worklist result).")
@click.option("--source-range", default="auto", show_default=True,
              type=click.Choice(["auto", "full", "limited"]),
              help="Colour range of the source when its stream does not declare it.")
@click.option("--no-passthrough", is_flag=True, help="Always re-encode, even when the stream could be wrapped.")
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("--ssim", default="fast", show_default=True, type=click.Choice(list(SSIM_DEFINITIONS)),
              help="SSIM definition: fast (x264/FFmpeg, real time) or reference (Wang et al. 2004).")
@click.option("--no-quality", is_flag=True, help="Skip per-frame PSNR/SSIM (faster; no quality evidence).")
@click.option("--profile", default=None,
              help="Quality floors to enforce: a name from `dvqa profiles` or a YAML file.")
@click.option("--keep-failed", is_flag=True, help="Write OUTPUT even when a quality floor is not met.")
@click.option("--sign", "sign_key", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="Sign OUTPUT with this private key (PEM or PKCS#12) before it is moved into place.")
@click.option("--cert", "sign_cert", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="The signer's certificate, with --sign.")
@click.option("--sign-profile", default="base", show_default=True, type=click.Choice(list(PROFILES)))
@click.option("--passphrase-env", default=None, metavar="VAR", help="Environment variable holding the key's passphrase.")
@click.option("--report", "report_paths", multiple=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Write the full record here: .json (per-frame arrays, timing map) or .html (plots, "
                   "worst frames). Repeatable.")
@click.option("--audit", "audit_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Append a record of this attempt (success or failure) to this audit log (JSON Lines).")
@click.option("--audit-key-env", default=None, metavar="VAR",
              help="Environment variable holding a key: each audit record gets an HMAC-SHA256.")
@click.option("--format", "fmt", default="text", show_default=True, type=click.Choice(["text", "json"]))
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def convert_command(source: Path, output: Path, syntax: str, iod_name: str, uid_root: str | None,
                    patient_name: str | None, patient_id: str | None, patient_birth_date: str | None,
                    patient_sex: str | None, accession_number: str | None, study_uid: str | None,
                    study_description: str | None, metadata_json: Path | None,
                    metadata_from: Path | None, source_range: str, no_passthrough: bool, force: bool,
                    ssim: str, no_quality: bool, profile: str | None, keep_failed: bool,
                    sign_key: Path | None, sign_cert: Path | None, sign_profile: str, passphrase_env: str | None,
                    report_paths: tuple[Path, ...], audit_path: Path | None, audit_key_env: str | None,
                    fmt: str, debug: bool) -> None:
    """Convert a browser recording (WebM, Matroska, MP4) to a DICOM video object."""
    audit = _audit_log(audit_path, audit_key_env, debug)
    try:
        metadata = Metadata()
        if metadata_from:
            metadata.values.update(Metadata.from_dicom_file(metadata_from).values)
        if metadata_json:
            metadata.values.update(Metadata.from_json_file(metadata_json).values)
        for keyword, value in (("PatientName", patient_name), ("PatientID", patient_id),
                               ("PatientBirthDate", patient_birth_date), ("PatientSex", patient_sex),
                               ("AccessionNumber", accession_number), ("StudyInstanceUID", study_uid),
                               ("StudyDescription", study_description)):
            if value is not None:
                metadata.values[keyword] = value
        for path in report_paths:
            reports.kind_of(path)  # a bad report name fails before the work, not after
        signer = Signer.load(sign_key, sign_cert, _passphrase(passphrase_env)) if sign_key else None
        options = ConvertOptions(syntax=syntax, iod=iod_name, uid_root=uid_root, metadata=metadata,
                                 force=force, passthrough=not no_passthrough, source_range=source_range,
                                 quality=not no_quality, ssim=ssim, profile=profile, keep_failed=keep_failed,
                                 signer=signer, signature_profile=sign_profile)
        bar = None

        def on_plan(plan, scanned) -> None:
            nonlocal bar
            if sys.stderr.isatty() and fmt == "text":
                bar = click.progressbar(length=scanned.packets, label="converting", file=sys.stderr)
                bar.__enter__()

        def progress(n: int) -> None:
            if bar is not None:
                bar.update(n)

        try:
            result = convert(source, output, options, progress=progress, on_plan=on_plan)
        finally:
            if bar is not None:
                bar.__exit__(None, None, None)
        record = result.to_dict()
    except DvqaError as exc:
        if audit:
            audit.append(conversion_event(source, output, None, int(exc.exit_code), str(exc)))
        _fail(exc, debug)
        return
    except KeyboardInterrupt:
        if audit:
            audit.append(conversion_event(source, output, None, 130, "interrupted"))
        click.echo("dvqa: interrupted; nothing was written.", err=True)
        sys.exit(130)
    except Exception as exc:  # a dvqa bug or an unforeseen environment failure
        if audit:
            audit.append(conversion_event(source, output, None, int(ExitCode.ENVIRONMENT),
                                          f"internal error: {type(exc).__name__}: {exc}"))
        if debug:
            raise
        click.echo(f"dvqa: internal error: {type(exc).__name__}: {exc}; nothing was written - "
                   "rerun with --debug and report it.", err=True)
        sys.exit(int(ExitCode.ENVIRONMENT))
    if audit:
        audit.append(conversion_event(source, output, result, int(result.exit_code),
                                      "; ".join(f["message"] for f in record["findings"])))
    try:
        for path in report_paths:
            reports.write(path, result.to_dict(mapping=True), result.quality)
    except Exception as exc:  # the DICOM is already in place: say so, do not claim otherwise
        if debug:
            raise
        click.echo(f"dvqa: error: the conversion finished ({'written to ' + str(output) if result.written else 'not written'}) "
                   f"but a report failed: {type(exc).__name__}: {exc}; rerun with --debug and report it.", err=True)
        sys.exit(int(ExitCode.ENVIRONMENT))
    if fmt == "json":
        click.echo(json.dumps(record, indent=2))
    else:
        _print_text(record)
    sys.exit(int(result.exit_code))


def _print_text(r: dict) -> None:
    i, o, p, t = r["input"], r["output"], r["plan"], r["timing"]
    click.echo(f"input    {i['path']}: {i['codec']} {i['width']}x{i['height']} in {i['container']}, "
               f"{t['source_frames']} frames over {t['source_duration_s']:.3f} s")
    click.echo(f"syntax   {p['title']} ({p['uid']})")
    click.echo(f"why      {p['reason']}")
    if r["passthrough"]:
        click.echo(f"stream   passed through unchanged, sha256 {r['elementary_stream_sha256']}")
    else:
        enc = r["encoder"] or {}
        click.echo(f"stream   re-encoded with {enc.get('encoder')} {enc.get('options')}"
                   + (f" (passthrough not possible: {p['passthrough_refusal']})" if p["passthrough_refusal"] else ""))
    click.echo(f"timing   {t['output_frames']} frames at {t['rate_fps']:g} fps = {t['output_duration_s']:.3f} s; "
               f"{len(t['duplicated_output_frames'])} duplicated, {len(t['dropped_source_frames'])} dropped")
    for line in r["transforms"] + r["notes"]:
        click.echo(f"note     {line}")
    if r["quality"]:
        _print_quality(r["quality"])
    else:
        click.echo("quality  not measured (--no-quality)")
    for f in r["findings"]:
        click.echo(f"{f['severity']:<8} {f['code']}: {f['message']} [{f['reference']}]")
    if r["profile"] and not r["findings"]:
        click.echo(f"profile  {r['profile']['name']}: all {len(r['profile']['quality_floors'])} "
                   "quality floors met")
    if r["signature"]:
        sig = r["signature"]
        click.echo(f"signed   signature {sig['uid']} ({sig['algorithm']}, {sig['profile']} profile)")
    if r["written"]:
        click.echo(f"output   {o['path']}: {o['iod']}, {o['columns']}x{o['rows']}, {o['size']} bytes, "
                   f"{r['elapsed_s']:.2f} s")
    else:
        click.echo(f"output   not written: the {r['profile']['name']} profile's floors are not met "
                   "(--keep-failed writes it anyway)")


def _print_quality(q: dict) -> None:
    s = q["summary"]
    click.echo(f"quality  PSNR-Y mean {s['psnr_y']['mean']} dB, min {s['psnr_y']['min']} dB; "
               f"PSNR mean {s['psnr']['mean']} dB; SSIM ({q['ssim_definition']['name']}) mean "
               f"{s['ssim_y']['mean']}, min {s['ssim_y']['min']} over {q['frames']} frames")


@main.command("quality")
@click.argument("reference", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("distorted", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--ssim", default="fast", show_default=True, type=click.Choice(list(SSIM_DEFINITIONS)))
@click.option("--source-range", default="auto", show_default=True, type=click.Choice(["auto", "full", "limited"]),
              help="Colour range of REFERENCE when its stream does not declare it.")
@click.option("--profile", default=None, help="Quality floors to check (exit 1 when one is not met).")
@click.option("--report", "report_paths", multiple=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Write the record here: .json or .html. Repeatable.")
@click.option("--format", "fmt", default="text", show_default=True, type=click.Choice(["text", "json"]))
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def quality_command(reference: Path, distorted: Path, ssim: str, source_range: str, profile: str | None,
                    report_paths: tuple[Path, ...], fmt: str, debug: bool) -> None:
    """Measure DISTORTED (a DICOM video or a video file) against REFERENCE, frame by frame."""
    try:
        for path in report_paths:
            reports.kind_of(path)
        chosen = profiles.load(profile) if profile else None
        for path in (reference, distorted):
            if not path.is_file():
                raise InputError(f"{path}: no such file.")
        record, result = measure_files(reference, distorted, ssim, source_range)
        findings = profiles.check_quality(chosen, result, str(distorted)) if chosen else []
        record["profile"] = chosen.to_dict() if chosen else None
        record["findings"] = [f.to_dict() for f in findings]
        for path in report_paths:
            reports.write(path, record, result)
    except DvqaError as exc:
        _fail(exc, debug)
        return
    except Exception as exc:
        if debug:
            raise
        click.echo(f"dvqa: internal error: {type(exc).__name__}: {exc} - rerun with --debug and report it.",
                   err=True)
        sys.exit(int(ExitCode.ENVIRONMENT))
    if fmt == "json":
        brief = dict(record)
        brief["quality"] = {k: v for k, v in record["quality"].items() if k != "per_frame"}
        click.echo(json.dumps(brief, indent=2))
    else:
        for line in record["transforms"] + record["notes"]:
            click.echo(f"note     {line}")
        _print_quality(record["quality"])
        for f in record["findings"]:
            click.echo(f"{f['severity']:<8} {f['code']}: {f['message']} [{f['reference']}]")
    sys.exit(int(exit_code(findings)))


def _audit_log(path: Path | None, key_env: str | None, debug: bool) -> AuditLog | None:
    """Opened before any work, so a bad --audit fails without converting anything."""
    if path is None:
        return None
    key = _guarded(debug, lambda: _passphrase(key_env)) if key_env else None
    if path.is_dir() or not path.parent.is_dir():
        _fail(UsageError(f"--audit {path}: give a file in an existing folder."), debug)
    return AuditLog(path, key.encode() if key else None)


def _passphrase(variable: str | None) -> str | None:
    if variable is None:
        return None
    if variable not in os.environ:
        raise UsageError(f"--passphrase-env {variable}: that variable is not set.")
    return os.environ[variable]


def _guarded(debug: bool, work):
    """Run `work()`; a DvqaError becomes its one-sentence message and exit code, anything else exit 4."""
    try:
        return work()
    except DvqaError as exc:
        _fail(exc, debug)
    except Exception as exc:  # a dvqa bug or an unforeseen environment failure
        if debug:
            raise
        click.echo(f"dvqa: internal error: {type(exc).__name__}: {exc} - rerun with --debug and report it.",
                   err=True)
        sys.exit(int(ExitCode.ENVIRONMENT))


@main.command("sign")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--key", "key_path", required=True, type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="Private key: PEM (optionally encrypted) or PKCS#12 (.p12/.pfx).")
@click.option("--cert", "cert_path", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="The signer's X.509 certificate (PEM or DER); not needed with PKCS#12.")
@click.option("--passphrase-env", default=None, metavar="VAR",
              help="Read the key's passphrase from this environment variable (never from the command line).")
@click.option("--profile", "sig_profile", default="base", show_default=True, type=click.Choice(list(PROFILES)))
@click.option("--mac", "mac", default="SHA256", show_default=True, type=click.Choice(list(SIGNING_ALGORITHMS)))
@click.option("--purpose", default=None, type=click.Choice(sorted(PURPOSES)),
              help="Add a Digital Signature Purpose Code Sequence item (CID 7007, ASTM E1762 code).")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False),
              help="Write the signed file here (default: replace FILE, atomically).")
@click.option("--audit", "audit_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Append a record of this signing to this audit log.")
@click.option("--audit-key-env", default=None, metavar="VAR", help="Environment variable holding the HMAC key.")
@click.option("--format", "fmt", default="text", show_default=True, type=click.Choice(["text", "json"]))
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def sign_command(file: Path, key_path: Path, cert_path: Path | None, passphrase_env: str | None, sig_profile: str,
                 mac: str, purpose: str | None, output: Path | None, audit_path: Path | None,
                 audit_key_env: str | None, fmt: str, debug: bool) -> None:
    """Add a DICOM digital signature (PS3.15 Annex C) over every signable element of FILE."""
    audit = _audit_log(audit_path, audit_key_env, debug)

    def work():
        try:
            signer = Signer.load(key_path, cert_path, _passphrase(passphrase_env))
            result = sign_file(file, output or file, signer, sig_profile, mac, purpose)
        except DvqaError as exc:
            if audit:
                audit.append({"command": "sign", "input": str(file), "outcome": "failure",
                              "exit_code": int(exc.exit_code), "message": str(exc)})
            raise
        if audit:
            audit.append({"command": "sign", "input": str(file), "output": str(output or file),
                          "signature_uid": result.uid, "signer": signer.certificate.subject.rfc4514_string(),
                          "profile": result.profile, "mac_algorithm": result.algorithm,
                          "outcome": "success", "exit_code": 0})
        return result

    result = _guarded(debug, work)
    record = {"file": str(output or file), **result.__dict__}
    if fmt == "json":
        click.echo(json.dumps(record, indent=2))
    else:
        click.echo(f"signed   {record['file']}: signature {result.uid} (MAC ID {result.mac_id}, "
                   f"{result.algorithm}, {result.profile} profile) over {len(result.signed_tags)} elements")


@main.command("verify")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--trust", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="PEM file of CA certificates: the signer's certificate must be issued by one, "
                   "both valid at the signing time.")
@click.option("--require-signature", is_flag=True, help="Fail a file that carries no signature at all.")
@click.option("--format", "fmt", default="text", show_default=True, type=click.Choice(["text", "json"]))
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def verify_command(files: tuple[Path, ...], trust: Path | None, require_signature: bool, fmt: str,
                   debug: bool) -> None:
    """Check every digital signature in FILES (also those inside sequence items); exit 1 if any fails."""
    anchors = _guarded(debug, lambda: load_trust(trust)) if trust else None
    report, failed = [], False
    for path in files:
        results = _guarded(debug, lambda: verify_file(path, anchors))
        bad = [r for r in results if not r.ok] or (["no signature"] if require_signature and not results else [])
        failed |= bool(bad)
        report.append({"file": str(path), "ok": not bad, "signatures": [r.to_dict() for r in results]})
    if fmt == "json":
        click.echo(json.dumps(report, indent=2))
    else:
        for entry in report:
            if not entry["signatures"]:
                click.echo(f"{'FAIL' if not entry['ok'] else 'none'}     {entry['file']}: no digital signature")
            for r in entry["signatures"]:
                where = f" in {r['location'].rstrip('/')}" if r["location"] else ""
                if r["ok"]:
                    click.echo(f"OK       {entry['file']}{where}: signed {r['datetime']} by {r['signer']} "
                               f"({r['algorithm']}{', purpose ' + r['purpose'] if r['purpose'] else ''}"
                               f"{', ' + r['chain'] if r['chain'] else ''}"
                               f"{'; meets ' + ', '.join(r['profiles_met']) + ' profile' if r['profiles_met'] else ''}"
                               f"); covers {len(r['covered'])} "
                               f"elements, not covered: {', '.join(r['not_covered']) or 'none'}")
                else:
                    click.echo(f"FAIL     {entry['file']}{where}: signature {r['uid']}: {r['problem']}")
    sys.exit(int(ExitCode.CHECK_FAILED if failed else ExitCode.OK))


@main.group("audit")
def audit_group() -> None:
    """The tamper-evident audit trail written by --audit."""


@audit_group.command("verify")
@click.argument("log", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--key-env", default=None, metavar="VAR", help="Environment variable holding the HMAC key.")
@click.option("--format", "fmt", default="text", show_default=True, type=click.Choice(["text", "json"]))
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def audit_verify_command(log: Path, key_env: str | None, fmt: str, debug: bool) -> None:
    """Prove LOG's hash chain (and HMACs); name the first record that breaks it. Exit 1 if one does."""
    def work():
        key = _passphrase(key_env)
        return audit_trail.verify(log, key.encode() if key else None)

    check = _guarded(debug, work)
    if fmt == "json":
        click.echo(json.dumps(check.to_dict(), indent=2))
    else:
        for w in check.warnings:
            click.echo(f"warning  {log}: {w}")
        for e in check.errors:
            click.echo(f"FAIL     {log}: {e}")
        if check.ok:
            click.echo(f"OK       {log}: {check.records} records chained; head {check.head}")
    sys.exit(int(ExitCode.OK if check.ok else ExitCode.CHECK_FAILED))


@audit_group.command("export")
@click.argument("log", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--format", "fmt", default="dicom-audit", show_default=True, type=click.Choice(["dicom-audit"]))
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Folder for one XML message per record (record-SEQ.xml); created if missing.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def audit_export_command(log: Path, fmt: str, out_dir: Path, debug: bool) -> None:
    """Write LOG's records as DICOM audit messages (PS3.15 A.5, IHE ATNA) for an audit repository."""
    def work():
        out_dir.mkdir(parents=True, exist_ok=True)
        written = 0
        for record in audit_trail.records(log):
            (out_dir / f"record-{record['seq']:06d}.xml").write_bytes(atna.to_xml(record))
            written += 1
        return written

    count = _guarded(debug, work)
    click.echo(f"exported {count} audit messages to {out_dir}")


@main.command("validate")
@click.argument("targets", nargs=-1, required=True, type=click.Path(path_type=Path, exists=True))
@click.option("--profile", default=None, help="Per-modality rules to apply: a name from `dvqa profiles` or a YAML file.")
@click.option("--format", "fmt", default="text", show_default=True, type=click.Choice(list(RENDERERS)))
@click.option("--fail-on", default="error", show_default=True, type=click.Choice(["error", "warning"]),
              help="Exit 1 when any finding is at least this severe.")
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(1, 64), help="Worker processes.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def validate_command(targets: tuple[Path, ...], profile: str | None, fmt: str, fail_on: str, jobs: int,
                     debug: bool) -> None:
    """Check DICOM FILES and every file below DIRS: video stream vs header, and a profile's rules."""
    chosen = _guarded(debug, lambda: profiles.load(profile)) if profile else None
    severity = Severity(fail_on)
    files = list(walk(targets))
    if not files:
        _fail(UsageError(f"no files under {', '.join(map(str, targets))}."), debug)
    bar = None
    if sys.stderr.isatty() and fmt == "text" and len(files) > 20:
        bar = click.progressbar(length=len(files), label="validating", file=sys.stderr)
        bar.__enter__()
    try:
        results = _guarded(debug, lambda: validate(files, chosen, jobs, bar.update if bar else None))
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    click.echo(RENDERERS[fmt](results, severity))
    sys.exit(int(exit_code([f for r in results for f in r.findings], severity)))


@main.group("pacs")
def pacs_group() -> None:
    """Send to a PACS and record what it accepted."""


def _peer_options(fn):
    for option in reversed([
        click.option("--host", default="127.0.0.1", show_default=True),
        click.option("--port", type=int, default=None, help="The PACS's DICOM port."),
        click.option("--called-aet", default="ANY-SCP", show_default=True, help="The PACS's AE title."),
        click.option("--aet", "calling_aet", default="DVQA", show_default=True, help="dvqa's own AE title."),
        click.option("--timeout", default=30.0, show_default=True, help="Seconds for each network step."),
        click.option("--format", "fmt", default="text", show_default=True, type=click.Choice(["text", "json"])),
        click.option("--debug", is_flag=True, help="Show tracebacks."),
    ]):
        fn = option(fn)
    return fn


@pacs_group.command("echo")
@_peer_options
def pacs_echo_command(host: str, port: int, called_aet: str, calling_aet: str, timeout: float, fmt: str,
                      debug: bool) -> None:
    """C-ECHO: is the PACS there and does it accept dvqa's AE title? Exit 4 if not."""
    if port is None:
        _fail(UsageError("give --port, the PACS's DICOM port."), debug)
    peer = Peer(host, port, called_aet, calling_aet, timeout)
    result = _guarded(debug, lambda: pacs.echo(peer))
    click.echo(json.dumps(result, indent=2) if fmt == "json" else f"OK       C-ECHO {peer} in {result['elapsed_s']} s")


@pacs_group.command("store")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False, exists=True))
@_peer_options
@click.option("--retries", default=3, show_default=True, type=click.IntRange(0, 20),
              help="Retries after a network failure (1 s, 2 s, 4 s ... apart). A PACS's refusal is not retried.")
@click.option("--stow", "stow_url", default=None, metavar="URL",
              help="Send with DICOMweb STOW-RS to this service root instead of DIMSE C-STORE.")
@click.option("--fallback", "fallback_syntax", default=None,
              type=click.Choice([s.name for s in syntaxes.SYNTAXES if s.bits == 8]),
              help="When the PACS refuses a file, send a copy converted to this syntax (new SOP instance, "
                   "same series; the original is kept).")
@click.option("--fallback-dir", type=click.Path(path_type=Path, file_okay=False),
              help="Keep the fallback copies here (default: a temporary folder, removed afterwards).")
@click.option("--commit", is_flag=True,
              help="Request Storage Commitment and wait for the PACS's report: 'archived' means confirmed.")
@click.option("--listen-port", type=int, default=None, help="With --commit: where the PACS sends its report.")
@click.option("--listen-host", default="127.0.0.1", show_default=True, help="With --commit: address to listen on.")
@click.option("--commit-wait", default=60.0, show_default=True, help="With --commit: seconds to wait for the report.")
@click.option("--audit", "audit_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Append one record per file (where it went, what the PACS answered) to this audit log.")
@click.option("--audit-key-env", default=None, metavar="VAR", help="Environment variable holding the HMAC key.")
def pacs_store_command(files: tuple[Path, ...], host: str, port: int | None, called_aet: str, calling_aet: str,
                       timeout: float, fmt: str, debug: bool, retries: int, stow_url: str | None,
                       fallback_syntax: str | None, fallback_dir: Path | None, commit: bool,
                       listen_port: int | None, listen_host: str, commit_wait: float,
                       audit_path: Path | None, audit_key_env: str | None) -> None:
    """C-STORE (or STOW-RS) FILES, each in its own transfer syntax; say exactly what was refused.

    Exit 0 all stored, 1 the PACS refused some, 4 it could not be reached. Files are never moved.
    """
    audit = _audit_log(audit_path, audit_key_env, debug)
    if stow_url and (commit or fallback_syntax):
        _fail(UsageError("--commit and --fallback work with DIMSE C-STORE (--port), not with --stow."), debug)
    if stow_url:
        results = _guarded(debug, lambda: pacs.stow(stow_url, list(files), retries))
    else:
        if port is None:
            _fail(UsageError("give --port (DIMSE) or --stow URL (DICOMweb)."), debug)
        if commit and listen_port is None:
            _fail(UsageError("--commit needs --listen-port, where the PACS sends its N-EVENT-REPORT."), debug)
        peer = Peer(host, port, called_aet, calling_aet, timeout)
        if fallback_syntax:
            with tempfile.TemporaryDirectory(prefix="dvqa-fallback-") as scratch:
                folder = fallback_dir or Path(scratch)
                folder.mkdir(parents=True, exist_ok=True)
                results = _guarded(debug, lambda: pacs.store_with_fallback(peer, list(files), fallback_syntax,
                                                                           folder, retries))
        else:
            results = _guarded(debug, lambda: pacs.store(peer, list(files), retries))
        if commit:
            _guarded(debug, lambda: pacs.commit(peer, results, (listen_host, listen_port), commit_wait))
    if audit:
        destination, protocol = (stow_url, "STOW-RS") if stow_url else (str(peer), "DIMSE C-STORE")
        for r in results:
            audit.append(pacs.send_event(r, destination, protocol))
    if fmt == "json":
        click.echo(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        for r in results:
            click.echo(f"{r.outcome:<8} {r.path}{': ' + r.message if r.message else ''}")
            if r.fallback:
                f = r.fallback
                click.echo(f"{'':<8} fallback {f['syntax']}: {f['outcome']}"
                           + (f" as {f['sop_instance']} (PSNR-Y mean {f['psnr_y_mean']:.2f} dB vs the original)"
                              if f.get("psnr_y_mean") is not None else "") + (f"; {f['message']}" if f.get("message") else ""))
    wanted = "committed" if commit else "stored"
    outcomes = {r.outcome for r in results}
    if outcomes == {wanted} or (not commit and all(r.delivered for r in results)):
        sys.exit(int(ExitCode.OK))
    refused = outcomes & {"rejected", "not committed"}
    sys.exit(int(ExitCode.CHECK_FAILED if refused else ExitCode.ENVIRONMENT))


@pacs_group.command("matrix")
@click.option("--target", "target_specs", multiple=True, required=True,
              help="NAME=AET@HOST:PORT[,wado=URL] - a PACS to test; WADO-RS root to read the files back.")
@click.option("--iod", "iods", multiple=True, type=click.Choice([i.option for i in VideoIOD]),
              help="IODs to test (default: all three video IODs).")
@click.option("--syntax", "names", multiple=True, type=click.Choice([s.name for s in syntaxes.SYNTAXES if s.bits == 8]),
              help="Transfer syntaxes to test (default: every one dvqa writes).")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Folder for matrix.json, matrix.md and matrix.html (e.g. docs/).")
@click.option("--aet", "calling_aet", default="DVQA", show_default=True)
@click.option("--timeout", default=30.0, show_default=True)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def pacs_matrix_command(target_specs: tuple[str, ...], iods: tuple[str, ...], names: tuple[str, ...], out_dir: Path,
                        calling_aet: str, timeout: float, debug: bool) -> None:
    """Send one file per (video IOD x transfer syntax) to each target and record what it did."""
    def work():
        targets = [matrix.Target.parse(spec, calling_aet, timeout) for spec in target_specs]
        chosen_iods = list(iods) or [i.option for i in VideoIOD]
        chosen = list(names) or [s.name for s in syntaxes.SYNTAXES if s.bits == 8]
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="dvqa-matrix-") as scratch:
            cells = matrix.run(targets, chosen_iods, chosen, Path(scratch))
        (out_dir / "matrix.json").write_text(matrix.to_json(cells) + "\n")
        (out_dir / "matrix.md").write_text(matrix.to_markdown(cells) + "\n")
        (out_dir / "matrix.html").write_text(matrix.to_html(cells))
        return cells

    cells = _guarded(debug, work)
    click.echo(matrix.to_markdown(cells))


@pacs_group.command("simulate")
@click.option("--port", type=int, required=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--aet", default="SIMULATED", show_default=True, help="The simulated PACS's AE title.")
@click.option("--accept", "accepts", multiple=True, required=True, metavar="SOP=TS[,TS...]",
              help="A SOP class UID and the transfer syntax UIDs accepted for it. Repeatable.")
@click.option("--fault", default="none", show_default=True, type=click.Choice(list(simulate.FAULTS)),
              help="Answer every C-STORE with 0xA700 out of resources, abort the association, or never answer.")
@click.option("--store-dir", type=click.Path(path_type=Path, file_okay=False), help="Keep received files here.")
def pacs_simulate_command(port: int, host: str, aet: str, accepts: tuple[str, ...], fault: str,
                          store_dir: Path | None) -> None:
    """Run a Storage SCP that accepts exactly --accept and misbehaves as --fault says (Ctrl-C stops it)."""
    accept: dict[str, list[str]] = {}
    for spec in accepts:
        sop, _, syntaxes_ = spec.partition("=")
        if not syntaxes_:
            _fail(UsageError(f"--accept {spec!r}: write SOP_CLASS_UID=TS_UID[,TS_UID...]."), False)
        accept.setdefault(sop, []).extend(syntaxes_.split(","))
    if store_dir:
        store_dir.mkdir(parents=True, exist_ok=True)
    click.echo(f"listening {aet}@{host}:{port}; fault: {fault}", err=True)
    try:
        simulate.serve(host, port, aet, simulate.Behaviour(accept, fault, store_dir))
    except KeyboardInterrupt:
        pass


@main.group("rules")
def rules_group() -> None:
    """The per-modality rules and quality floors in rules/*.yaml."""


@rules_group.command("list")
@click.option("--format", "fmt", default="text", type=click.Choice(["text", "json"]))
def rules_list_command(fmt: str) -> None:
    """Every rule and floor of every profile: id, severity, what it checks and the source behind it."""
    loaded = [profiles.load(name) for name in profiles.available()]
    if fmt == "json":
        click.echo(json.dumps([p.to_dict() for p in loaded], indent=2))
        return
    for p in loaded:
        click.echo(f"profile {p.name} ({p.path.name})")
        for f in p.quality_floors:
            click.echo(f"  {f.id} [{f.severity.value}] {f.statistic} {f.metric} >= {f.minimum:g}\n"
                       f"      source: {f.source}")
        for r in p.rules:
            if r.check == "range":
                what = f"between {r.minimum:g} and {r.maximum:g}"
            else:
                what = f"in {', '.join(r.values)}" if r.check == "attribute_in" else "present and not empty"
            click.echo(f"  {r.id} [{r.severity.value}] {', '.join(r.attributes)} {what}\n      source: {r.source}")


@main.command("profiles")
@click.option("--format", "fmt", default="text", type=click.Choice(["text", "json"]))
def profiles_command(fmt: str) -> None:
    """List the profiles in rules/ and the quality floors each enforces."""
    loaded = [profiles.load(name) for name in profiles.available()]
    if fmt == "json":
        click.echo(json.dumps([p.to_dict() for p in loaded], indent=2))
        return
    for p in loaded:
        click.echo(f"{p.name}: {p.description}")
        for f in p.quality_floors:
            click.echo(f"  {f.id}: {f.statistic} {f.metric} >= {f.minimum:g} ({f.severity.value})")


@main.command("syntaxes")
@click.option("--format", "fmt", default="text", type=click.Choice(["text", "json"]))
def syntaxes_command(fmt: str) -> None:
    """List the video transfer syntaxes dvqa writes, from its one table."""
    rows = [{"name": s.name, "uid": s.uid, "title": s.title, "codec": s.codec,
             "fragmentable_uid": s.fragmentable_uid} for s in syntaxes.SYNTAXES]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(f"{row['name']:<15} {row['uid']:<26} {row['title']}")


if __name__ == "__main__":
    main()
