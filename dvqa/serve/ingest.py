"""One recording from its spool to the PACS, in a process of its own that `dvqa serve` starts at the first chunk:
live conversion (dvqa.convert.live: the path of `dvqa convert --follow`, fed chunk by chunk from the spool) ->
the IOD check of `dvqa validate` -> the PACS (DIMSE C-STORE with the configured fallback, or STOW-RS) -> the
server's audit chain -> result.json.

A process, not a thread: FFmpeg's log, through which the live path learns of a damaged stream, is captured
process-wide (its decoder threads log outside any Python thread), so two conversions in one process would
read each other's errors. The process ends without a result when it is stopped - SIGTERM from a server
shutting down, its server gone (SIGKILL), the recording abandoned - and the conversion's audit record says
it was interrupted; the next server converts the spool again from chunk 0, with the same UIDs (they derive
from the recording's id), so a PACS that took a first copy takes the same instance again.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from dvqa.convert.live import convert_live
from dvqa.convert.options import PATIENT_STUDY_FIELDS, ConvertOptions
from dvqa.convert.package import ConversionResult
from dvqa.core import signals
from dvqa.core.errors import DvqaError, ExitCode, UsageError
from dvqa.core.findings import Severity
from dvqa.dicom.iod import Metadata
from dvqa.serve.prewarm import WarmTarget, prewarm_stored
from dvqa.serve.record_settings import PacsTarget, RecordSettings
from dvqa.serve.spool import REPORT_KINDS, ChunkFeed, RecordingFolder, Spool
from dvqa.trust.audit import AuditLog, check_key, record_hash
from dvqa.video.growing import Growing


def metadata_of(request: dict) -> Metadata:
    """The patient/study metadata of a recording request, checked as `dvqa convert` checks its options: a DICOM
    JSON object first (`metadata`), then each field by itself (PATIENT_STUDY_FIELDS), then Metadata.check."""
    metadata = Metadata()
    if request.get("metadata") is not None:
        metadata.merge(Metadata.from_json_object(request["metadata"], "metadata"))
    for f in PATIENT_STUDY_FIELDS:
        value = request.get(f.field)
        if value is not None:
            if f.choices and value not in f.choices:
                raise UsageError(f"{f.field} {value!r}: use {', '.join(f.choices)}.")
            metadata.set(f.keyword, value, f.field)
    metadata.check()
    return metadata


def _secret(variable: str, what: str) -> str:
    if variable not in os.environ:
        raise UsageError(f"record.{what} {variable}: that variable is not set in dvqa serve's environment.")
    return os.environ[variable]


class ServerAudit(AuditLog):
    """The server's audit chain, remembering the records appended through it: a recording's result names
    them (number and hash), so its client can fetch them and an auditor find them in the chain."""

    def __init__(self, path: Path, key: bytes | None = None) -> None:
        super().__init__(path, key)
        self.appended: list[dict] = []

    def append(self, event: dict) -> dict:
        record = super().append(event)
        self.appended.append(record)
        return record

    def named(self) -> list[dict]:
        """What a result says of each record appended: where it is in the chain and its line's SHA-256."""
        return [{"seq": r["seq"], "sha256": record_hash(r), "command": r["command"], "outcome": r.get("outcome")}
                for r in self.appended]


def audit_log(settings: RecordSettings) -> ServerAudit | None:
    if settings.audit is None:
        return None
    key = None
    if settings.audit_key_env:
        key = check_key(_secret(settings.audit_key_env, "audit_key_env").encode(),
                        f"record.audit_key_env {settings.audit_key_env}")
    return ServerAudit(settings.audit, key)


def signer(settings: RecordSettings):
    if settings.sign_key is None:
        return None
    from dvqa.trust.signature import Signer

    secret = _secret(settings.passphrase_env, "passphrase_env") if settings.passphrase_env else None
    return Signer.load(settings.sign_key, settings.sign_cert, secret)


def conversion_options(request: dict, settings: RecordSettings, recording_id: str, audit: AuditLog | None
                       ) -> ConvertOptions:
    return ConvertOptions(
        syntax=request.get("syntax") or settings.syntax, iod=request.get("iod") or settings.iod,
        uid_root=settings.uid_root, uid_seed=f"dvqa-serve-recording-{recording_id}", metadata=metadata_of(request),
        force=True, passthrough=settings.passthrough, quality=settings.quality, ssim=settings.ssim,
        profile=settings.profile, signer=signer(settings), signature_profile=settings.signature_profile,
        audit=audit)


