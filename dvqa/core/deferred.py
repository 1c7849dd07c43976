"""Modules a library imports at its own import but a command may never use, run on their first use instead.

`import pydicom` (3.0) imports NumPy (through its pixel handlers) and requests (through pydicom.data), which
`dvqa validate` on most files never touches: they were two fifths of a one-file run's ~0.5 s (issue 31).
`defer(names)` puts a finder first on sys.meta_path that, for those top-level modules only, gives the
importer a placeholder module: `import numpy` succeeds at once, and the first attribute looked up on it
(`numpy.uint8`, `numpy.__path__` for a submodule import, `numpy.__file__`) runs the real module's code
into that same object, which is then an ordinary module. Code that uses the module therefore sees it as
it would have; only the moment its import-time code runs moves.

Only pure-Python top-level packages are deferred (an extension module cannot be run into an existing
object); a module already imported, or one the finder cannot find, is imported as usual.
"""

from __future__ import annotations

import importlib.machinery
import sys
import threading
import types
from collections.abc import Iterable

PYDICOM_IMPORTS = ("numpy", "requests")  # what `import pydicom` imports for pixel data and downloads only
_LOCK = threading.RLock()  # one thread runs a deferred module's code; the others wait for it
_PENDING: dict[str, importlib.machinery.ModuleSpec] = {}  # name -> the real spec, until the module has run
_ARMED: set[str] = set()  # placeholders importlib has finished setting up: their next lookup runs the module


class _Placeholder(types.ModuleType):
    """A deferred module before its first use; `__getattr__` runs only for a name not yet in its namespace."""

    def __getattr__(self, name: str):
        if self.__name__ not in _ARMED:  # importlib still setting it up (it looks for __file__): not yet
            raise AttributeError(name)
        _run(self)
        return getattr(self, name)


def _run(module: types.ModuleType) -> None:
    with _LOCK:
        if type(module) is not _Placeholder:
            return  # another thread ran it meanwhile
        spec = _PENDING.pop(module.__name__)
        _ARMED.discard(module.__name__)
        module.__class__ = types.ModuleType  # from here on an ordinary (partly initialised) module, as in an import
        module.__spec__, module.__loader__, module.__package__ = spec, spec.loader, spec.parent
        if spec.submodule_search_locations is not None:
            module.__path__ = list(spec.submodule_search_locations)
        module.__file__, module.__cached__ = spec.origin, spec.cached
        spec._initializing = True  # noqa: SLF001 - what importlib sets while a module runs
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(module.__name__, None)  # as a failed import leaves it: the next import tries again
            raise
        finally:
            spec._initializing = False  # noqa: SLF001


class _Loader:  # importlib's loader protocol (importlib.abc costs an import of its own)
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return _Placeholder(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        """Nothing runs now: the module's own code runs on its first use (_run)."""
        _ARMED.add(module.__name__)


class _Finder:  # importlib's meta path finder protocol
    def __init__(self, names: frozenset[str]) -> None:
        self.names = names

    def find_spec(self, name: str, path=None, target=None) -> importlib.machinery.ModuleSpec | None:
        if name not in self.names or name in _PENDING:
            return None
        real = importlib.machinery.PathFinder.find_spec(name, path)
        if real is None or not isinstance(real.loader, importlib.machinery.SourceFileLoader):
            return None  # not found, or not pure Python: imported as usual
        _PENDING[name] = real
        return importlib.machinery.ModuleSpec(name, _Loader(), origin=real.origin)


def defer(names: Iterable[str]) -> None:
    """Defer these modules (a submodule by its dotted name) for the rest of the process, those not imported yet."""
    wanted = frozenset(n for n in names if n not in sys.modules)
    for finder in sys.meta_path:
        if isinstance(finder, _Finder):
            wanted -= finder.names
    if wanted:
        sys.meta_path.insert(0, _Finder(wanted))
