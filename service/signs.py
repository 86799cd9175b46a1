"""Opt-in protocol extensions: top-k labels and debounced `sign` events.

Both are pure functions of the predictions a client has been sent, so they are tested on recorded
prediction sequences without a server (tests/test_signs.py).

The debouncer turns the per-frame label stream into sign occurrences with hysteresis:

* a gloss is *established* once it has been the label of `enter_frames` consecutive predictions, each
  with a score of at least `min_score` (flicker shorter than that never starts a sign);
* exactly one `SignEvent` is emitted per occurrence, at that moment (a sign that is held, or still
  showing when the stream ends, is counted at once), with the arrival times of its first prediction
  and of the one that established it, and the mean score of those predictions;
* it *exits* once `exit_frames` consecutive predictions have been something else (another gloss or
  `none`); a shorter interruption does not split the occurrence, unless the interruption is itself
  established (possible when `enter_frames` < `exit_frames`): then that gloss is the new occurrence.
  After an exit, the same gloss signed again is a new occurrence.

Nothing is ever held back, so the end of a stream (a disconnect: the protocol has no `stop`) leaves
no sign to flush.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.arrays import FloatArray

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
    """Consecutive confident predictions of one gloss that may become a sign."""

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
        self._active: str | None = None  # the gloss of the occurrence being signed (already emitted)
        self._others = 0  # consecutive predictions since the active gloss was last seen
        self._candidate: _Run | None = None  # a gloss that may be established

    @property
    def active(self) -> str | None:
        return self._active

    def update(self, label: str, score: float, t_ms: float) -> SignEvent | None:
        """Feed one prediction (label, score, arrival time in ms); returns a `SignEvent` when it
        establishes a new occurrence (at most once per occurrence)."""
        if self._active is not None and label == self._active:
            self._others = 0
            self._candidate = None
            return None
        self._track_candidate(label, score, t_ms)
        if self._active is not None:
            self._others += 1
            if self._others >= self.exit_frames:
                self._active, self._others = None, 0
        run = self._candidate
        if run is None or run.count < self.enter_frames:
            return None
        self._active, self._candidate, self._others = run.label, None, 0
        self.transcript.append(run.label)
        return SignEvent(run.label, run.score_sum / run.count, run.first_ms, run.last_ms, tuple(self.transcript))

    def _track_candidate(self, label: str, score: float, t_ms: float) -> None:
        if label == NONE or score < self.min_score:
            self._candidate = None
        elif self._candidate is not None and self._candidate.label == label:
            self._candidate.extend(score, t_ms)
        else:
            self._candidate = _Run(label, t_ms, t_ms, 1, score)
