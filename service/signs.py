"""Opt-in protocol extensions: top-k labels and debounced `sign` events.

Both are pure functions of the predictions a client has been sent, so they are tested on recorded
prediction sequences without a server (tests/test_signs.py).

The debouncer turns the per-frame label stream into sign occurrences with hysteresis:

* a gloss *enters* once it has been the label of `enter_frames` consecutive predictions, each with a
  score of at least `min_score` (flicker shorter than that never starts a sign);
* it *exits* once `exit_frames` consecutive predictions have been something else (another gloss or
  `none`); a shorter interruption does not split the occurrence;
* exactly one `SignEvent` is emitted per occurrence, when it exits (or when the stream is flushed),
  with the arrival times of its first and last predictions and the mean score of its predictions.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.preprocess import FloatArray

NONE = "none"


def top_k(probabilities: FloatArray | None, labels: Sequence[str], k: int) -> list[dict[str, object]]:
    """The `k` most probable labels, best first (empty until the window is full)."""
    if probabilities is None or k <= 0:
        return []
    k = min(k, len(labels))
    order = np.argsort(-np.asarray(probabilities), kind="stable")[:k]
    return [{"label": labels[int(i)], "score": float(probabilities[int(i)])} for i in order]


@dataclass(frozen=True)
class SignEvent:
    label: str
    score: float
    start_ms: float
    end_ms: float
    transcript: tuple[str, ...]

    def as_event(self) -> dict[str, object]:
        return {
            "label": self.label,
            "score": round(self.score, 4),
            "start_ms": round(self.start_ms, 1),
            "end_ms": round(self.end_ms, 1),
            "transcript": list(self.transcript),
        }


@dataclass
class _Run:
    """Consecutive predictions of one gloss: the candidate, or the active occurrence."""

    label: str
    first_ms: float
    last_ms: float
    count: int
    score_sum: float

    def extend(self, score: float, t_ms: float) -> None:
        self.count += 1
        self.score_sum += score
        self.last_ms = t_ms


class SignDebouncer:
    def __init__(self, enter_frames: int, exit_frames: int, min_score: float, transcript_length: int) -> None:
        if enter_frames < 1 or exit_frames < 1 or transcript_length < 1:
            raise ValueError("enter_frames, exit_frames and transcript_length must be at least 1")
        self.enter_frames = enter_frames
        self.exit_frames = exit_frames
        self.min_score = min_score
        self.transcript: deque[str] = deque(maxlen=transcript_length)
        self._active: _Run | None = None  # the occurrence being signed
        self._others = 0  # consecutive predictions since the active gloss was last seen
        self._candidate: _Run | None = None  # a gloss that may enter

    @property
    def active(self) -> str | None:
        return self._active.label if self._active is not None else None

    def update(self, label: str, score: float, t_ms: float) -> SignEvent | None:
        """Feed one prediction (label, score, arrival time in ms); returns a `SignEvent` when an
        occurrence has just ended."""
        if self._active is not None and label == self._active.label:
            self._active.extend(score, t_ms)
            self._others = 0
            self._candidate = None
            return None
        self._track_candidate(label, score, t_ms)
        emitted: SignEvent | None = None
        if self._active is not None:
            self._others += 1
            if self._others >= self.exit_frames:
                emitted = self._finish()
        if self._active is None and self._candidate is not None and self._candidate.count >= self.enter_frames:
            self._active, self._candidate, self._others = self._candidate, None, 0
        return emitted

    def flush(self) -> SignEvent | None:
        """End of stream: the occurrence in progress (if any) ends now."""
        self._candidate = None
        return self._finish() if self._active is not None else None

    def _track_candidate(self, label: str, score: float, t_ms: float) -> None:
        if label == NONE or score < self.min_score:
            self._candidate = None
        elif self._candidate is not None and self._candidate.label == label:
            self._candidate.extend(score, t_ms)
        else:
            self._candidate = _Run(label, t_ms, t_ms, 1, score)

    def _finish(self) -> SignEvent:
        run = self._active
        assert run is not None
        self._active, self._others = None, 0
        self.transcript.append(run.label)
        return SignEvent(run.label, run.score_sum / run.count, run.first_ms, run.last_ms, tuple(self.transcript))
