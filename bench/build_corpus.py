"""Build a corpus of DICOM files from writers other than dvqa, for comparing `dvqa validate` with dciodvfy.

Run: python bench/build_corpus.py [--out bench/.cache/corpus] [--sample]

Issue 31 asks that the IOD layer be judged on anyone's files, not only on dvqa's own: this script makes
them, each with its origin in `manifest.json` (writer, tool and version, the command or the package and
path it came from, the tool's licence, the defect put in on purpose if any). The files are not kept in
git: every input (pictures, PDF, CDA, STL, hand-written dumps) is made here from nothing, so running the
script again makes the same files with the same defects (the UIDs and dates that DCMTK, GDCM,
plastimatch, XMedCon and Orthanc invent differ between runs; no check depends on them).

Writers (all from Debian 12 or PyPI; none is used by dvqa's tests, except the files marked
`in_dvqa_tests`, which tests/test_iod.py already reads, kept apart in the numbers):
DCMTK (img2dcm, pdf2dcm, cda2dcm, stl2dcm, dcmpsmk, dump2dcm, dcmconv, dcmcrle, dcmdrle, dcmcjpeg,
dcmcjpls, dcmmkdir, dcmodify), GDCM (gdcmimg, gdcmconv, gdcmanon), plastimatch, XMedCon (medcon),
highdicom, Orthanc (REST /tools/create-dicom), Odil (python3-odil), pydicom-data, and pydicom's own
test files. The bench-only tools: `apt-get install dcmtk libgdcm-tools plastimatch medcon
python3-odil orthanc ffmpeg` and `pip install highdicom pydicom-data` (XMedCon's `medcon` command is in
Debian's package `medcon`; the package `xmedcon` is its GTK front end, which the bench does not use).

`--sample` makes only the small set tests/test_corpus.py uses (DCMTK and GDCM from pictures made here);
`--smoke` makes it in a temporary folder and checks its shape (tests/test_bench.py runs it).
"""

from __future__ import annotations

import argparse
import base64
import importlib.metadata
import json
import shutil
import struct
import subprocess
import sys
import tempfile
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / ".cache" / "corpus"

LICENCES = {
    "DCMTK": "BSD-3-Clause (OFFIS)", "GDCM": "BSD-3-Clause", "plastimatch": "BSD-style (Plastimatch licence)",
    "XMedCon": "LGPL-2.0-or-later", "highdicom": "MIT", "Orthanc": "GPL-3.0-or-later", "Odil": "CeCILL-B",
    "pydicom-data": "MIT (files: see the package's README for each file's source)",
    "pydicom": "MIT (files: see pydicom/data/test_files/README.txt)",
}


@dataclass
class Entry:
    """One corpus file and where it came from."""

    path: str
    writer: str
    tool: str
    version: str
    origin: str  # the command line, or the package and the path inside it
    licence: str
    defect: str | None = None  # what was broken on purpose (None: as the writer wrote it)
    in_dvqa_tests: bool = False
    notes: list[str] = field(default_factory=list)


def uid(name: str) -> str:
    """A UID that is the same on every run (PS3.5 B.2: 2.25 and a UUID as an integer)."""
    return "2.25." + str(uuid.uuid5(uuid.NAMESPACE_URL, "dvqa-corpus/" + name).int)


def deb_version(package: str) -> str:
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True, text=True)
    return out.stdout.strip() or "not installed"


def py_version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


class Corpus:
    """Runs the writers and records what each file is."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.entries: list[Entry] = []
        self.skipped: list[str] = []
        self.work = Path(tempfile.mkdtemp(prefix="dvqa-corpus-"))

    def run(self, writer: str, version: str, command: list[str], output: Path, defect: str | None = None,
            cwd: Path | None = None) -> bool:
        """Run one writer's command; the file it writes joins the corpus (a failure is listed, not hidden)."""
        output.parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(command, capture_output=True, text=True, cwd=cwd)
        shown = " ".join(str(part).replace(str(self.work), "$WORK").replace(str(self.out), "$CORPUS")
                         for part in command)
        if done.returncode != 0 or not output.is_file():
            self.skipped.append(f"{shown}: exit {done.returncode} {(done.stderr or done.stdout).strip()[:200]}")
            return False
        self.add(output, writer, Path(command[0]).name, version, shown, defect)
        return True

    def add(self, path: Path, writer: str, tool: str, version: str, origin: str, defect: str | None = None,
            in_dvqa_tests: bool = False) -> None:
        self.entries.append(Entry(str(path.relative_to(self.out)), writer, tool, version, origin,
                                  LICENCES[writer], defect, in_dvqa_tests))

    def modify(self, source: Path, target: Path, args: list[str], defect: str) -> None:
        """A copy of a corpus file with one defect put in by DCMTK's dcmodify (the input is never changed)."""
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        self.run("DCMTK", deb_version("dcmtk"), ["dcmodify", "-nb", "-imt", *args, str(target)], target, defect)

    def write_manifest(self) -> None:
        writers = sorted({e.writer for e in self.entries})
        (self.out / "manifest.json").write_text(json.dumps({
            "files": [asdict(e) for e in self.entries], "writers": writers, "not_made": self.skipped,
        }, indent=1) + "\n")


# ---------------------------------------------------------------------------------------------- inputs

def ffmpeg_picture(path: Path, pix_fmt: str, source: str = "testsrc2", size: str = "64x48") -> Path:
    """A small test picture (FFmpeg's generator: the same pixels on every run)."""
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"{source}=size={size}:rate=1",
                    "-frames:v", "1", "-pix_fmt", pix_fmt, "-fflags", "+bitexact", "-flags", "+bitexact",
                    str(path)], check=True)
    return path


def tiny_pdf(path: Path, text: str) -> Path:
    """A one-page PDF written by hand (objects, cross-reference table and trailer)."""
    stream = f"BT /F1 12 Tf 20 50 Td ({text}) Tj ET".encode()
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 100] /Contents 4 0 R "
               b"/Resources << /Font << /F1 5 0 R >> >> >>",
               b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    body, offsets = b"%PDF-1.4\n", []
    for number, obj in enumerate(objects, 1):
        offsets.append(len(body))
        body += b"%d 0 obj\n%s\nendobj\n" % (number, obj)
    xref = len(body)
    body += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    body += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    body += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    path.write_bytes(body)
    return path


