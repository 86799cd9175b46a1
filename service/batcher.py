"""Cross-client micro-batching: requests from every client are gathered into one ONNX Runtime call.

One loop per model stage takes the first waiting request, then whatever else arrives within
`max_wait` (up to `max_batch`), and runs the stage once in a worker thread, so the event loop never
blocks. While a batch runs, new requests queue up and form the next batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from service.arrays import FloatArray

log = logging.getLogger("signstream.batcher")


class MicroBatcher:
    """Batches calls of `run(stacked_inputs) -> stacked_outputs` (first axis = batch)."""

    def __init__(
        self,
        name: str,
        run: Callable[[FloatArray], FloatArray],
        executor: ThreadPoolExecutor,
        max_batch: int,
        max_wait_s: float,
        max_pending: int,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.name = name
        self._on_batch = on_batch
        self._run = run
        self._executor = executor
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        # Bounded: each client has at most one request in flight, so this only fills if clients
        # exceed max_pending; then submit() waits (backpressure), it never grows memory.
        self._queue: asyncio.Queue[tuple[FloatArray, asyncio.Future[FloatArray]]] = asyncio.Queue(max_pending)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"batcher-{self.name}")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def submit(self, item: FloatArray) -> FloatArray:
        """One input (no batch axis) -> its output (no batch axis)."""
        future: asyncio.Future[FloatArray] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    def enqueue(self, item: FloatArray) -> asyncio.Future[FloatArray]:
        """`submit` without waiting for room: for a caller whose streams each have at most one call of
        this session waiting, which `max_pending` is sized for (a full queue is a bug, and raises)."""
        future: asyncio.Future[FloatArray] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, future))
        return future

    async def _gather(self) -> list[tuple[FloatArray, asyncio.Future[FloatArray]]]:
        batch = [await self._queue.get()]
        deadline = time.perf_counter() + self._max_wait_s
        while len(batch) < self._max_batch:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            live = [(x, f) for x, f in batch if not f.done()]  # skip requests of gone clients
            if not live:
                continue
            start = time.perf_counter()
            try:
                outputs = await loop.run_in_executor(self._executor, self._run, np.stack([x for x, _ in live]))
            except Exception as exc:  # a failed run fails its requests, never the loop
                log.exception("%s batch of %d failed", self.name, len(live))
                for _, future in live:
                    if not future.done():
                        future.set_exception(exc)
                continue
            if self._on_batch is not None:  # batch size and time go to the metrics
                self._on_batch(len(live), time.perf_counter() - start)
            for (_, future), output in zip(live, outputs, strict=True):
                if not future.done():
                    future.set_result(output)
