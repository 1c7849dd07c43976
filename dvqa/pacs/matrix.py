"""`dvqa pacs matrix`: what a PACS really does with each video SOP class and transfer syntax.

For every (IOD x syntax) pair dvqa writes, one reference file is made from a bundled clip and sent
with C-STORE. A real target can be read back - over WADO-RS asking for the original transfer
syntax ("transfer-syntax=*", PS3.18 §8.7.3) or with C-GET (PS3.4 C.4.3) - and compared: the same
syntax and the same Pixel Data fragments, byte for byte, or "transcoded" / "changed". Systems that
cannot run here enter the matrix from their PACS profile (`rules/pacs/`): a simulated SCP accepts
exactly what the documents say, and those rows are marked as documented, never as measured.
The matrix is rendered as JSON, Markdown and HTML from one list of cells.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pynetdicom
from markupsafe import Markup, escape
from pydicom.encaps import generate_fragments

from dvqa import __version__
from dvqa.convert.pipeline import ConvertOptions, convert
from dvqa.core.errors import EnvironmentProblem, UsageError
from dvqa.dicom import syntaxes
from dvqa.dicom.dicomfile import read_fragments
from dvqa.dicom.iod import VideoIOD
from dvqa.pacs import network as pacs
from dvqa.pacs import profiles as pacsprofiles
from dvqa.pacs import simulate

REFERENCE_CLIP = Path(__file__).resolve().parents[2] / "reference_videos" / "synthetic" / "h264_cfr_high.mkv"
MEASURED = "measured"  # a cell's evidence when a running server answered


@dataclass(frozen=True)
class Target:
    name: str
    peer: pacs.Peer
    wado: str | None = None  # DICOMweb root for retrieval, e.g. http://host:8042/dicom-web
    cget: bool = False  # retrieve with C-GET from the same peer

    @classmethod
    def parse(cls, spec: str, calling_aet: str, timeout: float, tls: pacs.Tls | None = None) -> "Target":
        """NAME=AET@HOST:PORT[,wado=URL][,get]"""
        try:
            name, rest = spec.split("=", 1)
            address, *options = rest.split(",")
            aet, hostport = address.split("@", 1)
            host, port = hostport.rsplit(":", 1)
            wado = next((o.split("=", 1)[1] for o in options if o.startswith("wado=")), None)
            unknown = [o for o in options if not (o.startswith("wado=") or o == "get")]
            if unknown or not name:
                raise ValueError(unknown)
            return cls(name, pacs.Peer(host, int(port), aet, calling_aet, timeout, tls), wado, "get" in options)
        except ValueError:
            raise UsageError(f"--target {spec!r}: write NAME=AET@HOST:PORT, optionally followed by ,wado=URL "
                             "(read back over WADO-RS) and/or ,get (read back with C-GET).") from None


@dataclass
class Cell:
    target: str
    iod: str
    syntax: str
    uid: str
    outcome: str  # stored | rejected | failed | unknown
    retrieved: str  # identical | transcoded to ... | changed | not retrieved | ...
    message: str
    evidence: str = MEASURED  # or the profile's evidence: conformance statement, documentation, ...
    source: str = ""  # documented rows: the profile file and its first source; measured: what the server said it is

    def label(self) -> str:
        if self.evidence != MEASURED:
            return {"stored": "accepted", "rejected": "refused"}.get(self.outcome, self.outcome)
        if self.outcome != "stored":
            return self.outcome
        return "stored" if self.retrieved == "not retrieved" else f"stored, {self.retrieved}"


def reference_files(folder: Path, iods: list[str], names: list[str]) -> dict[tuple[str, str], Path]:
    """One small file per (IOD, syntax), made once and reused."""
    folder.mkdir(parents=True, exist_ok=True)
    made = {}
    for iod in iods:
        for name in names:
            out = folder / f"{iod}-{name}.dcm"
            if not out.exists():
                convert(REFERENCE_CLIP, out, ConvertOptions(syntax=name, iod=iod, quality=False))
            made[(iod, name)] = out
    return made


def _compare(sent: pydicom.Dataset, fragments: list[bytes], back: pydicom.Dataset) -> str:
    syntax_back = str(back.file_meta.get("TransferSyntaxUID", "?"))
    if syntax_back != str(sent.file_meta.TransferSyntaxUID):
        return f"transcoded to {syntax_back}"
    fragments_back = list(generate_fragments(back.PixelData))
    return "identical" if fragments_back == fragments else "changed (Pixel Data differs)"


def _retrieve_wado(target: Target, sent: pydicom.Dataset) -> pydicom.Dataset | str:
    """The instance as the server returns it over WADO-RS, or why it could not be had."""
    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(url=target.wado, session=pacs.http_session(target.peer.tls, target.peer.timeout))
    client.set_http_retry_params(retry=False)
    try:
        return client.retrieve_instance(str(sent.StudyInstanceUID), str(sent.SeriesInstanceUID),
                                        str(sent.SOPInstanceUID), media_types=(("application/dicom", "*"),))
    except Exception as exc:  # noqa: BLE001 - any retrieval failure is a cell, not a crash
        return f"not retrievable over WADO-RS ({type(exc).__name__})"


def _retrieve_cget(target: Target, sent: pydicom.Dataset) -> pydicom.Dataset | str:
    """The instance as the server returns it with C-GET, or why it could not be had."""
    try:
        return pacs.get_instance(target.peer, str(sent.SOPClassUID), str(sent.file_meta.TransferSyntaxUID),
                                 str(sent.StudyInstanceUID), str(sent.SeriesInstanceUID), str(sent.SOPInstanceUID))
    except EnvironmentProblem as exc:
        return f"not retrievable with C-GET ({exc})"


def _read_back(target: Target, path: Path) -> dict[str, str]:
    """Each way the target offers, what came back compared with what was sent (read once)."""
    ways = {**({"WADO-RS": _retrieve_wado} if target.wado else {}),
            **({"C-GET": _retrieve_cget} if target.cget else {})}
    if not ways:
        return {}
    sent = pydicom.dcmread(str(path), stop_before_pixels=True)
    fragments = list(read_fragments(path))
    compared = {}
    for how, fetch in ways.items():
        back = fetch(target, sent)
        compared[how] = back if isinstance(back, str) else _compare(sent, fragments, back)
    return compared


def _measure(target: Target, files: dict[tuple[str, str], Path]) -> list[Cell]:
    sop_classes = {i.option: i.sop_class for i in VideoIOD}
    answered = _identity(target, sorted({(sop_classes[iod], syntaxes.BY_NAME[name].uid) for iod, name in files}))
    cells = []
    for (iod, name), path in files.items():
        result = pacs.store(target.peer, [path], retries=1)[0]
        retrieved = _read_back(target, path) if result.outcome == "stored" else {}
        cells.append(Cell(target.name, iod, name, syntaxes.BY_NAME[name].uid, result.outcome,
                          _retrieval_words(retrieved), result.message, source=answered))
    return cells


def _identity(target: Target, pairs: list[tuple[str, str]]) -> str:
    """What the server said it is, read from it (an association of its own), not from the name it was given:
    its implementation version name and class UID - often the DICOM toolkit inside the product."""
    try:
        said = pacs.identify(target.peer, pairs)
    except EnvironmentProblem as exc:
        return f"it did not say what it is ({exc})"
    version = said["implementation_version_name"] or "no implementation version name"
    return f"on the wire it names its implementation `{version}` (class UID {said['implementation_class_uid']})"


def _retrieval_words(retrieved: dict[str, str]) -> str:
    """"identical (WADO-RS, C-GET)" when the ways agree, else each way's own result."""
    if not retrieved:
        return "not retrieved"
    if len(set(retrieved.values())) == 1:
        return f"{next(iter(retrieved.values()))} ({', '.join(retrieved)})"
    return "; ".join(f"{how}: {what}" for how, what in retrieved.items())


