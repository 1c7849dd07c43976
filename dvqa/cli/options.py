"""The options every dvqa command shares, each defined once (docs/cli-conventions.md).

A name has one meaning across commands; these decorators are how that stays true. Old spellings
that scripts may still use are rewritten to the new ones before Click parses the command line
(RENAMED), with one line on stderr, for one release.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import click

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


def output_format(*choices: str) -> Decorator:
    """--format: what is printed on stdout; text unless a command prints only one other format."""
    return click.option("--format", "fmt", default=choices[0], show_default=True, type=click.Choice(list(choices)),
                        help="What to print on stdout.")


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
