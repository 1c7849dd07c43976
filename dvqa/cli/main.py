"""The `dvqa` command: a thin Click layer over the library. No decisions are made here.

Start-up is part of what a user waits for (issue 31: `dvqa --help` and `dvqa validate one.dcm` must be
quick), so the group knows its commands by name (COMMANDS) and imports a command's module only when that
command runs: `dvqa --help` imports Click and nothing heavy, `dvqa validate` never loads FFmpeg, NumPy's
image code, the signer's cryptography, the PACS or the web server. tests/test_cli.py checks the listing
below against the commands themselves, and that `dvqa --help` imports none of the heavy modules.
"""

from __future__ import annotations

from dvqa.core import signals

signals.install_early()  # before any heavy import: a signal during one ends dvqa quietly

import importlib  # noqa: E402
import sys  # noqa: E402

import click  # noqa: E402

from dvqa import __version__  # noqa: E402
from dvqa.cli import options  # noqa: E402
from dvqa.cli.common import fail  # noqa: E402
from dvqa.core.errors import UsageError  # noqa: E402

# command name -> (the module whose register() adds it, the first paragraph of its help, which `dvqa --help`
# lists without importing the module; None for a hidden command). tests/test_cli.py checks both against the
# loaded commands, so the listing cannot drift from them.
COMMANDS: dict[str, tuple[str, str | None]] = {
    "audit": ("dvqa.cli.trust", "The tamper-evident audit trail written by --audit."),
    "batch": ("dvqa.cli.batch", "Many files in one run - in local processes or as tasks on a Dask cluster."),
    "convert": ("dvqa.cli.convert", "Convert a browser recording (WebM, Matroska, MP4) to a DICOM video object."),
    "evidence": ("dvqa.cli.evidence", "One signed, verifiable folder of regulatory evidence: conversions with quality "
                 "reports, validation, signatures, the audit trail, conformance statement, licenses and SBOM, "
                 "traceability matrix."),
    "pacs": ("dvqa.cli.pacs", "Send to a PACS and record what it accepted."),
    "profiles": ("dvqa.cli.validate", None),
    "quality": ("dvqa.cli.convert", "Measure DISTORTED (a DICOM video or a video file) against REFERENCE, frame by "
                "frame."),
    "report": ("dvqa.cli.report", "Reports for a regulator or a hospital's IT: the DICOM Conformance Statement, "
               "FFmpeg and dependency licenses."),
    "rules": ("dvqa.cli.validate", "The per-modality rules and quality floors in rules/*.yaml."),
    "serve": ("dvqa.cli.serve", "Serve the DICOMweb video gateway at http://HOST:PORT/dicom-web in front of "
              "--upstream, browser recording ingestion, or both. The gateway passes everything through, and video instances also play in web viewers "
              "(rendered as MP4 without re-encoding, metadata that names their transfer syntax, thumbnails). With a "
              "`record:` section in --config it takes browser recordings (POST /recordings, the recorder page at "
              "/record; see docs/serve.md), converts them as they arrive and stores them in the PACS; without "
              "--upstream it does only that, and /dicom-web answers 404. With --scheduler, recordings are converted "
              "on a Dask cluster once they end instead of live here (validated, signed, stored and audited here). "
              "GET /healthz answers while it runs. Stops "
              "gracefully on SIGTERM or Ctrl-C (exit 0); access logs on stderr carry no query strings."),
    "sign": ("dvqa.cli.trust", "Add a DICOM digital signature (PS3.15 Annex C) over every signable element of FILE."),
    "standard": ("dvqa.cli.validate", "The DICOM editions the IOD layer validates against: installed ones (default), "
                 "import, fetch."),
    "syntaxes": ("dvqa.cli.convert", "List the video transfer syntaxes dvqa knows, from its one table (writes: those "
                 "it converts to)."),
    "validate": ("dvqa.cli.validate", "Check DICOM FILES and every file below DIRS: the file, its values, the IOD "
                 "against the DICOM standard, the video stream against the header, and a profile's rules; --explain "
                 "TAG says why."),
    "verify": ("dvqa.cli.trust", "Check every digital signature in FILES (also those inside sequence items); exit 1 "
               "if any fails, covers only part of the file (PARTIAL), or has a signer no --trust anchor "
               "authenticates."),
}


class _Group(options.Group):
    """Ctrl-C, SIGTERM and SIGHUP end any command with 128 + the signal number, never Click's 'Aborted!'
    and exit 1. Commands that write handle them first and say what is on disk."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context | None, name: str) -> click.Command | None:
        """The command, its module imported now (a module registers all of its commands at once)."""
        if name not in self.commands and name in COMMANDS:
            importlib.import_module(COMMANDS[name][0]).register(self)
        return self.commands.get(name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The listing of `dvqa --help`, from COMMANDS: listing a command does not import it."""
        shown = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)
                 if name in COMMANDS and COMMANDS[name][1] is not None]
        if not shown:
            return
        limit = formatter.width - 6 - max(len(name) for name, _ in shown)
        rows = [(name, click.utils.make_default_short_help(text or "", limit)) for name, text in shown]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """No file name or value can hold a NUL (only a program, never a shell, can pass one): refused here,
        before click's path checks raise ValueError from deep inside os.stat."""
        for arg in args:
            if "\0" in arg:
                fail(UsageError(f"the argument {arg!r} holds a NUL character, which no file name or value can hold; "
                                "check how the command line was built."), False)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            click.echo(f"dvqa: interrupted ({getattr(exc, 'name', 'SIGINT')}).", err=True)
            sys.exit(signals.exit_code_of(exc))
        finally:
            _quiet_ffmpeg()


def _quiet_ffmpeg() -> None:
    """Once a command has said everything, FFmpeg's log goes nowhere. Decoders and encoders an interrupted
    or failed conversion left are freed as dvqa exits; their threads may log while they stop, and PyAV's
    log callback then waits for the interpreter lock the exiting thread holds - dvqa hung after printing
    its last line (an interrupted batch on a loaded machine; the evidence build had the same hang)."""
    ffmpeg_log = sys.modules.get("av.logging")
    if ffmpeg_log is not None:
        ffmpeg_log.set_level(None)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dvqa")
@click.pass_context
def main(ctx: click.Context) -> None:
    """DICOM video quality assurance: convert browser recordings with quality evidence, measure
    quality, validate, sign and verify, keep an audit trail, and test PACS.

    Exit codes: 0 pass, 1 a check failed, 2 usage error, 3 unreadable or
    unsupported input, 4 environment problem, 130/143/129 interrupted by
    SIGINT/SIGTERM/SIGHUP.
    """
    if ctx.invoked_subcommand == "convert":
        signals.hold()  # convert takes the signals inside its recorded attempt (run_attempt)
    else:
        signals.install()


def loaded() -> click.Group:
    """The group with every command imported (for tests and tools that walk the whole tree)."""
    for name in COMMANDS:
        main.get_command(None, name)
    return main


if __name__ == "__main__":
    main()
