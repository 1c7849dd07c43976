"""Every `dvqa ...` command quoted inline in docs/ (every page) and the README names commands and
options that exist, so a renamed option breaks the build instead of the reader's trust.

(Fenced blocks of examples.md and deployment.md are executed by their own tests; this covers the
commands quoted in running text and tables, which nothing runs.)"""

from __future__ import annotations

import re
import shlex

import click
import pytest

from dvqa.cli import options
from dvqa.cli.main import main
from helpers import ROOT

PAGES = sorted((ROOT / "docs" / "regulatory").glob("*.md")) + sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
INLINE = re.compile(r"(?<!`)`(dvqa [^`]+)`(?!`)")


def quoted_commands() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        for command in INLINE.findall(page.read_text()):
            found.append((page.name, command))
    return found


def check(command: str, renamed_allowed: bool = False) -> list[str]:
    """What in `command` does not exist: unknown subcommands or options (values and placeholders pass).

    Old spellings (options.RENAMED) count as missing except where the renaming is documented."""
    text = command.replace("…", " ").replace("...", " ").replace("[", " ").replace("]", " ")
    try:
        words = shlex.split(text)[1:]
    except ValueError:
        words = text.split()[1:]
    node: click.Command = main
    path: list[str] = []
    while isinstance(node, click.Group) and words and not words[0].startswith("-"):
        name = words.pop(0)
        child = node.get_command(click.Context(node), name)
        if child is None:
            return [f"no command {name!r} under {node.name!r}"]
        node = child
        path.append(name)
    known = {opt for param in node.params for opt in (*param.opts, *param.secondary_opts)} | {"-h", "--help"}
    if renamed_allowed:
        known |= set(options.RENAMED.get(tuple(path), {}))
    problems = []
    for word in words:
        if word.startswith("-") and len(word) > 1 and word not in ("-", "--"):
            for option in word.split("=", 1)[0].split("/"):  # "-o/--output" names both spellings
                if option not in known:
                    problems.append(f"{node.name} has no option {option}")
    return problems


@pytest.mark.requirement("DVQA-DOC-001")
@pytest.mark.parametrize(("page", "command"), quoted_commands())
def test_quoted_command_exists(page: str, command: str) -> None:
    problems = check(command, renamed_allowed=page == "cli-conventions.md")
    assert not problems, f"{page}: `{command}`: {problems}"


def test_the_check_catches_a_renamed_option_and_a_missing_command() -> None:
    assert check("dvqa convert in.webm -o out.dcm --profile endoscopy") == []
    assert check("dvqa convert in.webm --profle endoscopy") == ["convert has no option --profle"]
    assert check("dvqa report licence") == ["no command 'licence' under 'report'"]
    assert check("dvqa sign f.dcm --profile base") == ["sign has no option --profile"]  # renamed in 0.1
    assert check("dvqa sign f.dcm --profile base", renamed_allowed=True) == []
    assert len(quoted_commands()) > 40
