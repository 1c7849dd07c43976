"""`dvqa serve`: the HTTP service in front of a site's PACS - the DICOMweb video gateway (web viewers
play DICOM video through it), and later the recording-ingestion API. It sits above everything it
orchestrates and calls the library, never a `dvqa` subprocess."""

from dvqa.serve.app import create_app
from dvqa.serve.config import ServeConfig, load
from dvqa.serve.server import run

__all__ = ["create_app", "load", "run", "ServeConfig"]
