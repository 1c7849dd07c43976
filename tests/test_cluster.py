"""`dvqa validate --scheduler`: the same report from a Dask cluster as from one process - a
LocalCluster of worker processes, and a real `dask scheduler` + `dask worker` pair on 127.0.0.1."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.orthanc import free_port, wait_for_port
from helpers import CLIPS, dvqa


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cluster")
    files = root / "files"
    files.mkdir()
    for clip, syntax in (("vp9_vfr.webm", "h264-high-4.1"), ("vp8_size_change.webm", "mpeg2-mp-ml"),
                         ("h264_cfr_high.mkv", "auto")):
        assert dvqa("convert", str(CLIPS / clip), "-o", str(files / f"{Path(clip).stem}.dcm"),
                    "--syntax", syntax, "--no-quality").returncode == 0
    (files / "damaged.dcm").write_bytes(bytes(128) + b"DICM" + bytes(40))  # a finding, not a crash
    (files / "report.json").write_text("{}")  # skipped and listed, as locally
    return files


def _reports(args: list[str]) -> dict[str, tuple[int, str]]:
    return {fmt: ((proc := dvqa("validate", *args, "--format", fmt)).returncode, proc.stdout)
            for fmt in ("json", "junit", "sarif")}


@pytest.mark.requirement("DVQA-VAL-005")
def test_a_local_cluster_gives_the_report_of_one_process(folder: Path) -> None:
    local = _reports([str(folder)])
    assert local["json"][0] == 1  # the damaged file fails, the others pass
    assert _reports([str(folder), "--scheduler", "local:2"]) == local


@pytest.mark.requirement("DVQA-VAL-005")
def test_a_scheduler_at_an_address_with_its_own_worker(folder: Path, tmp_path: Path) -> None:
    dask = shutil.which("dask", path=str(Path(sys.executable).parent))
    assert dask, "the dask command comes with the distributed package"
    port = free_port()
    scheduler = subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                  "--dashboard-address", ":0", "--no-show"],
                                 cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = None
    try:
        wait_for_port(port, scheduler, "dask scheduler")
        worker = subprocess.Popen([dask, "worker", f"tcp://127.0.0.1:{port}", "--nworkers", "1", "--nthreads", "1",
                                   "--host", "127.0.0.1", "--no-dashboard"],
                                  cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        address = f"tcp://127.0.0.1:{port}"
        clear = ["--scheduler", address, "--allow-clear-text"]  # a tcp:// scheduler now needs the option
        assert _reports([str(folder.resolve()), *clear]) == _reports([str(folder.resolve())])
        relative = subprocess.run([sys.executable, "-m", "dvqa", "validate", folder.name, "--scheduler", address,
                                   "--allow-clear-text"],
                                  cwd=folder.parent, capture_output=True, text=True, timeout=120)
        assert relative.returncode == 2 and "absolute paths" in relative.stderr  # workers do not share our folder
    finally:
        for process in (worker, scheduler):
            if process is not None:
                process.terminate()
                process.wait(20)


@pytest.mark.requirement("DVQA-VAL-005")
def test_no_scheduler_or_a_bad_one_is_one_sentence(folder: Path) -> None:
    nobody = dvqa("validate", str(folder.resolve()), "--scheduler", f"tcp://127.0.0.1:{free_port()}",
                  "--allow-clear-text")
    assert nobody.returncode == 4 and "no Dask scheduler answered" in nobody.stderr
    lines = nobody.stderr.strip().splitlines()  # the clear-text warning (--allow-clear-text), then one sentence
    assert len(lines) == 2 and "unencrypted" in lines[0] and "Traceback" not in nobody.stderr
    bad = dvqa("validate", str(folder), "--scheduler", "local:0")
    assert bad.returncode == 2 and "local:N" in bad.stderr
