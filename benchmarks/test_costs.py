"""Per-frame server cost vs the reference path (whole 10-frame model per prediction), same run.

Every part of a frame's cost (decode+preprocess, encoder on one frame and on a batch of 8, head) and
the reference path are measured interleaved, so machine noise hits all alike, and only ratios of
them are asserted, never absolute times. (Five pytest-benchmark micro-benchmarks of the same calls
used to run here once each and assert nothing; their measurements are part of this guard now.)
"""

from __future__ import annotations

import math
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from benchmarks.conftest import CLIPS, write_result
from service.frames import decode_image
from service.loadgen import browser_jpegs
from service.onnx_runtime import create_session
from service.recognizers.wlasl20c import ImageRecognizer
from service.recognizers.wlasl20c.preprocess import preprocess_frame
from service.settings import Settings


@pytest.fixture(scope="module")
def jpegs() -> list[bytes]:
    return browser_jpegs(CLIPS / "hello", limit=40)


@pytest.fixture(scope="module")
def window(recognizer: ImageRecognizer, jpegs: list[bytes]) -> np.ndarray:
    return np.stack([preprocess_frame(decode_image(j)) for j in jpegs[:10]])


@pytest.fixture(scope="module")
def full_session(settings: Settings) -> ort.InferenceSession:
    return create_session(
        Path(settings.model_dir) / "full.onnx", settings.execution_provider, settings.intra_op_threads
    )


def per_frame(recognizer: ImageRecognizer, jpeg: bytes, embeddings: np.ndarray) -> np.ndarray:
    """What the server does for one frame: decode, preprocess, encoder on one frame, head on the window."""
    inputs = preprocess_frame(decode_image(jpeg))[None]
    embedding = recognizer.sessions["encoder"].run(inputs)
    embeddings = np.concatenate([embeddings[1:], embedding])
    return recognizer.sessions["head"].run(embeddings[None])


def _interleaved(paths: dict[str, Callable[[int], object]], rounds: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in paths}
    for i in range(rounds):
        for name, run in paths.items():
            start = time.perf_counter()
            run(i)
            samples[name].append((time.perf_counter() - start) * 1e3)
    return samples


# Same-run ratios of the fastest of 25 interleaved rounds. Fastest, not median: on the shared 2-core box
# (load average 5-7 from other jobs) the median head call went from 0.8 ms to 19-37 ms in 4 of 11 runs
# (and the per-frame/reference median ratio to 0.22-0.55, failing the budget with unchanged code), while
# its fastest rounds stayed 0.75-0.86 ms: the fastest is the cost of the code, the rest is waiting for a
# core. A frame's cost is the sum of its parts' fastest rounds (decode+preprocess, encoder on one frame,
# head): a round of all three in a row is clean less often (fastest per_frame 14.7 ms against 6.0 once).
# Measured in 12 runs (fastest rounds): reference / encoder on one frame 9.8-19.1, encoder per frame in
# a batch of 8 / alone 0.90-1.51, head / encoder on one frame 0.14-0.22, decode+preprocess / frame
# 0.12-0.16; frame / reference 0.09-0.13 in the 4 runs as summed here (0.11-0.23 from whole rounds).
# Bounds: the 0.2 budget; about 2x the measured otherwise (1.6x for batches: a 35-60 ms batch call is
# the one most often slowed by other jobs).
BOUNDS: dict[str, tuple[float, float]] = {  # (at least, at most)
    "per_frame_to_reference": (0.0, 0.2),  # the budget: the server's frame at most a fifth of the reference
    "reference_to_encoder_one_frame": (5.0, math.inf),  # the reference runs the encoder on all 10 frames
    "encoder_batch_of_8_per_frame_to_one_frame": (0.0, 2.5),  # batching never makes a frame dearer
    "head_to_encoder_one_frame": (0.0, 0.4),  # the head is small beside one encoder call
    "decode_preprocess_to_per_frame": (0.0, 0.35),  # decoding is a small part of a frame's cost
}


def test_per_frame_cost_is_at_most_a_fifth_of_the_reference_path(
    recognizer: ImageRecognizer, full_session: ort.InferenceSession, jpegs: list[bytes], window: np.ndarray
) -> None:
    embeddings = recognizer.sessions["encoder"].run(window)
    # Identical predictions: the split path on a window equals the whole model on it.
    np.testing.assert_allclose(
        recognizer.sessions["head"].run(embeddings[None]),
        full_session.run(None, {"frames": window[None]})[0],
        atol=1e-5,
    )
    for _ in range(3):  # warm-up
        per_frame(recognizer, jpegs[0], embeddings)
        full_session.run(None, {"frames": window[None]})
    samples = _interleaved(
        {
            "per_frame_ms": lambda i: per_frame(recognizer, jpegs[i % len(jpegs)], embeddings),
            "reference_full_window_ms": lambda i: full_session.run(None, {"frames": window[None]}),
            "decode_preprocess_ms": lambda i: preprocess_frame(decode_image(jpegs[i % len(jpegs)])),
            "encoder_one_frame_ms": lambda i: recognizer.sessions["encoder"].run(window[i % 10 : i % 10 + 1]),
            "encoder_batch_of_8_ms": lambda i: recognizer.sessions["encoder"].run(window[:8]),
            "head_ms": lambda i: recognizer.sessions["head"].run(embeddings[None]),
        },
        rounds=25,
    )
    medians = {name: round(statistics.median(values), 3) for name, values in samples.items()}
    fastest = {name: min(values) for name, values in samples.items()}
    frame = fastest["decode_preprocess_ms"] + fastest["encoder_one_frame_ms"] + fastest["head_ms"]
    one = fastest["encoder_one_frame_ms"]
    ratios = {
        "per_frame_to_reference": frame / fastest["reference_full_window_ms"],
        "reference_to_encoder_one_frame": fastest["reference_full_window_ms"] / one,
        "encoder_batch_of_8_per_frame_to_one_frame": fastest["encoder_batch_of_8_ms"] / 8 / one,
        "head_to_encoder_one_frame": fastest["head_ms"] / one,
        "decode_preprocess_to_per_frame": fastest["decode_preprocess_ms"] / frame,
    }
    ratios = {name: round(value, 4) for name, value in ratios.items()}
    path = write_result(
        "per_frame_cost",
        {
            "what": "ms over 25 interleaved rounds (median, and fastest); per frame = decode+preprocess+encoder(1)"
            "+head; ratios of the fastest rounds (a frame: the sum of its parts' fastest)",
            "machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cpus",
            "provider": recognizer.provider,
            **medians,
            "fastest_ms": {name: round(value, 3) for name, value in fastest.items()},
            "ratios": ratios,
            "bounds": {name: [low, high if high < math.inf else None] for name, (low, high) in BOUNDS.items()},
            "budget": 0.2,
        },
    )
    print(f"\n{path}: medians {medians} ratios {ratios}")
    outside = {
        name: (value, BOUNDS[name]) for name, value in ratios.items() if not BOUNDS[name][0] <= value <= BOUNDS[name][1]
    }
    assert not outside, (outside, fastest)