def run(folder: str, settings: RecordSettings, spool_root: str, server_pid: int, remote: dict | None = None,
        warm: WarmTarget | None = None) -> None:
    """The process's work (see the module); writes result.json unless it was stopped. `remote`: the outcome of
    the conversion on a Dask cluster (dvqa.serve.remote), which this process completes instead of converting.
    `warm`: the server's gateway cache, prepared with a stored recording after the client has its result and
    before the file is removed (dvqa.serve.prewarm.warm_target says when)."""
    signals.install()  # SIGTERM/SIGINT: Interrupted, which the conversion records before it ends
    threading.Thread(target=_warm_up, daemon=True).start()
    recording = RecordingFolder(Path(folder))
    spool = Spool(Path(spool_root))
    try:
        with recording.locked():
            if recording.result() is not None:
                recording.clean()
                discard_stored(recording.result() or {}, spool, recording.id)  # a removal cut short
                return
            result, converted = ingest(recording, spool, settings, server_pid, remote)
            if converted is None:
                recording.finish(result)
                discard_stored(result, spool, recording.id)
                return
            # the client learns the outcome first; the stored file's removal and the quality reports follow (a
            # GET of a report waits for it)
            result["reports"] = {kind: "writing" for kind in REPORT_KINDS}
            recording.finish(result)
            if result.get("stored"):
                prewarm_stored(warm, spool.dicom / f"{recording.id}.dcm")
            discard_stored(result, spool, recording.id)
            result["reports"] = reports(recording, converted)
            recording.write_result(result)
    except KeyboardInterrupt:
        return  # stopped: the server says what that means (shutdown: resumed later; abandoned: recorded)


def _warm_up() -> None:
    """Load the DICOM edition's tables and the report's template while the recording is still arriving, so the
    IOD check and the report after the end do not pay for it."""
    try:
        from dvqa.core.resources import templates
        from dvqa.validate import standard

        standard.load(standard.default())
        templates().get_template("quality.html")
    except Exception:  # noqa: BLE001 - the check itself reports any problem
        pass


def ingest(recording: RecordingFolder, spool: Spool, settings: RecordSettings, server_pid: int,
           remote: dict | None = None) -> tuple[dict, ConversionResult | None]:
    """The result of converting, checking and storing one recording (`audit` in it names every record this
    appended to the server's chain), and the conversion when it ran here."""
    audit = audit_log(settings)
    result, converted = _ingest(recording, spool, settings, server_pid, audit, remote)
    result["audit"] = audit.named() if audit else []
    return result, converted


def _ingest(recording: RecordingFolder, spool: Spool, settings: RecordSettings, server_pid: int,
            audit: AuditLog | None, remote: dict | None) -> tuple[dict, ConversionResult | None]:
    started = time.time()
    output = spool.dicom / f"{recording.id}.dcm"
    converted = None
    try:
        if remote is None:
            options = conversion_options(recording.request(), settings, recording.id, audit)
            reader = Growing(ChunkFeed(recording, server_pid), f"recording {recording.id}")  # type: ignore[arg-type]
            converted = convert_live(reader, output, options)
            result, written = summary(converted), converted.written
        else:
            result, written = _converted_remotely(remote, output, settings, audit)
    except DvqaError as exc:
        return {"state": "failed", "stored": False, "reason": str(exc), "exit_code": int(exc.exit_code),
                "dicom": None, "started_at": started, "finished_at": time.time(), "end_to_ready_s": None}, None
    ready = time.time()
    end = recording.end() or {}
    result.update(started_at=started, ready_at=ready,
                  end_to_ready_s=round(ready - end["at"], 3) if "at" in end else None)
    if not written:
        result.update(state="failed", stored=False, dicom=None,
                      reason="the quality floors of the rules profile were not met; nothing was written")
        return result, converted
    result["validation"] = validation(output, converted)
    checked = time.time()
    result["after_ready_s"] = {"validation": round(checked - ready, 3)}
    if result["validation"]["errors"]:
        result.update(state="done", stored=False, dicom=str(output),
                      reason="the DICOM file fails the IOD check, so it was not sent; it is kept at the path given")
        return result, converted
    try:
        result.update(store(output, settings, spool, audit, _as_written(converted)))
    except DvqaError as exc:  # the PACS settings themselves (a TLS file gone since start-up), or the audit log
        result.update(stored=False, dicom=str(output), pacs=None,
                      reason=f"{exc} The DICOM file is kept at the path given: send it with `dvqa pacs store`.")
    result["after_ready_s"]["store"] = round(time.time() - checked, 3)
    result["end_to_stored_s"] = round(time.time() - end["at"], 3) if result["stored"] and "at" in end else None
    result["state"] = "done"
    if result["stored"] and not settings.keep_stored:
        result["dicom"] = None  # removed once the result is out (discard_stored)
    return result, converted