CDA = """<?xml version="1.0" encoding="UTF-8"?>
<ClinicalDocument xmlns="urn:hl7-org:v3">
 <typeId root="2.16.840.1.113883.1.3" extension="POCD_HD000040"/>
 <id root="{doc}"/>
 <code code="18748-4" codeSystem="2.16.840.1.113883.6.1" displayName="Diagnostic imaging report"/>
 <title>Corpus report</title>
 <effectiveTime value="20260101120000"/>
 <confidentialityCode code="N" codeSystem="2.16.840.1.113883.5.25"/>
 <recordTarget><patientRole><id extension="CORPUS1" root="1.2.3"/><patient><name><given>Test</given>
  <family>Corpus</family></name><administrativeGenderCode code="O" codeSystem="2.16.840.1.113883.5.1"/>
  <birthTime value="19700101"/></patient></patientRole></recordTarget>
 <author><time value="20260101"/><assignedAuthor><id root="1.2.3.4"/></assignedAuthor></author>
 <custodian><assignedCustodian><representedCustodianOrganization><id root="1.2.3.5"/>
  </representedCustodianOrganization></assignedCustodian></custodian>
 <component><nonXMLBody><text mediaType="text/plain">No findings.</text></nonXMLBody></component>
</ClinicalDocument>
"""


def binary_stl(path: Path) -> Path:
    """A tetrahedron in binary STL (DCMTK's stl2dcm refuses ASCII STL: "DICOM only accepts binary STL")."""
    corners = [(0.0, 0.0, 0.0), (10.0, 0.0, 0.0), (0.0, 10.0, 0.0), (0.0, 0.0, 10.0)]
    faces = [(0, 2, 1), (0, 1, 3), (0, 3, 2), (1, 2, 3)]
    body = b"dvqa corpus tetrahedron".ljust(80, b" ") + struct.pack("<I", len(faces))
    for a, b, c in faces:
        body += struct.pack("<3f", 0.0, 0.0, 0.0)
        for corner in (a, b, c):
            body += struct.pack("<3f", *corners[corner])
        body += struct.pack("<H", 0)
    path.write_bytes(body)
    return path


def pillow_jpeg(path: Path, mode: str, progressive: bool = False) -> Path:
    """A small JPEG through Pillow (FFmpeg's MJPEG encoder writes no 1-component JPEG)."""
    from PIL import Image

    picture = Image.new(mode, (64, 48))
    picture.putdata([((x * 4) % 256 if mode == "L" else ((x * 4) % 256, (y * 5) % 256, 128))
                     for y in range(48) for x in range(64)])
    picture.save(path, "JPEG", quality=90, progressive=progressive)
    return path


# ------------------------------------------------------------------------------- hand-written dumps

def seq(tag: str, items: list[list[str]]) -> list[str]:
    """A sequence in dcmdump's text form, as dump2dcm reads it."""
    lines = [f"({tag}) SQ (Sequence with undefined length)"]
    for item in items:
        lines += ["(fffe,e000) na (Item with undefined length)", *item, "(fffe,e00d) na (ItemDelimitationItem)"]
    return lines + ["(fffe,e0dd) na (SequenceDelimitationItem)"]


def code(value: str, scheme: str, meaning: str) -> list[str]:
    return [f"(0008,0100) SH [{value}]", f"(0008,0102) SH [{scheme}]", f"(0008,0104) LO [{meaning}]"]


def common(name: str, sop_class: str, modality: str) -> list[str]:
    """Patient, General Study, General Series, General Equipment and SOP Common of one hand-made instance."""
    return [
        f"(0008,0016) UI [{sop_class}]", f"(0008,0018) UI [{uid(name + '/sop')}]",
        "(0008,0020) DA [20260101]", "(0008,0030) TM [120000]", "(0008,0050) SH []",
        f"(0008,0060) CS [{modality}]", "(0008,0070) LO [dvqa corpus]", "(0008,0090) PN []",
        "(0010,0010) PN [Corpus^Test]", "(0010,0020) LO [CORPUS1]", "(0010,0030) DA []", "(0010,0040) CS [O]",
        f"(0020,000d) UI [{uid('study')}]", f"(0020,000e) UI [{uid(name + '/series')}]",
        "(0020,0010) SH [1]", "(0020,0011) IS [1]", "(0020,0013) IS [1]",
    ]


def pixels(rows: int, cols: int, bits: int) -> list[str]:
    """Image Pixel module of a small monochrome ramp (OW written as dump2dcm reads it: hex words)."""
    words = [f"{(r * cols + c) % (1 << min(bits, 12)):04x}" for r in range(rows) for c in range(cols)]
    return ["(0028,0002) US 1", "(0028,0004) CS [MONOCHROME2]", f"(0028,0010) US {rows}",
            f"(0028,0011) US {cols}", "(0028,0100) US 16", f"(0028,0101) US {bits}",
            f"(0028,0102) US {bits - 1}", "(0028,0103) US 0", "(7fe0,0010) OW " + "\\".join(words)]


def plane(name: str) -> list[str]:
    return [f"(0020,0052) UI [{uid(name + '/for')}]", "(0020,1040) LO []",
            "(0018,0050) DS [1]", "(0028,0030) DS [0.5\\0.5]", "(0020,0037) DS [1\\0\\0\\0\\1\\0]",
            "(0020,0032) DS [0\\0\\0]"]


def text_item(relation: str, text: str | None) -> list[str]:
    item = [f"(0040,a010) CS [{relation}]", "(0040,a040) CS [TEXT]",
            *seq("0040,a043", [code("121071", "DCM", "Finding")])]
    if text is not None:
        item.append(f"(0040,a160) UT [{text}]")
    return item


