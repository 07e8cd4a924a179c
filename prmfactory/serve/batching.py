"""Dynamic batching: concurrent requests' solutions are scored together in one model call.

Written by hand (no maintained library batches arbitrary Python scoring calls for FastAPI):
requests put their items on a queue; one worker task takes what is waiting — up to ``max_batch``
items, waiting at most ``max_wait_ms`` for more — and scores them in a thread, so the event
loop keeps accepting requests and the model is only ever called from one thread at a time.

One bad item must not fail the requests batched with it: when a batch fails, each of its items is
scored alone, so only the items that fail alone carry the error. An item whose request was
cancelled (its client disconnected) is skipped before it reaches the model.
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

    async def score(self, items: Sequence[Item]) -> list[list[float] | BaseException]:
        """Step scores of ``items``, batched with whatever else is waiting; an item that could not be scored
        gives its exception in its place. Cancelling the call withdraws the items not yet scored."""
        assert self._queue is not None, "DynamicBatcher.start() was not awaited"
        loop = asyncio.get_running_loop()
        futures = []
        for item in items:
            future = loop.create_future()
            self._queue.put_nowait((item, future))
            futures.append(future)
        try:
            return list(await asyncio.gather(*futures, return_exceptions=True))
        except asyncio.CancelledError:
            for future in futures:
                future.cancel()
            raise

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
            except Exception:  # noqa: BLE001 - find the items that fail alone; the others are scored
                await self._score_one_by_one(live)
                continue
            self.batches += 1
            for (_, future), result in zip(live, scores):
                if not future.done():
                    future.set_result(result)

    async def _score_one_by_one(self, live: list[tuple[Item, asyncio.Future]]) -> None:
        for item, future in live:
            if future.done():
                continue
            try:
                result = (await asyncio.to_thread(self.score_batch, [item]))[0]
            except Exception as exc:  # noqa: BLE001 - this item's own failure, reported to its request only
                if not future.done():
                    future.set_exception(exc)
                continue
            self.batches += 1
            if not future.done():
                future.set_result(result)
