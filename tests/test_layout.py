"""The package's folders are its architecture: a lower layer never imports a higher one."""

import ast
from pathlib import Path

import dvqa

PACKAGE = Path(dvqa.__file__).parent
# lowest first: each may import only its own layer and those before it
LAYERS = ["core", "dicom", "video", "quality", "validate", "trust", "convert", "pacs", "report", "evidence", "serve", "cli"]


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dvqa"):
            parts = node.module.split(".")
            if len(parts) > 1:
                found.add(parts[1])
            else:  # from dvqa import x: x is a layer (or __version__)
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("dvqa."))
    return found & set(LAYERS)


def test_every_module_sits_in_a_layer() -> None:
    loose = [p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    assert loose == []
    assert sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__") == sorted(LAYERS)


def test_no_layer_imports_a_higher_one() -> None:
    upward = []
    for layer in LAYERS:
        for path in (PACKAGE / layer).rglob("*.py"):
            for used in _imports(path):
                if LAYERS.index(used) > LAYERS.index(layer):
                    upward.append(f"{path.relative_to(PACKAGE)} imports dvqa.{used}")
    assert upward == []


def test_each_layer_names_its_public_api() -> None:
    import importlib

    for layer in ("quality", "validate", "trust", "convert", "pacs", "cli"):
        package = importlib.import_module(f"dvqa.{layer}")
        assert package.__all__, layer
        for name in package.__all__:
            assert callable(getattr(package, name)), f"dvqa.{layer}.{name}"
