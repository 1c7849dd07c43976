"""Where dvqa's per-file work runs when one machine is not enough: a Dask `distributed` cluster.

Dask places the tasks, re-runs those whose worker died, and deploys on Slurm/PBS (dask-jobqueue)
or Kubernetes (dask-kubernetes); dvqa only connects a client, submits tasks and collects results.
`local[:N]` starts N worker processes on 127.0.0.1 for this machine; any other value is the
address of a scheduler a site already runs.

Every cluster member is fully trusted: Dask sends pickled code and data both ways, so whoever can
connect to the scheduler can run code in the workers and in this client (which holds the signing
key and the audit key) and read the patient data in task arguments. Hence:

- `local[:N]` uses TLS with credentials made for this run only (Dask's `Security.temporary()`,
  in memory): another local user's client, without them, is refused. Its HTTP servers serve
  no routes (no dashboard, no logs), and the environment variables holding dvqa's secrets
  (`keep_from_workers`) are absent from the workers' environment;
- a remote scheduler is reached over `tls://` with the site's CA and this client's certificate
  (`--cluster-ca/--cluster-cert/--cluster-key`); clear-text `tcp://` only with
  `--allow-clear-text`, and never under `--require-tls` (DVQA_REQUIRE_TLS=1).
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from dvqa.core.errors import EnvironmentProblem, UsageError

CONNECT_TIMEOUT_S = 10
WORKER_WAIT_S = 60.0  # --worker-timeout's default: how long a run waits for a worker, at start and after losing all
POLL_S = 1.0  # how often a run without finished tasks asks the scheduler whether any worker remains
SCHEMES = ("tls", "tcp")
# HTTP routes the scheduler and workers serve: none (their server still listens on 127.0.0.1, answering 404)
NO_HTTP = {"distributed.scheduler.http.routes": [], "distributed.worker.http.routes": []}

_SECRETS: set[str] = set()  # names of environment variables that hold dvqa's secrets (keys, passphrases)


def keep_from_workers(variable: str) -> None:
    """Name an environment variable that holds a secret (an audit key, a passphrase): local workers never
    inherit it, since any task - or anyone who could submit one - can read a worker's environment."""
    _SECRETS.add(variable)


@dataclass(frozen=True)
class Cluster:
    """Where the tasks run and how the client proves itself there (the --scheduler options)."""

    scheduler: str  # local[:N] or a scheduler's address
    ca: Path | None = None  # the CA that signed the scheduler's and workers' certificates
    cert: Path | None = None  # this client's certificate (and key, if `key` is None)
    key: Path | None = None
    allow_clear_text: bool = False
    require_tls: bool = False
    worker_wait_s: float = WORKER_WAIT_S

    @property
    def clear_text(self) -> bool:
        """A remote scheduler reached over tcp:// (Dask's default scheme for HOST:PORT): nothing is encrypted."""
        return not self.scheduler.startswith(("local", "tls://")) and (
            self.scheduler.startswith("tcp://") or "://" not in self.scheduler)


class ClusterLost(EnvironmentProblem):
    """No worker remained (or none joined) for the cluster's worker_wait_s, or the scheduler was lost."""


def as_cluster(scheduler: str | Cluster) -> Cluster:
    return scheduler if isinstance(scheduler, Cluster) else Cluster(scheduler)


