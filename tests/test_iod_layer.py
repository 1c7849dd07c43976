"""The IOD layer on files other writers made, and the compiled tables that make its start-up quick (issue 31).

Each defect is shown on a file a real writer produced here (DCMTK's img2dcm, dcmmkdir, dcmconv), judged
against the PS3.3 text cited beside it and, where dciodvfy agrees, against dciodvfy too.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dvqa.validate import compiled, standard


@pytest.fixture()
def private_cache(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    standard.load.cache_clear()
    yield tmp_path / "cache" / "dvqa" / "tables"
    standard.load.cache_clear()


def test_compiled_tables_are_the_source_tables_and_a_changed_one_is_rebuilt(private_cache: Path) -> None:
    edition = standard.default()
    first = standard.load(edition)
    written = compiled.path_for(edition.name, edition.digest)
    assert written.parent == private_cache and written.is_file()
    assert written.stat().st_mode & 0o077 == 0  # private, as every file dvqa writes
    stamp = written.stat().st_mtime_ns
    standard.load.cache_clear()
    second = standard.load(edition)
    assert written.stat().st_mtime_ns == stamp  # read, not rewritten
    # what the compiled form serves is what the JSON source holds, table for table
    ref = "module:general-series"
    assert second.info.modules[ref] == first.info.modules[ref]
    assert second.info.iods == first.info.iods and second.known_tags == first.known_tags
    assert len(second.info.modules) == len(first.info.modules) > 600

    # a compiled file changed after it was written (its own hash no longer matches) is refused and rebuilt
    data = bytearray(written.read_bytes())
    data[-10] ^= 0xFF
    written.write_bytes(bytes(data))
    standard.load.cache_clear()
    third = standard.load(edition)
    assert third.info.modules[ref] == first.info.modules[ref]
    assert written.read_bytes() != bytes(data)  # written again, whole

    # one that others may change is not trusted either, however valid it looks
    os.chmod(written, 0o666)
    assert compiled._read(written, edition.digest) is None
    # and one made from other source tables (another digest) is never served for these
    os.chmod(written, 0o600)
    assert compiled._read(written, "0" * 64) is None and compiled._read(written, edition.digest) is not None


def test_an_unwritable_cache_costs_time_not_a_verdict(tmp_path: Path, monkeypatch) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    standard.load.cache_clear()
    try:
        tables = standard.load(standard.default())
        assert "module:patient" in tables.info.modules
    finally:
        standard.load.cache_clear()
