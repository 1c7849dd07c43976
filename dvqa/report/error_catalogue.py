"""Every error message dvqa can print, read from its own source: the catalogue in
docs/regulatory/troubleshooting.md is generated from here, and a test fails when the two differ.

Run: python -m dvqa.report.error_catalogue [--write docs/regulatory/troubleshooting.md]

A message is found wherever the code raises (or fails with) one of dvqa's user-facing errors -
InputError, UsageError, EnvironmentProblem, DvqaError, FileProblem - and written as its template:
the parts filled in at run time appear as {expression}.
"""

from __future__ import annotations

import argparse
import ast
from dataclasses import dataclass
from pathlib import Path

from dvqa.core.errors import ExitCode

PACKAGE = Path(__file__).resolve().parents[1]
EXIT_OF = {"InputError": ExitCode.BAD_INPUT, "FileProblem": ExitCode.BAD_INPUT, "_damaged": ExitCode.BAD_INPUT,
           "UsageError": ExitCode.USAGE, "EnvironmentProblem": ExitCode.ENVIRONMENT,
           "AuditWriteFailed": ExitCode.ENVIRONMENT, "ClusterLost": ExitCode.ENVIRONMENT, "DvqaError": ExitCode.BAD_INPUT,
           "LogClash": ExitCode.USAGE, "UnverifiedLog": ExitCode.BAD_INPUT}  # batch refusals about the audit log
BEGIN, END = "<!-- error catalogue: generated, do not edit -->", "<!-- end of error catalogue -->"


@dataclass(frozen=True, order=True)
class Message:
    exit_code: int
    template: str
    where: str  # module:function


def _text(node: ast.AST) -> str | None:
    """A message argument as a template; None when it is not built from literals and f-strings."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{" + ast.unparse(v.value) + "}"
                       for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _text(node.left), _text(node.right)
        return None if left is None or right is None else left + right
    if isinstance(node, ast.IfExp):
        body, other = _text(node.body), _text(node.orelse)
        return None if body is None or other is None else f"{body} | {other}"
    return None


def _calls(node: ast.AST, where: str):
    """(call, the innermost function it is in) for every call below `node`."""
    for child in ast.iter_child_nodes(node):
        inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else where
        if isinstance(child, ast.Call):
            yield child, inner
        yield from _calls(child, inner)


def _messages(path: Path) -> list[Message]:
    module = path.relative_to(PACKAGE).with_suffix("").as_posix().replace("/", ".")
    found = []
    for node, function in _calls(ast.parse(path.read_text()), "<module>"):
        if not (isinstance(node.func, ast.Name) and node.func.id in EXIT_OF and node.args):
            continue
        name = node.func.id
        if name in ("FileProblem", "_damaged"):
            reason = _text(node.args[1]) if len(node.args) > 1 else None
            template = None if reason is None else "{path}: " + reason + (
                ": the file is damaged" if name == "_damaged" else "")
        else:
            template = _text(node.args[0])
        if template is not None:
            found.append(Message(int(EXIT_OF[name]), " ".join(template.split()), f"dvqa.{module}:{function}"))
    return found


def catalogue() -> list[Message]:
    """Each message once (with the first place that raises it), sorted by exit code, then text."""
    seen: dict[tuple[int, str], Message] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name != "error_catalogue.py":
            for message in _messages(path):
                seen.setdefault((message.exit_code, message.template), message)
    return sorted(seen.values())


def render(messages: list[Message]) -> str:
    names = {int(c): c.name.lower().replace("_", " ") for c in ExitCode}
    lines = [BEGIN, "", f"{len(messages)} messages. `{{...}}` is filled in at run time (a path, a value, the "
             "system's reason).", ""]
    for code in sorted({m.exit_code for m in messages}):
        lines += [f"### Exit {code}: {names[code]}", "", "| message (what happened; what to do) | raised in |",
                  "|---|---|"]
        lines += [f"| {m.template.replace('|', chr(92) + '|')} | `{m.where}` |" for m in messages if m.exit_code == code]
        lines.append("")
    lines.append(END)
    return "\n".join(lines)


def update(page: Path) -> str:
    """The page with its generated part replaced by the catalogue of the code as it is now."""
    text = page.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[:start] + render(catalogue()) + text[end:]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--write", type=Path, default=None, help="rewrite the catalogue in this page")
    args = parser.parse_args()
    if args.write:
        args.write.write_text(update(args.write))
    else:
        print(render(catalogue()))


if __name__ == "__main__":
    main()