def sr_document(name: str, depth2_text: str | None) -> list[str]:
    """A Basic Text SR: a container, a text at depth 1 and a container holding a text at depth 2."""
    inner = ["(0040,a010) CS [CONTAINS]", "(0040,a040) CS [CONTAINER]",
             *seq("0040,a043", [code("121070", "DCM", "Findings")]), "(0040,a050) CS [SEPARATE]",
             *seq("0040,a730", [text_item("CONTAINS", depth2_text)])]
    return [*common(name, "1.2.840.10008.5.1.4.1.1.88.11", "SR"),
            "(0008,0023) DA [20260101]", "(0008,0033) TM [120000]",
            *seq("0008,1111", []), *seq("0040,a372", []),
            "(0040,a491) CS [COMPLETE]", "(0040,a493) CS [UNVERIFIED]",
            "(0040,a040) CS [CONTAINER]", *seq("0040,a043", [code("18748-4", "LN", "Diagnostic imaging report")]),
            "(0040,a050) CS [SEPARATE]",
            *seq("0040,a730", [text_item("CONTAINS", "No acute findings."), inner])]


def rtstruct(name: str, interpreted_type: bool) -> list[str]:
    for_uid = uid(name + "/for")
    observation = ["(3006,0082) IS [1]", "(3006,0084) IS [1]", "(3006,00a6) PN []"]
    if interpreted_type:
        observation.insert(2, "(3006,00a4) CS [ORGAN]")
    return [*common(name, "1.2.840.10008.5.1.4.1.1.481.3", "RTSTRUCT"), "(0008,1070) PN []",
            "(3006,0002) SH [CORPUS]", "(3006,0008) DA [20260101]", "(3006,0009) TM [120000]",
            *seq("3006,0020", [["(3006,0022) IS [1]", f"(3006,0024) UI [{for_uid}]", "(3006,0026) LO [Sphere]",
                                "(3006,0036) CS [MANUAL]"]]),
            *seq("3006,0039", [["(3006,002a) IS [255\\0\\0]", "(3006,0084) IS [1]",
                                *seq("3006,0040", [["(3006,0042) CS [CLOSED_PLANAR]", "(3006,0046) IS [3]",
                                                    "(3006,0050) DS [0\\0\\0\\5\\0\\0\\0\\5\\0]"]])]]),
            *seq("3006,0080", [observation])]


def dumps() -> dict[str, tuple[list[str], str | None]]:
    """Hand-written data sets for IODs no other writer here makes; name -> (dump lines, defect)."""
    ct = [*common("ct", "1.2.840.10008.5.1.4.1.1.2", "CT"), *plane("ct"), "(0008,0008) CS [ORIGINAL\\PRIMARY\\AXIAL]",
          "(0018,0060) DS [120]", "(0020,0012) IS [1]", "(0028,1052) DS [-1024]", "(0028,1053) DS [1]",
          *pixels(8, 8, 12)]
    mr = [*common("mr", "1.2.840.10008.5.1.4.1.1.4", "MR"), *plane("mr"), "(0008,0008) CS [ORIGINAL\\PRIMARY\\OTHER]",
          "(0018,0020) CS [SE]", "(0018,0021) CS [NONE]", "(0018,0022) CS []", "(0018,0023) CS [2D]",
          "(0018,0080) DS [500]", "(0018,0081) DS [15]", "(0018,0091) IS [1]", *pixels(8, 8, 12)]
    us = [*common("us", "1.2.840.10008.5.1.4.1.1.6.1", "US"), "(0008,0008) CS [ORIGINAL\\PRIMARY\\ABDOMINAL]",
          "(0020,0020) CS []", "(0008,2124) IS []", *pixels(8, 8, 8)]
    sc = [*common("sc", "1.2.840.10008.5.1.4.1.1.7", "OT"), "(0008,0064) CS [WSD]", "(0020,0020) CS []",
          *pixels(8, 8, 8)]
    sc_planar = [*sc[:], "(0028,0006) US 0"]
    sc_planar[1] = f"(0008,0018) UI [{uid('sc-planar/sop')}]"
    return {
        "ct": (ct, None), "mr": (mr, None), "us": (us, None), "sc": (sc, None),
        "sc-planar-config-on-gray": (sc_planar, "Planar Configuration (0028,0006) on a 1-sample image "
                                                "(PS3.3 C.7.6.3: required if Samples per Pixel > 1, "
                                                "shall not be present otherwise)"),
        "sr-basic-text": (sr_document("sr", "Nothing else."), None),
        "sr-text-missing-depth2": (sr_document("sr2", None), "Text Value (0040,A160) missing in a TEXT item "
                                                             "at depth 2 (PS3.3 C.17.3.2, Table C.17-5)"),
        "rtstruct": (rtstruct("rt", True), None),
        "rtstruct-no-interpreted-type": (rtstruct("rt2", False), "RT ROI Interpreted Type (3006,00A4), "
                                                                 "Type 2, missing (PS3.3 C.8.8.8)"),
    }


# ----------------------------------------------------------------------------------------- writers

