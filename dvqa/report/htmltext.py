"""Text in dvqa's HTML (and so PDF) reports, marked up to break where a reader expects it to.

A table cell holding a file name, a configure line or a SHA-256 has no spaces to break at, so a
browser or WeasyPrint either lets it spill out of its column or, with overflow-wrap: anywhere,
cuts it anywhere ("...name-2 | 026-12-04.dcm"). These filters offer break points instead: <wbr> after
a path's separators and every 16 hex digits, one unbreakable box per configure option. <wbr> adds
no character, so a name or digest copied from the page or the PDF is still the exact value.
Everything is escaped first: the text may come from a hostile file name.
"""

from __future__ import annotations

import re

from markupsafe import Markup, escape

PATH_BREAK = re.compile(r"([/_.\-])")  # break after a separator, never inside a word
HEX = re.compile(r"\b[0-9a-f]{32,}\b")  # a digest: break every 16 digits
CODE = re.compile(r"`([^`]+)`")  # Markdown's inline code, which some report texts share with the .md


def path(text: object) -> Markup:
    """A file name or path that may break after /, _, - and . only."""
    return Markup(PATH_BREAK.sub(r"\1<wbr>", str(escape(str(text)))))


def hexdigest(text: object) -> Markup:
    """A hex digest in full, breakable every 16 digits (64 digits are 4 lines at worst)."""
    digits = str(text)
    return Markup("<wbr>".join(str(escape(digits[i:i + 16])) for i in range(0, len(digits), 16)))


def options(line: object) -> Markup:
    """A command line (FFmpeg's configure line) as one box per option: lines break between options only,
    and an option wider than its column breaks inside itself rather than spilling out (CSS .opt)."""
    words = re.findall(r"(?:[^\s']+|'[^']*')+", str(line))
    return Markup(" ".join(f'<span class="opt">{escape(word)}</span>' for word in words))


def prose(text: object) -> Markup:
    """A sentence that may hold paths, options and digests: each breaks only where it should, and
    `code` spans (shared with the Markdown rendering) become <code>."""
    parts = []
    for piece in re.split(r"(`[^`]+`)", str(text)):
        if CODE.fullmatch(piece):
            parts.append(f"<code>{_words(piece[1:-1])}</code>")
        elif piece:
            parts.append(_words(piece))
    return Markup("".join(parts))


def _words(text: str) -> str:
    out = []
    for word in re.split(r"(\s+)", text):
        if word.startswith("--") and len(word) > 2:  # an option: never "--" on one line and its name on the next
            out.append(f'<span class="opt">{escape(word)}</span>')
        elif HEX.search(word):
            out.append(HEX.sub(lambda m: str(hexdigest(m.group(0))), str(escape(word))))
        elif "/" in word or "_" in word:
            out.append(str(path(word)))
        else:
            out.append(str(escape(word)))
    return "".join(out)


FILTERS = {"path": path, "hexdigest": hexdigest, "options": options, "prose": prose}
