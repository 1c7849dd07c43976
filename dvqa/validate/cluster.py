"""`dvqa validate --scheduler`: the same per-file checks, run as tasks on a Dask cluster.

Dask's distributed scheduler places the tasks, retries those whose worker died, and deploys on
Slurm/PBS (dask-jobqueue) or Kubernetes (dask-kubernetes); dvqa only submits tasks (a few files
each) and collects results as they finish. Results are returned in the input order, so every report format
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
    """check_file for every file, in Dask tasks of a few files each; results in the order of `files`."""
    from distributed import as_completed

    kind, _ = parse(scheduler)
    if kind == "address":
        relative = [f for f in files if not isinstance(f, Skipped) and not Path(f).is_absolute()]
        if relative:
            raise UsageError(f"{relative[0]}: with a remote --scheduler give absolute paths on storage every "
                             "worker mounts at the same place.")
    with client(scheduler) as connected:
        size = chunk_size(len(files), sum(connected.nthreads().values()))
        chunks = [files[start:start + size] for start in range(0, len(files), size)]
        futures = [connected.submit(check_files, chunk, profile, edition, pure=False, retries=RETRIES)
                   for chunk in chunks]
        first = {future.key: number * size for number, future in enumerate(futures)}
        results: list[FileResult | None] = [None] * len(files)
        for future in as_completed(futures):
            done = future.result()
            results[first[future.key]:first[future.key] + len(done)] = done
            if progress:
                progress(len(done))
    return [r for r in results if r is not None]


def chunk_size(files: int, workers: int) -> int:
    """Files per task: a task costs the scheduler ~10 ms (bench/bench_cluster.py), a file ~20 ms of work,
    so tasks carry several files - but at least 8 tasks per worker remain, to balance and to retry little."""
    return max(1, min(32, files // (8 * max(1, workers))))


def check_files(paths: list[Path | Skipped], profile: Profile | None, edition: Edition | None) -> list[FileResult]:
    return [check_file(path, profile, edition) for path in paths]