def dcmtk(c: Corpus, sample: bool) -> None:
    v = deb_version("dcmtk")
    w, d = c.work, c.out / "dcmtk"
    pictures = {"gray-jpeg": pillow_jpeg(w / "gray.jpg", "L"),
                "rgb-jpeg": pillow_jpeg(w / "rgb.jpg", "RGB"),
                "gray-bmp": ffmpeg_picture(w / "gray.bmp", "gray", "testsrc"),
                "rgb-bmp": ffmpeg_picture(w / "rgb.bmp", "bgr24", "smptebars")}
    if not sample:
        pictures["rgb-progressive-jpeg"] = pillow_jpeg(w / "progressive.jpg", "RGB", progressive=True)
        pictures["palette-bmp"] = ffmpeg_picture(w / "palette.bmp", "pal8", "testsrc")
    iods = {"sc": "-sc", "nsc": "-nsc", "vlp": "-vlp"} if not sample else {"sc": "-sc", "nsc": "-nsc"}
    oph = ["-k", "ImageLaterality=R", "-k", "AcquisitionDeviceTypeCodeSequence[0].CodeValue=R-1021A",
           "-k", "AcquisitionDeviceTypeCodeSequence[0].CodingSchemeDesignator=SRT",
           "-k", "AcquisitionDeviceTypeCodeSequence[0].CodeMeaning=Fundus Camera"]
    for pic, src in pictures.items():
        fmt = "BMP" if src.suffix == ".bmp" else "JPEG"
        for iod, flag in iods.items():
            c.run("DCMTK", v, ["img2dcm", "-i", fmt, flag, str(src), str(d / f"img2dcm-{iod}-{pic}.dcm")],
                  d / f"img2dcm-{iod}-{pic}.dcm")
        if not sample and fmt == "JPEG":  # Ophthalmic Photography: img2dcm wants these two from the user
            c.run("DCMTK", v, ["img2dcm", "-i", fmt, "-oph", *oph, str(src), str(d / f"img2dcm-oph-{pic}.dcm")],
                  d / f"img2dcm-oph-{pic}.dcm")
    gray = d / "img2dcm-sc-gray-bmp.dcm"
    c.run("DCMTK", v, ["pdf2dcm", "+t", "Corpus", str(tiny_pdf(w / "a.pdf", "Corpus")), str(d / "pdf2dcm.dcm")],
          d / "pdf2dcm.dcm")
    c.run("DCMTK", v, ["dcmconv", "+td", str(gray), str(d / "dcmconv-deflated-sc.dcm")],
          d / "dcmconv-deflated-sc.dcm")
    c.run("DCMTK", v, ["dcmcrle", str(gray), str(d / "dcmcrle-sc.dcm")], d / "dcmcrle-sc.dcm")
    c.modify(gray, d / "defect-sc-patient-sex.dcm", ["-m", "(0010,0040)=X"],
             "Patient's Sex X: not an enumerated value (PS3.3 C.7.1.1)")
    c.modify(gray, d / "defect-sc-no-pixel-data.dcm", ["-e", "(7fe0,0010)"],
             "Pixel Data (7FE0,0010) removed (Type 1C in the Image Pixel module, PS3.3 C.7.6.3)")
    c.modify(gray, d / "defect-sc-no-study-uid.dcm", ["-e", "(0020,000d)"],
             "Study Instance UID, Type 1, removed (PS3.3 C.7.2.1)")
    if sample:
        return
    c.run("DCMTK", v, ["img2dcm", "-i", "JPEG", "-nsc", "-k", "SeriesDescription=with keys",
                       "-k", "PatientName=Corpus^Test", str(pictures["rgb-jpeg"]), str(d / "img2dcm-nsc-keys.dcm")],
          d / "img2dcm-nsc-keys.dcm")
    c.run("DCMTK", v, ["pdf2dcm", str(tiny_pdf(w / "b.pdf", "Second")), str(d / "pdf2dcm-untitled.dcm")],
          d / "pdf2dcm-untitled.dcm")
    (w / "report.xml").write_text(CDA.format(doc=uid("cda")))
    c.run("DCMTK", v, ["cda2dcm", "+t", "Corpus report", str(w / "report.xml"), str(d / "cda2dcm.dcm")],
          d / "cda2dcm.dcm")
    binary_stl(w / "shape.stl")
    c.run("DCMTK", v, ["stl2dcm", "+t", "Tetrahedron", "+mn", "dvqa corpus", "+mm", "none", "+ds", "1", "+sv", "1",
                       str(w / "shape.stl"), str(d / "stl2dcm.dcm")], d / "stl2dcm.dcm")
    c.run("DCMTK", v, ["stl2dcm", str(w / "shape.stl"), str(d / "stl2dcm-defaults.dcm")], d / "stl2dcm-defaults.dcm")
    for name, (lines, defect) in dumps().items():
        dump = w / f"{name}.dump"
        dump.write_text("\n".join(lines) + "\n")
        out = d / f"dump2dcm-{name}.dcm"
        if c.run("DCMTK", v, ["dump2dcm", "+te", str(dump), str(out)], out, defect):
            c.entries[-1].notes.append("data set written by hand for this corpus (see dumps() in this script)")
    for name in ("img2dcm-sc-gray-bmp", "img2dcm-nsc-gray-jpeg", "dump2dcm-ct", "dump2dcm-mr", "dump2dcm-us"):
        out = d / f"dcmpsmk-{name}.dcm"
        c.run("DCMTK", v, ["dcmpsmk", str(d / f"{name}.dcm"), str(out)], out)
    syntaxes = {"explicit-le": "+te", "big-endian": "+tb", "implicit": "+ti", "deflated": "+td"}
    for base in ("img2dcm-sc-rgb-bmp", "dump2dcm-ct", "dump2dcm-sr-basic-text"):
        for name, flag in syntaxes.items():
            out = d / f"dcmconv-{name}-{base}.dcm"
            c.run("DCMTK", v, ["dcmconv", flag, str(d / f"{base}.dcm"), str(out)], out)
    for base in ("img2dcm-nsc-rgb-bmp", "dump2dcm-ct", "dump2dcm-us"):
        out = d / f"dcmcrle-{base}.dcm"
        c.run("DCMTK", v, ["dcmcrle", str(d / f"{base}.dcm"), str(out)], out)
        back = d / f"dcmdrle-{base}.dcm"
        c.run("DCMTK", v, ["dcmdrle", str(out), str(back)], back)
    for base in ("img2dcm-sc-gray-bmp", "img2dcm-sc-rgb-bmp", "dump2dcm-ct"):
        for flag, name in (("+e1", "lossless-sv1"), ("+eb", "baseline"), ("+ee", "extended")):
            out = d / f"dcmcjpeg-{name}-{base}.dcm"
            c.run("DCMTK", v, ["dcmcjpeg", flag, str(d / f"{base}.dcm"), str(out)], out)
        for flag, name in (("+el", "lossless"), ("+en", "near-lossless")):
            out = d / f"dcmcjpls-{name}-{base}.dcm"
            c.run("DCMTK", v, ["dcmcjpls", flag, str(d / f"{base}.dcm"), str(out)], out)
    # a DICOMDIR over copies with ISO 9660 names
    media = d / "media"
    (media / "IMAGES").mkdir(parents=True, exist_ok=True)
    for number, base in enumerate(("img2dcm-sc-gray-bmp", "dump2dcm-ct", "dump2dcm-mr"), 1):
        out = media / "IMAGES" / f"IM{number:06d}"
        c.run("DCMTK", v, ["dcmconv", "+te", str(d / f"{base}.dcm"), str(out)], out)
    c.run("DCMTK", v, ["dcmmkdir", "+r", "+id", str(media), "+D", str(media / "DICOMDIR"), "IMAGES"],
          media / "DICOMDIR", cwd=media)
    defects = [
        ("sc-modality-removed", gray, ["-e", "(0008,0060)"],
         "Modality removed from an SC image (Type 1 in SC Equipment, PS3.3 C.8.6.1)"),
        ("sc-conversion-type-removed", gray, ["-e", "(0008,0064)"], "Conversion Type, Type 1, removed (C.8.6.1)"),
        ("sc-sop-uid-empty", gray, ["-m", "(0008,0018)="], "SOP Instance UID, Type 1, emptied (C.12.1)"),
        ("sc-samples-removed", gray, ["-e", "(0028,0002)"], "Samples per Pixel, Type 1, removed (C.7.6.3)"),
        ("sc-bad-date", gray, ["-i", "(0008,0020)=2026-01-01"], "Study Date in a form DA does not allow (PS3.5)"),
        ("sc-two-patient-ids", gray, ["-m", "(0010,0020)=A\\B"], "Patient ID with 2 values (VM 1, PS3.6)"),
        ("nsc-frames-removed", d / "img2dcm-nsc-gray-jpeg.dcm", ["-e", "(0028,0008)"],
         "Number of Frames, Type 1, removed from a Multi-frame SC image (C.7.6.6)"),
        ("vlp-image-type-bad", d / "img2dcm-vlp-rgb-jpeg.dcm", ["-m", "(0008,0008)=FOO\\PRIMARY"],
         "Image Type value 1 FOO: not ORIGINAL or DERIVED (C.8.12.1.1.6)"),
        ("vlp-lossy-removed", d / "img2dcm-vlp-rgb-jpeg.dcm", ["-e", "(0028,2110)"],
         "Lossy Image Compression removed from a VL Photographic image (Type 2 in VL Image, C.8.12.1)"),
        ("pdf-mime-removed", d / "pdf2dcm.dcm", ["-e", "(0042,0012)"],
         "MIME Type of Encapsulated Document, Type 1, removed (C.24.2)"),
        ("pdf-burned-in-bad", d / "pdf2dcm.dcm", ["-m", "(0028,0301)=MAYBE"],
         "Burned In Annotation MAYBE: not YES or NO (C.24.2)"),
        ("sr-completion-bad", d / "dump2dcm-sr-basic-text.dcm", ["-m", "(0040,a491)=DONE"],
         "Completion Flag DONE: not PARTIAL or COMPLETE (C.17.2)"),
        ("sr-value-type-removed", d / "dump2dcm-sr-basic-text.dcm", ["-e", "(0040,a730)[0].(0040,a040)"],
         "Value Type, Type 1, removed from the first content item (C.17.3)"),
        ("ct-rescale-removed", d / "dump2dcm-ct.dcm", ["-e", "(0028,1052)"],
         "Rescale Intercept, Type 1, removed from a CT image (C.8.2.1)"),
        ("ct-photometric-rgb", d / "dump2dcm-ct.dcm", ["-m", "(0028,0004)=RGB"],
         "Photometric Interpretation RGB in a CT image (C.8.2.1.1.2: MONOCHROME1 or 2)"),
        ("mr-scanning-sequence-bad", d / "dump2dcm-mr.dcm", ["-m", "(0018,0020)=XX"],
         "Scanning Sequence XX: not an enumerated value (C.8.3.1)"),
        ("us-photometric-removed", d / "dump2dcm-us.dcm", ["-e", "(0028,0004)"],
         "Photometric Interpretation, Type 1, removed (C.8.5.6)"),
        ("rtstruct-roi-number-removed", d / "dump2dcm-rtstruct.dcm", ["-e", "(3006,0020)[0].(3006,0022)"],
         "ROI Number, Type 1, removed from the Structure Set ROI Sequence (C.8.8.5)"),
    ]
    for name, source, args, defect in defects:
        c.modify(source, d / f"defect-{name}.dcm", args, defect)


