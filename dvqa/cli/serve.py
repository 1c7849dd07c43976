"""`dvqa serve`: the DICOMweb video gateway and browser recording ingestion as an HTTP server."""

from __future__ import annotations

from pathlib import Path

import click

from dvqa.cli import options
from dvqa.cli.common import guarded


def register(main: click.Group) -> None:
    main.add_command(serve_command)


@click.command("serve")
@click.option("--upstream", metavar="URL", help="The DICOMweb root to stand in front of "
              "(e.g. http://127.0.0.1:8042/dicom-web); clients use http://HOST:PORT/dicom-web instead. "
              "Without it (and no upstream in --config): no gateway, recording ingestion only.")
@click.option("--host", default=None, help="Address to listen on (default 127.0.0.1: this machine only).")
@click.option("--port", type=int, default=None, help="Port to listen on (default 8080).")
@click.option("--tls-cert", type=click.Path(path_type=Path), default=None, help="PEM certificate: serve HTTPS.")
@click.option("--tls-key", type=click.Path(path_type=Path), default=None, help="PEM private key for --tls-cert.")
@click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="YAML file of settings (upstream, host, port, tls_cert, tls_key, cache_dir, cache_max_mb, "
                   "connect_timeout_s, read_timeout_s, public_url, cors_origins, record); options given here override it.")
@click.option("--cache-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Private folder for remuxed videos (default ~/.cache/dvqa/serve).")
@options.scheduler("Convert ended recordings on a Dask cluster (record.scheduler; the live conversion stays here)")
@options.debug
def serve_command(upstream: str | None, host: str | None, port: int | None, tls_cert: Path | None,
                  tls_key: Path | None, config_path: Path | None, cache_dir: Path | None, scheduler, debug: bool
                  ) -> None:
    """Serve the DICOMweb video gateway at http://HOST:PORT/dicom-web in front of --upstream, browser recording
    ingestion, or both. The gateway passes everything through, and video instances also play in web viewers
    (rendered as MP4 without re-encoding, metadata that names their transfer syntax, thumbnails). With a `record:`
    section in --config it takes browser recordings (POST /recordings, the recorder page at /record; see
    docs/serve.md), converts them as they arrive and stores them in the PACS; without --upstream it does only
    that, and /dicom-web answers 404. With --scheduler, recordings are converted on a Dask cluster once they end
    instead of live here (validated, signed, stored and audited here). GET /healthz answers while it runs.
    Stops gracefully on SIGTERM or Ctrl-C (exit 0); access logs on stderr carry no query strings."""
    from dvqa.serve import config as serve_config
    from dvqa.serve import server

    config = guarded(debug, lambda: serve_config.load(config_path, scheduler, upstream=upstream, host=host,
                                                       port=port, tls_cert=tls_cert, tls_key=tls_key,
                                                       cache_dir=cache_dir))
    guarded(debug, lambda: server.run(config))
