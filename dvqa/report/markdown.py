"""The license report as Markdown: what a reader needs first (the verdict and why), then the evidence."""

from __future__ import annotations


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def licenses(report: dict) -> str:
    f = report["ffmpeg"]
    lines = [
        f"# FFmpeg and dependency licenses (dvqa {report['dvqa_version']})", "",
        f"**FFmpeg {f['version']}**, {f['origin']}.", "",
        f"**Effective license: {f['verdict']}**"
        + ("" if f["redistributable"] else " - not redistributable") + ".", "",
        "Why:", *[f"- {r}" for r in f["reasons"]], "",
    ]
    if f["disagreements"]:
        lines += ["Disagreements between what FFmpeg says and what it links:",
                  *[f"- {d}" for d in f["disagreements"]], ""]
    lines += [f"FFmpeg says of itself: \"{f['ffmpeg_says']}\".", "",
              f"## FFmpeg's License Compliance Checklist ({report['legal_reference']})", "",
              "| # | item | status | for this build |", "|---|---|---|---|"]
    lines += [f"| {c['number']} | {_cell(c['item'])} | {c['status']} | {_cell(c['finding'])} |" for c in f["checklist"]]
    lines += ["", "## Configuration", "", "```", f["configuration"], "```", "", "## Native libraries", "",
              "| file | soversion | license | from | loaded | sha256 |", "|---|---|---|---|---|---|"]
    lines += [f"| {_cell(lib['file'])} | {lib['soversion']} | {_cell(lib['license'])} | {_cell(lib['license_source'])} "
              f"| {'yes' if lib['loaded'] else 'no'} | `{lib['sha256']}` |" for lib in f["libraries"]]
    lines += ["", "## Python packages", "", "| package | version | license | from |", "|---|---|---|---|"]
    lines += [f"| {p['name']} | {p['version']} | {_cell(p['license'])} | {p['from']} |"
              for p in report["python_packages"]]
    lines += ["", "Facts read from the installed binaries and package metadata, for a distributor to act on; "
              "not legal advice."]
    return "\n".join(lines) + "\n"


def document(doc: dict) -> str:
    """A document structure (title; sections of paragraphs and tables) as Markdown."""
    lines = [f"# {doc['title']}", ""]
    for section in doc["sections"]:
        depth = min(2 + section["number"].count("."), 4)
        lines += [f"{'#' * depth} {section['number']} {section['title']}", ""]
        for paragraph in section["paragraphs"]:
            lines += [paragraph, ""]
        for table in section["tables"]:
            lines += [f"*{table['caption']}*", "", "| " + " | ".join(table["columns"]) + " |",
                      "|" + "---|" * len(table["columns"])]
            lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in table["rows"]]
            lines.append("")
    return "\n".join(lines)
