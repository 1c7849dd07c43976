"""Running the application on uvicorn: TLS, logging, and a graceful stop on SIGTERM or Ctrl-C.

uvicorn re-raises a captured signal after its graceful shutdown, which would end the process as
killed by it; a server told to stop that stopped cleanly has succeeded, so here the signal only
starts the shutdown and `run` returns normally (the CLI exits 0).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import sys
from typing import Iterator

import uvicorn

from dvqa.core.errors import EnvironmentProblem
from dvqa.serve.app import create_app
from dvqa.serve.config import ServeConfig

GRACE_S = 10  # in-flight requests get this long to finish after SIGTERM


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _bindable(host: str, port: int) -> None:
    """Refuse a taken port in one sentence before uvicorn logs its own traceback-like error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise EnvironmentProblem(f"cannot listen on {host}:{port} ({exc.strerror}); give a free --port "
                                     "or stop what uses it.") from None


def run(config: ServeConfig) -> None:
    """Serve until SIGTERM/SIGINT; returns after a graceful shutdown."""
    _bindable(config.host, config.port)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for chatty in ("httpx", "httpcore"):  # they log every URL, queries (patient names) included
        logging.getLogger(chatty).setLevel(logging.WARNING)
    app = create_app(config)
    app.state.recordings.prepare()  # a Dask cluster it cannot reach is named now, in one line
    uv = uvicorn.Config(app, host=config.host, port=config.port, access_log=False, log_config=None,
                        ssl_certfile=str(config.tls_cert) if config.tls_cert else None,
                        ssl_keyfile=str(config.tls_key) if config.tls_key else None,
                        timeout_graceful_shutdown=GRACE_S, server_header=False, lifespan="on")
    _Server(uv).run()
