"""Tiles as tasks on dask.distributed: a LocalCluster, or an existing cluster by address.

Each :class:`~segdiff_core.predict.tiles.TileTask` is one task. Workers read their tile from
the input file themselves (the path must be visible to every worker, e.g. a shared file
system), load the model once per process and return only the objects they own; the client
pastes results in task order, so the output does not depend on which worker ran what. A task
whose worker dies is rescheduled by the scheduler on another worker (dask's
``distributed.scheduler.allowed-failures``); a task that raises is retried ``retries`` times.
"""
from __future__ import annotations

import contextlib
import uuid
from typing import Any, Iterator, Sequence

from segdiff_core.predict.tiles import TileResult, TileTask, run_tile

__all__ = ["dask_runner", "run_on_dask", "local_cluster"]

WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
"""One compute thread per worker process: workers, not threads, share the cores."""


def run_on_dask(client: Any, tasks: Sequence[TileTask], retries: int = 2) -> Iterator[TileResult]:
    """Submit every task, then yield results in task order (each future released when read)."""
    run_id = uuid.uuid4().hex[:8]
    keys = [f"segdiff-tile-{run_id}-{t.index}" for t in tasks]
    futures = client.map(run_tile, tasks, key=keys, pure=False, retries=retries)
    try:
        for k in range(len(futures)):
            yield futures[k].result()
            futures[k].release()
    finally:
        client.cancel([f for f in futures if f.status == "pending"])


def local_cluster(workers: int, **kwargs: Any) -> Any:
    """A LocalCluster of ``workers`` single-threaded worker processes (no dashboard)."""
    from distributed import LocalCluster

    return LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
        env=dict(WORKER_ENV), **kwargs,
    )


@contextlib.contextmanager
def dask_runner(workers: int = 0, scheduler: str | None = None, retries: int = 2) -> Iterator[Any]:
    """Context yielding a runner ``tasks -> results`` on dask, or None to run in-process.

    ``scheduler`` connects to a running cluster; otherwise ``workers > 0`` starts (and at exit
    closes) a LocalCluster with that many worker processes.
    """
    if not scheduler and workers <= 0:
        yield None
        return
    from distributed import Client

    cluster = None if scheduler else local_cluster(workers)
    client = Client(scheduler) if scheduler else Client(cluster)
    try:
        yield lambda tasks: run_on_dask(client, tasks, retries)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
