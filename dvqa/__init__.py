"""dvqa: DICOM video quality assurance, validation and audit."""

__version__ = "0.1.0"

