"""Encoder batch size vs cost per frame and latency per batch (the curve ENCODER_MAX_BATCH is chosen
from), and the int8 encoder vs fp32, measured interleaved in the same run."""

from __future__ import annotations

import statistics
import time

import numpy as np
import pytest

from benchmarks.conftest import CLIPS, write_result
from service.onnx_runtime import create_session
from service.recognizers.wlasl20c import ImageRecognizer, check_model_files
from service.recognizers.wlasl20c.preprocess import clip_window
from service.settings import Settings

BATCHES = (1, 2, 4, 8, 16)


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    clips = sorted(CLIPS.glob("*/*.mp4"))[:2]
    return np.concatenate([clip_window(c) for c in clips])


def _median_ms(run, rounds: int) -> float:  # type: ignore[no-untyped-def]
    run()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def test_batch_size_curve(settings: Settings, frames: np.ndarray) -> None:
    session = create_session(
        check_model_files(settings.model_path).encoder, settings.execution_provider, settings.intra_op_threads
    )
    curve = []
    for batch in BATCHES:
        ms = _median_ms(lambda b=batch: session.run(None, {"frames": frames[:b]}), rounds=max(8, 64 // batch))
        curve.append({"batch": batch, "batch_ms": round(ms, 2), "ms_per_frame": round(ms / batch, 2)})
    best = min(curve, key=lambda point: point["ms_per_frame"])
    path = write_result(
        "encoder_batch_curve",
        {
            "what": "fp32 encoder, median ms per call; threads from settings",
            "intra_op_threads": settings.intra_op_threads,
            "curve": curve,
            "cheapest_batch": best["batch"],
        },
    )
    print(f"\n{path}: {curve}")
    # Whether batching pays depends on the CPU. The Intel boxes of earlier sessions (5 quiet runs): 5.0
    # ms/frame alone, 4.7-4.8 in pairs, 5.0-5.7 in eights; an AMD EPYC box: 8.56 alone, 10.3 in pairs,
    # 12.2 in eights (1.43x), which failed a "some batch beats single frames" guard in a clean-clone CI
    # run on a correct server. What holds on any CPU: a batch is exactly its frames, and never
    # pathologically dearer per frame.
    batched = session.run(None, {"frames": frames[:8]})[0]
    singles = np.concatenate([session.run(None, {"frames": frames[i : i + 1]})[0] for i in range(8)])
    np.testing.assert_allclose(batched, singles, atol=1e-4)
    single = curve[0]["ms_per_frame"]
    assert max(point["ms_per_frame"] for point in curve[1:]) < 2.0 * single, curve


def test_the_default_encoder_variant_follows_the_rule_measured_now(settings: Settings) -> None:
    """The server serves int8 only where the conversion report says it qualifies (top-1 agreement with
    fp32 >= 0.98 through the same head on real windows, and faster). Here that is recomputed on the
    shipped files: the variant the server picks must be what the rule gives on what is measured now,
    and the report's agreement must be reproducible (not only its `qualifies` flag re-read)."""
    from convert.quantize import MIN_AGREEMENT, measure_variant

    files = check_model_files(settings.model_path)
    recognizer = ImageRecognizer(settings)
    report = files.conversion["variants"]["int8"]
    # The first two clips of every gloss: 40 of the 48 windows the converter checked (one clip per gloss,
    # round-robin, in sorted order).
    clips = [path for gloss in sorted(CLIPS.iterdir()) for path in sorted(gloss.glob("*.mp4"))[:2]]
    windows = np.stack([clip_window(c) for c in clips]).astype(np.float32)
    measured = measure_variant(files.encoder, files.encoder_variant("int8"), files.head, windows)
    fp32 = create_session(files.encoder, settings.execution_provider, settings.intra_op_threads)
    int8 = create_session(files.encoder_variant("int8"), settings.execution_provider, settings.intra_op_threads)
    one = windows[0, :1]
    times: dict[str, list[float]] = {"fp32": [], "int8": []}
    for _ in range(3):
        fp32.run(None, {"frames": one})
        int8.run(None, {"frames": one})
    for _ in range(25):
        for name, session in (("fp32", fp32), ("int8", int8)):
            start = time.perf_counter()
            session.run(None, {"frames": one})
            times[name].append((time.perf_counter() - start) * 1e3)
    medians = {name: round(statistics.median(values), 3) for name, values in times.items()}
    fastest = {name: round(min(values), 3) for name, values in times.items()}
    agreement = measured["top1_agreement_vs_fp32"]
    write_result(
        "int8_vs_fp32",
        {"encoder_one_frame_ms": medians, "encoder_one_frame_fastest_ms": fastest, "windows": len(windows),
         "top1_agreement_vs_fp32": agreement, "default_variant": recognizer.encoder_variant,
         "conversion_report": report},
    )  # fmt: skip
    print(f"\nint8 vs fp32: {medians} (fastest {fastest}), agreement {agreement}, default {recognizer.encoder_variant}")
    # Measured here (shipped model): agreement 0.8684 on these 40 windows (report: 0.8542 on 48; one window
    # is 0.025); int8 1.6-1.8x faster than fp32 in the same run. So fp32 is the default for want of agreement.
    assert abs(agreement - report["top1_agreement_vs_fp32"]) <= 0.1, (agreement, report)
    qualifies = agreement >= MIN_AGREEMENT and fastest["int8"] < fastest["fp32"]  # same-run ratio
    assert recognizer.encoder_variant == ("int8" if qualifies else "fp32"), (agreement, fastest)
