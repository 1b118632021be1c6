"""Where the search's tasks run: in this process, on a pool of local processes, or on an existing Dask
distributed cluster. Each runner maps one task function over argument tuples and returns the results in
input order (so the search's outcome does not depend on where or in which order tasks finished), calling
`progress(weight)` as each task completes. dask.distributed is imported only by the Dask runner."""
from __future__ import annotations

import gc
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any

from rpsim.errors import SpecError
from rpsim.process_pool import quiet_worker_signals, stop_pool
from rpsim.scenario import Scenario
from rpsim.search import tasks

Progress = Callable[[int], None]


def _init_worker(token: str, base: Scenario) -> None:
    quiet_worker_signals()
    # A forked worker inherits the collector paused by the `rpsim` command (rpsim.gc_pause); it runs for
    # the whole search, so it collects as usual and pauses per task where plans are built.
    gc.enable()
    tasks.install(token, base)


def _no_progress(_n: int) -> None:
    pass


class SerialRunner:
    """Runs tasks here, one after another (--jobs 1): no pickling, the same per-process caches."""

    def __init__(self, token: str, base: Scenario) -> None:
        self.token = token
        tasks.install(token, base)

    def map(self, fn: Callable, args: Sequence[tuple], weights: Sequence[int],
            progress: Progress = _no_progress) -> list[Any]:
        out = []
        for a, w in zip(args, weights, strict=True):
            out.append(fn(self.token, None, *a))
            progress(w)
        return out

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


class PoolRunner:
    """A ProcessPoolExecutor kept for the whole search; each worker receives the scenario once."""

    def __init__(self, token: str, base: Scenario, jobs: int) -> None:
        self.token = token
        self.pool = ProcessPoolExecutor(max_workers=jobs, initializer=_init_worker, initargs=(token, base))

    def map(self, fn: Callable, args: Sequence[tuple], weights: Sequence[int],
            progress: Progress = _no_progress) -> list[Any]:
        futures = {self.pool.submit(fn, self.token, None, *a): i for i, a in enumerate(args)}
        out: list[Any] = [None] * len(args)
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                i = futures[f]
                out[i] = f.result()
                progress(weights[i])
        return out

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)

    def abort(self) -> None:
        stop_pool(self.pool)


class DaskRunner:
    """Tasks on an existing dask.distributed cluster (--cluster ADDRESS, or a Client object in tests)."""

    def __init__(self, token: str, base: Scenario, cluster: Any) -> None:
        try:
            from dask.distributed import Client
        except ImportError:
            raise SpecError("--cluster needs dask.distributed; install it with: "
                            "pip install 'rpsim[cluster]'") from None
        self.token = token
        self.futures: list[Any] = []
        self.own = not isinstance(cluster, Client)
        try:
            self.client = Client(cluster, timeout=30) if self.own else cluster
        except (OSError, ValueError, TimeoutError) as e:  # unreachable, or an address Dask cannot parse
            raise SpecError(f"--cluster {cluster!r}: cannot reach a Dask scheduler there ({e}); give its "
                            "address as [tcp://]HOST:PORT, e.g. tcp://10.0.0.5:8786") from None
        # The scenario travels once to every worker, not once per task.
        self.base = self.client.scatter(base, broadcast=True)

    def map(self, fn: Callable, args: Sequence[tuple], weights: Sequence[int],
            progress: Progress = _no_progress) -> list[Any]:
        from dask.distributed import as_completed
        futures = [self.client.submit(fn, self.token, self.base, *a, pure=False) for a in args]
        self.futures = futures
        index = {f.key: i for i, f in enumerate(futures)}
        out: list[Any] = [None] * len(args)
        for f in as_completed(futures):
            i = index[f.key]
            out[i] = f.result()
            progress(weights[i])
        return out

    def close(self) -> None:
        if self.own:
            self.client.close()

    def abort(self) -> None:
        """Ctrl-C: drop this search's tasks from the cluster (its workers are not ours to stop)."""
        if self.futures:
            self.client.cancel(self.futures)
        self.close()


def make_runner(token: str, base: Scenario, jobs: int | None, cluster: Any = None
                ) -> SerialRunner | PoolRunner | DaskRunner:
    if cluster is not None:
        return DaskRunner(token, base, cluster)
    n = jobs or os.cpu_count() or 1
    if n < 1:
        raise SpecError(f"--jobs must be >= 1, got {jobs}")
    return SerialRunner(token, base) if n == 1 else PoolRunner(token, base, n)
