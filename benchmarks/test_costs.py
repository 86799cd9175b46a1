"""Per-frame server cost vs the reference path (whole 10-frame model per prediction), same run.

pytest-benchmark micro-benchmarks (`--benchmark-enable` to time them properly; in the default test
run they execute once as smoke tests) plus a budget guard that measures both paths interleaved, so
machine noise hits both alike, and asserts only their ratio.
"""

from __future__ import annotations

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


def test_decode_preprocess(benchmark, recognizer: ImageRecognizer, jpegs: list[bytes]) -> None:  # type: ignore[no-untyped-def]
    benchmark(lambda: preprocess_frame(decode_image(jpegs[0])))


def test_encoder_one_frame(benchmark, recognizer: ImageRecognizer, window: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    benchmark(recognizer.encode_core, window[:1])


def test_encoder_batch_of_8(benchmark, recognizer: ImageRecognizer, window: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    benchmark(recognizer.encode_core, window[:8])


def test_head(benchmark, recognizer: ImageRecognizer, window: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    embeddings = recognizer.sessions["encoder"].run(window)[None]
    benchmark(recognizer.classify, embeddings)


def test_full_model_on_a_window(benchmark, full_session: ort.InferenceSession, window: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    benchmark(full_session.run, None, {"frames": window[None]})


def _interleaved_medians(paths: dict[str, Callable[[int], object]], rounds: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in paths}
    for i in range(rounds):
        for name, run in paths.items():
            start = time.perf_counter()
            run(i)
            samples[name].append((time.perf_counter() - start) * 1e3)
    return {name: round(statistics.median(values), 3) for name, values in samples.items()}


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
    medians = _interleaved_medians(
        {
            "per_frame_ms": lambda i: per_frame(recognizer, jpegs[i % len(jpegs)], embeddings),
            "reference_full_window_ms": lambda i: full_session.run(None, {"frames": window[None]}),
            "decode_preprocess_ms": lambda i: preprocess_frame(decode_image(jpegs[i % len(jpegs)])),
            "encoder_one_frame_ms": lambda i: recognizer.sessions["encoder"].run(window[i % 10 : i % 10 + 1]),
            "head_ms": lambda i: recognizer.sessions["head"].run(embeddings[None]),
        },
        rounds=25,
    )
    ratio = medians["per_frame_ms"] / medians["reference_full_window_ms"]
    path = write_result(
        "per_frame_cost",
        {
            "what": "median ms over 25 interleaved rounds; per frame = decode+preprocess+encoder(1)+head",
            "machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cpus",
            "provider": recognizer.provider,
            **medians,
            "ratio_per_frame_to_reference": round(ratio, 4),
            "budget": 0.2,
        },
    )
    print(f"\n{path}: {medians} ratio={ratio:.3f}")
    assert ratio <= 0.2, medians
