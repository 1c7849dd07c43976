"""`dvqa report`: documents generated from what the installed dvqa does and links."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from dvqa.cli import options
from dvqa.cli.common import guarded, refuse_same_files
from dvqa.core import outputs
from dvqa.core.errors import ExitCode, InputError, UsageError

SUFFIX_FORMATS = {".json": "json", ".md": "markdown", ".html": "html", ".pdf": "pdf"}


def _output_kind(output: Path | None) -> str | None:
    """The format -o's suffix names (checked before any work), or None without -o."""
    if output is None:
        return None
    if output.suffix.lower() not in SUFFIX_FORMATS:
        raise UsageError(f"-o {output}: name it .json, .md, .html or .pdf to choose the format.")
    outputs.require_folder(output.parent)
    return SUFFIX_FORMATS[output.suffix.lower()]


def _renderers(record: dict, markdown, html) -> dict:
    """Each format of one report, rendered only when asked for; the PDF is the HTML, printed."""
    from dvqa.report import documents

    return {"json": lambda: json.dumps(record, indent=2) + "\n", "markdown": lambda: markdown(record),
            "html": lambda: html(record), "pdf": lambda: documents.pdf(html(record))}


def register(main: click.Group) -> None:
    main.add_command(report_group)


@click.group("report", cls=options.Group)
def report_group() -> None:
    """Reports for a regulator or a hospital's IT: the DICOM Conformance Statement, FFmpeg and dependency
    licenses."""


@report_group.command("licenses")
@options.output("Write the report here: .json, .md, .html or .pdf (the format follows the suffix).")
@options.output_format("text", "json", "markdown")
@click.option("--ffmpeg", "program", type=click.Path(path_type=Path), default=None,
              help="Assess this ffmpeg program (its -buildconf, -L and ldd) instead of the FFmpeg bundled in "
                   "the installed av wheel.")