def gdcm(c: Corpus, sample: bool) -> None:
    v = deb_version("libgdcm-tools")
    w, d = c.work, c.out / "gdcm"
    pgm = ffmpeg_picture(w / "gray.pgm", "gray", "testsrc")
    ppm = ffmpeg_picture(w / "rgb.ppm", "rgb24", "smptebars")
    c.run("GDCM", v, ["gdcmimg", "-i", str(pgm), "-o", str(d / "gdcmimg-pgm.dcm")], d / "gdcmimg-pgm.dcm")
    c.run("GDCM", v, ["gdcmimg", "-i", str(ppm), "-o", str(d / "gdcmimg-ppm.dcm")], d / "gdcmimg-ppm.dcm")
    c.run("GDCM", v, ["gdcmconv", "--rle", "-i", str(d / "gdcmimg-ppm.dcm"), "-o", str(d / "gdcmconv-rle-ppm.dcm")],
          d / "gdcmconv-rle-ppm.dcm")
    if sample:
        return
    sop_classes = {"ct": "1.2.840.10008.5.1.4.1.1.2", "mr": "1.2.840.10008.5.1.4.1.1.4",
                   "us": "1.2.840.10008.5.1.4.1.1.6.1", "xa": "1.2.840.10008.5.1.4.1.1.12.1",
                   "cr": "1.2.840.10008.5.1.4.1.1.1", "mg": "1.2.840.10008.5.1.4.1.1.1.2",
                   "nsc-byte": "1.2.840.10008.5.1.4.1.1.7.2", "ot": "1.2.840.10008.5.1.4.1.1.7"}
    for name, sop in sop_classes.items():
        out = d / f"gdcmimg-{name}-pgm.dcm"
        c.run("GDCM", v, ["gdcmimg", "-C", sop, "-i", str(pgm), "-o", str(out)], out)
    jpeg = ffmpeg_picture(w / "g.jpg", "gray")
    c.run("GDCM", v, ["gdcmimg", "-i", str(jpeg), "-o", str(d / "gdcmimg-jpeg.dcm")], d / "gdcmimg-jpeg.dcm")
    c.run("GDCM", v, ["gdcmimg", "--fill", "0", "-i", str(pgm), "-o", str(d / "gdcmimg-filled.dcm")],
          d / "gdcmimg-filled.dcm")
    for base in ("gdcmimg-pgm", "gdcmimg-ppm", "gdcmimg-ct-pgm"):
        for flag, name in (("--raw", "raw"), ("--jpeg", "jpeg"), ("--jpegls", "jpegls"), ("--j2k", "j2k"),
                           ("--rle", "rle"), ("--deflated", "deflated"), ("-M", "implicit")):
            out = d / f"gdcmconv-{name}-{base}.dcm"
            if not out.exists():
                c.run("GDCM", v, ["gdcmconv", flag, "-i", str(d / f"{base}.dcm"), "-o", str(out)], out)
    c.run("GDCM", v, ["gdcmconv", "--jpeg", "--lossy", "-q", "80", "-i", str(d / "gdcmimg-ppm.dcm"), "-o",
                      str(d / "gdcmconv-jpeg-lossy-ppm.dcm")], d / "gdcmconv-jpeg-lossy-ppm.dcm")
    dcmtk_out = c.out / "dcmtk"
    for base in ("dump2dcm-ct", "dump2dcm-mr", "img2dcm-vlp-rgb-jpeg", "dump2dcm-sr-basic-text"):
        if (dcmtk_out / f"{base}.dcm").exists():
            out = d / f"gdcmconv-j2k-{base}.dcm" if "sr" not in base else d / f"gdcmconv-implicit-{base}.dcm"
            flag = "--j2k" if "sr" not in base else "-M"
            c.run("GDCM", v, ["gdcmconv", flag, "-i", str(dcmtk_out / f"{base}.dcm"), "-o", str(out)], out)
    for base in ("dump2dcm-ct", "dump2dcm-mr", "img2dcm-vlp-rgb-jpeg"):
        if (dcmtk_out / f"{base}.dcm").exists():
            out = d / f"gdcmanon-dumb-{base}.dcm"
            c.run("GDCM", v, ["gdcmanon", "--dumb", "--remove", "0010,0010", "--empty", "0008,0020",
                              "--replace", "0010,0020=ANON", "-i", str(dcmtk_out / f"{base}.dcm"), "-o", str(out)],
                  out, "dumb mode: Patient's Name (Type 2) removed by gdcmanon --remove 0010,0010")
    key, cert = w / "anon.key", w / "anon.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=corpus"], capture_output=True, check=True)
    for base in ("dump2dcm-ct", "img2dcm-sc-gray-bmp", "gdcmimg-mr-pgm"):
        source = dcmtk_out / f"{base}.dcm" if base.startswith(("dump", "img")) else d / f"{base}.dcm"
        if source.exists():
            out = d / f"gdcmanon-basic-{base}.dcm"
            c.run("GDCM", v, ["gdcmanon", "-e", "--certificate", str(cert), "-i", str(source), "-o", str(out)], out)


