"""Where dvqa's per-file work runs when one machine is not enough: a Dask `distributed` cluster.

Dask places the tasks, re-runs those whose worker died, and deploys on Slurm/PBS (dask-jobqueue)
or Kubernetes (dask-kubernetes); dvqa only connects a client, submits tasks and collects results.
`local[:N]` starts N worker processes on 127.0.0.1 for this machine; any other value is the
address of a scheduler a site already runs.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from dvqa.core.errors import EnvironmentProblem, UsageError

CONNECT_TIMEOUT_S = 10


def parse(scheduler: str) -> tuple[str, int]:
    """('local', N) for local[:N] (N worker processes on this machine), else ('address', 0)."""
    if scheduler == "local" or scheduler.startswith("local:"):
        count = scheduler.partition(":")[2] or "2"
        if not count.isdigit() or not 1 <= int(count) <= 64:
            raise UsageError(f"--scheduler {scheduler}: give local:N with N from 1 to 64 worker processes.")
        return "local", int(count)
    if "://" not in scheduler and ":" not in scheduler:
        raise UsageError(f"--scheduler {scheduler}: give the scheduler's address (tcp://HOST:8786) or local[:N].")
    return "address", 0


def require_absolute(scheduler: str, paths: list[Path]) -> None:
    """Workers elsewhere resolve a relative path against their own working folder: refuse it up front."""
    if parse(scheduler)[0] != "address":
        return
    relative = [p for p in paths if not Path(p).is_absolute()]
    if relative:
        raise UsageError(f"{relative[0]}: with a remote --scheduler give absolute paths on storage every "
                         "worker mounts at the same place.")


@contextmanager
def client(scheduler: str) -> Iterator[object]:
    """A Dask client: a LocalCluster of worker processes on 127.0.0.1 for local[:N], else the address."""
    from distributed import Client, LocalCluster

    kind, workers = parse(scheduler)
    if kind == "local":
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=None) as cluster, Client(cluster) as connected:
            yield connected
        return
    try:
        connected = Client(scheduler, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError) as exc:
        raise EnvironmentProblem(f"--scheduler {scheduler}: no Dask scheduler answered within {CONNECT_TIMEOUT_S} s "
                                 f"({type(exc).__name__}); start one (dask scheduler) or check the address.") from None
    with connected:
        yield connected
