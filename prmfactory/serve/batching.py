"""Dynamic batching: concurrent requests' solutions are scored together in one model call.

Written by hand (no maintained library batches arbitrary Python scoring calls for FastAPI):
requests put their items on a queue; one worker task takes what is waiting — up to ``max_batch``
items, waiting at most ``max_wait_ms`` for more — and scores them in a thread, so the event
loop keeps accepting requests and the model is only ever called from one thread at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Callable, Sequence

from prmfactory.prm import Item


class DynamicBatcher:
    def __init__(self, score_batch: Callable[[Sequence[Item]], list[list[float]]], *, max_batch: int = 64,
                 max_wait_ms: float = 5.0):
        self.score_batch = score_batch
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000
        self.batches = 0
        self._queue: asyncio.Queue[tuple[Item, asyncio.Future]] | None = None
        self._worker: asyncio.Task | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    async def score(self, items: Sequence[Item]) -> list[list[float]]:
        """Step scores of ``items``, batched with whatever else is waiting."""
        assert self._queue is not None, "DynamicBatcher.start() was not awaited"
        loop = asyncio.get_running_loop()
        futures = []
        for item in items:
            future = loop.create_future()
            self._queue.put_nowait((item, future))
            futures.append(future)
        return list(await asyncio.gather(*futures))

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            batch = [await self._queue.get()]
            deadline = asyncio.get_running_loop().time() + self.max_wait_s
            while len(batch) < self.max_batch:
                timeout = deadline - asyncio.get_running_loop().time()
                try:
                    batch.append(self._queue.get_nowait() if timeout <= 0 else
                                 await asyncio.wait_for(self._queue.get(), timeout))
                except (asyncio.QueueEmpty, asyncio.TimeoutError):
                    break
            live = [(item, future) for item, future in batch if not future.done()]
            if not live:
                continue
            try:
                scores = await asyncio.to_thread(self.score_batch, [item for item, _ in live])
            except Exception as exc:  # the requests in this batch fail; the worker keeps serving
                for _, future in live:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.batches += 1
            for (_, future), result in zip(live, scores):
                if not future.done():
                    future.set_result(result)
