"""The recogniser interface: what a recogniser package provides, and what the engine gives it.

A recogniser (one package each under service/recognizers/, known only to the registry) declares its
ONNX sessions (`sessions`), and does its per-frame and per-window work in two coroutines that run every
model call through `Steps.run`: the engine batches each session's calls across all clients (one
micro-batcher per session), the way infinity splits `encode_pre` / `encode_core` / `encode_post`.
CPU work that is more than a few microseconds goes through `Steps.cpu`, off the event loop.
Offline tools (training, conversion checks) drive the same coroutines with `direct_steps`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from service.arrays import FloatArray, ImageBGR
from service.onnx_runtime import BatchRun
from service.settings import Settings

T = TypeVar("T")


@dataclass(frozen=True)
class Session:
    """One ONNX session of a recogniser, as the engine batches it."""

    run: BatchRun
    max_batch: int | None = None  # None: ENCODER_MAX_BATCH
    max_wait_ms: float | None = None  # None: ENCODER_MAX_WAIT_MS
    threads: int = 1  # ONNX Runtime intra-op threads of one call (INFERENCE_THREADS=0 sizes the pool by it)


@dataclass(frozen=True)
class Description:
    """What /healthz, /metrics and the warm-up log say about the recogniser being served."""

    name: str
    provider: str
    # Recogniser-specific facts, e.g. {"encoder": "int8"} or the front-end model files.
    details: Mapping[str, str] = field(default_factory=dict)


class Steps(Protocol):
    """What the engine lends a recogniser's coroutines."""

    async def run(self, session: str, item: FloatArray) -> FloatArray:
        """One input (no batch axis) of the named session -> its output row, batched with other clients'."""
        ...

    def begin(self, session: str, item: FloatArray) -> Awaitable[FloatArray]:
        """`run`, started now and awaited later: calls of one frame to several sessions overlap."""
        ...

    async def cpu(self, function: Callable[..., T], *args: Any) -> T:
        """`function(*args)` in the CPU pool."""
        ...


class Recognizer(Protocol):
    """A recogniser backend, as the engine, the server and the benchmarks see it."""

    name: str
    provider: str
    labels: list[str]
    window_size: int
    embedding_dim: int
    sessions: Mapping[str, Session]

    def describe(self) -> Description: ...

    def new_tracker(self) -> Any:
        """Per-stream front-end state (hand tracking), or None for a stateless front end."""
        ...

    async def encode(self, image_bgr: ImageBGR, tracker: Any, steps: Steps) -> FloatArray:
        """One frame -> its embedding (embedding_dim,)."""
        ...

    async def classify(self, window: FloatArray, steps: Steps) -> FloatArray:
        """(window_size, embedding_dim) -> class probabilities (len(labels),)."""
        ...


class RecognizerFactory(Protocol):
    """A recogniser class: checks its files cheaply (before the server starts) and loads them."""

    @staticmethod
    def check(settings: Settings) -> None: ...

    def __call__(self, settings: Settings) -> Recognizer: ...


class DirectSteps:
    """Steps without an engine: each call runs at once in the caller's thread (training, offline checks).
    Coroutines driven with these never suspend, so `run_now` finishes them without an event loop."""

    def __init__(self, sessions: Mapping[str, Session]) -> None:
        self._sessions = sessions
        self.calls: dict[str, int] = dict.fromkeys(sessions, 0)  # per session: calls, and seconds in them
        self.seconds: dict[str, float] = dict.fromkeys(sessions, 0.0)

    async def run(self, session: str, item: FloatArray) -> FloatArray:
        start = time.perf_counter()
        output: FloatArray = self._sessions[session].run(item[None])[0]
        self.seconds[session] += time.perf_counter() - start
        self.calls[session] += 1
        return output

    def begin(self, session: str, item: FloatArray) -> Awaitable[FloatArray]:
        return _finished(run_now(self.run(session, item)))

    async def cpu(self, function: Callable[..., T], *args: Any) -> T:
        return function(*args)


async def _finished(value: T) -> T:
    return value


def run_now(coroutine: Coroutine[Any, Any, T] | Awaitable[T]) -> T:
    """The result of a coroutine that never suspends (one driven by DirectSteps), without an event loop."""
    generator = coroutine.__await__()
    try:
        next(generator)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    raise RuntimeError("run_now: the coroutine suspended; drive it with an event loop instead")
