"""dvqa: DICOM video quality assurance, validation and audit.

The sub-packages are the architecture; each imports only those listed before it (a test keeps it so):
core, dicom, video, quality, validate, trust, convert, pacs, cli. The Python API is what their
`__init__` modules name: `dvqa.convert.convert`, `dvqa.validate.validate`,
`dvqa.quality.measure_files`, `dvqa.trust.sign_file`, `dvqa.pacs.store`, and so on.
"""

__version__ = "0.1.0"
