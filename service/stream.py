"""Per-client stream state: a ring buffer of per-frame embeddings and the window the head sees.

The model was trained on 10 frames spread evenly over a whole sign (1.5-3 s), not on 10 consecutive
frames, so the window is 10 embeddings spread evenly over the last `window_seconds`; it always
ends with the newest embedding, so every prediction reflects the frame it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from service.arrays import FloatArray

# Ring capacity is sized for this frame rate; faster clients simply cover a shorter span.
MAX_FPS = 30


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float
    # All class probabilities (None until the window is full); kept for top-k and evaluation.
    probabilities: FloatArray | None = field(default=None, compare=False, repr=False)

    def as_event(self) -> dict[str, object]:
        return {"label": self.label, "score": self.score}


NOT_READY = Prediction("none", 0.0)


def decide(probabilities: FloatArray, labels: list[str], threshold: float) -> Prediction:
    """The reference rule: the best class if its probability is above the threshold, else none."""
    best = int(np.argmax(probabilities))
    score = float(probabilities[best])
    return Prediction(labels[best] if score > threshold else "none", score, probabilities)


# A frame is encoded when at least (interval - this) has passed since the last encoded one, so that
# jittery 25 fps arrivals still give the requested rate rather than one frame period less.
SAMPLING_SLACK_S = 0.02


class StreamState:
    """Embeddings of one client's recent frames, with their timestamps (seconds).

    `embeddings_per_second` > 0 encodes only that many frames per second (the window needs ~5/s);
    the frames in between are answered with the newest window's prediction. 0 encodes every frame.
    """

    def __init__(self, window_size: int, dim: int, window_seconds: float, embeddings_per_second: float = 0.0) -> None:
        self.window_size = window_size
        self.window_seconds = window_seconds
        self.embed_interval = 1.0 / embeddings_per_second if embeddings_per_second > 0 else 0.0
        capacity = max(window_size, math.ceil(window_seconds * MAX_FPS) + 1)
        self._embeddings = np.zeros((capacity, dim), dtype=np.float32)
        self._times = np.zeros(capacity, dtype=np.float64)
        self._count = 0  # total embeddings ever added
        self._scheduled = 0  # frames ever chosen for encoding (added, or still being encoded)
        self._scheduled_at = -math.inf  # arrival time of the newest of them
        self.last = NOT_READY  # the prediction of the newest window
        self.tracker: Any = None  # the recogniser's per-stream front-end state (hand tracking)
        # Set (and replaced) each time a taken frame is settled: replies waiting for freshness wake.
        self._settled = asyncio.Event()

    def take(self, timestamp: float) -> bool:
        """Should the frame arriving at `timestamp` be encoded? If so it is counted as scheduled at
        once, so frames arriving while it is still being encoded are not scheduled too."""
        if self.embed_interval == 0.0:
            return self._schedule(timestamp)  # every frame, queued in order
        if self.in_flight:
            return False  # one frame in flight per client: under load, fewer embeddings, never a backlog
        due = (
            self._scheduled < self.window_size  # every frame until the first window: an answer after 0.4 s
            or timestamp - self._scheduled_at >= self.embed_interval - SAMPLING_SLACK_S
        )
        return self._schedule(timestamp) if due else False

    def _schedule(self, timestamp: float) -> bool:
        self._scheduled += 1
        self._scheduled_at = timestamp
        return True

    def release(self) -> None:
        """A scheduled frame could not be used (bad image): the next frame may take its place."""
        self._scheduled = self._count
        newest = self.newest_timestamp
        self._scheduled_at = newest if newest is not None else -math.inf
        self._settle()

    def answered(self, prediction: Prediction) -> None:
        """A taken frame has been added and its window classified: `last` is the reply to frames between."""
        self.last = prediction
        self._settle()

    def _settle(self) -> None:
        self._settled.set()
        self._settled = asyncio.Event()

    async def until_fresh(self, arrived: float, limit: float) -> None:
        """Freshness: the newest embedding behind a reply is at most `limit` seconds older than the frame
        it answers. When the newest one is older and a newer frame is being encoded (it takes longest
        under load), wait for that frame to be settled, at most `limit`."""
        newest = self.newest_timestamp
        if newest is None or arrived - newest <= limit or not self.in_flight:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._settled.wait(), limit)

    @property
    def in_flight(self) -> bool:
        """A scheduled frame is still being encoded."""
        return self._scheduled > self._count

    @property
    def newest_timestamp(self) -> float | None:
        return float(self._times[(self._count - 1) % len(self._times)]) if self._count else None

    @property
    def nbytes(self) -> int:
        return self._embeddings.nbytes + self._times.nbytes

    def add(self, embedding: FloatArray, timestamp: float) -> None:
        slot = self._count % len(self._times)
        self._embeddings[slot] = embedding
        self._times[slot] = timestamp
        self._count += 1

    def window(self) -> FloatArray | None:
        """(window_size, dim) embeddings ending with the newest one, or None until enough frames.

        The picks are evenly spaced in *time* over the last `window_seconds` (or over the whole
        history while it is shorter), each the embedding nearest its target time, so the window
        means the same whether embeddings came densely (start of a stream) or sampled.
        `window_seconds == 0` takes the last `window_size` embeddings, like the reference server.
        """
        capacity = len(self._times)
        held = min(self._count, capacity)
        if held < self.window_size:
            return None
        order = np.arange(self._count - held, self._count) % capacity  # slots, oldest first
        if self.window_seconds == 0.0:
            return self._embeddings[order[-self.window_size :]]
        return self._embeddings[order[pick_window(self._times[order], self.window_size, self.window_seconds)]]


def pick_window(times: npt.NDArray[np.float64], window_size: int, window_seconds: float) -> npt.NDArray[np.int64]:
    """Which of the embeddings at `times` (ascending, at least `window_size`) make the window.

    `window_size` picks evenly spaced in time over the last `window_seconds` (or the whole history
    while it is shorter), each the one nearest its target time (ties to the earlier), so the window
    always ends with the newest. Serving (StreamState.window) and training both pick with this.
    """
    held = len(times)
    start = max(float(times[0]), float(times[-1]) - window_seconds)
    targets = np.linspace(start, times[-1], window_size)
    if held == 1:
        return np.zeros(window_size, dtype=np.int64)
    after = np.clip(np.searchsorted(times, targets), 1, held - 1)
    nearer_before = (targets - times[after - 1]) <= (times[after] - targets)
    return np.asarray(np.where(nearer_before, after - 1, after), dtype=np.int64)