def discard_stored(result: dict, spool: Spool, recording_id: str) -> None:
    """Remove the DICOM file (and any fallback copy) of a recording the PACS stored when the result keeps none
    (record.keep_stored off) - after the result is written: unlinking 500 MB takes a noticeable time on some
    disks, which the client need not wait for."""
    if not result.get("stored") or result.get("dicom") is not None:
        return
    (spool.dicom / f"{recording_id}.dcm").unlink(missing_ok=True)
    for copy in spool.dicom.glob(f"{recording_id}.*.dcm"):  # a fallback copy the PACS took instead
        copy.unlink(missing_ok=True)


def _converted_remotely(remote: dict, output: Path, settings: RecordSettings, audit: AuditLog | None
                        ) -> tuple[dict, bool]:
    """The outcome of a conversion on the Dask cluster, completed here: the file signed (after this process has
    validated it) and the worker's audit records appended to the server's chain. (summary, written)."""
    from dvqa.convert.batch import sign_validated

    events = list(remote.get("events") or [])
    failure, code = remote.get("error"), remote.get("exit_code")
    if failure is None and remote["written"] and settings.sign_key is not None:
        try:
            signed = sign_validated(output, output, events[-1], signer(settings), settings.signature_profile)
            remote["result"]["signature"] = {"uid": signed["signature_uid"], "profile": settings.signature_profile}
        except DvqaError as exc:
            output.unlink(missing_ok=True)  # not signed: not kept to be sent either
            failure, code = str(exc), int(exc.exit_code)
            events[-1] = {**events[-1], "outcome": "failure", "exit_code": code, "message": failure}
    for event in events:
        if audit:
            audit.append({**event, "worker": remote.get("worker")})
    if failure is not None:
        raise DvqaError(f"{failure} (converted on the Dask cluster, {remote.get('worker')})", ExitCode(code))
    result = {**remote["result"], "converted_on": remote["worker"], "reports": remote["reports"]}
    return result, bool(remote["written"])


def summary(converted: ConversionResult) -> dict:
    """What the client is told about the conversion (no patient data: UIDs, numbers, reasons)."""
    r = converted.to_dict()
    quality = r["quality"]
    return {
        "syntax": r["plan"]["syntax"], "why": r["plan"]["reason"], "passthrough": r["passthrough"],
        "passthrough_refusal": r["plan"]["passthrough_refusal"] or None,
        "timing": r["timing"], "frames": r["output"]["frames"],
        "elementary_stream_sha256": r["elementary_stream_sha256"],
        "input": {"size": r["input"]["size"], "sha256": r["input"]["sha256"]},
        "quality": ({"ssim_definition": quality["ssim_definition"]["name"], "frames": quality["frames"],
                     **{f"{m}_{s}": quality["summary"][m][s] for m in ("psnr_y", "ssim_y") for s in ("mean", "min")}}
                    if quality else None),
        "uids": {"study": r["output"]["study_instance_uid"], "series": r["output"]["series_instance_uid"],
                 "instance": r["output"]["sop_instance_uid"], "sop_class": r["output"]["sop_class_uid"],
                 "transfer_syntax": r["output"]["transfer_syntax_uid"]},
        "signature": ({"uid": r["signature"].get("uid"), "profile": r["signature"].get("profile")}
                      if r["signature"] else None),
        "notes": r["notes"],
    }