def parse(scheduler: str | Cluster) -> tuple[str, int]:
    """('local', N) for local[:N] (N worker processes on this machine), else ('address', 0); refuses, before any
    work, an address in clear text (unless allowed), a scheme Dask cannot reach a scheduler by, missing TLS files."""
    cluster = as_cluster(scheduler)
    address = cluster.scheduler
    credentials = [name for name, value in (("--cluster-ca", cluster.ca), ("--cluster-cert", cluster.cert),
                                            ("--cluster-key", cluster.key)) if value is not None]
    if address == "local" or address.startswith("local:"):
        count = address.partition(":")[2] or "2"
        if not count.isdigit() or not 1 <= int(count) <= 64:
            raise UsageError(f"--scheduler {address}: give local:N with N from 1 to 64 worker processes.")
        if credentials:
            raise UsageError(f"{credentials[0]}: applies to a tls:// scheduler; local:N makes its own credentials.")
        return "local", int(count)
    scheme, sep, rest = address.partition("://")
    if not sep:
        scheme, rest = "tcp", address  # Dask's default for HOST:PORT
    if scheme not in SCHEMES or ":" not in rest:
        raise UsageError(f"--scheduler {address}: give the scheduler's address as tls://HOST:PORT (or local[:N]); "
                         "Dask does not reach a scheduler by " + (f"{scheme}://." if scheme not in SCHEMES else
                                                                 "an address without a port."))
    if scheme == "tcp":
        if credentials:
            raise UsageError(f"{credentials[0]}: applies to a tls:// scheduler; give --scheduler tls://{rest}.")
        if cluster.require_tls:
            raise UsageError(f"--scheduler {address}: patient data would cross the network in clear text, which "
                             "--require-tls (or DVQA_REQUIRE_TLS=1) forbids; use "
                             f"tls://{rest} with --cluster-ca, --cluster-cert and --cluster-key.")
        if not cluster.allow_clear_text:
            raise UsageError(f"--scheduler {address}: patient data and code would cross the network in clear text; "
                             f"use tls://{rest} with --cluster-ca, --cluster-cert and --cluster-key, or pass "
                             "--allow-clear-text on a network only trusted machines reach.")
    elif cluster.ca is None or cluster.cert is None:
        raise UsageError(f"--scheduler {address}: a tls:// scheduler needs --cluster-ca (the CA that signed the "
                         "cluster's certificates) and --cluster-cert/--cluster-key (this client's certificate).")
    return "address", 0


def require_absolute(scheduler: str | Cluster, paths: list[Path]) -> None:
    """Workers elsewhere resolve a relative path against their own working folder: refuse it up front."""
    if parse(scheduler)[0] != "address":
        return
    relative = [p for p in paths if not Path(p).is_absolute()]
    if relative:
        raise UsageError(f"{relative[0]}: with a remote --scheduler give absolute paths on storage every "
                         "worker mounts at the same place.")


@contextmanager
def client(scheduler: str | Cluster) -> Iterator[object]:
    """A Dask client with at least one worker: a TLS LocalCluster on 127.0.0.1 for local[:N], else the address."""
    cluster = as_cluster(scheduler)
    kind, workers = parse(cluster)
    with _quiet(), (_local(cluster.scheduler, workers) if kind == "local" else _remote(cluster)) as connected:
        try:
            connected.wait_for_workers(1, timeout=cluster.worker_wait_s)
        except TimeoutError:
            raise ClusterLost(f"--scheduler {cluster.scheduler}: no Dask worker joined within "
                              f"{cluster.worker_wait_s:g} s (--worker-timeout); start workers (dask worker "
                              "ADDRESS with the cluster's credentials) or check why they stopped.") from None
        yield connected


@contextmanager
def _local(scheduler: str, workers: int) -> Iterator[object]:
    import dask
    from distributed import Client, LocalCluster
    from distributed.security import Security

    security = Security.temporary()  # a CA, key and certificate for this run only, never written to disk
    with dask.config.set(NO_HTTP), _without(sorted(_SECRETS)):
        try:
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                   protocol="tls://", security=security, dashboard_address=None,
                                   scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"})
        except Exception as exc:  # Dask wraps the cause: a worker process that died as it started
            raise EnvironmentProblem(f"--scheduler {scheduler}: the local Dask cluster did not start ({_cause(exc)}); "
                                     "run with --debug, or without --scheduler/--jobs.") from None
        with cluster, Client(cluster, security=security) as connected:
            yield connected


