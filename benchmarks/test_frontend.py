"""The default model's front end (MODEL=landmarks), measured on real clip frames in one run.

- Each per-frame ONNX session (palm, hand, pose) batched as the engine batches it across clients: a
  batch of N gives exactly the N single-item outputs, and what one call costs per item for N = 1, 2,
  4, 8 (the curve each session's `max_batch` is chosen from; on these CPUs batching buys little).
- The whole front end per sampled frame, as serving runs it (the tracker on every 3rd frame of a clip,
  roughly the 8/s schedule of a 25 fps stream), per session: calls per frame and ms per call.
Results: artifacts/benchmarks/frontend.json.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from benchmarks.conftest import CLIPS, write_result
from service.arrays import FloatArray
from service.clips import iter_clip_frames
from service.engine import load_recognizer
from service.recognizer import DirectSteps, Recognizer
from service.recognizers.landmarks import LandmarkRecognizer
from service.recognizers.landmarks.tracker import HAND, PALM, POSE, hand_input, palm_input, pose_input
from service.settings import load_settings

BATCHES = (1, 2, 4, 8)
FRAME_CLIPS = ("hello/thkazi.mp4", "drink/handspeak.mp4", "school/asl_lex.mp4")
# Per-item cost of a batch of 8 against one item (1 intra-op thread, 2 cores): 0.98-1.23 on the Intel
# boxes of earlier sessions, pose 1.59 on an AMD EPYC box (a clean-clone CI run that failed a 1.5 bound
# on a correct server). How much batching costs depends on the CPU; what must hold on every CPU is the
# engine's choice that follows from it (below), and that a batch is never pathologically dearer.
MAX_BATCHED_PER_ITEM = 2.0


def _fastest_ms_per_item(run: Callable[[FloatArray], FloatArray], items: FloatArray, rounds: int) -> dict[int, float]:
    """Interleaved rounds (every batch size once per round), the fastest of each: on a shared box the
    other jobs slow some rounds down, not the work itself."""
    times: dict[int, list[float]] = {batch: [] for batch in BATCHES}
    for _ in range(rounds):
        for batch in BATCHES:
            start = time.perf_counter()
            run(items[:batch])
            times[batch].append((time.perf_counter() - start) * 1e3 / batch)
    return {batch: min(values) for batch, values in times.items()}


@pytest.fixture(scope="module")
def landmarks() -> Recognizer:
    recognizer = load_recognizer(load_settings({}, env_file=None))  # the defaults users get
    assert isinstance(recognizer, LandmarkRecognizer)
    return recognizer


def _clip_frames() -> list[np.ndarray]:
    frames: list[np.ndarray] = []
    for name in FRAME_CLIPS:
        path = CLIPS / name
        if not path.is_file():
            path = sorted((CLIPS / name.split("/")[0]).glob("*.mp4"))[0]
        frames += list(iter_clip_frames(Path(path)))[::3]
    return frames


def _real_inputs(recognizer: Recognizer, frames: list[np.ndarray]) -> dict[str, FloatArray]:
    """Inputs of each session as serving makes them: letterboxed frames, pose regions, and the hand
    crops of the hands the tracker found."""
    steps = DirectSteps(recognizer.sessions)
    tracker = recognizer.new_tracker()
    crops = [hand_input(f, hand.roi)[0] for f in frames for hand in tracker.process_now(f, steps).hands]
    assert len(crops) >= 8, "the tracker found fewer than 8 hands on these clips"
    return {
        PALM: np.stack([palm_input(f)[0] for f in frames[:8]]),
        HAND: np.stack(crops[:8]),
        POSE: np.stack([pose_input(f, "upper_body")[0] for f in frames[:8]]),
    }


def test_front_end_sessions_batch_exactly_and_cost_per_item(landmarks: Recognizer) -> None:
    inputs = _real_inputs(landmarks, _clip_frames())
    curves: dict[str, list[dict[str, float]]] = {}
    for name, items in inputs.items():
        run = landmarks.sessions[name].run
        singles = np.concatenate([run(items[i : i + 1]) for i in range(len(items))])
        np.testing.assert_allclose(run(items), singles, atol=1e-4)  # a batch is its items, not an approximation
        for batch in BATCHES:  # warm-up
            run(items[:batch])
        per_item = _fastest_ms_per_item(run, items, rounds=15)
        curves[name] = [{"batch": b, "ms_per_item": round(ms, 2)} for b, ms in per_item.items()]
        ratio = per_item[8] / per_item[1]
        print(f"\n{name}: ms per item {curves[name]} (batch 8 / batch 1 = {ratio:.2f})")
        assert ratio < MAX_BATCHED_PER_ITEM, (name, curves[name])
        if ratio > 1.0:  # batches cost more per item here: the batcher takes what waits, never waits for more
            assert landmarks.sessions[name].max_wait_ms == 0.0, (name, curves[name])
    front = landmarks.describe().details["front_end"]
    write_result("frontend_batch_curves", {"front_end": front, "intra_op_threads": 1, "curves": curves})


def test_front_end_cost_per_sampled_frame(landmarks: Recognizer) -> None:
    frames = _clip_frames()
    steps = DirectSteps(landmarks.sessions)
    tracker = landmarks.new_tracker()
    tracker.process_now(frames[0], steps)  # warm-up
    steps = DirectSteps(landmarks.sessions)
    tracker = landmarks.new_tracker()
    start = time.perf_counter()
    for frame in frames:
        tracker.process_now(frame, steps)
    total_ms = (time.perf_counter() - start) * 1e3
    sessions = {
        name: {
            "calls_per_frame": round(steps.calls[name] / len(frames), 3),
            "ms_per_call": round(steps.seconds[name] * 1e3 / max(1, steps.calls[name]), 2),
        }
        for name in (PALM, HAND, POSE)
    }
    model_ms = sum(steps.seconds[name] for name in (PALM, HAND, POSE)) * 1e3
    result = {
        "front_end": landmarks.describe().details["front_end"],
        "frames": len(frames),
        "ms_per_sampled_frame": round(total_ms / len(frames), 2),
        "model_share": round(model_ms / total_ms, 3),
        "sessions": sessions,
    }
    print(f"\n{result}")
    write_result("frontend", result)
    # The models are the cost; the tracker's own numpy/OpenCV work around them must stay small.
    assert model_ms / total_ms > 0.8, result
