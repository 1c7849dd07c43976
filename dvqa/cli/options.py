"""The options every dvqa command shares, each defined once (docs/cli-conventions.md).

A name has one meaning across commands; these decorators are how that stays true. Old spellings
that scripts may still use are rewritten to the new ones before Click parses the command line
(RENAMED), with one line on stderr, for one release.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Callable

import click

from dvqa.core.cluster import WORKER_WAIT_S
from dvqa.core.errors import ExitCode
from dvqa.dicom import syntaxes

Decorator = Callable[[Callable], Callable]

# command path -> {old spelling: new spelling}; accepted until dvqa 0.2
RENAMED: dict[tuple[str, ...], dict[str, str]] = {
    ("sign",): {"--profile": "--signature-profile"},
    ("convert",): {"--sign-profile": "--signature-profile"},
    ("pacs", "matrix"): {"--profile": "--pacs-profile", "--out": "--output"},
    ("pacs", "simulate"): {"--profile": "--pacs-profile"},
    ("audit", "verify"): {"--key-env": "--audit-key-env"},
}
RENAMED_UNTIL = "dvqa 0.2"


class _Rate(click.ParamType):
    """A frame rate as dvqa.core.rates reads it (29.97 is 30000/1001); anything else is a usage error."""

    name = "rate"

    def convert(self, value, param, ctx):
        from dvqa.core.rates import parse_rate

        if not isinstance(value, str):
            return value
        try:
            return parse_rate(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


RATE = _Rate()


class InputPath(click.Path):
    """A file or folder a command reads. One that is missing, of the wrong kind (a folder where a file is
    wanted) or unreadable is unreadable input - exit 3 with one sentence, from every command alike
    (docs/cli-conventions.md) - rather than Click's usage error (exit 2)."""

    def __init__(self, file_okay: bool = True, dir_okay: bool = True) -> None:
        super().__init__(path_type=Path, exists=True, file_okay=file_okay, dir_okay=dir_okay)

    def convert(self, value, param, ctx):
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter as exc:
            hint = param.get_error_hint(ctx) if param is not None else "a path"
            missing = not os.path.lexists(value)
            said = "no such file or folder; check the path" if missing else f"{exc.message.rstrip('.')}"
            click.echo(f"dvqa: error: {value}: {said} (given as {hint}).", err=True)
            raise SystemExit(int(ExitCode.BAD_INPUT)) from None


def renamed(path: tuple[str, ...], args: list[str]) -> tuple[list[str], list[str]]:
    """`args` with old spellings replaced (also in --old=value form), and a note per replacement."""
    table = RENAMED.get(path, {})
    out, notes = [], []
    for number, arg in enumerate(args):
        if arg == "--":  # what follows is arguments, not options
            out += args[number:]
            break
        old, eq, value = arg.partition("=")
        if old in table:
            new = table[old]
            notes.append(f"{' '.join(path)} {old} is now {new}; the old spelling is accepted until {RENAMED_UNTIL}.")
            arg = new + eq + value
        out.append(arg)
    return out, notes


