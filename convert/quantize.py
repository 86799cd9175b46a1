"""An int8 encoder for CPU serving: ONNX Runtime static quantisation calibrated on real frames.

The variant is only worth serving if it answers like the fp32 encoder, so its top-1 agreement
with fp32 (through the same head, on real clip windows) and its speed ratio are measured here and
written into the conversion report; the server picks it only where the report says it qualifies.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

INT8_FILE = "encoder_int8.onnx"
FP16_FILE = "encoder_fp16.onnx"
MIN_AGREEMENT = 0.98


def _session(path: Path, provider: str = "CPUExecutionProvider", threads: int = 2) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as the server runs it
    return ort.InferenceSession(str(path), options, providers=[provider])


def fp16_encoder(encoder: Path, out: Path) -> None:
    """fp16 weights and activations for CUDA (inputs and outputs stay float32)."""
    import warnings

    import onnx
    from onnxconverter_common import float16

    with warnings.catch_warnings():  # it warns once per tiny weight it rounds
        warnings.simplefilter("ignore")
        converted = float16.convert_float_to_float16(onnx.load(str(encoder)), keep_io_types=True)
    onnx.save(converted, str(out))


def quantize_encoder(encoder: Path, calibration_frames: np.ndarray, out: Path) -> None:
    """Static QDQ quantisation (per-channel int8 weights, uint8 activations) calibrated on real frames."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Frames(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._frames: Iterator[np.ndarray] = (calibration_frames[i : i + 1] for i in range(len(calibration_frames)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            frame = next(self._frames, None)
            return None if frame is None else {"frames": frame}

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "encoder_prepared.onnx"
        quant_pre_process(str(encoder), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(out),
            Frames(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )


def _median_ms(sessions: list[Any], frames: np.ndarray, rounds: int = 25) -> list[float]:
    """Median ms per run of each session, interleaved round by round, so that whatever else the
    machine does (the TensorFlow of the conversion itself) weighs on every session alike."""
    for session in sessions:
        session.run(None, {"frames": frames})
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(rounds):
        for session, series in zip(sessions, times, strict=True):
            start = time.perf_counter()
            session.run(None, {"frames": frames})
            series.append((time.perf_counter() - start) * 1e3)
    return [float(np.median(series)) for series in times]


def measure_variant(
    encoder: Path, variant: Path, head: Path, windows: np.ndarray, provider: str = "CPUExecutionProvider"
) -> dict[str, Any]:
    """Top-1 agreement and embedding cosine of `variant` vs the fp32 encoder, and its speed ratio,
    both measured on `provider`."""
    fp32, other, head_session = _session(encoder, provider), _session(variant, provider), _session(head)
    frames = windows.reshape(-1, *windows.shape[2:])
    a = fp32.run(None, {"frames": frames})[0]
    b = other.run(None, {"frames": frames})[0]
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    pa = head_session.run(None, {"embeddings": a.reshape(len(windows), windows.shape[1], -1)})[0]
    pb = head_session.run(None, {"embeddings": b.reshape(len(windows), windows.shape[1], -1)})[0]
    fp32_ms, variant_ms = _median_ms([fp32, other], frames[:1])
    agreement = float(np.mean(pa.argmax(1) == pb.argmax(1)))
    return {
        "file": variant.name,
        "provider": provider,
        "windows": len(windows),
        "top1_agreement_vs_fp32": round(agreement, 4),
        "embedding_cosine_mean": round(float(cosine.mean()), 4),
        "embedding_cosine_min": round(float(cosine.min()), 4),
        "max_abs_diff_probabilities": round(float(np.abs(pa - pb).max()), 4),
        "encoder_one_frame_ms_fp32": round(fp32_ms, 2),
        "encoder_one_frame_ms_variant": round(variant_ms, 2),
        "speedup_vs_fp32": round(fp32_ms / variant_ms, 2),
        "qualifies": agreement >= MIN_AGREEMENT and variant_ms < fp32_ms,
        "rule": f"ENCODER_VARIANT=auto serves it on {provider} only if top-1 agreement >= {MIN_AGREEMENT} and faster",
    }
