"""`dvqa batch convert`: a manifest of recordings, converted here or on a Dask cluster."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from dvqa.cli import options
from dvqa.cli.common import audit_log, fail, guarded, passphrase
from dvqa.core.errors import DvqaError, EnvironmentProblem, UsageError
from dvqa.quality.reports import number
from dvqa.trust.audit import AuditLog


def register(main: click.Group) -> None:
    main.add_command(batch_group)


@click.group("batch", cls=options.Group)
def batch_group() -> None:
    """Many files in one run - in local processes or as tasks on a Dask cluster."""


@batch_group.command("convert")
@click.argument("manifest", type=options.InputPath(dir_okay=False))
@options.jobs("Worker processes on this machine (more than 1: a local Dask cluster).")
@options.scheduler("Run the rows as tasks on a Dask cluster")
@options.audit
@click.option("--resume", is_flag=True,
              help="Skip rows whose output exists and matches its record in --audit (output and input SHA-256, "
                   "and the row unchanged since).")
@click.option("--force", is_flag=True, help="Replace outputs that exist (without --resume: all of them). Never an "
              "output that is a row's input, the manifest, the audit log or another row's output.")
@click.option("--output-root", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Every output must be inside this folder (symlinks and .. resolved); others are refused.")
@options.syntax_choice(auto=True, help="Default transfer syntax for rows without a syntax column.")
@options.conversion
@options.signing
@options.output_format("text", "json")
@options.debug
def batch_convert_command(manifest: Path, jobs: int, scheduler: str | None, audit_path: Path | None,
                          audit_key_env: str | None, resume: bool, force: bool, output_root: Path | None,
                          syntax: str, rate, iod_name: str, uid_root: str | None, source_range: str, no_passthrough: bool,
                          ssim: str, no_quality: bool, profile: str | None, keep_failed: bool,
                          sign_key: Path | None, sign_cert: Path | None, signature_profile: str,
                          passphrase_env: str | None, fmt: str, debug: bool) -> None:
    """Convert every row of MANIFEST (CSV with a header, or JSON Lines): input, output, and per-row
    options and patient/study attributes (the options below are the defaults a row's columns override).
    Rows are checked before any is converted; each finished row
    is placed and recorded (--audit) by this process, in completion order. Exit: the most serious
    row's code; an interrupted batch resumes with --resume."""
    from dvqa.convert import batch
    from dvqa.convert import manifest as manifests
    from dvqa.convert.pipeline import ConvertOptions
    from dvqa.core.cluster import parse
    from dvqa.trust.signature import Signer

    audit = audit_log(audit_path, audit_key_env, debug)

    def refusing(work):
        """A batch refused before work still leaves one audit record, as `dvqa convert` does."""
        try:
            return work()
        except DvqaError as exc:
            _record_refusal(audit, manifest, exc)
            raise

    if scheduler and jobs > 1:
        both = UsageError("give --jobs or --scheduler, not both (--scheduler local:N is N local processes).")
        guarded(debug, lambda: _record_refusal(audit, manifest, both))
        fail(both, debug)
    if scheduler:
        guarded(debug, lambda: refusing(lambda: parse(scheduler)))
    defaults = ConvertOptions(syntax=syntax, rate=rate, iod=iod_name, uid_root=uid_root, source_range=source_range,
                              passthrough=not no_passthrough, ssim=ssim, quality=not no_quality, profile=profile,
                              keep_failed=keep_failed)
    rows = guarded(debug, lambda: refusing(lambda: manifests.read(manifest, defaults, audit_path, output_root)))
    signer = guarded(debug, lambda: refusing(lambda: Signer.load(sign_key, sign_cert, passphrase(passphrase_env)))) \
        if sign_key else None
    total = len(rows)
    finished = 0

    def on_row(row: batch.RowResult) -> None:
        nonlocal finished
        finished += 1
        if fmt == "text":
            click.echo(_line(row, finished, total))

    try:
        result = batch.run(manifest, rows, scheduler, jobs, audit, resume, force, signer, signature_profile, on_row)
    except DvqaError as exc:
        refusal = exc  # bound for the lambda: `exc` is unbound once the except clause ends
        guarded(debug, lambda: _record_refusal(audit, manifest, refusal))
        fail(refusal, debug)
        return
    if fmt == "json":
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        counts = ", ".join(f"{n} {status}" for status, n in sorted(result.counts().items()))
        click.echo(f"batch    {total} rows: {counts}; took {result.elapsed_s:.1f} s; exit {result.exit_code}")
    if result.interrupted is not None:
        left = total - sum(n for status, n in result.counts().items() if status != "interrupted")
        click.echo(f"dvqa: interrupted ({getattr(result.interrupted, 'name', 'SIGINT')}); {left} row(s) not converted, "
                   "nothing partial was left at any output" + (f" and {audit_path} records every attempt" if audit
                                                               else "")
                   + f"; run the same command with --resume{'' if audit else ' and --audit'} to go on.", err=True)
    sys.exit(result.exit_code)


def _record_refusal(audit: AuditLog | None, manifest: Path, exc: DvqaError) -> None:
    """One failure record for a batch that stopped on `exc` - unless the log itself is what was refused
    (an output that is the log, a log that does not verify) or could not take a record."""
    from dvqa.convert.manifest import AboutTheLog
    from dvqa.trust.audit import AuditWriteFailed, absolute

    if audit is None or isinstance(exc, (AboutTheLog, AuditWriteFailed)):
        return
    try:
        audit.append({"command": "batch convert", "manifest": {"path": absolute(manifest)}, "outcome": "failure",
                      "exit_code": int(exc.exit_code), "message": str(exc)})
    except EnvironmentProblem as problem:
        raise EnvironmentProblem(f"{str(exc).rstrip('.')}; and {problem}") from None


def _line(row, finished: int, total: int) -> str:
    counter = f"[{finished}/{total}]"
    where = f"line {row.line}"
    if row.status == "converted":
        s = row.summary
        quality = f", PSNR-Y min {number(s['psnr_y_min'], 2)} dB" if s.get("psnr_y_min") is not None else ""
        retried = f", after {row.attempts - 1} lost attempt(s)" if row.attempts > 1 else ""
        return (f"{counter} converted {where}: {row.output} ({s.get('syntax')}, {s.get('frames')} frames"
                f"{quality}{retried})")
    return f"{counter} {row.status} {where}: {row.output}: {row.message}"