def plastimatch(c: Corpus) -> None:
    v = deb_version("plastimatch")
    for pattern in ("sphere", "rect"):
        folder = c.work / f"plastimatch-{pattern}"
        done = subprocess.run(["plastimatch", "synth", "--pattern", pattern, "--dim", "16 16 4",
                               "--output-dicom", str(folder), "--output-ss-img", str(c.work / f"{pattern}-ss.mha"),
                               "--output-dose-img", str(c.work / f"{pattern}-dose.mha")],
                              capture_output=True, text=True)
        command = (f"plastimatch synth --pattern {pattern} --dim '16 16 4' --output-dicom DIR "
                   "--output-ss-img ss.mha --output-dose-img dose.mha")
        if done.returncode != 0:
            c.skipped.append(f"{command}: exit {done.returncode}")
            continue
        for f in sorted(folder.glob("*.dcm")):
            name = f.name.split("_")[0]  # image0000, rtss, dose: the UID after it differs per run
            out = c.out / "plastimatch" / f"{pattern}-{name}.dcm"
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, out)
            c.add(out, "plastimatch", "plastimatch", v, f"{command} ({f.name.split('_')[0]})")


def medcon(c: Corpus) -> None:
    v = deb_version("medcon")  # the package that holds the medcon command
    d = c.out / "xmedcon"
    d.mkdir(parents=True, exist_ok=True)
    inputs = {"gray-png": ffmpeg_picture(c.work / "m-gray.png", "gray"),
              "gray16-png": ffmpeg_picture(c.work / "m-gray16.png", "gray16be", "testsrc")}
    img = c.work / "sphere-ss.mha"
    if img.exists():
        nii = c.work / "vol.nii"
        subprocess.run(["plastimatch", "convert", "--input", str(c.work / "sphere-dose.mha"), "--output-img",
                        str(nii)], capture_output=True)
        if nii.exists():
            inputs["nifti-volume"] = nii
    for name, source in inputs.items():
        base = d / f"medcon-{name}"
        c.run("XMedCon", v, ["medcon", "-f", str(source), "-c", "dicom", "-o", str(base)], base.with_suffix(".dcm"))


