"""A killable worker process for computations on untrusted input, with a wall-clock limit per item.

Model output can make sympy or math-verify run for ever (``9^{9^{9^9}}``); a thread cannot be
stopped and ``signal.alarm`` is unusable off the main thread, so such work runs in a separate
process (DESIGN.md §3.6). Items go in batches for speed; a batch over its limit kills the worker
and its items are retried one at a time, so only the item that hangs is lost.
"""

from __future__ import annotations

import multiprocessing
from typing import Any, Callable, Sequence

TIMED_OUT = object()


class BoundedWorker:
    """Runs ``fn(items) -> results`` in a child process; an item over ``timeout_s`` yields TIMED_OUT."""

    def __init__(self, fn: Callable[[list[Any]], list[Any]], *, timeout_s: float,
                 warm_up: Callable[[], None] | None = None):
        self.fn, self.timeout_s, self.warm_up = fn, timeout_s, warm_up
        self._context = multiprocessing.get_context("spawn")
        self._pool = None
        self.timeouts = 0

    def _worker(self):
        if self._pool is None:
            self._pool = self._context.Pool(processes=1)
            if self.warm_up is not None:
                self._pool.apply(self.warm_up)
        return self._pool

    def _restart(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def map(self, items: Sequence[Any], weights: Sequence[float] | None = None) -> list[Any]:
        """``fn(items)``, each item allowed ``timeout_s`` times its weight (default 1) of wall time."""
        items = list(items)
        weights = list(weights) if weights is not None else [1.0] * len(items)
        if not items:
            return []
        try:
            return self._worker().apply_async(self.fn, (items,)).get(self.timeout_s * sum(weights))
        except multiprocessing.TimeoutError:
            self._restart()
            if len(items) == 1:
                self.timeouts += 1
                return [TIMED_OUT]
            return [self.map([item], [weight])[0] for item, weight in zip(items, weights)]

    def close(self) -> None:
        self._restart()

    def __enter__(self) -> "BoundedWorker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class WorkerClient:
    """Base of the checkers that own a :class:`BoundedWorker`: closing, context management, timeouts."""

    _worker: BoundedWorker

    @property
    def timeouts(self) -> int:
        return self._worker.timeouts

    def close(self) -> None:
        self._worker.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
