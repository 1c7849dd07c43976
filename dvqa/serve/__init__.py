"""`dvqa serve`: the HTTP service in front of a site's PACS - the DICOMweb video gateway (web viewers
play DICOM video through it), and the recording-ingestion API with its recorder page. It sits above
everything it orchestrates and calls the library, never a `dvqa` subprocess.

The names below are imported when first used: a recording's conversion process imports
dvqa.serve.ingest without the web framework."""

from dvqa.core.exports import lazy

__all__ = ["create_app", "load", "run", "ServeConfig"]
__getattr__ = lazy(__name__, {"create_app": "app", "load": "config", "run": "server", "ServeConfig": "config"})