def highdicom(c: Corpus) -> None:
    """SEG, SR (TID 1500 measurement report), KOS, SC, GSPS and a parametric map on plastimatch's CT."""
    import highdicom as hd
    import numpy as np
    import pydicom
    from pydicom.sr.codedict import codes

    v = py_version("highdicom")
    d = c.out / "highdicom"
    d.mkdir(parents=True, exist_ok=True)
    ct_files = sorted((c.out / "plastimatch").glob("sphere-image*.dcm"))
    if not ct_files:
        c.skipped.append("highdicom: no plastimatch CT series to refer to")
        return
    cts = [pydicom.dcmread(f) for f in ct_files]
    device = dict(manufacturer="dvqa corpus", manufacturer_model_name="none", software_versions="1",
                  device_serial_number="1")
    tissue = hd.sr.CodedConcept("85756007", "SCT", "Tissue")
    organ = hd.sr.CodedConcept("113343008", "SCT", "Organ")

    def make(name: str, what: str, build) -> None:
        out = d / f"{name}.dcm"
        try:
            build().save_as(out)
        except Exception as error:  # a writer that refuses its input: listed, not hidden
            c.skipped.append(f"highdicom {what}: {type(error).__name__}: {error}"[:300])
            return
        c.add(out, "highdicom", "highdicom", v, f"highdicom {what} on plastimatch's sphere CT "
              "(build_corpus.highdicom)")

    mask = np.zeros((len(cts), cts[0].Rows, cts[0].Columns), dtype=bool)
    mask[:, 4:12, 4:12] = True
    description = [hd.seg.SegmentDescription(segment_number=1, segment_label="box",
                                             segmented_property_category=tissue, segmented_property_type=organ,
                                             algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)]
    for kind in ("BINARY", "FRACTIONAL"):
        make(f"seg-{kind.lower()}", f"Segmentation {kind}", lambda kind=kind: hd.seg.Segmentation(
            source_images=cts, pixel_array=mask.astype(np.uint8 if kind == "BINARY" else np.float32),
            segmentation_type=kind, segment_descriptions=description,
            series_instance_uid=uid(f"hd-seg-{kind}/series"), series_number=20, sop_instance_uid=uid(f"hd-seg-{kind}"),
            instance_number=1, **device))

    def report():
        region = hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                                   graphic_data=np.array([[2.0, 2.0], [10.0, 2.0], [10.0, 10.0], [2.0, 2.0]]),
                                   source_image=hd.sr.SourceImageForRegion.from_source_image(cts[0]))
        group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=uid("hd-track"), identifier="region 1"),
            referenced_region=region,
            measurements=[hd.sr.Measurement(name=codes.SCT.Area, value=32.0, unit=codes.UCUM.SquareMillimeter)])
        content = hd.sr.MeasurementReport(observation_context=hd.sr.ObservationContext(),
                                          procedure_reported=codes.LN.CTUnspecifiedBodyRegion,
                                          imaging_measurements=[group])
        return hd.sr.Comprehensive3DSR(evidence=[cts[0]], content=content[0], series_instance_uid=uid("hd-sr/series"),
                                       series_number=30, sop_instance_uid=uid("hd-sr"), instance_number=1,
                                       manufacturer="dvqa corpus")
    make("sr-comprehensive3d-tid1500", "Comprehensive3DSR with a TID 1500 measurement report", report)

    def comprehensive():
        region = hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                                   graphic_data=np.array([[2.0, 2.0], [10.0, 2.0], [10.0, 10.0], [2.0, 2.0]]),
                                   source_image=hd.sr.SourceImageForRegion.from_source_image(cts[1]))
        group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=uid("hd-track2"), identifier="region 2"),
            referenced_region=region)
        report_content = hd.sr.MeasurementReport(observation_context=hd.sr.ObservationContext(),
                                                 procedure_reported=codes.LN.CTUnspecifiedBodyRegion,
                                                 imaging_measurements=[group])
        return hd.sr.ComprehensiveSR(evidence=[cts[1]], content=report_content[0],
                                     series_instance_uid=uid("hd-sr2/series"), series_number=31,
                                     sop_instance_uid=uid("hd-sr2"), instance_number=1, manufacturer="dvqa corpus")
    make("sr-comprehensive-tid1500", "ComprehensiveSR with a TID 1500 measurement report", comprehensive)

    make("kos", "KeyObjectSelectionDocument", lambda: hd.ko.KeyObjectSelectionDocument(
        evidence=cts, content=hd.ko.KeyObjectSelection(document_title=codes.DCM.OfInterest, referenced_objects=cts),
        series_instance_uid=uid("hd-kos/series"), series_number=40, sop_instance_uid=uid("hd-kos"),
        instance_number=1, manufacturer="dvqa corpus"))
    picture = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) % 256).astype(np.uint8)
    make("sc-gray", "SCImage MONOCHROME2", lambda: hd.sc.SCImage(
        pixel_array=picture, photometric_interpretation="MONOCHROME2", bits_allocated=8, coordinate_system="PATIENT",
        study_instance_uid=uid("hd-study"), series_instance_uid=uid("hd-sc/series"), sop_instance_uid=uid("hd-sc"),
        series_number=50, instance_number=1, manufacturer="dvqa corpus", patient_orientation=("L", "P"),
        patient_id="CORPUS1", patient_name="Corpus^Test", patient_sex="O"))
    rgb = np.stack([picture, picture[::-1], picture.T], axis=-1)
    make("sc-rgb", "SCImage RGB", lambda: hd.sc.SCImage(
        pixel_array=rgb, photometric_interpretation="RGB", bits_allocated=8, coordinate_system="PATIENT",
        study_instance_uid=uid("hd-study"), series_instance_uid=uid("hd-sc/series"), sop_instance_uid=uid("hd-sc2"),
        series_number=50, instance_number=2, manufacturer="dvqa corpus", patient_orientation=("L", "P")))
    make("gsps", "GrayscaleSoftcopyPresentationState", lambda: hd.pr.GrayscaleSoftcopyPresentationState(
        referenced_images=cts[:1], series_instance_uid=uid("hd-pr/series"), series_number=60,
        sop_instance_uid=uid("hd-pr"), instance_number=1, content_label="CORPUS", **device))
    values = np.linspace(0, 1, mask.size, dtype=np.float32).reshape(mask.shape)
    make("parametric-map", "ParametricMap", lambda: hd.pm.ParametricMap(
        source_images=cts, pixel_array=values, series_instance_uid=uid("hd-pm/series"), series_number=70,
        sop_instance_uid=uid("hd-pm"), instance_number=1, contains_recognizable_visual_features=False,
        real_world_value_mappings=[hd.pm.RealWorldValueMapping(
            lut_label="v", lut_explanation="value", unit=codes.UCUM.NoUnits, value_range=(0.0, 1.0),
            slope=1.0, intercept=0.0)],
        window_center=0.5, window_width=1.0, **device))