def _documented(profile: pacsprofiles.PacsProfile, files: dict[tuple[str, str], Path], calling_aet: str,
                timeout: float) -> list[Cell]:
    """Send each file to a simulated SCP accepting what the profile documents (or mark the row unknown)."""
    source = f"{profile.path.name}: {profile.sources[0].title} ({profile.sources[0].dated})" if profile.sources \
        else f"{profile.path.name}: no source found"
    if not profile.documented:
        return [Cell(profile.name, iod, name, syntaxes.BY_NAME[name].uid, "unknown", "not retrieved",
                     "its sources do not say which transfer syntaxes it accepts", profile.evidence, source)
                for (iod, name) in files]
    server = simulate.start("127.0.0.1", 0, "SIMULATED",
                            simulate.Behaviour(profile.accept_map([i.sop_class for i in VideoIOD])))
    try:
        peer = pacs.Peer("127.0.0.1", server.server_address[1], "SIMULATED", calling_aet, timeout)
        cells = []
        for (iod, name), path in files.items():
            result = pacs.store(peer, [path], retries=0)[0]
            cells.append(Cell(profile.name, iod, name, syntaxes.BY_NAME[name].uid, result.outcome, "not retrieved",
                              result.message, profile.evidence, source))
        return cells
    finally:
        server.shutdown()


