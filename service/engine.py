"""The inference engine: one micro-batcher per ONNX session the recogniser declares, the inference and
CPU thread pools, and the `Steps` the recogniser's coroutines run their work through.

Every model call of every client goes through `Engine.run(session, item)`, so each session's calls are
batched across clients (infinity's encode_pre / encode_core / encode_post): the encoder and head of
WLASL20c, the palm / hand / pose / sequence models of the landmark recogniser. The server, the
metrics and the benchmarks never care which recogniser runs.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from service.arrays import FloatArray, ImageBGR
from service.batcher import MicroBatcher
from service.recognizer import Recognizer
from service.settings import Settings

T = TypeVar("T")
BatchObserver = Callable[[str, int, float], None]  # session, batch size, seconds


class Engine:
    """Implements `service.recognizer.Steps` for the recogniser it serves."""

    def __init__(
        self, recognizer: Recognizer, settings: Settings, max_streams: int, on_batch: BatchObserver | None = None
    ) -> None:
        self.recognizer = recognizer
        # CPU work (JPEG decode, crops, window vectors) runs in its own small pool; OpenCV releases the GIL.
        self._cpu_pool = ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1)), thread_name_prefix="cpu")
        # One inference thread: ONNX Runtime parallelises inside a call (intra-op threads), and
        # sessions' batches take turns rather than competing for the cores.
        self._inference_pool = ThreadPoolExecutor(1, thread_name_prefix="onnx")
        self.batchers = {
            name: MicroBatcher(
                name,
                session.run,
                self._inference_pool,
                session.max_batch or settings.encoder_max_batch,
                (settings.encoder_max_wait_ms if session.max_wait_ms is None else session.max_wait_ms) / 1e3,
                # A stream has at most a few calls of one session waiting (one frame in flight, two hands).
                max_pending=2 * max_streams + 2,
                on_batch=None if on_batch is None else _observer(on_batch, name),
            )
            for name, session in recognizer.sessions.items()
        }

    def start(self) -> None:
        for batcher in self.batchers.values():
            batcher.start()

    @property
    def running(self) -> bool:
        return all(batcher.running for batcher in self.batchers.values())

    async def stop(self) -> None:
        for batcher in self.batchers.values():
            await batcher.stop()
        self._cpu_pool.shutdown(wait=False, cancel_futures=True)
        self._inference_pool.shutdown(wait=False, cancel_futures=True)

    # -- Steps -----------------------------------------------------------------------------------

    async def run(self, session: str, item: FloatArray) -> FloatArray:
        return await self.batchers[session].submit(item)

    async def cpu(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._cpu_pool, function, *args)

    # -- what the pipeline asks ------------------------------------------------------------------

    async def encode(self, image: ImageBGR, tracker: Any) -> FloatArray:
        return await self.recognizer.encode(image, tracker, self)

    async def classify(self, window: FloatArray) -> FloatArray:
        return await self.recognizer.classify(window, self)


def _observer(on_batch: BatchObserver, name: str) -> Callable[[int, float], None]:
    def observe(size: int, seconds: float) -> None:
        on_batch(name, size, seconds)

    return observe
