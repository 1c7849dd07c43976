"""A sub-package's public names, imported only when first used.

Each layer's `__init__` names what the library offers from it (`from dvqa.convert import convert`)
without importing its modules up front: `dvqa.validate.streamcheck`, used by a conversion, should not
pull in the whole IOD layer and the DICOM edition reader with it.
"""

from __future__ import annotations

import importlib
from typing import Callable


def lazy(package: str, names: dict[str, str]) -> Callable[[str], object]:
    """A module `__getattr__` serving `names` (public name -> module inside `package`)."""
    def __getattr__(name: str) -> object:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{names[name]}"), name)
    return __getattr__
