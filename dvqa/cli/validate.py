"""`dvqa validate` and `dvqa rules`: checks on anyone's DICOM video, and the rules behind them."""

from __future__ import annotations

from dvqa.core import deferred

deferred.defer(deferred.PYDICOM_IMPORTS)  # before pydicom is imported: validate on most files never uses them

import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

import click  # noqa: E402

from dvqa.cli import options  # noqa: E402
from dvqa.cli.common import fail, guarded, warn  # noqa: E402
from dvqa.core import outputs  # noqa: E402
from dvqa.core.errors import UsageError  # noqa: E402
from dvqa.core.findings import Severity, exit_code  # noqa: E402
from dvqa.validate import standard  # noqa: E402
from dvqa.validate.formats import RENDERERS, SUFFIX_FORMATS, at_least, text  # noqa: E402
from dvqa.validate.run import validate, walk  # noqa: E402

if TYPE_CHECKING:
    from dvqa.core.cluster import Cluster


def _profiles():
    """dvqa.core.profiles, imported when a profile is used: it loads YAML, which a plain validate never reads."""
    from dvqa.core import profiles

    return profiles


def register(main: click.Group) -> None:
    main.add_command(validate_command)
    main.add_command(rules_group)
    main.add_command(standard_group)
    main.add_command(profiles_command)


@click.command("profiles", cls=options.Command, hidden=True)
@options.output_format("text", "json")
@options.debug
@click.pass_context
def profiles_command(ctx: click.Context, fmt: str, debug: bool) -> None:
    """Old name of `dvqa rules list`."""
    warn(f"`dvqa profiles` is now `dvqa rules list`; the old name is accepted until {options.RENAMED_UNTIL}.")
    ctx.invoke(rules_list_command, fmt=fmt, debug=debug)


@click.command("validate", cls=options.Command)
@click.argument("targets", nargs=-1, required=True, type=options.InputPath())
@options.rules_profile("Per-modality rules to apply")
@options.output_format(*RENDERERS)
@click.option("--fail-on", default="error", show_default=True, type=click.Choice(["error", "warning"]),
              help="Exit 1 when any finding is at least this severe.")
@options.jobs()
@options.scheduler("Run the checks as tasks on a Dask cluster, with the same report")
@click.option("--include-hidden", is_flag=True, help="Also check files and folders whose names start with a dot.")
@click.option("--include", multiple=True, metavar="GLOB",
              help="In folders, check only files whose name (or path below the folder) matches; repeatable.")
@click.option("--exclude", multiple=True, metavar="GLOB",
              help="In folders, skip files whose name (or path below the folder) matches; repeatable.")
@click.option("-o", "--output", "output", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also write the report to this file, in the format its suffix names: .txt, .json, .xml (JUnit), "
                   ".sarif.")
@click.option("--min-severity", default="info", show_default=True, type=click.Choice(["info", "warning", "error"]),
              help="Report only findings at least this severe (the exit code still counts every finding).")
@click.option("--verbose", is_flag=True, help="Text: one line per info finding instead of one per check.")
@click.option("--standard", "standard_name", default=None, metavar="EDITION|PATH",
              help="DICOM edition for the IOD layer (default: the bundled one, or the DVQA_STANDARD setting; "
                   "`dvqa standard` lists them).")
@click.option("--explain", "explain_tag", default=None, metavar="TAG",
              help="Instead of the report: for one attribute (a keyword or (gggg,eeee)), where each file's IOD "
                   "defines it, its condition in the standard's words, the values read to evaluate it, and the "
                   "findings on it (text or json).")
@options.debug
def validate_command(targets: tuple[Path, ...], profile: str | None, fmt: str, fail_on: str, jobs: int,
                     scheduler: Cluster | None, include_hidden: bool, include: tuple[str, ...], exclude: tuple[str, ...],
                     output: Path | None, min_severity: str, verbose: bool, standard_name: str | None,
                     explain_tag: str | None, debug: bool) -> None:
    """Check DICOM FILES and every file below DIRS: the file, its values, the IOD against the DICOM
    standard, the video stream against the header, and a profile's rules; --explain TAG says why.

    A file named here is always checked. In folders, files that are clearly not DICOM (a report,
    log or media suffix and no DICM marker) are skipped and listed, as are --exclude matches.

    --explain TAG (PlanarConfiguration, or (0028,0006)) prints, for each file, every module of its IOD
    that defines the attribute, the module's usage, the attribute's Type, its condition as PS3.3 words
    it, each value read to evaluate the condition and the outcome, then the file's findings on the
    attribute. The exit code is the check's."""
    explained = guarded(debug, lambda: _explained_tag(explain_tag, fmt, output)) if explain_tag else None
    written_format = guarded(debug, lambda: _output_format(output, targets)) if output else None
    chosen = guarded(debug, lambda: _profiles().load(profile)) if profile else None
    # a missing, changed or broken edition fails here, not per file; the edition passed on carries the hash of
    # the tables read, which every worker checks again and every output prints
    tables = guarded(debug, lambda: standard.load(standard.find(standard_name)))
    edition = tables.edition
    severity = Severity(fail_on)
    files = list(walk(targets, include_hidden, include, exclude))
    if not files:
        fail(UsageError(f"no files under {', '.join(map(str, targets))}."), debug)
    bar = None
    if sys.stderr.isatty() and fmt == "text" and len(files) > 20:
        bar = click.progressbar(length=len(files), label="validating", file=sys.stderr)
        bar.__enter__()
    try:
        def run():
            if scheduler:
                from dvqa.validate.cluster import validate_on

                return validate_on(scheduler, files, chosen, edition, bar.update if bar else None)
            return validate(files, chosen, jobs, bar.update if bar else None, edition)

        results = guarded(debug, run)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    code = exit_code([f for r in results for f in r.findings], severity)
    if explained is not None:
        click.echo(guarded(debug, lambda: _explanation(explained, results, tables, fmt)))
        sys.exit(int(code))
    shown = at_least(results, Severity(min_severity))

    def render(name: str) -> str:
        return text(shown, severity, edition, verbose) if name == "text" else RENDERERS[name](shown, severity, edition)

    if output is not None:
        guarded(debug, lambda: outputs.write_atomic(output, render(written_format) + "\n"))
    click.echo(render(fmt))
    sys.exit(int(code))


