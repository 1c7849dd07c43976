"""`dvqa validate --scheduler`: the same per-file checks, run as tasks on a Dask cluster.

dvqa submits tasks of a few files each (dvqa.core.cluster connects) and collects results as they
finish. Results are returned in the input order, so every report format
says exactly what a local run says.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from dvqa.core.cluster import Cluster, client, completed, require_absolute
from dvqa.core.profiles import Profile
from dvqa.validate.run import FileResult, Skipped, check_file
from dvqa.validate.standard import Edition

RETRIES = 2  # a task whose worker died runs again elsewhere; a bad file gives a finding, never an exception


def validate_on(scheduler: str | Cluster, files: list[Path | Skipped], profile: Profile | None = None,
                edition: Edition | None = None, progress: Callable[[int], None] | None = None) -> list[FileResult]:
    """check_file for every file, in Dask tasks of a few files each; results in the order of `files`.
    When no worker remains for the cluster's worker_wait_s, WorkersGone (exit 4) rather than a wait forever."""

    require_absolute(scheduler, [Path(f) for f in files if not isinstance(f, Skipped)])
    with client(scheduler) as connected:
        size = chunk_size(len(files), sum(connected.nthreads().values()))
        chunks = [files[start:start + size] for start in range(0, len(files), size)]
        futures = [connected.submit(check_files, chunk, profile, edition, pure=False, retries=RETRIES)
                   for chunk in chunks]
        first = {future.key: number * size for number, future in enumerate(futures)}
        results: list[FileResult | None] = [None] * len(files)
        for future in completed(connected, futures, scheduler):
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
