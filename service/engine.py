"""The inference engine: loading the recogniser MODEL names (via the registry) and warming it up; one
micro-batcher per ONNX session it declares, the inference and CPU thread pools, and the `Steps` the
recogniser's coroutines run their work through.

Every model call of every client goes through `Engine.run(session, item)`, so each session's calls are
batched across clients (infinity's encode_pre / encode_core / encode_post): the encoder and head of
WLASL20c, the palm / hand / pose / sequence models of the landmark recogniser. The server, the
metrics and the benchmarks never care which recogniser runs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, cast

import numpy as np

from service.arrays import FloatArray, ImageBGR
from service.batcher import MicroBatcher
from service.recognizer import DirectSteps, Recognizer, RecognizerFactory, run_now
from service.registry import RECOGNIZERS, load_object
from service.settings import Settings

log = logging.getLogger("signstream.engine")

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
        self.inference_threads = settings.inference_threads or auto_inference_threads(recognizer)
        self._inference_pool = ThreadPoolExecutor(self.inference_threads, thread_name_prefix="onnx")
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

    def begin(self, session: str, item: FloatArray) -> Awaitable[FloatArray]:
        return self.batchers[session].enqueue(item)

    async def cpu(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._cpu_pool, function, *args)

    # -- what the pipeline asks ------------------------------------------------------------------

    async def encode(self, image: ImageBGR, tracker: Any) -> FloatArray:
        return await self.recognizer.encode(image, tracker, self)

    async def classify(self, window: FloatArray) -> FloatArray:
        return await self.recognizer.classify(window, self)


def auto_inference_threads(recognizer: Recognizer) -> int:
    """INFERENCE_THREADS=0: as many calls at once as the cores hold, given the intra-op threads of one call.
    Measured on 2 cores (model/MODEL_CARD.md, benchmarks/RESULTS*.md): WLASL20c's 2-thread encoder
    serves best one call at a time; the landmark front end's 1-thread sessions two at a time (4 clients
    at p95 55 ms, against 160 ms with one)."""
    threads = max(session.threads for session in recognizer.sessions.values())
    return max(1, (os.cpu_count() or 1) // threads)


def _observer(on_batch: BatchObserver, name: str) -> Callable[[int, float], None]:
    def observe(size: int, seconds: float) -> None:
        on_batch(name, size, seconds)

    return observe


def recognizer_class(name: str) -> RecognizerFactory:
    """The class MODEL=`name` names (settings only accept registered names)."""
    return cast(RecognizerFactory, load_object(RECOGNIZERS[name].recognizer))


def check_model(settings: Settings) -> None:
    """Fail with one clear line unless the model MODEL names can be served (cheap, before start-up)."""
    recognizer_class(settings.model).check(settings)


def load_recognizer(settings: Settings) -> Recognizer:
    """Check the model files, open the sessions and warm them up (logging each stage's time)."""
    recognizer = recognizer_class(settings.model)(settings)
    warm_up(recognizer)
    return recognizer


def warm_up(recognizer: Recognizer) -> dict[str, float]:
    """Run a frame and a window through every session once (first runs allocate); log what each costs."""
    frame = np.full((480, 640, 3), 128, dtype=np.uint8)
    steps = DirectSteps(recognizer.sessions)
    timings: dict[str, float] = {}
    tracker = recognizer.new_tracker()
    for _ in range(2):
        start = time.perf_counter()
        embedding = run_now(recognizer.encode(frame, tracker, steps))
        timings["frame_ms"] = (time.perf_counter() - start) * 1e3
        start = time.perf_counter()
        run_now(recognizer.classify(np.repeat(embedding[None], recognizer.window_size, axis=0), steps))
        timings["window_ms"] = (time.perf_counter() - start) * 1e3
    description = recognizer.describe()
    details = "".join(f", {key} {value}" for key, value in description.details.items())
    log.info(
        "model %s ready on %s (sessions %s%s): %s",
        description.name,
        description.provider,
        "/".join(recognizer.sessions),
        details,
        ", ".join(f"{k}={v:.1f}" for k, v in timings.items()),
    )
    return timings