def _explained_tag(text: str, fmt: str, output: Path | None) -> int:
    """--explain's attribute, checked before any work, with the options it goes with."""
    from dvqa.validate import explain

    if fmt not in ("text", "json") or output is not None:
        raise UsageError("--explain prints text or JSON (--format text|json) and writes no -o report; run the "
                         "check without --explain for those.")
    return explain.parse_tag(text)


def _explanation(tag: int, results: list, tables: standard.Tables, fmt: str) -> str:
    from dvqa.validate import explain

    entries = [explain.explain(r.path, tag, tables, r.findings) for r in results if r.layers.get("file") == "ran"]
    if fmt == "json":
        return json.dumps({"standard": tables.edition.describe(), "explain": entries}, indent=2)
    return "\n\n".join(explain.text(entry) for entry in entries) or "no file was read"


def _output_format(output: Path, targets: tuple[Path, ...]) -> str:
    """The format -o's suffix names, checked before any work; -o must not be one of the files checked."""
    if output.suffix.lower() not in SUFFIX_FORMATS:
        raise UsageError(f"-o {output}: name it .txt, .json, .xml (JUnit) or .sarif to choose the format.")
    outputs.require_folder(output.parent)
    outputs.refuse_same_files([*(("an input", t) for t in targets if t.is_file()), ("-o", output)])
    return SUFFIX_FORMATS[output.suffix.lower()]


@click.group("rules", cls=options.Group)
def rules_group() -> None:
    """The per-modality rules and quality floors in rules/*.yaml."""


@rules_group.command("list")
@options.output_format("text", "json")
@options.debug
def rules_list_command(fmt: str, debug: bool) -> None:
    """Every profile's rules and quality floors: id, severity, what each checks and the source behind it."""
    loaded = guarded(debug, _profiles().load_all)
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




@click.group("standard", cls=options.Group, invoke_without_command=True)
@options.output_format("text", "json")
@options.debug
@click.pass_context
def standard_group(ctx: click.Context, fmt: str, debug: bool) -> None:
    """The DICOM editions the IOD layer validates against: installed ones (default), import, fetch.

    The bundled edition is the default and is checked against the hash pinned in dvqa; an imported edition
    is used only when named (--standard, or the DVQA_STANDARD setting) and shown as "imported, unverified"."""
    if ctx.invoked_subcommand is not None:
        return

    def listing():
        default = standard.default()
        rows = []
        for edition in standard.installed():
            tables = standard.load(edition)
            per_iod = standard.unevaluated_per_iod(tables)
            rows.append({**tables.edition.describe(), "default": edition.name == default.name,
                         "path": str(edition.path), "files_sha256": edition.file_digests(),
                         "sop_classes": len(tables.info.iods),
                         "conditions_not_evaluated": sum(per_iod.values()),
                         "conditions_not_evaluated_per_iod": per_iod})
        return rows

    rows = guarded(debug, listing)
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(f"{row['edition']}{' (default)' if row['default'] else ''}: {row['trust']}; tables sha256 "
                   f"{row['sha256']}; {row['source']}")
        click.echo(f"  {row['sop_classes']} SOP classes; {row['conditions_not_evaluated']} conditions dvqa cannot "
                   "evaluate (reported as 'condition not evaluated' where they apply)")
        for name, digest in row["files_sha256"].items():
            click.echo(f"  {name} sha256 {digest}")
        for iod, count in row["conditions_not_evaluated_per_iod"].items():
            click.echo(f"  {count:>5}  {iod}")


@standard_group.command("import")
@click.argument("source", type=options.InputPath())
@click.option("--edition", default=None,
              help="The edition's name (default: read from part03.xml), e.g. 2024b; a bundled edition's is reserved.")
@options.debug
def standard_import_command(source: Path, edition: str | None, debug: bool) -> None:
    """Install an edition from NEMA's DocBook files (a folder or zip with part03/04/06.xml). It is used only
    when named with --standard (or DVQA_STANDARD) and is shown as "imported, unverified"."""
    from dvqa.validate import standard_install  # NEMA's DocBook reader: loaded only to import an edition

    installed = guarded(debug, lambda: standard_install.import_docbook(source, edition))
    click.echo(f"installed DICOM {installed.name} ({installed.trust}) at {installed.path.parent}: "
               f"{installed.source}; use it with --standard {installed.name}")


@standard_group.command("fetch")
@click.argument("edition")
@click.option("--url", default=None, metavar="URL",
              help="An https mirror laid out like https://dicom.nema.org/medical/dicom/ (the default).")
@click.option("--allow-http", is_flag=True, help="Accept a plain http:// mirror (one on this machine, for tests).")
@options.debug
def standard_fetch_command(edition: str, url: str | None, allow_http: bool, debug: bool) -> None:
    """Download EDITION's DocBook files (e.g. 2024b, or current) and install it. Needs a network."""
    from dvqa.validate import standard_install

    installed = guarded(debug, lambda: standard_install.fetch(edition, url, allow_http))
    click.echo(f"installed DICOM {installed.name} ({installed.trust}) at {installed.path.parent}: "
               f"{installed.source}; use it with --standard {installed.name}")
