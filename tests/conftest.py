import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # bench/ tooling (bench.orthanc)


def pytest_collection_modifyitems(items) -> None:
    """Each test's @pytest.mark.requirement ids go into the JUnit XML as `requirement` properties,
    so `dvqa report traceability` reads a run's results against docs/regulatory/requirements.yaml."""
    for item in items:
        for mark in item.iter_markers("requirement"):
            for requirement in mark.args:
                item.user_properties.append(("requirement", requirement))
