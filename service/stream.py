"""Per-client stream state: a ring buffer of per-frame embeddings and the window the head sees.

The model was trained on 10 frames spread evenly over a whole sign (1.5-3 s), not on 10 consecutive
frames, so the window is 10 embeddings spread evenly over the last `window_seconds`; it always
ends with the newest embedding, so every prediction reflects the frame it answers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from service.preprocess import FloatArray

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
        self.last = NOT_READY  # the prediction of the newest window

    def due(self, timestamp: float) -> bool:
        """Should the frame arriving at `timestamp` be encoded?"""
        if self._count == 0 or self.embed_interval == 0.0:
            return True
        newest = self._times[(self._count - 1) % len(self._times)]
        return bool(timestamp - newest >= self.embed_interval - SAMPLING_SLACK_S)

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
        """(window_size, dim) embeddings ending with the newest one, or None until enough frames."""
        capacity = len(self._times)
        held = min(self._count, capacity)
        if held < self.window_size:
            return None
        # Slots of the held embeddings, oldest first.
        order = (np.arange(self._count - held, self._count)) % capacity
        times = self._times[order]
        in_span = int(np.count_nonzero(times >= times[-1] - self.window_seconds))
        span = max(in_span, self.window_size)
        picks = np.rint(np.linspace(held - span, held - 1, self.window_size)).astype(np.int64)
        return self._embeddings[order[picks]]