def run(targets: list[Target], iods: list[str], names: list[str], work: Path,
        profiles: list[pacsprofiles.PacsProfile] | None = None, calling_aet: str = "DVQA", timeout: float = 30.0
        ) -> list[Cell]:
    files = reference_files(work, iods, names)
    cells = [cell for target in targets for cell in _measure(target, files)]
    return cells + [cell for p in profiles or [] for cell in _documented(p, files, calling_aet, timeout)]


def metadata() -> dict[str, str]:
    """When and with what the matrix was made; every rendering states it."""
    return {"measured": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "dvqa": __version__,
            "pynetdicom": pynetdicom.__version__, "pydicom": pydicom.__version__}


def to_json(cells: list[Cell], meta: dict[str, str]) -> str:
    return json.dumps({**meta, "cells": [c.__dict__ for c in cells]}, indent=2)


def _grid(cells: list[Cell]) -> tuple[list[str], list[str], list[str], dict]:
    targets = list(dict.fromkeys(c.target for c in cells))
    iods = list(dict.fromkeys(c.iod for c in cells))
    names = list(dict.fromkeys(c.syntax for c in cells))
    return targets, iods, names, {(c.target, c.iod, c.syntax): c for c in cells}


def _how(cells: list[Cell], target: str) -> str:
    """One line under each target's heading: measured, or which document it comes from."""
    first = next(c for c in cells if c.target == target)
    if first.evidence == MEASURED:
        return "**Measured** against a running server" + (f": {first.source}." if first.source else ".")
    if first.outcome == "unknown":
        return f"**Unknown** - {first.source}."
    return (f"**From documents ({first.evidence})**, not measured: a simulated SCP accepting what {first.source} "
            "says.")


INTRO = ("\"identical\" means retrieved in the same transfer syntax with the same Pixel Data bytes; rows marked "
         "as from documents were sent to `dvqa pacs simulate` configured from `rules/pacs/`, so \"accepted\" / "
         "\"refused\" there is what the documents say, not what the product did.")


def to_markdown(cells: list[Cell], meta: dict[str, str]) -> str:
    targets, iods, names, index = _grid(cells)
    iod_titles = {i.option: i.title for i in VideoIOD}
    out = [f"Made {meta['measured']} by `dvqa pacs matrix` (dvqa {meta['dvqa']}, pynetdicom {meta['pynetdicom']}, "
           f"pydicom {meta['pydicom']}). {INTRO}", "",
           "## Summary", "", "One row per system; a cell shows the outcome when all IODs agree, else each IOD's.", "",
           "| system | evidence | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for target in targets:
        row = []
        for name in names:
            labels = [index[(target, i, name)].label() for i in iods if (target, i, name) in index]
            row.append(labels[0] if len(set(labels)) == 1 else " / ".join(labels))
        evidence = next(c.evidence for c in cells if c.target == target)
        out.append(f"| {target} | {evidence} | " + " | ".join(row) + " |")
    out.append("")
    for target in targets:
        out += [f"## {target}", "", _how(cells, target), "",
                "| transfer syntax | " + " | ".join(iod_titles.get(i, i) for i in iods) + " |",
                "|---|" + "---|" * len(iods)]
        for name in names:
            row = [index[(target, i, name)].label() if (target, i, name) in index else "-" for i in iods]
            out.append(f"| {name} ({syntaxes.BY_NAME[name].uid}) | " + " | ".join(row) + " |")
        out.append("")
    return "\n".join(out)


def _inline(markdown: str) -> Markup:
    """The Markdown rendering's inline marks (`code`, **strong**) as HTML, after escaping: one text for both."""
    text = str(escape(markdown))
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return Markup(re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text))


def to_html(cells: list[Cell], meta: dict[str, str]) -> str:
    from dvqa.core.resources import templates

    targets, iods, names, index = _grid(cells)
    env = templates()
    iod_titles = {i.option: i.title for i in VideoIOD}
    return env.get_template("pacs-matrix.html").render(
        meta=meta, intro=_inline(INTRO),
        targets=[(t, _inline(_how(cells, t)), next(c.evidence for c in cells if c.target == t) == MEASURED)
                 for t in targets],
        iods=[(i, iod_titles.get(i, i)) for i in iods], names=[(n, syntaxes.BY_NAME[n].uid) for n in names],
        index=index)