def orthanc(c: Corpus) -> None:
    """Orthanc's REST /tools/create-dicom: an SC image from a PNG, an encapsulated PDF, a bare instance."""
    sys.path.insert(0, str(HERE))
    import orthanc as orthanc_server

    d = c.out / "orthanc"
    d.mkdir(parents=True, exist_ok=True)
    png = ffmpeg_picture(c.work / "o.png", "rgb24", "smptebars")
    gray = ffmpeg_picture(c.work / "o-gray.png", "gray", "testsrc")
    pdf = tiny_pdf(c.work / "o.pdf", "Orthanc")
    requests = {
        "create-rgb-png": {"Tags": {"PatientName": "Corpus^Test", "PatientID": "CORPUS1", "Modality": "OT"},
                           "Content": "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()},
        "create-gray-png-ct": {"Tags": {"PatientName": "Corpus^Test", "Modality": "CT",
                                        "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2"},
                               "Content": "data:image/png;base64," + base64.b64encode(gray.read_bytes()).decode()},
        "create-pdf": {"Tags": {"PatientName": "Corpus^Test", "Modality": "DOC"},
                       "Content": "data:application/pdf;base64," + base64.b64encode(pdf.read_bytes()).decode()},
        "create-no-content": {"Tags": {"PatientName": "Corpus^Test", "Modality": "OT"}},
        "create-no-content-us": {"Tags": {"PatientName": "Corpus^Test", "Modality": "US",
                                          "SOPClassUID": "1.2.840.10008.5.1.4.1.1.6.1"}},
    }
    folder = c.work / "orthanc"
    folder.mkdir()
    with orthanc_server.running(folder) as server:
        version = str(server["version"])
        for name, body in requests.items():
            request = urllib.request.Request(f"{server['http']}/tools/create-dicom", data=json.dumps(body).encode(),
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=30) as answer:
                    made = json.loads(answer.read())
                with urllib.request.urlopen(f"{server['http']}/instances/{made['ID']}/file", timeout=30) as answer:
                    (d / f"{name}.dcm").write_bytes(answer.read())
            except OSError as error:
                c.skipped.append(f"Orthanc {name}: {error}")
                continue
            shown = {k: (v if k != "Content" else v[:30] + "...") for k, v in body.items()}
            c.add(d / f"{name}.dcm", "Orthanc", "Orthanc", version,
                  f"POST /tools/create-dicom {json.dumps(shown)}")


ODIL_SCRIPT = """
import sys, odil
for source, target, syntax in zip(sys.argv[1::3], sys.argv[2::3], sys.argv[3::3]):
    with odil.open(source) as stream:
        header, data = odil.Reader.read_file(stream)
    with odil.open(target, "wb") as stream:
        odil.Writer.write_file(data, stream, odil.DataSet(), syntax)
"""


def odil(c: Corpus) -> None:
    """Odil (python3-odil, Debian's system Python) reads files and writes them again in another syntax."""
    v = deb_version("python3-odil")
    d = c.out / "odil"
    d.mkdir(parents=True, exist_ok=True)
    jobs = []
    for source in ("dcmtk/dump2dcm-mr.dcm", "dcmtk/dump2dcm-us.dcm", "dcmtk/dump2dcm-rtstruct.dcm",
                   "dcmtk/img2dcm-vlp-gray-jpeg.dcm", "plastimatch/sphere-rtss.dcm", "plastimatch/sphere-dose.dcm",
                   "gdcm/gdcmimg-xa-pgm.dcm", "dcmtk/dump2dcm-sr-basic-text.dcm"):
        for syntax, name in (("1.2.840.10008.1.2", "implicit"), ("1.2.840.10008.1.2.1", "explicit")):
            if (c.out / source).exists() and not ("img2dcm" in source and name == "implicit"):
                jobs.append((c.out / source, d / f"{name}-{Path(source).stem}.dcm", syntax))
    command = ["/usr/bin/python3", "-c", ODIL_SCRIPT]
    for source, target, syntax in jobs:
        command += [str(source), str(target), syntax]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        c.skipped.append(f"odil: {done.stderr.strip()[-300:]}")
    for source, target, syntax in jobs:
        if target.exists():
            c.add(target, "Odil", "odil.Writer.write_file", v,
                  f"odil.Reader.read_file($CORPUS/{source.relative_to(c.out)}) then "
                  f"odil.Writer.write_file(..., transfer syntax {syntax})")


def package_files(c: Corpus) -> None:
    """pydicom-data's files, and pydicom's own test files (read by tests/test_iod.py: marked)."""
    import data_store
    import pydicom.data

    root = Path(data_store.__file__).parent / "data"
    for f in sorted(root.glob("*.dcm")):
        out = c.out / "pydicom-data" / f.name
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, out)
        c.add(out, "pydicom-data", "pydicom-data", py_version("pydicom-data"), f"pydicom-data data_store/data/{f.name}")
    root = Path(pydicom.data.get_testdata_file("CT_small.dcm")).parent
    for f in sorted(root.glob("*.dcm")):
        out = c.out / "pydicom" / f.name
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, out)
        c.add(out, "pydicom", "pydicom test file", py_version("pydicom"), f"pydicom data/test_files/{f.name}",
              in_dvqa_tests=True)


def build(out: Path, sample: bool = False) -> Path:
    """Make the corpus in `out` (emptied first) and its manifest; returns the manifest's path."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    c = Corpus(out)
    try:
        dcmtk(c, sample)
        gdcm(c, sample)
        if not sample:
            plastimatch(c)
            medcon(c)
            highdicom(c)
            orthanc(c)
            odil(c)
            package_files(c)
    finally:
        shutil.rmtree(c.work, ignore_errors=True)
    c.write_manifest()
    return out / "manifest.json"


def check_shape(out: Path, manifest: dict) -> None:
    """--smoke: the sample was made, by two writers at least, and every file has its origin recorded."""
    files = manifest["files"]
    assert len(files) >= 10 and len({e["writer"] for e in files}) >= 2, files
    for entry in files:
        assert (out / entry["path"]).is_file() and all(entry[k] for k in ("writer", "tool", "version", "origin",
                                                                          "licence")), entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--sample", action="store_true", help="only the small set tests/test_corpus.py uses")
    parser.add_argument("--smoke", action="store_true", help="the sample, in a temporary folder, its shape checked")
    args = parser.parse_args()
    if args.smoke:
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder) / "corpus"
            manifest = json.loads(build(out, sample=True).read_text())
            check_shape(out, manifest)
        print(f"{len(manifest['files'])} files from {len({e['writer'] for e in manifest['files']})} writers (smoke)")
        return
    manifest = json.loads(build(args.out, args.sample).read_text())
    by_writer: dict[str, int] = {}
    for entry in manifest["files"]:
        by_writer[entry["writer"]] = by_writer.get(entry["writer"], 0) + 1
    print(f"{len(manifest['files'])} files from {len(by_writer)} writers in {args.out}")
    for writer, count in sorted(by_writer.items()):
        print(f"  {writer}: {count}")
    for line in manifest["not_made"]:
        print(f"  not made: {line}")


if __name__ == "__main__":
    main()
