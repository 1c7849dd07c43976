"""The command line as a terminal user and a pipeline see it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from helpers import CLIPS, dvqa, tool


def _stderr_on_a_terminal(args: list[str]) -> tuple[int, str]:
    """Run dvqa with stderr on a pseudo-terminal, as in an interactive shell."""
    master, slave = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "dvqa", *args], stdout=subprocess.PIPE,
                            stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    proc.stdout.read()
    return proc.wait(60), b"".join(chunks).decode(errors="replace")


def test_progress_bar_on_a_terminal_only(tmp_path: Path) -> None:
    args = ["convert", str(CLIPS / "vp9_vfr.webm"), "-o", str(tmp_path / "a.dcm")]
    rc, terminal = _stderr_on_a_terminal(args)
    assert rc == 0
    assert "converting" in terminal and "100%" in terminal
    piped = dvqa("convert", str(CLIPS / "vp9_vfr.webm"), "-o", str(tmp_path / "b.dcm"))
    assert piped.returncode == 0 and "converting" not in piped.stderr and piped.stderr == ""


# --- one vocabulary (docs/cli-conventions.md) --------------------------------------------------------

def _commands():
    """Every command and sub-command of the real `dvqa` Click tree, with its path."""
    import click

    from dvqa.cli.main import loaded

    pending = [((), loaded())]
    while pending:
        path, command = pending.pop()
        if isinstance(command, click.Group):
            pending += [((*path, name), sub) for name, sub in command.commands.items() if not sub.hidden]
        if path:
            yield " ".join(path), command


def test_every_command_speaks_the_same_vocabulary() -> None:
    import click

    problems = []
    for path, command in _commands():
        names = {name: p for p in command.params if isinstance(p, click.Option) for name in p.opts}
        if not isinstance(command, click.Group) or getattr(command, "invoke_without_command", False):
            if "--debug" not in names:
                problems.append(f"{path}: no --debug")
        for p in command.params:
            if isinstance(p, click.Option) and not p.hidden and not p.help:
                problems.append(f"{path} {p.opts[0]}: no help")
        if "--format" in names and not names["--format"].show_default:
            problems.append(f"{path} --format: default not shown")
        if "--out" in names or ("-o" in names and "--output" not in names):
            problems.append(f"{path}: output is -o/--output")
        profile = names.get("--profile")
        if profile is not None and isinstance(profile.type, click.Choice):
            problems.append(f"{path} --profile is a rules profile (NAME|FILE), not a choice")
        if "--key-env" in names or "--sign-profile" in names:
            problems.append(f"{path}: old spelling visible")
    assert problems == []


def test_old_spellings_still_work_for_one_release_and_say_so(tmp_path: Path) -> None:
    from dvqa.cli.options import RENAMED

    assert ("sign",) in RENAMED and ("pacs", "matrix") in RENAMED
    for path, table in RENAMED.items():
        help_text = dvqa(*path, "--help").stdout
        for old, new in table.items():
            assert new in help_text and f"{old} " not in help_text.replace(new, ""), (path, old)
    video = tmp_path / "v.dcm"
    assert dvqa("convert", str(CLIPS / "h264_cfr_high.mkv"), "-o", str(video), "--no-quality").returncode == 0
    log = tmp_path / "audit.jsonl"
    log.write_text("")
    old = dvqa("audit", "verify", str(log), "--key-env", "DVQA_NO_SUCH_VARIABLE")
    assert old.returncode == 2 and "--key-env is now --audit-key-env" in old.stderr
    assert "--audit-key-env DVQA_NO_SUCH_VARIABLE: that variable is not set" in old.stderr
    listed = dvqa("profiles", "--format", "json")
    assert listed.returncode == 0 and "is now `dvqa rules list`" in listed.stderr
    assert listed.stdout == dvqa("rules", "list", "--format", "json").stdout
    assert "profiles" not in dvqa("--help").stdout.split("Commands:")[1].split()


def test_renaming_touches_options_only() -> None:
    from dvqa.cli.options import renamed

    args, notes = renamed(("sign",), ["a.dcm", "--profile=none", "--key", "k.pem", "--", "--profile"])
    assert args == ["a.dcm", "--signature-profile=none", "--key", "k.pem", "--", "--profile"]
    assert len(notes) == 1 and "sign --profile is now --signature-profile" in notes[0]
    assert renamed(("convert",), ["--profile", "endoscopy"]) == (["--profile", "endoscopy"], [])


def test_the_syntax_option_offers_only_what_convert_writes(tmp_path: Path) -> None:
    proc = dvqa("convert", str(CLIPS / "h264_cfr_high.mkv"), "-o", str(tmp_path / "o.dcm"), "--syntax", "hevc-main10")
    assert proc.returncode == 2 and "hevc-main10" in proc.stderr and not (tmp_path / "o.dcm").exists()
    assert "hevc-main10" in dvqa("syntaxes").stdout  # validate still knows it
    echo = dvqa("pacs", "echo")
    assert echo.returncode == 2 and "--port" in echo.stderr


def test_validate_walks_past_reports_and_logs_and_lists_what_it_skipped(tmp_path: Path) -> None:
    folder = tmp_path / "outputs"
    folder.mkdir()
    proc = dvqa("convert", str(CLIPS / "h264_cfr_high.mkv"), "-o", str(folder / "v.dcm"), "--report",
                str(folder / "v.json"), "--report", str(folder / "v.html"), "--audit", str(folder / "audit.jsonl"))
    assert proc.returncode == 0, proc.stderr
    (folder / "notes.txt").write_text("DICM is not at byte 128 here")
    (folder / "copy.json").write_bytes((folder / "v.dcm").read_bytes())  # DICOM under a report's name: checked
    walked = dvqa("validate", str(folder), "--format", "json")
    assert walked.returncode == 0, walked.stdout
    import json

    results = {Path(r["path"]).name: r for r in json.loads(walked.stdout)["files"]}
    skipped = {name for name, r in results.items() if r["layers"].get("file") == "skipped"}
    assert skipped == {"v.json", "v.html", "audit.jsonl", "notes.txt"}
    assert all(results[n]["findings"][0]["code"] == "file.not-dicom-skipped" for n in skipped)
    assert results["copy.json"]["layers"]["iod"] == "ran"
    named = dvqa("validate", str(folder / "v.json"))  # named explicitly: checked, and not DICOM
    assert named.returncode == 1 and "file.not-dicom" in named.stdout
    text = dvqa("validate", str(folder), "--exclude", "copy.*", "--include", "*.dcm")
    assert "checked  1 file (5 not checked): 0 failed" in text.stdout
    assert "excluded by --exclude 'copy.*'" in text.stdout and "matches no --include (*.dcm)" in text.stdout


def test_validate_summarizes_infos_filters_by_severity_and_writes_o_by_suffix(tmp_path: Path) -> None:
    """A folder of clean files and their reports: one line per info check, not one per file (--verbose
    gives each), --min-severity hides what is below it, -o FILE writes the format its suffix names, and
    JUnit lists the files it did not check as one skipped case."""
    folder = tmp_path / "outputs"
    folder.mkdir()
    for name in ("a", "b", "c"):
        proc = dvqa("convert", str(CLIPS / "h264_cfr_high.mkv"), "-o", str(folder / f"{name}.dcm"), "--no-quality",
                    "--report", str(folder / f"{name}.json"))
        assert proc.returncode == 0, proc.stderr
    summary = dvqa("validate", str(folder))
    infos = [line for line in summary.stdout.splitlines() if line.startswith("info ")]
    assert summary.returncode == 0 and len({line.split()[1] for line in infos}) == len(infos), infos
    skipped_line = next(line for line in infos if line.split()[1] == "file.not-dicom-skipped:")
    assert ": 3 files (" in skipped_line and "c.json; --verbose lists each)" in skipped_line, skipped_line
    verbose = dvqa("validate", str(folder), "--verbose")
    assert sum(line.startswith("info ") for line in verbose.stdout.splitlines()) >= 6
    quiet = dvqa("validate", str(folder), "--min-severity", "warning")
    assert quiet.returncode == 0 and not any(line.startswith("info ") for line in quiet.stdout.splitlines())
    for suffix, check in ((".json", lambda s: json.loads(s)["files"]), (".sarif", lambda s: json.loads(s)["runs"]),
                          (".xml", lambda s: ET.fromstring(s).find("testsuite")), (".txt", lambda s: "checked  3" in s)):
        report = tmp_path / f"report{suffix}"
        done = dvqa("validate", str(folder), "-o", str(report))
        assert done.returncode == 0 and check(report.read_text()), (suffix, done.stderr)
    suite = ET.fromstring((tmp_path / "report.xml").read_text()).find("testsuite")
    skipped = [case for case in suite.findall("testcase") if case.find("skipped") is not None]
    assert [case.get("name") for case in skipped] == ["files not checked"]
    assert "3 files not checked" in skipped[0].find("skipped").get("message")
    wrong = dvqa("validate", str(folder), "-o", str(tmp_path / "report.html"))
    assert wrong.returncode == 2 and ".txt, .json, .xml (JUnit) or .sarif" in wrong.stderr
    itself = dvqa("validate", str(folder / "a.json"), "-o", str(folder / "a.json"))
    assert itself.returncode == 2 and "same file" in itself.stderr
    assert json.loads((folder / "a.json").read_text())  # the input is untouched


def test_records_say_what_the_command_did_and_where(tmp_path: Path, monkeypatch) -> None:
    import json

    monkeypatch.chdir(tmp_path)
    log = tmp_path / "audit.jsonl"
    proc = dvqa("convert", str(CLIPS / "vp9_vfr.webm"), "-o", "relative.dcm", "--audit", str(log))
    assert proc.returncode == 0 and "; took " in proc.stdout
    record = json.loads(log.read_text().splitlines()[-1])
    assert record["cwd"] == str(tmp_path)
    assert record["output"]["path"] == str(tmp_path / "relative.dcm")
    assert Path(record["input"]["path"]).is_absolute()
    quality = json.loads(dvqa("quality", str(CLIPS / "vp9_vfr.webm"), "relative.dcm", "--format", "json").stdout)
    assert quality["command"] == "quality"
    assert not {"output", "written", "encoder_build", "elementary_stream_sha256"} & set(quality)


# One exit code for one mistake, whatever the command (docs/cli-conventions.md, "Exit codes").
MISSING = [("convert", "{m}", "-o", "{t}/x.dcm"), ("quality", "{m}", "{m}"), ("validate", "{m}"), ("verify", "{m}"),
           ("sign", "{m}", "--key", "{m}"), ("audit", "verify", "{m}"), ("audit", "export", "{m}", "-o", "{t}"),
           ("audit", "head", "{m}"), ("batch", "convert", "{m}"), ("pacs", "store", "{m}", "--port", "1"),
           ("evidence", "build", "{t}/bundle", "--inputs", "{m}"), ("evidence", "verify", "{m}"),
           ("standard", "import", "{m}"), ("report", "licenses", "--expect", "{m}"),
           ("report", "traceability", "--junit", "{m}")]


@pytest.mark.parametrize("args", MISSING, ids=lambda a: " ".join(w for w in a if "{" not in w))
def test_a_missing_input_is_exit_3_from_every_command(args: tuple[str, ...], tmp_path: Path) -> None:
    done = dvqa(*(a.format(m=tmp_path / "missing.file", t=tmp_path) for a in args))
    assert done.returncode == 3, done.stderr
    lines = [line for line in done.stderr.splitlines() if not line.startswith("dvqa: warning:")]
    assert len(lines) == 1 and "missing.file" in lines[0] and "Traceback" not in done.stderr, done.stderr


def test_a_file_that_is_not_dicom_is_a_failed_check_or_unreadable_input_as_the_table_says(tmp_path: Path) -> None:
    """Commands that judge a file report one that is not DICOM as a failed check (1: it is their verdict);
    commands that act on it refuse it as unreadable input (3). Either way one sentence, never pydicom's
    advice to read with force=True."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    from helpers import PEM, certificate, pem_key

    text, key, cert = tmp_path / "notes.dcm", tmp_path / "key.pem", tmp_path / "cert.pem"
    text.write_text("not a DICOM file")
    private = rsa.generate_private_key(65537, 2048)
    key.write_bytes(pem_key(private))
    cert.write_bytes(certificate("signer", private, "signer", private).public_bytes(PEM))
    judges = {("validate", str(text)): 1, ("verify", str(text)): 1}
    actors = {("sign", str(text), "--key", str(key), "--cert", str(cert)): 3,
              ("pacs", "store", str(text), "--port", "1"): 3}
    for command, code in {**judges, **actors}.items():
        done = dvqa(*command)
        assert done.returncode == code, (command, done.stdout, done.stderr)
        assert "force=True" not in done.stdout + done.stderr and "Traceback" not in done.stderr


