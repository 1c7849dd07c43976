"""`dvqa convert`, `dvqa quality` and `dvqa syntaxes`: the commands that make and measure video.

Loaded only when one of them runs (dvqa.cli.main.COMMANDS); FFmpeg, NumPy and the signer are imported
inside the commands that use them, so that `dvqa syntaxes` stays quick.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from dvqa.cli import options
from dvqa.cli.common import audit_log, fail, guarded, passphrase, refuse_same_files, same_file
from dvqa.core import outputs, profiles, signals
from dvqa.core.errors import DvqaError, ExitCode, InputError, UsageError
from dvqa.core.findings import exit_code
from dvqa.convert.pipeline import ConvertOptions, convert, record_failure
from dvqa.dicom import syntaxes
from dvqa.dicom.iod import Metadata
from dvqa.quality import reports
from dvqa.quality.metrics import SSIM_DEFINITIONS
from dvqa.quality.recheck import measure_files
from dvqa.trust.signature import Signer


def register(main: click.Group) -> None:
    main.add_command(convert_command)
    main.add_command(quality_command)
    main.add_command(syntaxes_command)


@click.command("convert", cls=options.Command)
@click.argument("source", type=click.Path(path_type=Path))
@options.output("DICOM file to write.", required=True)
@click.option("--follow", is_flag=True,
              help="SOURCE is still being written (a recorder or upload appending chunks): convert as it grows; "
                   "it ends when SOURCE.done appears or after --idle seconds without growth. SOURCE renamed over, "
                   "deleted, truncated or rewritten meanwhile ends it with exit 3, nothing written. SOURCE - reads "
                   "stdin (and a FIFO: - < FIFO).")
@click.option("--keep-partial", is_flag=True,
              help="With --follow or -: a stream that stops in the middle of a chunk (the recorder crashed), or a "
                   "followed file renamed over, deleted or truncated, is converted as far as it arrived whole, marked "
                   "partial in the report and the audit record.")
@click.option("--idle", "idle_s", default=30.0, show_default=True, type=click.FloatRange(0.1, 86400),
              help="With --follow: seconds without growth that end the stream (SOURCE.done ends it at once).")
@options.syntax_choice(auto=True, help="Transfer syntax to write (`dvqa syntaxes`); auto picks the most widely "
                       "supported one that keeps the source's size and rate.")
@options.conversion
@options.patient_study
@click.option("--metadata-json", type=options.InputPath(dir_okay=False),
              help="Patient/study attributes as DICOM JSON (PS3.18 F.2).")
@click.option("--metadata-from", type=options.InputPath(dir_okay=False),
              help="Copy patient/study attributes from this DICOM file (e.g. a worklist result).")
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
@options.signing
@click.option("--report", "report_paths", multiple=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Write the full record here: .json (per-frame arrays, timing map) or .html (plots, "
                   "worst frames). Repeatable.")
@options.audit
@options.output_format("text", "json")
@options.debug
def convert_command(source: Path, output: Path, follow: bool, keep_partial: bool, idle_s: float, syntax: str,
                    rate, iod_name: str, uid_root: str | None,
                    patient_study: dict[str, tuple[str, str | None]], metadata_json: Path | None,
                    metadata_from: Path | None, source_range: str, no_passthrough: bool, force: bool,
                    ssim: str, no_quality: bool, profile: str | None, keep_failed: bool,
                    sign_key: Path | None, sign_cert: Path | None, signature_profile: str, passphrase_env: str | None,
                    report_paths: tuple[Path, ...], audit_path: Path | None, audit_key_env: str | None,
                    fmt: str, debug: bool) -> None:
    """Convert a browser recording (WebM, Matroska, MP4) to a DICOM video object."""
    written = [("-o", output), *(("--report", path) for path in report_paths)]
    read = [("SOURCE", source), ("--metadata-json", metadata_json), ("--metadata-from", metadata_from),
            ("--sign", sign_key), ("--cert", sign_cert)]
    clash = _clash([*written, ("--audit", audit_path)], read)
    if clash is not None and same_file(audit_path, [path for _, path in written + read]):
        fail(clash, debug)  # the audit log is itself one of the two: nothing is appended to (or opened as) it
    audit = audit_log(audit_path, audit_key_env, debug)
    try:
        if clash is not None:
            raise clash
        options = _convert_options(
            audit, metadata_from, metadata_json,
            patient_study,
            report_paths, sign_key, sign_cert, passphrase_env,
            syntax=syntax, rate=rate, iod=iod_name, uid_root=uid_root, force=force, passthrough=not no_passthrough,
            source_range=source_range, quality=not no_quality, ssim=ssim, profile=profile,
            keep_failed=keep_failed, signature_profile=signature_profile, keep_partial=keep_partial)
    except DvqaError as exc:  # before any work: still one audit record for the attempt
        failure = exc
        guarded(debug, lambda: record_failure(ConvertOptions(audit=audit), source, output,
                                              int(failure.exit_code), str(failure)))
        fail(failure, debug)
        return
    result = None
    try:
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
            if keep_partial and not (follow or str(source) == "-"):
                raise UsageError("--keep-partial is for a stream read while it arrives (--follow or -); a finished "
                                 "file that is cut short has no part to trust.")
            if follow or str(source) == "-":
                result = _convert_live(source, output, options, idle_s)
            else:
                result = convert(source, output, options, progress=progress, on_plan=on_plan)
        finally:
            if bar is not None:
                bar.__exit__(None, None, None)
        record = result.to_dict()
    except DvqaError as exc:
        fail(exc, debug)
        return
    except KeyboardInterrupt as exc:
        done = getattr(exc, "result", None) or result  # convert may have returned just before the signal
        name = getattr(exc, "name", "SIGINT")
        if done is not None:
            click.echo(f"dvqa: interrupted ({name}) after the conversion finished: {output} was "
                       f"{'written' if done.written else 'not written (quality floors not met)'}"
                       + (", as the audit log records" if audit else "") + "; no report was written.", err=True)
        else:
            click.echo(f"dvqa: interrupted ({name}); nothing was written"
                       + (", and the audit log records the attempt." if audit else "."), err=True)
        sys.exit(signals.exit_code_of(exc))
    except Exception as exc:  # a dvqa bug or an unforeseen environment failure (recorded by convert)
        if debug:
            raise
        click.echo(f"dvqa: internal error: {type(exc).__name__}: {exc}; nothing was written - "
                   "rerun with --debug and report it.", err=True)
        sys.exit(int(ExitCode.ENVIRONMENT))
    try:  # the DICOM is in place (or, floors failed, deliberately not): every message from here says which
        _report_and_print(result, record, report_paths, fmt, debug)
    except KeyboardInterrupt as exc:
        click.echo(f"dvqa: interrupted ({getattr(exc, 'name', 'SIGINT')}) after the conversion finished: {output} was "
                   f"{'written' if result.written else 'not written'}; a report being written was not left behind.",
                   err=True)
        sys.exit(signals.exit_code_of(exc))
    sys.exit(int(result.exit_code))


def _clash(written: list[tuple[str, Path | None]], read: list[tuple[str, Path | None]]) -> UsageError | None:
    """The refusal of two roles that are one file (see common.refuse_same_files), or None."""
    try:
        refuse_same_files(written, read)
    except UsageError as exc:
        return exc
    return None


def _convert_live(source: Path, output: Path, options: ConvertOptions, idle_s: float):
    """The recording converted while it arrives (dvqa.convert.live): from stdin for -, else a growing file."""
    from dvqa.convert.live import convert_live
    from dvqa.video.growing import Growing

    if str(source) == "-":
        return convert_live(Growing.stdin(), output, options)
    return convert_live(Growing.follow_file(source, idle_s), output, options)


def _report_and_print(result, record: dict, report_paths: tuple[Path, ...], fmt: str, debug: bool) -> None:
    try:
        for path in report_paths:
            reports.write(path, result.to_dict(mapping=True), result.quality)
    except Exception as exc:  # the DICOM is already in place: say so, do not claim otherwise
        if debug:
            raise
        written = "written to " + str(result.output) if result.written else "not written"
        problem = outputs.environment_error(exc) if isinstance(exc, OSError) else None
        reason = str(problem) if problem else f"{type(exc).__name__}: {exc}; rerun with --debug and report it"
        click.echo(f"dvqa: error: the conversion finished ({written}) but a report failed: {reason}", err=True)
        sys.exit(int(ExitCode.ENVIRONMENT))
    if fmt == "json":
        click.echo(json.dumps(record, indent=2))
    else:
        _print_text(record)


def _convert_options(audit, metadata_from: Path | None, metadata_json: Path | None,
                     given: dict[str, tuple[str, str | None]], report_paths: tuple[Path, ...],
                     sign_key: Path | None, sign_cert: Path | None, passphrase_env: str | None,
                     **settings) -> ConvertOptions:
    """Everything checked before the work starts: metadata (each value against its VR), report names, key."""
    metadata = Metadata()
    if metadata_from:
        metadata.merge(Metadata.from_dicom_file(metadata_from))
    if metadata_json:
        metadata.merge(Metadata.from_json_file(metadata_json))
    for keyword, (option, value) in given.items():
        if value is not None:
            metadata.set(keyword, value, option)
    metadata.check()
    for path in report_paths:
        reports.kind_of(path)  # a bad report name fails before the work, not after
    signer = Signer.load(sign_key, sign_cert, passphrase(passphrase_env)) if sign_key else None
    return ConvertOptions(metadata=metadata, signer=signer, audit=audit, **settings)


def _print_text(r: dict) -> None:
    i, o, p, t = r["input"], r["output"], r["plan"], r["timing"]
    click.echo(f"input    {i['path']}: {i['codec']} {i['width']}x{i['height']} in {i['container']}, "
               f"{t['source_frames']} frames over {t['source_duration_s']:.3f} s")
    click.echo(f"syntax   {p['title']} ({p['uid']})")
    click.echo(f"why      {p['reason']}")
    click.echo(f"rate     {p['rate_reason']}")
    click.echo(f"stream   {reports.stream_text(r)}"
               + (f"; sha256 {r['elementary_stream_sha256']}" if r["passthrough"] else ""))
    plural = reports.plural
    click.echo(f"timing   {plural(t['output_frames'], 'frame')} at {t['rate_fps']:g} fps = "
               f"{t['output_duration_s']:.3f} s (source {t['source_duration_s']:.3f} s, "
               f"{t['output_minus_source_ms']:+.0f} ms); {t['kept_source_frames']} of "
               f"{plural(t['source_frames'], 'captured frame')} kept, {len(t['duplicated_output_frames'])} duplicated; "
               f"worst shift {t['worst_shift_ms']:.0f} ms, worst on-screen error "
               f"{t['worst_on_screen_error_frames']:g} frame interval")
    if t["dropped_source_frames"]:
        dropped = t["dropped_source_frames"]
        click.echo(f"dropped  source {'frame' if len(dropped) == 1 else 'frames'} "
                   f"{', '.join(map(str, dropped))}: {t['drop_reason']}")
    for line in r["notes"]:  # what was found, then what was done about it
        click.echo(f"note     {line}")
    if not r["passthrough"]:  # a passthrough changes nothing: the stream line says so
        for line in r["transforms"]:
            click.echo(f"picture  {line}")
    if r["quality"]:
        _print_quality(r["quality"])
    else:
        click.echo("quality  not measured (--no-quality)")
    for f in r["findings"]:
        click.echo(f"{f['severity']:<8} {f['code']}: {f['message']} [{f['reference']}]")
    if r["profile"] and not r["findings"]:
        floors = len(r['profile']['quality_floors'])
        click.echo(f"profile  {r['profile']['name']}: " + ("the quality floor met" if floors == 1
                                                          else f"all {floors} quality floors met" if floors
                                                          else "no quality floor to meet"))
    if r["signature"]:
        sig = r["signature"]
        click.echo(f"signed   signature {sig['uid']} ({sig['algorithm']}, {sig['profile']} profile)")
    if r["written"]:
        click.echo(f"output   {o['path']}: {o['iod']}, {o['columns']}x{o['rows']}, {o['size']} bytes; "
                   f"took {r['elapsed_s']:.2f} s")
    else:
        click.echo(f"output   not written: the {r['profile']['name']} profile's floors are not met "
                   "(--keep-failed writes it anyway)")


def _print_quality(q: dict) -> None:
    s, n = q["summary"], reports.number
    if reports.bit_exact(q):
        click.echo(f"quality  bit-exact: each of the {reports.plural(q['frames'], 'frame')} decoded from the file "
                   "written is identical to the source frame it shows (PSNR ∞, SSIM 1)")
        return
    click.echo(f"quality  PSNR-Y mean {n(s['psnr_y']['mean'], 2)} dB, min {n(s['psnr_y']['min'], 2)} dB; "
               f"PSNR mean {n(s['psnr']['mean'], 2)} dB; SSIM ({q['ssim_definition']['name']}) mean "
               f"{n(s['ssim_y']['mean'], 4)}, min {n(s['ssim_y']['min'], 4)} over {reports.plural(q['frames'], 'frame')} "
               "(per frame: --report FILE.json or .html)")


@click.command("quality", cls=options.Command)
@click.argument("reference", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("distorted", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--ssim", default="fast", show_default=True, type=click.Choice(list(SSIM_DEFINITIONS)),
              help="SSIM definition: fast (x264/FFmpeg, real time) or reference (Wang et al. 2004); use the "
                   "one the conversion used to reproduce its numbers.")
@click.option("--source-range", default="auto", show_default=True, type=click.Choice(["auto", "full", "limited"]),
              help="Colour range of REFERENCE when its stream does not declare it.")
@options.rules_profile("Quality floors to check (exit 1 when one is not met)")
@click.option("--report", "report_paths", multiple=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Write the record here: .json or .html. Repeatable.")
@options.output_format("text", "json")
@options.debug
def quality_command(reference: Path, distorted: Path, ssim: str, source_range: str, profile: str | None,
                    report_paths: tuple[Path, ...], fmt: str, debug: bool) -> None:
    """Measure DISTORTED (a DICOM video or a video file) against REFERENCE, frame by frame."""
    def work():
        refuse_same_files([("--report", path) for path in report_paths],
                          [("REFERENCE", reference), ("DISTORTED", distorted)])
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
        return record, findings

    record, findings = guarded(debug, work)
    if fmt == "json":
        brief = dict(record)
        brief["quality"] = {k: v for k, v in record["quality"].items() if k != "per_frame"}
        click.echo(json.dumps(brief, indent=2))
    else:
        for line in record["notes"]:
            click.echo(f"note     {line}")
        for line in record["transforms"]:
            click.echo(f"picture  {line}")
        _print_quality(record["quality"])
        for f in record["findings"]:
            click.echo(f"{f['severity']:<8} {f['code']}: {f['message']} [{f['reference']}]")
    sys.exit(int(exit_code(findings)))


@click.command("syntaxes", cls=options.Command)
@options.output_format("text", "json")
@options.debug
def syntaxes_command(fmt: str, debug: bool) -> None:
    """List the video transfer syntaxes dvqa knows, from its one table (writes: those it converts to)."""
    writable = syntaxes.writable_names()
    rows = [{"name": s.name, "uid": s.uid, "title": s.title, "codec": s.codec,
             "fragmentable_uid": s.fragmentable_uid, "written": s.name in writable} for s in syntaxes.SYNTAXES]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(f"{row['name']:<15} {row['uid']:<26} {row['title']}"
                   + ("" if row["written"] else " (validated, not written: 10-bit)"))