@contextmanager
def _remote(cluster: Cluster) -> Iterator[object]:
    from distributed import Client
    from distributed.comm.core import FatalCommClosedError
    from distributed.security import Security

    security = None
    if cluster.scheduler.startswith("tls://"):
        security = Security(tls_ca_file=str(cluster.ca), tls_client_cert=str(cluster.cert),
                            tls_client_key=str(cluster.key) if cluster.key else None, require_encryption=True)
        try:
            security.get_connection_args("client")  # loads the files now: a bad one is not a network problem
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise UsageError(f"--scheduler {cluster.scheduler}: the cluster credentials could not be loaded ({exc}); "
                             "give PEM files for --cluster-ca, --cluster-cert and --cluster-key.") from None
    try:
        connected = Client(cluster.scheduler, timeout=CONNECT_TIMEOUT_S, security=security)
    except FatalCommClosedError as exc:
        raise EnvironmentProblem(f"--scheduler {cluster.scheduler}: the TLS handshake failed ({exc}); check that "
                                 "--cluster-ca signed the scheduler's certificate and the scheduler's CA signed "
                                 "--cluster-cert.") from None
    except (OSError, TimeoutError) as exc:
        raise EnvironmentProblem(f"--scheduler {cluster.scheduler}: no Dask scheduler answered within "
                                 f"{CONNECT_TIMEOUT_S} s ({type(exc).__name__}); start one (dask scheduler) or check "
                                 "the address.") from None
    with connected:
        yield connected


@contextmanager
def _quiet() -> Iterator[None]:
    """Dask's own log handlers silenced while dvqa uses the cluster: Dask logs a lost connection, a refused
    TLS handshake or a worker that failed to start as tracebacks on stderr, where dvqa says one sentence."""
    import distributed  # noqa: F401 - Dask configures its loggers and handlers on import

    loggers = [logger for name, logger in list(logging.root.manager.loggerDict.items())
               if name.split(".")[0] in ("distributed", "tornado") and isinstance(logger, logging.Logger)]
    handlers = [(handler, handler.level) for logger in loggers for handler in logger.handlers]
    for handler, _ in handlers:
        handler.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for handler, level in handlers:
            handler.setLevel(level)


@contextmanager
def _without(variables: Iterable[str]) -> Iterator[None]:
    """The secret variables out of os.environ while worker processes are spawned (and re-spawned after a crash):
    a spawned process inherits the environment as it is. The client has read its secrets before."""
    saved = {name: os.environ.pop(name) for name in variables if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def _cause(exc: BaseException) -> str:
    """The innermost cause of a Dask start-up failure, as a short phrase."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return f"{type(exc).__name__}: {exc}".strip().rstrip(":")[:200]


def completed(connected, futures: Iterable, cluster: str | Cluster) -> Iterator:
    """Each future as it finishes (like distributed.as_completed), but never waiting forever: ClusterLost when
    the scheduler reports no worker for the cluster's worker_wait_s (Dask keeps a task without a worker
    waiting indefinitely), or when the connection to the scheduler is lost."""
    from distributed import wait
    from distributed.client import FuturesCancelledError

    wait_s = as_cluster(cluster).worker_wait_s
    pending = set(futures)
    alone_since: float | None = None
    while pending:
        try:
            done, pending = wait(pending, timeout=POLL_S, return_when="FIRST_COMPLETED")
        except TimeoutError:
            done = set()
        except FuturesCancelledError as exc:  # the scheduler was lost (or cancelled them): no result will come
            reason = exc.error_groups[0].reason if exc.error_groups else "cancelled"
            raise ClusterLost(f"--scheduler {as_cluster(cluster).scheduler}: the Dask scheduler dropped the tasks "
                              f"({reason}); check that it runs and that this machine reaches it.") from None
        yield from done
        if done or _workers(connected):
            alone_since = None
            continue
        alone_since = alone_since or time.monotonic()
        if time.monotonic() - alone_since >= wait_s:
            raise ClusterLost(f"--scheduler {as_cluster(cluster).scheduler}: no Dask worker remained for "
                              f"{wait_s:g} s (--worker-timeout); start workers or check why they stopped.")


def _workers(connected) -> int:
    try:
        return len(connected.nthreads())
    except Exception:  # the scheduler itself is gone or unreachable: no worker either
        return 0
