"""Local process pools that stop at once on Ctrl-C or SIGTERM, for `rpsim search` (rpsim.search.parallel)
and `rpsim compare` (rpsim.compare_pool): the workers ignore SIGINT and leave the decision to the parent,
which terminates them (then kills those that have not gone within ABORT_GRACE_S) and exits 130, or 143
after SIGTERM (rpsim.cli.main), without a traceback."""
from __future__ import annotations

import concurrent.futures.process
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any

ABORT_GRACE_S = 1.0  # SIGTERM to SIGKILL for a worker that does not stop; the whole stop must take < 2 s


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so a command stops its workers as on Ctrl-C (exit 143)."""


def _raise_terminated(_signum: int, _frame: Any) -> None:
    raise Terminated()


@contextmanager
def sigterm_raises_terminated() -> Iterator[None]:
    """Within: SIGTERM raises Terminated in the main thread (the default would end the parent alone)."""
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def quiet_worker_signals() -> None:
    """In a worker: ignore SIGINT (Ctrl-C reaches the whole process group, and the parent alone decides;
    a worker's own KeyboardInterrupt only printed tracebacks), and let SIGTERM end it: a forked worker
    inherits the parent's SIGTERM handler, which raised Terminated in the worker when stop_pool
    terminated it, and multiprocessing printed that as a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def stop_pool(pool: ProcessPoolExecutor) -> None:
    """Ctrl-C or SIGTERM: stop now. shutdown() alone waits for every running task (up to 20 s seen, and a
    worker outlived its parent after SIGTERM), so the workers are terminated, then killed if they have
    not gone within ABORT_GRACE_S. The executor exposes no public handle on its workers."""
    workers = list((pool._processes or {}).values())
    for p in workers:
        p.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + ABORT_GRACE_S
    for p in workers:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in workers:
        if p.is_alive():
            p.kill()
            p.join()
    # With its workers gone the executor's manager thread ends; join it now. Left running, Python's
    # exit hook (concurrent.futures.process._python_exit) can write to its wake-up pipe while the
    # thread closes it, printing an "Exception ignored" traceback after `rpsim: terminated` (seen
    # once under load; CPython 3.12 takes a lock there).
    manager = getattr(pool, "_executor_manager_thread", None)
    if manager is not None:
        manager.join(ABORT_GRACE_S)
        if not manager.is_alive():
            # The ended thread stays registered for that exit hook (keyed by the thread object, which
            # the executor still holds), and on CPython 3.11 the hook then wrote to the closed pipe
            # anyway ("OSError: [Errno 9] Bad file descriptor" after `rpsim: interrupted`, seen once in
            # CI): nothing is left to wake, so unregister it.
            registered = getattr(concurrent.futures.process, "_threads_wakeups", None)
            if registered is not None:
                registered.pop(manager, None)
