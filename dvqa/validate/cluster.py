"""`dvqa validate --scheduler`: the same per-file checks, run as tasks on a Dask cluster.

Dask's distributed scheduler places the tasks, retries those whose worker died, and deploys on
Slurm/PBS (dask-jobqueue) or Kubernetes (dask-kubernetes); dvqa only submits one task per file and
collects results as they finish. Results are returned in the input order, so every report format
says exactly what a local run says.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from dvqa.core.errors import EnvironmentProblem, UsageError
from dvqa.core.profiles import Profile
from dvqa.validate.run import FileResult, Skipped, check_file
from dvqa.validate.standard import Edition

CONNECT_TIMEOUT_S = 10
RETRIES = 2  # a task whose worker died runs again elsewhere; a bad file gives a finding, never an exception


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


def validate_on(scheduler: str, files: list[Path | Skipped], profile: Profile | None = None,
                edition: Edition | None = None, progress: Callable[[int], None] | None = None) -> list[FileResult]:
    """check_file for every file as one Dask task each; results in the order of `files`."""
    from distributed import as_completed

    kind, _ = parse(scheduler)
    if kind == "address":
        relative = [f for f in files if not isinstance(f, Skipped) and not Path(f).is_absolute()]
        if relative:
            raise UsageError(f"{relative[0]}: with a remote --scheduler give absolute paths on storage every "
                             "worker mounts at the same place.")
    with client(scheduler) as connected:
        futures = [connected.submit(check_file, path, profile, edition, pure=False, retries=RETRIES)
                   for path in files]
        order = {future.key: number for number, future in enumerate(futures)}
        results: list[FileResult | None] = [None] * len(files)
        for future in as_completed(futures):
            results[order[future.key]] = future.result()
            if progress:
                progress(1)
    return [r for r in results if r is not None]
