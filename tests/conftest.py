import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # bench/ tooling (bench.orthanc)

import pytest  # noqa: E402


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    """A fresh Orthanc with its DICOMweb plugin for each test module that asks for one (bench/orthanc.py).
    Imported here, not at the top: test_traceability copies this conftest (for its requirement hook) into a
    suite of its own where bench/ and helpers.py are not importable."""
    from bench import orthanc as orthanc_server
    from helpers import tool

    exe = tool("Orthanc")
    if not Path(orthanc_server.DICOMWEB_PLUGIN).exists():
        tool("orthanc-dicomweb")  # not a command: skips locally / fails in CI with the apt hint
    with orthanc_server.running(tmp_path_factory.mktemp("orthanc"), exe) as server:
        yield server


def pytest_collection_modifyitems(items) -> None:
    """Each test's @pytest.mark.requirement ids go into the JUnit XML as `requirement` properties,
    so `dvqa report traceability` reads a run's results against docs/regulatory/requirements.yaml."""
    for item in items:
        for mark in item.iter_markers("requirement"):
            for requirement in mark.args:
                item.user_properties.append(("requirement", requirement))
