"""Where explore and sweep run their simulations: worker processes on this machine, or a
Ray cluster.

``Pool(jobs).imap_unordered(func, items)`` calls ``func(item)`` for every item in worker
processes and yields ``(item, result)`` as each finishes, keeping a few calls in flight per
worker, so a caller can stop early (a time budget) without having drawn everything first.
``func`` must be picklable (a module-level function, or an object of a module-level class),
and so must items and results. A result depends
only on its item, never on which worker ran it or when, so the same items give the same
results in any order and on any number of workers.

``Pool(jobs, cluster=ADDRESS)`` runs the same calls as tasks on the Ray cluster at
``ADDRESS`` (``dvpsim.ray_pool``; Ray is the optional ``cluster`` extra, imported only
then), ``jobs`` at a time (default: the cluster's CPUs), with the same results.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from dvpsim.ray_pool import RayCluster

__all__ = ["Pool", "PoolError", "default_jobs"]

T = TypeVar("T")
R = TypeVar("R")

#: Calls queued per worker beyond the one it runs: enough to keep it busy between results.
_AHEAD = 2


class PoolError(RuntimeError):
    """The pool cannot run (one line: what and the fix)."""


def default_jobs() -> int:
    """One worker per core this process may use."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


class Pool(Generic[T, R]):
    """Worker processes on this machine (``jobs``, default one per core), or the Ray
    cluster at ``cluster`` (joined here: an unreachable one is a PoolError at once)."""

    def __init__(self, jobs: int | None = None, cluster: str | None = None) -> None:
        if jobs is not None and jobs < 1:
            raise PoolError(f"--jobs {jobs}: give at least 1 worker")
        self._cluster: RayCluster | None = None
        self._executor: ProcessPoolExecutor | None = None
        if cluster is None:
            self.jobs = jobs or default_jobs()
            self.where = f"{self.jobs} local worker process{'es' if self.jobs != 1 else ''}"
        else:
            from dvpsim import ray_pool  # Ray only when asked for: it is an optional extra

            try:
                self._cluster = ray_pool.connect(cluster)
            except ray_pool.ClusterError as e:
                raise PoolError(str(e)) from None
            self.jobs = jobs or self._cluster.cpus
            self.where = f"Ray cluster {cluster} ({self.jobs} at a time)"

    def imap_unordered(self, func: Callable[[T], R], items: Iterable[T]) -> Iterator[tuple[T, R]]:
        """``(item, func(item))`` for every item, in the order they finish."""
        if self._cluster is not None:
            from dvpsim.ray_pool import ClusterError

            cluster = self._cluster
            try:
                yield from self._finishing(
                    lambda item: cluster.submit(func, item), cluster.cancel, items
                )
            except ClusterError as e:
                raise PoolError(str(e)) from None
            return
        executor = self._local()
        yield from self._finishing(lambda item: executor.submit(func, item), Future.cancel, items)

    def _local(self) -> ProcessPoolExecutor:
        """The worker processes, started on first use and kept for every later call (a
        shrink makes many small calls; each worker imports dvpsim once)."""
        if self._executor is None:
            # forkserver: workers start from a clean process, not a fork of one whose
            # threads (a progress display) might hold a lock.
            context = multiprocessing.get_context("forkserver")
            self._executor = ProcessPoolExecutor(self.jobs, mp_context=context)
        return self._executor

    def close(self) -> None:
        """Stop the local worker processes (they also stop when this process exits)."""
        if self._executor is not None:
            self._executor.shutdown(cancel_futures=True)
            self._executor = None

    def __enter__(self) -> Pool[T, R]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _finishing(
        self,
        submit: Callable[[T], Future[R]],
        cancel: Callable[[Future[R]], object],
        items: Iterable[T],
    ) -> Iterator[tuple[T, R]]:
        """Submit calls while fewer than ``jobs * (1 + _AHEAD)`` are in flight, yield each
        as it finishes, and cancel what is left when the caller stops early."""
        source = iter(items)
        running: dict[Future[R], T] = {}

        def fill() -> None:
            while len(running) < self.jobs * (1 + _AHEAD):
                try:
                    item = next(source)
                except StopIteration:
                    return
                running[submit(item)] = item

        try:
            fill()
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    item = running.pop(future)
                    yield item, future.result()
                fill()
        finally:
            for future in running:
                cancel(future)
