"""Stream a video file through the server's own pipeline (no network): `cli predict` and `cli evaluate`.

Frames are timestamped by their position in the clip (frame / fps), as if a client streamed the
clip in real time, so the stream state picks the same windows as it would for a live client.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from service.clips import clip_fps, iter_clip_frames
from service.pipeline import Pipeline
from service.recognizer import Recognizer
from service.settings import Settings


@dataclass(frozen=True)
class Step:
    frame: int
    time_s: float
    label: str
    score: float


@dataclass
class ClipResult:
    clip: str
    fps: float
    timeline: list[Step] = field(default_factory=list)
    label: str = "none"
    score: float = 0.0
    # Class probabilities at the clip's most confident step (for top-k), in label order.
    probabilities: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def clip_label(timeline: list[Step]) -> tuple[str, float]:
    """The clip-level rule: the most confident non-`none` prediction over the clip, else `none`."""
    confident = [s for s in timeline if s.label != "none"]
    if not confident:
        return "none", max((s.score for s in timeline), default=0.0)
    best = max(confident, key=lambda s: s.score)
    return best.label, best.score


async def stream_clip(recognizer: Recognizer, settings: Settings, path: Path) -> ClipResult:
    pipeline = Pipeline(recognizer, settings, max_streams=1)
    pipeline.start()
    try:
        fps = clip_fps(path)
        stream = pipeline.new_stream()
        result = ClipResult(clip=str(path), fps=fps)
        best_score = -1.0
        for index, frame in enumerate(iter_clip_frames(path)):
            t = index / fps
            prediction = await pipeline.predict(frame, stream, t)
            result.timeline.append(Step(index, round(t, 3), prediction.label, round(prediction.score, 4)))
            if prediction.probabilities is not None and prediction.score > best_score:
                best_score = prediction.score
                result.probabilities = [round(float(p), 5) for p in prediction.probabilities]
    finally:
        await pipeline.stop()
    result.label, result.score = clip_label(result.timeline)
    return result
