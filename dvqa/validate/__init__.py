"""`dvqa validate`: the file, value, IOD, stream and profile layers, the DICOM editions, and the
output formats (text, JSON, JUnit, SARIF)."""

from dvqa.core.exports import lazy

__all__ = ["FileResult", "Skipped", "check_file", "validate", "walk"]
__getattr__ = lazy(__name__, {name: "run" for name in __all__})
