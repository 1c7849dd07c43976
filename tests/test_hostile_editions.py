"""DICOM editions against a hostile user, mirror or neighbour (issue 27: reserved names, zip bombs and damaged
zips, concurrent imports; issue 28 items 6 and 7: edition trust, `standard fetch` confined).

An edition decides what `dvqa validate` passes, so: the bundled edition is pinned by hash and stays the
default, an imported one is used only when named and is shown as "imported, unverified" with its hash, and
installing one never writes, reads or deletes outside the editions folder, whatever its name, zip or mirror
says."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from xml.etree import ElementTree as ET

import pydicom
import pytest

from dvqa.core.errors import EnvironmentProblem, InputError
from dvqa.validate import standard
from helpers import dvqa
from iod_corpus import CLIP
from test_iod import _write_docbook

PINNED = hashlib.sha256((standard.BUNDLED_DIR / "2020a.json.gz").read_bytes()).hexdigest()  # as shipped


@pytest.fixture()
def editions(tmp_path: Path, monkeypatch) -> Path:
    folder = tmp_path / "editions"
    monkeypatch.setenv("DVQA_STANDARD_DIR", str(folder))
    monkeypatch.delenv("DVQA_STANDARD", raising=False)
    return folder


@pytest.fixture(scope="module")
def no_study_uid(tmp_path_factory) -> Path:
    """A dvqa output without its Study Instance UID: a Type 1 attribute every edition requires."""
    from dvqa.convert.pipeline import ConvertOptions, convert

    folder = tmp_path_factory.mktemp("hostile-editions")
    made = convert(CLIP, folder / "ok.dcm", ConvertOptions(syntax="h264-high-4.1", iod="endoscopic", quality=False))
    ds = pydicom.dcmread(str(made.output))
    del ds.StudyInstanceUID
    path = folder / "no-study-uid.dcm"
    ds.save_as(str(path), enforce_file_format=False)
    return path


def _one_sentence(proc: subprocess.CompletedProcess, code: int) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    return proc.stderr


# --- reserved names and the default (issue 27; issue 28 item 6) ---------------------------------------------

def test_a_bundled_editions_name_is_reserved(editions: Path, tmp_path: Path) -> None:
    _write_docbook(tmp_path / "named-2099a", "2099a")
    assert "reserved" in _one_sentence(dvqa("standard", "import", str(tmp_path / "named-2099a"), "--edition", "2020a"), 2)
    _write_docbook(tmp_path / "named-2020a", "2020a")  # part03.xml itself says 2020a
    assert "reserved" in _one_sentence(dvqa("standard", "import", str(tmp_path / "named-2020a")), 2)
    assert not (editions / "2020a").exists()
    assert "reserved" in _one_sentence(dvqa("standard", "fetch", "2020a", "--url", "https://127.0.0.1:9/"), 2)


def test_an_imported_edition_is_used_only_when_named_and_shown_unverified(editions: Path, tmp_path: Path,
                                                                          no_study_uid: Path, monkeypatch) -> None:
    _write_docbook(tmp_path / "docbook", "2099a")
    assert dvqa("standard", "import", str(tmp_path / "docbook")).returncode == 0
    # a doctored edition: it claims NEMA's site, and a folder named like the bundled edition is planted beside it
    (editions / "2099a" / "source.txt").write_text("fetched from https://dicom.nema.org/medical/dicom/\n")
    shutil.copytree(editions / "2099a", editions / "2020a")
    listed = {e["edition"]: e for e in json.loads(dvqa("standard", "--format", "json").stdout)}
    assert set(listed) == {"2020a", "2099a"} and listed["2020a"]["default"] and not listed["2099a"]["default"]
    assert listed["2020a"]["trust"] == "bundled with dvqa, verified" and listed["2020a"]["sha256"] == PINNED
    assert listed["2099a"]["trust"] == "imported, unverified"
    manifest = "".join(f"{hashlib.sha256((editions / '2099a' / 'json' / n).read_bytes()).hexdigest()}  {n}\n"
                       for n in standard.JSON_FILES)  # what `sha256sum ... | sha256sum` gives, without dvqa
    assert listed["2099a"]["sha256"] == hashlib.sha256(manifest.encode()).hexdigest()

    plain = json.loads(dvqa("validate", str(no_study_uid), "--format", "json").stdout)
    assert plain["standard"] == {"edition": "2020a", "trust": "bundled with dvqa, verified", "sha256": PINNED,
                                 "source": "built from PyPI dicom-standard 0.1.0"}
    assert any(f["code"] == "iod.missing" and "StudyInstanceUID" in f["where"] for f in plain["files"][0]["findings"])
    named = dvqa("validate", str(no_study_uid), "--standard", "2099a")
    assert named.stdout.startswith(f"standard DICOM 2099a (imported, unverified; tables sha256 "
                                   f"{listed['2099a']['sha256']}; recorded at import: fetched from https://")
    monkeypatch.setenv("DVQA_STANDARD", "2099a")  # the documented setting: explicit, and still labelled
    chosen = json.loads(dvqa("validate", str(no_study_uid), "--format", "json").stdout)["standard"]
    assert chosen["edition"] == "2099a" and chosen["trust"] == "imported, unverified"
    monkeypatch.setenv("DVQA_STANDARD", "1999a")
    assert "DVQA_STANDARD=1999a" in _one_sentence(dvqa("validate", str(no_study_uid)), 2)


def test_every_output_prints_the_trust_and_the_tables_hash(no_study_uid: Path, editions: Path) -> None:
    path = str(no_study_uid)
    text = dvqa("validate", path).stdout
    assert text.startswith(f"standard DICOM 2020a (bundled with dvqa, verified; tables sha256 {PINNED}")
    assert json.loads(dvqa("validate", path, "--format", "json").stdout)["standard"]["sha256"] == PINNED
    sarif = json.loads(dvqa("validate", path, "--format", "sarif").stdout)["runs"][0]["properties"]["standard"]
    assert sarif["sha256"] == PINNED and sarif["trust"] == "bundled with dvqa, verified"
    suite = ET.fromstring(dvqa("validate", path, "--format", "junit").stdout).find("testsuite")
    properties = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert properties["dicom-sha256"] == PINNED and properties["dicom-trust"] == "bundled with dvqa, verified"
    listing = dvqa("standard").stdout
    assert f"2020a (default): bundled with dvqa, verified; tables sha256 {PINNED}" in listing


def test_a_changed_bundled_edition_is_an_environment_error_naming_it(tmp_path: Path, monkeypatch) -> None:
    """The doctored tables make a missing Study Instance UID pass; dvqa must refuse them, not use them."""
    data = json.loads(gzip.decompress((standard.BUNDLED_DIR / "2020a.json.gz").read_bytes()))
    for table in data["module_info"].values():
        table.pop("(0020,000D)", None)
    doctored = tmp_path / "bundled"
    doctored.mkdir()
    (doctored / "2020a.json.gz").write_bytes(gzip.compress(json.dumps(data).encode(), mtime=0))
    monkeypatch.setattr(standard, "BUNDLED_DIR", doctored)
    standard.load.cache_clear()
    try:
        with pytest.raises(EnvironmentProblem, match=r"2020a\.json\.gz: the bundled DICOM 2020a tables were changed"):
            standard.load(standard.find("2020a"))
    finally:
        standard.load.cache_clear()


# --- zips: bombs, lies and damage (issue 27) ------------------------------------------------------------------

def _docbook_zip(tmp_path: Path, name: str = "2099c") -> Path:
    _write_docbook(tmp_path / f"parts-{name}", name)
    out = tmp_path / f"{name}.zip"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for part in ("part03.xml", "part04.xml", "part06.xml"):
            archive.write(tmp_path / f"parts-{name}" / part, f"docbook/{part}")
    return out


def _declare_size(archive: Path, member: str, size: int) -> None:
    """Rewrite the uncompressed size that the local and central headers declare for `member`."""
    data = bytearray(archive.read_bytes())
    name = member.encode()
    for signature, offset, name_at in ((b"PK\x03\x04", 22, 30), (b"PK\x01\x02", 24, 46)):
        at = data.find(signature)
        while at >= 0 and data[at + name_at:at + name_at + len(name)] != name:
            at = data.find(signature, at + 1)
        assert at >= 0
        data[at + offset:at + offset + 4] = size.to_bytes(4, "little")
    archive.write_bytes(bytes(data))


def test_a_zip_member_declaring_more_than_the_cap_is_refused_before_unpacking(editions: Path, tmp_path: Path) -> None:
    bomb = _docbook_zip(tmp_path)
    _declare_size(bomb, "docbook/part03.xml", 600 * 1024 * 1024)
    stderr = _one_sentence(dvqa("standard", "import", str(bomb)), 3)
    assert "600" in stderr and "limit of 512 MiB" in stderr
    assert not (editions / "2099c").exists()


@pytest.mark.parametrize("damage", ["size-lies", "bytes-garbled"])
def test_a_damaged_zip_is_one_sentence(editions: Path, tmp_path: Path, damage: str) -> None:
    archive = _docbook_zip(tmp_path)
    if damage == "size-lies":  # unpacks to more than it declares
        _declare_size(archive, "docbook/part03.xml", 100)
    else:
        data = bytearray(archive.read_bytes())
        start = data.find(b"docbook/part03.xml") + len("docbook/part03.xml") + 10
        data[start:start + 200] = bytes(200)
        archive.write_bytes(bytes(data))
    assert "zip is damaged" in _one_sentence(dvqa("standard", "import", str(archive)), 3)
    assert not (editions / "2099c").exists()


def test_the_unpacked_total_and_each_part_are_capped(editions: Path, tmp_path: Path, monkeypatch) -> None:
    from dvqa.validate import standard_install

    monkeypatch.setattr(standard_install, "PART_CAP", 64 * 1024)
    monkeypatch.setattr(standard_install, "TOTAL_CAP", 96 * 1024)
    padded = tmp_path / "padded"
    _write_docbook(padded, "2099c")
    for part in ("part03.xml", "part04.xml", "part06.xml"):  # each under the part cap, together over the total
        with open(padded / part, "a") as handle:
            handle.write("<!--" + "x" * 40_000 + "-->")
    with zipfile.ZipFile(tmp_path / "padded.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        for part in ("part03.xml", "part04.xml", "part06.xml"):
            archive.write(padded / part, part)
    with pytest.raises(InputError, match="limit"):
        standard_install.import_docbook(tmp_path / "padded.zip")
    with pytest.raises(InputError, match="limit"):  # a folder: the bytes are counted while copied
        standard_install.import_docbook(padded)
    assert sorted(p.name for p in editions.iterdir() if not p.name.startswith(".lock")) == []


def test_a_fifo_in_the_folder_is_refused_not_waited_for(editions: Path, tmp_path: Path) -> None:
    _write_docbook(tmp_path / "docbook", "2099c")
    (tmp_path / "docbook" / "part04.xml").unlink()
    os.mkfifo(tmp_path / "docbook" / "part04.xml")
    assert "FIFO" in _one_sentence(dvqa("standard", "import", str(tmp_path / "docbook")), 3)


# --- concurrent imports (issue 27) ------------------------------------------------------------------------------

def test_concurrent_imports_each_end_with_one_complete_edition(editions: Path, tmp_path: Path) -> None:
    for name in ("2099a", "2099b"):
        _write_docbook(tmp_path / name, name)
    jobs = [subprocess.Popen([sys.executable, "-m", "dvqa", "standard", "import", str(tmp_path / name)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for name in ("2099a", "2099a", "2099a", "2099a", "2099b", "2099b")]
    for job in jobs:
        out, err = job.communicate(timeout=300)
        assert job.returncode == 0 and "Traceback" not in err and "internal error" not in err, (job.returncode, err)
    assert sorted(p.name for p in editions.iterdir()) == [".lock", "2099a", "2099b"]  # no private folder left
    listed = {e["edition"]: e for e in json.loads(dvqa("standard", "--format", "json").stdout)}
    assert {"2099a", "2099b"} <= set(listed) and listed["2099a"]["sop_classes"] == 1


def test_imports_meeting_at_the_final_move_all_succeed(editions: Path, tmp_path: Path, monkeypatch) -> None:
    """Deterministic form of the race: every import waits for the others just before moving its edition
    into place (today's code deleted the same old folder from several imports at once)."""
    import threading

    from dvqa.validate import standard_install

    for name in ("2099a", "2099b"):
        _write_docbook(tmp_path / name, name)
    standard_install.import_docbook(tmp_path / "2099a")  # installed once: the next imports replace it
    sources = [tmp_path / n for n in ("2099a", "2099a", "2099a", "2099a", "2099b", "2099b")]
    barrier = threading.Barrier(len(sources))
    mark = standard_install._mark_unevaluated

    def gate(json_dir: Path) -> None:
        mark(json_dir)
        barrier.wait(timeout=120)

    monkeypatch.setattr(standard_install, "_mark_unevaluated", gate)
    errors: list[str] = []

    def job(source: Path) -> None:
        try:
            standard_install.import_docbook(source)
        except Exception as exc:  # the test reports every failure, whatever its kind
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=job, args=(s,)) for s in sources]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert errors == []
    assert sorted(p.name for p in editions.iterdir()) == [".lock", "2099a", "2099b"]
    for name in ("2099a", "2099b"):
        assert len(standard.load(standard.find(name)).info.iods) == 1