def reports(recording: RecordingFolder, converted: ConversionResult) -> dict[str, str]:
    """The quality report of `dvqa convert --report`, as HTML and JSON, in the recording's folder (served by
    GET /recordings/{id}/quality.html and .json): kind -> "written" or why not. The patient's identifiers
    are left out of it: the client knows whom it recorded, and the DICOM file and the audit chain hold
    them. Its thumbnails of the worst frames are pictures of the patient all the same (the spool is
    private). A report that cannot be written does not fail the recording."""
    from dvqa.quality import reports as quality_reports

    record = converted.to_dict(mapping=True)
    record["output"] = {k: v for k, v in record["output"].items() if k != "patient"}  # type: ignore[union-attr]
    written = {}
    for kind in REPORT_KINDS:
        try:
            quality_reports.write(recording.report_path(kind), record, converted.quality)
            written[kind] = "written"
        except (OSError, DvqaError) as exc:
            written[kind] = f"not written: {exc}"
    return written


def _as_written(converted: ConversionResult | None) -> tuple[int, str] | None:
    """(size, SHA-256) of the file the conversion in this process placed, when nothing has changed it since it
    was hashed (dvqa.convert.package hashes it last, after any signature); None when converted elsewhere."""
    if converted is None or not converted.output_sha256:
        return None
    return converted.output_size, converted.output_sha256


def validation(path: Path, converted: ConversionResult | None = None) -> dict:
    """The verdict of `dvqa validate` on the file (all its layers; no rules profile).

    The stream layer reads the whole file again (a second or more for 10 minutes of 1080p): when the conversion
    in this process wrote the file, it ran that very check (dvqa.validate.streamcheck) on these bytes before
    placing them, and the file is not read again - unless it was signed after that check (the signature
    rewrites the file) or its size is not the one written. The other layers read the data set as stored."""
    from dvqa.core.findings import Finding
    from dvqa.validate.run import check_file

    stream = None
    if converted is not None and converted.signature is None and path.stat().st_size == converted.output_size:
        stream = [Finding(Severity(f["severity"]), f["code"], f["message"], f["file"], f["where"], f["reference"])
                  for f in converted.validation]
    checked = check_file(path, stream=stream)
    errors = [f for f in checked.findings if f.severity == Severity.ERROR]
    warnings = [f for f in checked.findings if f.severity == Severity.WARNING]
    return {"verdict": "fail" if errors else "pass", "errors": len(errors), "warnings": len(warnings),
            "layers": checked.layers, "first_errors": [f"{f.code}: {f.message}" for f in errors[:5]]}


def store(path: Path, settings: RecordSettings, spool: Spool, audit: AuditLog | None,
          written: tuple[int, str] | None = None) -> dict:
    """Send the file to the configured PACS and record each answer in the audit chain (`written`: the file's
    size and SHA-256 as the conversion made them, for the record of the send; see _as_written)."""
    target = settings.pacs
    if target is None:
        return {"stored": False, "dicom": str(path), "pacs": None,
                "reason": "no PACS is configured (record.pacs); the DICOM file is kept at the path given"}
    from dvqa.pacs import network as pacs

    results = _send(pacs, target, path, spool.dicom)
    protocol = "STOW-RS" if target.stow else "DIMSE C-STORE"
    for r in results:
        if audit:
            audit.append(pacs.send_event(r, target.describe, protocol, known=written if r.path == str(path) else None))
    first = results[0]
    answer = {"destination": target.describe, "protocol": protocol, "outcome": first.outcome,
              "status": first.status, "message": first.message, "attempts": first.attempts,
              "history": first.history, "fallback": first.fallback}
    stored = first.delivered
    return {"stored": stored, "dicom": str(path), "pacs": answer,
            "reason": None if stored else (f"the PACS did not store it ({first.outcome}: {first.message}); the DICOM "
                                           "file is kept at the path given: send it later with `dvqa pacs store`")}


def _send(pacs, target: PacsTarget, path: Path, folder: Path):
    tls = pacs.Tls(target.tls_ca, target.tls_cert, target.tls_key) if (
        target.tls_ca or target.tls_cert) else None
    if target.stow:
        return pacs.stow(target.stow, [path], target.retries, tls=tls, timeout=target.timeout)
    peer = pacs.Peer(target.host, int(target.port or 0), target.called_aet, target.calling_aet, target.timeout, tls)
    if target.fallback:
        return pacs.store_with_fallback(peer, [path], target.fallback, folder, target.retries)
    return pacs.store(peer, [path], target.retries)
