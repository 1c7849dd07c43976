"""The `dvqa` command: a thin Click layer over the library."""

from dvqa.cli.main import main

__all__ = ["main"]
