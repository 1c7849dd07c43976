"""Where dvqa's data folders (`rules/`, `templates/`) are in this installation."""

from __future__ import annotations

import sys
from pathlib import Path

from dvqa.core.errors import EnvironmentProblem


def data_dir(name: str) -> Path:
    """`name/` beside the package in a checkout (editable install), else a wheel's data files."""
    for candidate in (Path(__file__).resolve().parents[2] / name,
                      Path(sys.prefix) / "share" / "dvqa" / name):
        if candidate.is_dir():
            return candidate
    raise EnvironmentProblem(f"dvqa's {name}/ folder is missing from this installation; reinstall dvqa.")


def templates():
    """The Jinja2 environment of templates/: HTML autoescaped, an undefined name an error, not a blank."""
    import jinja2  # only runs that write a document pay for importing it

    return jinja2.Environment(loader=jinja2.FileSystemLoader(data_dir("templates")),
                              autoescape=jinja2.select_autoescape(["html"]), undefined=jinja2.StrictUndefined)