@click.option("--sbom", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also write a CycloneDX 1.6 JSON SBOM here, the av wheel's native libraries as components.")
@click.option("--fail-on", default="nonfree", show_default=True, type=click.Choice(["gpl", "nonfree", "never"]),
              help="Exit 1 when the effective license is GPL (or stricter), not redistributable, or never.")
@click.option("--expect", "baseline", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="A JSON report saved from the installation that was validated: exit 1 if any library's "
                   "SHA-256, any package version, dvqa's or FFmpeg's version or configuration differ here.")
@options.debug
def licenses_command(output: Path | None, fmt: str, program: Path | None, sbom: Path | None, fail_on: str,
                     baseline: Path | None, debug: bool) -> None:
    """Under which terms dvqa's FFmpeg may be distributed, decided from the libraries it really links;
    the LGPL checklist for this build; every Python package's license."""
    from dvqa.report import documents, licenses, markdown, native
    from dvqa.report import sbom as cyclonedx

    def work():
        refuse_same_files([("-o", output), ("--sbom", sbom)], [("--expect", baseline), ("--ffmpeg", program)])
        kind = _output_kind(output)
        expected = _baseline(baseline) if baseline else None
        build = native.external(program) if program else native.bundled()
        record = licenses.report(build)
        rendered = _renderers(record, markdown.licenses, documents.licenses_html)
        if output:
            outputs.write_atomic(output, rendered[kind]())
        if sbom:
            outputs.write_atomic(sbom, cyclonedx.bom(record))
        return record, rendered, licenses.drift(record, expected) if expected else []

    record, rendered, changes = guarded(debug, work)
    f = record["ffmpeg"]
    if fmt == "text":
        click.echo(f"ffmpeg   {f['version']}: {f['origin']}")
        click.echo(f"verdict  {f['verdict']}" + ("" if f["redistributable"] else " (not redistributable)")
                   + f"; FFmpeg says of itself {f['ffmpeg_says']!r}")
        for reason in f["reasons"]:
            click.echo(f"why      {reason}")
        for disagreement in f["disagreements"]:
            click.echo(f"warning  {disagreement}")
        for item in f["checklist"]:
            if item["status"] in ("met", "not met"):
                click.echo(f"{item['status']:<8} checklist {item['number']}: {item['item']} - {item['finding']}")
        click.echo(f"python   {len(record['python_packages'])} packages; "
                   f"{sum(1 for p in record['python_packages'] if p['license'] == 'NOASSERTION')} without license "
                   "metadata" + (f"; report written to {output}" if output else ""))
    else:
        click.echo(rendered[fmt](), nl=False)
    if baseline:  # on stderr, so --format json stays one document
        for change in changes:
            click.echo(f"changed  {change}", err=True)
        plural = "s" if len(changes) != 1 else ""
        verdict = (f"{len(changes)} difference{plural}, this is not the validated installation" if changes
                   else "this installation is the one validated")
        click.echo(f"baseline {baseline}: {verdict}", err=True)
    gpl = f["verdict"].startswith("GPL") or not f["redistributable"]
    failed = (fail_on == "gpl" and gpl) or (fail_on == "nonfree" and not f["redistributable"]) or bool(changes)
    sys.exit(int(ExitCode.CHECK_FAILED if failed else ExitCode.OK))


def _baseline(path: Path) -> dict:
    """A saved `dvqa report licenses --format json` (or -o .json) report, or a one-sentence input error."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        record["ffmpeg"]["libraries"], record["python_packages"], record["dvqa_version"]  # noqa: B018
        return record
    except FileNotFoundError:
        raise InputError(f"--expect {path}: no such file; save one with "
                         "'dvqa report licenses -o baseline.json' on the validated installation.") from None
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise InputError(f"--expect {path}: not a JSON report of 'dvqa report licenses'; save one with "
                         "'dvqa report licenses -o baseline.json' on the validated installation.") from None


@report_group.command("conformance")
@options.output("Write the statement here: .json, .md, .html or .pdf (the format follows the suffix).")
@options.output_format("markdown", "json")
@options.debug
def conformance_command(output: Path | None, fmt: str, debug: bool) -> None:
    """A DICOM Conformance Statement (PS3.2's layout) generated from the installed dvqa: network
    services, presentation contexts, configuration, dvqa serve's DICOMweb gateway and recording API,
    security, and the IOD contents it writes."""
    from dvqa.report import conformance, documents, markdown
    from dvqa.serve.conformance import sections

    def work():
        kind = _output_kind(output)
        rendered = _renderers(conformance.statement(sections()), markdown.document, documents.document_html)
        if output:
            outputs.write_atomic(output, rendered[kind]())
        return rendered

    rendered = guarded(debug, work)
    if output:
        click.echo(f"written  {output}")
    else:
        click.echo(rendered[fmt](), nl=False)


@report_group.command("traceability")
@options.output("Write the matrix here: .json, .md, .html or .pdf (the format follows the suffix).")
@options.output_format("text", "json", "markdown")
@click.option("--junit", "junit", multiple=True, required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="JUnit XML of a test run (pytest --junitxml); repeatable.")
@click.option("--requirements", "requirements_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="The requirements file (default: docs/regulatory/requirements.yaml of this installation).")
@options.debug
def traceability_command(output: Path | None, fmt: str, junit: tuple[Path, ...], requirements_path: Path | None,
                         debug: bool) -> None:
    """Which of dvqa's requirements a real test run verified: requirement -> tests -> result. Exit 1
    when any requirement failed or has no passing test in the run."""
    from dvqa.report import documents, markdown, traceability

    def work():
        refuse_same_files([("-o", output)], [("--requirements", requirements_path),
                                             *(("--junit", file) for file in junit)])
        kind = _output_kind(output)
        path = requirements_path or traceability.default_requirements()
        requirements = traceability.load_requirements(path)
        results = [result for file in junit for result in traceability.load_junit(file)]
        record = traceability.matrix(requirements, results, list(junit), path)
        rendered = _renderers(record, lambda r: markdown.document(traceability.document(r)),
                              lambda r: documents.document_html(traceability.document(r)))
        if output:
            outputs.write_atomic(output, rendered[kind]())
        return record, rendered

    record, rendered = guarded(debug, work)
    if fmt == "text":
        for row in record["rows"]:
            passed = sum(1 for t in row["tests"] if t["outcome"] == "passed")
            click.echo(f"{row['status']:<10} {row['id']:<14} {passed}/{len(row['tests'])} tests passed  {row['title']}")
        for unknown in record["unknown_requirements"]:
            click.echo(f"warning    tests name {unknown}, which is not in the requirements file")
        s = record["summary"]
        click.echo(f"summary    {s['verified']} verified, {s['failed']} failed, {s['unverified']} unverified "
                   f"of {len(record['rows'])} requirements; {record['tests_run']} test cases"
                   + (f"; matrix written to {output}" if output else ""))
    else:
        click.echo(rendered[fmt](), nl=False)
    ok = record["summary"]["failed"] == 0 and record["summary"]["unverified"] == 0
    sys.exit(int(ExitCode.OK if ok else ExitCode.CHECK_FAILED))
