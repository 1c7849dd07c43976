"""Counts in messages: "1 record", "2 records" - one helper so every command agrees (docs/cli-conventions.md)."""

from __future__ import annotations


def plural(count: int, one: str, many: str | None = None) -> str:
    """'1 frame', '2 frames': a count with its noun agreeing (many: the plural when it is not one + s)."""
    return f"{count} {one if count == 1 else many or one + 's'}"