class Command(click.Command):
    """A dvqa command: accepts the old spellings in RENAMED, saying so on stderr."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        names, here = [], ctx
        while here.parent is not None:  # the names below `dvqa`, however dvqa itself was started
            names.append(here.info_name or "")
            here = here.parent
        path = tuple(reversed(names))
        args, notes = renamed(path, args)
        for note in notes:
            click.echo(f"dvqa: warning: {note}", err=True)
        return super().parse_args(ctx, args)


class Group(click.Group):
    """A dvqa command group: its commands and sub-groups are dvqa Commands and Groups."""

    command_class = Command
    group_class = type


def debug(fn: Callable) -> Callable:
    return click.option("--debug", is_flag=True, help="Show tracebacks instead of one sentence.")(fn)


def output_format(*choices: str, help: str = "") -> Decorator:
    """--format: what is printed on stdout; text unless a command prints only one other format. `help`: what
    each format is, where the names alone do not say (dicom-audit)."""
    return click.option("--format", "fmt", default=choices[0], show_default=True, type=click.Choice(list(choices)),
                        help=help or "What to print on stdout.")


def output(help: str, required: bool = False, folder: bool = False, dest: str = "output") -> Decorator:
    kind = click.Path(path_type=Path, file_okay=not folder, dir_okay=folder)
    return click.option("-o", "--output", dest, required=required, type=kind, help=help)


def rules_profile(help: str) -> Decorator:
    return click.option("--profile", default=None, metavar="NAME|FILE",
                        help=f"{help}: a profile name from `dvqa rules list` or a YAML file.")


def signature_profile(fn: Callable) -> Callable:
    from dvqa.trust.signature import PROFILES

    return click.option("--signature-profile", default="base", show_default=True, type=click.Choice(list(PROFILES)),
                        help="PS3.15 Digital Signature profile the signature meets (none: no profile's "
                             "attribute list, any algorithm).")(fn)


def audit_key(fn: Callable) -> Callable:
    return click.option("--audit-key-env", default=None, metavar="VAR",
                        help="Environment variable holding the audit log's key: each record gets an HMAC-SHA256.")(fn)


def audit(fn: Callable) -> Callable:
    return click.option("--audit", "audit_path", type=click.Path(path_type=Path, dir_okay=False),
                        help="Append a record of each attempt (success or failure) to this audit log.")(audit_key(fn))


def passphrase(fn: Callable) -> Callable:
    return click.option("--passphrase-env", default=None, metavar="VAR",
                        help="Environment variable holding the key's passphrase (never on the command line).")(fn)


def syntax_choice(option: str = "--syntax", auto: bool = False, multiple: bool = False, help: str = "") -> Decorator:
    """A transfer syntax dvqa writes, by its name in the one table; `auto` where dvqa may choose."""
    names = (["auto"] if auto else []) + syntaxes.writable_names()
    return click.option(option, type=click.Choice(names), multiple=multiple, default="auto" if auto else None,
                        show_default=auto, help=help)


def jobs(help: str = "Worker processes.") -> Decorator:
    return click.option("--jobs", default=1, show_default=True, type=click.IntRange(1, 64), help=help)


def scheduler(help: str) -> Decorator:
    """--scheduler and how to reach it (dvqa.core.cluster): the command receives `scheduler` as a
    dvqa.core.cluster.Cluster (or None), so the TLS options travel with the address they apply to."""

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def command(*args, scheduler: str | None = None, cluster_ca: Path | None = None,
                    cluster_cert: Path | None = None, cluster_key: Path | None = None, allow_clear_text: bool = False,
                    require_tls: bool = False, worker_timeout: float = WORKER_WAIT_S, **kwargs):
            from dvqa.core.cluster import Cluster

            chosen = Cluster(scheduler, cluster_ca, cluster_cert, cluster_key, allow_clear_text, require_tls,
                             worker_timeout) if scheduler else None
            if chosen and allow_clear_text and not require_tls and chosen.clear_text:  # said on every such run
                click.echo(f"dvqa: warning: --scheduler {scheduler}: patient data and code cross the network "
                           "unencrypted (--allow-clear-text).", err=True)
            return fn(*args, scheduler=chosen, **kwargs)

        pem = InputPath(dir_okay=False)
        chosen = [
            click.option("--scheduler", default=None, metavar="ADDRESS|local[:N]",
                         help=f"{help}: a scheduler's address (tls://HOST:8786; absolute paths on storage every "
                              "worker mounts at the same place) or local[:N] worker processes here (default N=2, "
                              "TLS with credentials made for the run). Every cluster member is fully trusted."),
            click.option("--cluster-ca", type=pem, help="With a tls:// scheduler: the CA (PEM) that signed the "
                                                        "scheduler's and workers' certificates."),
            click.option("--cluster-cert", type=pem, help="With a tls:// scheduler: this client's certificate (PEM)."),
            click.option("--cluster-key", type=pem, help="With a tls:// scheduler: this client's private key (PEM), "
                                                         "unless --cluster-cert holds it."),
            click.option("--allow-clear-text", is_flag=True,
                         help="Accept a tcp:// scheduler: patient data and code cross the network unencrypted."),
            click.option("--require-tls", is_flag=True, envvar="DVQA_REQUIRE_TLS",
                         help="Refuse a tcp:// scheduler even with --allow-clear-text (DVQA_REQUIRE_TLS=1: the "
                              "site default)."),
            click.option("--worker-timeout", default=WORKER_WAIT_S, show_default=True, type=click.FloatRange(1, 86400),
                         metavar="SECONDS", help="With --scheduler: stop (exit 4) when no Dask worker joined, or "
                                                 "none remained, for this long; unfinished rows are recorded as "
                                                 "failed."),
        ]
        for option in reversed(chosen):
            command = option(command)
        return command

    return decorate


def conversion(fn: Callable) -> Callable:
    """How a recording is converted: the options `dvqa convert` and `dvqa batch convert` share (in a
    batch, the defaults a manifest row's own columns override)."""
    from dvqa.dicom.iod import VideoIOD
    from dvqa.quality.metrics import SSIM_DEFINITIONS

    chosen = [
        click.option("--rate", "rate", default=None, type=RATE, metavar="FPS",
                     help="Output frame rate (30, 29.97, 30000/1001) instead of the one measured from the "
                          "recording's timestamps or set by --profile's output_rate; refused when the syntax cannot "
                          "carry it. Frames that come faster are dropped, gaps repeat the frame before."),
        click.option("--iod", "iod_name", default="endoscopic", show_default=True,
                     type=click.Choice([i.option for i in VideoIOD]), help="Video IOD to write."),
        click.option("--uid-root", default=None, help="Root for generated UIDs (default: 2.25 UUID-derived)."),
        click.option("--source-range", default="auto", show_default=True,
                     type=click.Choice(["auto", "full", "limited"]),
                     help="Colour range of the source when its stream does not declare it."),
        click.option("--no-passthrough", is_flag=True, help="Always re-encode, even when the stream could be wrapped."),
        click.option("--ssim", default="fast", show_default=True, type=click.Choice(list(SSIM_DEFINITIONS)),
                     help="SSIM definition: fast (x264/FFmpeg, real time) or reference (Wang et al. 2004)."),
        click.option("--no-quality", is_flag=True, help="Skip per-frame PSNR/SSIM (faster; no quality evidence)."),
        rules_profile("Quality floors to enforce"),
        click.option("--keep-failed", is_flag=True, help="Write the output even when a quality floor is not met."),
    ]
    for option in reversed(chosen):
        fn = option(fn)
    return fn


def signing(fn: Callable) -> Callable:
    """--sign KEY --cert CERT, the signature profile and the key's passphrase."""
    fn = passphrase(signature_profile(fn))
    fn = click.option("--cert", "sign_cert", type=InputPath(dir_okay=False),
                      help="The signer's certificate, with --sign.")(fn)
    return click.option("--sign", "sign_key", type=InputPath(dir_okay=False),
                        help="Sign each output with this private key (PEM or PKCS#12) before it is moved into "
                             "place.")(fn)


def patient_study(fn: Callable) -> Callable:
    """--patient-name ... --study-description (dvqa.convert.options.PATIENT_STUDY_FIELDS): the command receives
    them as one `patient_study` mapping, DICOM keyword -> (option, value or None)."""
    from dvqa.convert.options import PATIENT_STUDY_FIELDS

    @functools.wraps(fn)
    def command(*args, **kwargs):
        given = {f.keyword: (f.option, kwargs.pop(f.field)) for f in PATIENT_STUDY_FIELDS}
        return fn(*args, patient_study=given, **kwargs)

    for f in reversed(PATIENT_STUDY_FIELDS):
        command = click.option(f.option, default=None, help=f.help,
                               type=click.Choice(list(f.choices)) if f.choices else None)(command)
    return command