# --- start-up: a command imports only what it needs (issue 31) -----------------------------------------

# What a command that does not use them must not import: FFmpeg, NumPy's image code, the signer's and the
# audit trail's cryptography, the PACS and DICOMweb clients, Dask, the web server, templates.
HEAVY = ("av", "skimage", "jinja2", "cryptography", "pynetdicom", "dicomweb_client", "dask", "distributed",
         "fastapi", "uvicorn", "weasyprint", "pyparsing")


def _imported_by(args: list[str], cwd: Path) -> set[str]:
    """The top-level packages imported by one real `dvqa ARGS` run (read from sys.modules as it exits); a module
    dvqa.core.deferred left as a placeholder, never run, is not counted."""
    script = ("import atexit, sys, runpy\n"
              "atexit.register(lambda: sys.__stderr__.write('MODULES ' + ' '.join(sorted({m.split('.')[0] "
              "for m, module in list(sys.modules.items()) if type(module).__name__ != '_Placeholder'})) + '\\n'))\n"
              f"sys.argv = ['dvqa', *{args!r}]\n"
              "runpy.run_module('dvqa', run_name='__main__')\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=cwd, timeout=120)
    line = next(line for line in run.stderr.splitlines() if line.startswith("MODULES "))
    return set(line.split()[1:])


def test_help_imports_none_of_the_heavy_modules(tmp_path: Path) -> None:
    imported = _imported_by(["--help"], tmp_path)
    assert "click" in imported and "dvqa" in imported  # the probe sees the run
    assert not imported & {*HEAVY, "numpy", "pydicom", "yaml"}, sorted(imported & {*HEAVY, "numpy", "pydicom"})


def test_validate_of_an_image_imports_no_ffmpeg_numpy_crypto_or_servers(tmp_path: Path) -> None:
    """An image needs pydicom and the tables; FFmpeg is for a video stream only, the rest for other commands."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.save_as(tmp_path / "sc.dcm", enforce_file_format=True)
    # and one in JPEG Baseline, a transfer syntax dvqa also reads as Motion JPEG video (DCMTK's img2dcm)
    subprocess.run([tool("ffmpeg"), "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=64x48", "-frames:v",
                    "1", str(tmp_path / "picture.jpg")], check=True)
    subprocess.run([tool("img2dcm"), "-i", "JPEG", str(tmp_path / "picture.jpg"), str(tmp_path / "jpeg.dcm")],
                   check=True, capture_output=True)
    imported = _imported_by(["validate", "sc.dcm", "jpeg.dcm"], tmp_path)
    assert {"pydicom", "dicom_validator"} <= imported  # it did validate
    # nor NumPy and requests, which pydicom imports (dvqa.core.deferred), nor YAML (no profile was asked for)
    unused = {*HEAVY, "numpy", "requests", "yaml"}
    assert not imported & unused, sorted(imported & unused)


def test_the_help_listing_is_the_commands_own_help() -> None:
    """`dvqa --help` lists commands from dvqa.cli.main.COMMANDS without importing them: each entry must be
    the module that registers the command and the first paragraph of the command's own help."""
    import inspect

    from dvqa.cli.main import COMMANDS, loaded

    group = loaded()
    assert set(group.commands) == set(COMMANDS)
    for name, command in group.commands.items():
        module, listed = COMMANDS[name]
        assert inspect.getmodule(command.callback).__name__ == module, name
        first = " ".join(inspect.cleandoc(command.help or "").split("\n\n")[0].split())
        assert listed == (None if command.hidden else first), name
