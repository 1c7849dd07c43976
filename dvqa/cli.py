"""The `dvqa` command: a thin Click layer over the library. No decisions are made here."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from dvqa import __version__, syntaxes
from dvqa.convert import ConvertOptions, convert
from dvqa.errors import DvqaError, ExitCode
from dvqa.iod import Metadata, VideoIOD


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
@click.option("--report", "report_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Write the full JSON record (with the timestamp mapping) here.")
@click.option("--format", "fmt", default="text", show_default=True, type=click.Choice(["text", "json"]))
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def convert_command(source: Path, output: Path, syntax: str, iod_name: str, uid_root: str | None,
                    patient_name: str | None, patient_id: str | None, patient_birth_date: str | None,
                    patient_sex: str | None, accession_number: str | None, study_uid: str | None,
                    study_description: str | None, metadata_json: Path | None,
                    metadata_from: Path | None, source_range: str, no_passthrough: bool, force: bool,
                    report_path: Path | None, fmt: str, debug: bool) -> None:
    """Convert a browser recording (WebM, Matroska, MP4) to a DICOM video object."""
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
        options = ConvertOptions(syntax=syntax, iod=iod_name, uid_root=uid_root, metadata=metadata,
                                 force=force, passthrough=not no_passthrough, source_range=source_range)
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
        if report_path:
            report_path.write_text(json.dumps(result.to_dict(mapping=True), indent=2) + "\n")
    except DvqaError as exc:
        _fail(exc, debug)
        return
    except KeyboardInterrupt:
        click.echo("dvqa: interrupted; nothing was written.", err=True)
        sys.exit(130)
    except Exception as exc:  # a dvqa bug or an unforeseen environment failure
        if debug:
            raise
        click.echo(f"dvqa: internal error: {type(exc).__name__}: {exc}; nothing was written - "
                   "rerun with --debug and report it.", err=True)
        sys.exit(int(ExitCode.ENVIRONMENT))
    if fmt == "json":
        click.echo(json.dumps(record, indent=2))
        return
    _print_text(record)


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
    click.echo(f"output   {o['path']}: {o['iod']}, {o['columns']}x{o['rows']}, {o['size']} bytes, "
               f"{r['elapsed_s']:.2f} s")


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