# --- standard fetch against a hostile mirror (issue 28 item 7) ------------------------------------------------

@pytest.fixture()
def mirror(tmp_path: Path):
    """A site laid out like NEMA's on 127.0.0.1 (plain http: the tests pass --allow-http) with valid parts
    under current/ and 2099b/, and a page whose links the test writes."""
    import functools
    import http.server
    import threading

    site = tmp_path / "site"
    _write_docbook(tmp_path / "parts", "2099b")
    for folder in ("current", "2099b"):
        for part in ("03", "04", "06"):
            target = site / folder / "source" / "docbook" / f"part{part}"
            target.mkdir(parents=True)
            shutil.copyfile(tmp_path / "parts" / f"part{part}.xml", target / f"part{part}.xml")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def page(*names: str) -> str:
        (site / "index.html").write_text("<html><body>" + " ".join(f'<a href="{n}/">{n}</a>' for n in names)
                                         + "</body></html>")
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield page
    server.shutdown()


def test_fetch_refuses_plain_http_and_names_that_are_not_editions(editions: Path, mirror) -> None:
    url = mirror("2099b")
    assert "https" in _one_sentence(dvqa("standard", "fetch", "2099b", "--url", url), 2)
    for name in ("../x", "2099b/../../x", "2099bb"):
        assert "not a DICOM edition" in _one_sentence(dvqa("standard", "fetch", name, "--url", url, "--allow-http"), 2)
    assert not editions.exists() or list(editions.iterdir()) == []


