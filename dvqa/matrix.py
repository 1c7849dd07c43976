"""`dvqa pacs matrix`: what a PACS really does with each video SOP class and transfer syntax.

For every (IOD x syntax) pair dvqa writes, one reference file is made from a bundled clip and sent
with C-STORE; when the target has a WADO-RS root, the instance is retrieved back asking for its
original transfer syntax ("transfer-syntax=*", PS3.18 §8.7.3) and compared: the same syntax and
the same Pixel Data fragments, byte for byte, or "transcoded" / "changed". The matrix is rendered
as JSON, Markdown and HTML from one list of cells.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.encaps import generate_fragments

from dvqa import pacs, syntaxes
from dvqa.convert import ConvertOptions, convert
from dvqa.dicomfile import read_fragments
from dvqa.errors import UsageError
from dvqa.iod import VideoIOD

REFERENCE_CLIP = Path(__file__).resolve().parent.parent / "reference_videos" / "synthetic" / "h264_cfr_high.mkv"


@dataclass(frozen=True)
class Target:
    name: str
    peer: pacs.Peer
    wado: str | None  # DICOMweb root for retrieval, e.g. http://host:8042/dicom-web

    @classmethod
    def parse(cls, spec: str, calling_aet: str, timeout: float) -> "Target":
        """NAME=AET@HOST:PORT[,wado=URL]"""
        try:
            name, rest = spec.split("=", 1)
            address, _, extra = rest.partition(",")
            aet, hostport = address.split("@", 1)
            host, port = hostport.rsplit(":", 1)
            wado = extra.split("=", 1)[1] if extra.startswith("wado=") else None
            return cls(name, pacs.Peer(host, int(port), aet, calling_aet, timeout), wado)
        except ValueError:
            raise UsageError(f"--target {spec!r}: write NAME=AET@HOST:PORT or NAME=AET@HOST:PORT,wado=URL.") from None


@dataclass
class Cell:
    target: str
    iod: str
    syntax: str
    uid: str
    outcome: str  # stored | rejected | failed
    retrieved: str  # identical | transcoded to ... | changed | not retrieved | ...
    message: str

    def label(self) -> str:
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


def _retrieve(target: Target, sent: Path) -> str:
    from dicomweb_client.api import DICOMwebClient

    ds = pydicom.dcmread(str(sent), stop_before_pixels=True)
    client = DICOMwebClient(url=target.wado)
    client.set_http_retry_params(retry=False)
    try:
        back = client.retrieve_instance(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID),
                                        media_types=(("application/dicom", "*"),))
    except Exception as exc:  # noqa: BLE001 - any retrieval failure is a cell, not a crash
        return f"not retrievable ({type(exc).__name__})"
    syntax_back = str(back.file_meta.get("TransferSyntaxUID", "?"))
    if syntax_back != str(ds.file_meta.TransferSyntaxUID):
        return f"transcoded to {syntax_back}"
    fragments_back = list(generate_fragments(back.PixelData))
    return "identical" if fragments_back == list(read_fragments(sent)) else "changed (Pixel Data differs)"


def run(targets: list[Target], iods: list[str], names: list[str], work: Path) -> list[Cell]:
    files = reference_files(work, iods, names)
    cells = []
    for target in targets:
        for (iod, name), path in files.items():
            result = pacs.store(target.peer, [path], retries=1)[0]
            retrieved = "not retrieved"
            if result.outcome == "stored" and target.wado:
                retrieved = _retrieve(target, path)
            cells.append(Cell(target.name, iod, name, syntaxes.BY_NAME[name].uid, result.outcome, retrieved,
                              result.message))
    return cells


def to_json(cells: list[Cell]) -> str:
    return json.dumps({"measured": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                       "cells": [c.__dict__ for c in cells]}, indent=2)


def _grid(cells: list[Cell]) -> tuple[list[str], list[str], list[str], dict]:
    targets = list(dict.fromkeys(c.target for c in cells))
    iods = list(dict.fromkeys(c.iod for c in cells))
    names = list(dict.fromkeys(c.syntax for c in cells))
    return targets, iods, names, {(c.target, c.iod, c.syntax): c for c in cells}


def to_markdown(cells: list[Cell]) -> str:
    targets, iods, names, index = _grid(cells)
    iod_titles = {i.option: i.title for i in VideoIOD}
    out = [f"Measured {dt.date.today().isoformat()} by `dvqa pacs matrix`; \"identical\" means retrieved over "
           "WADO-RS in the same transfer syntax with the same Pixel Data bytes.", ""]
    for target in targets:
        out += [f"## {target}", "", "| transfer syntax | " + " | ".join(iod_titles.get(i, i) for i in iods) + " |",
                "|---|" + "---|" * len(iods)]
        for name in names:
            row = [index[(target, i, name)].label() if (target, i, name) in index else "-" for i in iods]
            out.append(f"| {name} ({syntaxes.BY_NAME[name].uid}) | " + " | ".join(row) + " |")
        out.append("")
    return "\n".join(out)


def to_html(cells: list[Cell]) -> str:
    import jinja2

    from dvqa.resources import data_dir

    targets, iods, names, index = _grid(cells)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(data_dir("templates")), autoescape=True)
    iod_titles = {i.option: i.title for i in VideoIOD}
    return env.get_template("pacs-matrix.html").render(
        measured=dt.date.today().isoformat(), targets=targets, iods=[(i, iod_titles.get(i, i)) for i in iods],
        names=[(n, syntaxes.BY_NAME[n].uid) for n in names], index=index)
