"""`dvqa convert`: a recording in, a DICOM video out, with its quality evidence and audit record."""

from dvqa.core.exports import lazy

__all__ = ["ConversionResult", "ConvertOptions", "convert", "record_failure"]
__getattr__ = lazy(__name__, {name: "pipeline" for name in __all__})