@pytest.mark.parametrize("hostile", ["../../x", "2020a/../../victim", "2099h/../../../victim"])
def test_a_mirror_page_naming_a_path_cannot_write_or_delete_outside(editions: Path, tmp_path: Path, mirror,
                                                                   hostile: str) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    (editions / "2020a").mkdir(parents=True)  # so that a path through it resolves
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = dvqa("standard", "fetch", "current", "--url", mirror(hostile), "--allow-http")
    assert "no edition 'current' listed" in _one_sentence(proc, 4)
    assert (victim / "keep.txt").read_text() == "precious" and sorted(victim.iterdir()) == [victim / "keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert sorted(p.name for p in editions.iterdir() if p.name != ".lock") == ["2020a"]
    # beside a good name, the hostile one is ignored and the good one installed in its place
    proc = dvqa("standard", "fetch", "current", "--url", mirror(hostile, "2099b"), "--allow-http")
    assert proc.returncode == 0, proc.stderr
    assert (editions / "2099b" / "json" / "iod_info.json").is_file() and sorted(p.name for p in tmp_path.iterdir()) == before


def test_fetch_caps_what_it_downloads(editions: Path, mirror, monkeypatch) -> None:
    from dvqa.validate import standard_install

    monkeypatch.setattr(standard_install, "PART_CAP", 1024)  # the test parts are a few KiB
    with pytest.raises(EnvironmentProblem, match="over dvqa.s limit of 1024 bytes"):
        standard_install.fetch("2099b", mirror("2099b"), allow_http=True)
    monkeypatch.setattr(standard_install, "PART_CAP", 512 * 1024 * 1024)
    monkeypatch.setattr(standard_install, "PAGE_CAP", 10)
    with pytest.raises(EnvironmentProblem, match="the list of editions is .*over dvqa's limit"):
        standard_install.fetch("2099b", mirror("2099b"), allow_http=True)
    assert sorted(p.name for p in editions.iterdir() if p.name != ".lock") == []


def test_a_redirect_may_not_leave_https() -> None:
    """A mirror (or someone on the path to it) redirecting to plain http is refused like an http --url."""
    import urllib.request

    from dvqa.core.errors import UsageError
    from dvqa.validate import standard_install

    request = urllib.request.Request("https://mirror.example/2099b/source/docbook/part03/part03.xml")
    with pytest.raises(UsageError, match="https only"):
        standard_install._Redirects(False).redirect_request(request, None, 302, "Found", {}, "http://evil.example/x")
    assert standard_install._Redirects(False).redirect_request(request, None, 302, "Found", {},
                                                               "https://mirror.example/y") is not None
