"""dvqa validate and dciodvfy on the same files: the tables of docs/regulatory/validation-comparison.md.

Run: python bench/validation_comparison.py > /tmp/comparison.md
     python bench/validation_comparison.py --smoke   (2 + 4 files, checks the output's shape: tests/test_bench.py)

1. The IOD corpus of tests/iod_corpus.py (dvqa's outputs for 3 IODs x 7 syntaxes, then 18 defects):
   per file, dciodvfy's errors and dvqa's error codes.
2. Other writers' files (pydicom's test files, dicom3tools' example, DCMTK's worklist examples turned
   into files by dump2dcm): files, dvqa errors per id, and every dciodvfy error dvqa does not give,
   counted by kind.
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "tests")]
CACHE = HERE / ".cache" / "comparison"

from iod_corpus import DCIODVFY_EXCEPTIONS, attribute, make_corpus  # noqa: E402


def dciodvfy_errors(path: Path) -> list[str]:
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]


def dvqa_errors(path: Path) -> list:
    from dvqa.validate.run import check_file

    return [f for f in check_file(path).findings if f.severity.value == "error"]


def given_by_dvqa(line: str, errors: list) -> bool:
    keyword = attribute(line)
    if keyword is None:
        return bool(errors)
    return any(re.search(rf"\b{keyword}\b", f"{f.where} {f.message}") for f in errors)


def kind(line: str) -> str:
    """A dciodvfy message without its values, to count like messages together."""
    text = re.sub(r"<[^>]*>|\[[^]]*\]|\(0x[0-9a-f]{4},0x[0-9a-f]{4}\)|\"[^\"]*\"|= .*$", "…", line)
    return re.sub(r"\s+", " ", text)[:110]


def smoke_corpus(d: Path) -> dict[str, Path]:
    """--smoke: one of make_corpus's files (an H.264 endoscopic video) and its first defect."""
    from dvqa.convert.pipeline import ConvertOptions, convert
    from iod_corpus import CLIP, DEFECTS
    import pydicom

    base = convert(CLIP, d / "endoscopic-h264-high-4.1.dcm", ConvertOptions(syntax="h264-high-4.1", iod="endoscopic",
                                                                            quality=False)).output
    name, (change, _, _) = next(iter(DEFECTS.items()))
    ds = pydicom.dcmread(str(base))
    change(ds)
    ds.save_as(str(d / f"{name}.dcm"), enforce_file_format=False)
    return {"endoscopic-h264-high-4.1": base, name: d / f"{name}.dcm"}


def corpus_table(smoke: bool = False) -> list[str]:
    if CACHE.exists():
        shutil.rmtree(CACHE)
    CACHE.mkdir(parents=True)
    rows = ["| file | dciodvfy errors | dvqa errors | every dciodvfy error also a dvqa error |", "|---|---|---|---|"]
    for name, path in (smoke_corpus if smoke else make_corpus)(CACHE).items():
        theirs, ours = dciodvfy_errors(path), dvqa_errors(path)
        missed = [line for line in theirs if not given_by_dvqa(line, ours)
                  and not any(re.search(p, line) and w in name for p, w, _ in DCIODVFY_EXCEPTIONS)]
        excused = len([line for line in theirs if any(re.search(p, line) and w in name
                                                      for p, w, _ in DCIODVFY_EXCEPTIONS)])
        codes = ", ".join(sorted({f.code for f in ours})) or "none"
        verdict = "yes" if not missed else f"NO: {missed}"
        if excused:
            verdict += f" ({excused} named dciodvfy limit{'s' if excused > 1 else ''})"
        rows.append(f"| {name} | {len(theirs)} | {codes} | {verdict} |")
    return rows


def other_writers(smoke: bool = False) -> list[str]:
    import pydicom.data

    files = sorted(Path(pydicom.data.get_testdata_file("CT_small.dcm")).parent.glob("*.dcm"))
    files += sorted(Path("/usr/share/doc/dicom3tools/examples").glob("*.dcm"))
    dumps = sorted(Path("/usr/share/doc/dcmtk/examples/wlistdb/OFFIS").glob("*.dump"))
    if smoke:
        files, dumps = files[:3], dumps[:1]
    work = Path(tempfile.mkdtemp())
    for dump in dumps:
        out = work / f"dcmtk-{dump.stem}.dcm"
        if subprocess.run(["dump2dcm", "+te", str(dump), str(out)], capture_output=True).returncode == 0:
            files.append(out)
    by_id: collections.Counter = collections.Counter()
    not_given: collections.Counter = collections.Counter()
    missing_lines: list[str] = []
    theirs_total, refused = 0, 0
    for path in files:
        ours, theirs = dvqa_errors(path), dciodvfy_errors(path)
        by_id.update(f.code for f in ours)
        theirs_total += len(theirs)
        if any(f.code.startswith("file.") and f.code != "file.meta-mismatch" for f in ours):
            refused += 1  # dvqa reads no data set from it (not Part 10, cut, damaged): dciodvfy's details moot
            continue
        for line in theirs:
            if not given_by_dvqa(line, ours):
                not_given[kind(line)] += 1
                if "Missing attribute" in line:
                    missing_lines.append(f"| {path.name} | {line} |")
    shutil.rmtree(work, ignore_errors=True)
    lines = [f"{len(files)} files; dvqa errors: {sum(by_id.values())}; dciodvfy errors: {theirs_total}; "
             f"{refused} files dvqa reads no data set from (file.* errors), whose dciodvfy errors are not compared",
             "",
             "| dvqa error id | count |", "|---|---|"]
    lines += [f"| {code} | {count} |" for code, count in by_id.most_common()]
    lines += ["", "| dciodvfy error that dvqa does not give (values elided) | count |", "|---|---|"]
    lines += [f"| {text} | {count} |" for text, count in not_given.most_common()]
    lines += ["", "| file | missing attribute dciodvfy reports and dvqa does not |", "|---|---|", *missing_lines]
    return lines


def main() -> None:
    warnings.simplefilter("ignore")
    smoke = "--smoke" in sys.argv  # two files of dvqa's corpus, four of other writers: that the script still runs
    lines = []
    if "--other-writers-only" not in sys.argv:
        lines += [*corpus_table(smoke), ""]
    lines += other_writers(smoke)
    print("\n".join(lines))
    if smoke:
        check_shape(lines)


def check_shape(lines: list[str]) -> None:
    """What the page's tables are made of is there: a row per corpus file, the counts and the two tables."""
    corpus_rows = [line for line in lines if re.fullmatch(r"\| [\w.-]+ \| \d+ \| [\w., -]+ \| (yes|NO).* \|", line)]
    assert len(corpus_rows) == 2, corpus_rows
    assert any(re.match(r"\d+ files; dvqa errors: \d+; dciodvfy errors: \d+;", line) for line in lines), lines
    assert "| dvqa error id | count |" in lines and \
        "| dciodvfy error that dvqa does not give (values elided) | count |" in lines


if __name__ == "__main__":
    main()
