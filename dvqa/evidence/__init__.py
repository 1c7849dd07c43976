"""Evidence bundles: conversions, validation, signatures, audit trail, reports and the traceability
matrix in one indexed folder whose manifest is hashed and signed."""

from dvqa.core.exports import lazy

__all__ = ["Settings", "build", "check"]
__getattr__ = lazy(__name__, {"Settings": "bundle", "build": "bundle", "check": "manifest"})
