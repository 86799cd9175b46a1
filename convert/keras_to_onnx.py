"""`cli convert`: the Keras h5 -> encoder.onnx, head.onnx, full.onnx, labels.json and a report.

Conversion runs once per model. The report carries the h5's SHA-256 so the server can refuse ONNX
files that were converted from another h5, and the measured ONNX-vs-Keras agreement on real clips.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from convert.architecture import LABELS, build_encoder_from, build_head_from, load_h5
from service.clips import CLIPS_DIR
from service.onnx_runtime import sha256_of
from service.recognizers.wlasl20c import ENCODER_FILE, FULL_FILE, HEAD_FILE, LABELS_FILE, REPORT_FILE
from service.recognizers.wlasl20c.preprocess import clip_window

OPSET = 17
DEFAULT_CLIPS = CLIPS_DIR

Progress = Callable[[str], None]


def real_windows(clips_dir: Path, max_clips: int = 12, skip: int = 0) -> tuple[np.ndarray, list[str]]:
    """Training-style windows of real clips, one clip per gloss first so the check covers many.
    `skip` leaves out the first clips of that order (calibration data apart from checking data)."""
    clips = sorted(clips_dir.glob("*/*.mp4"))
    if not clips:
        raise FileNotFoundError(f"no clips (<gloss>/*.mp4) under {clips_dir}: pass --clips DIR")
    by_gloss: dict[str, list[Path]] = {}
    for clip in clips:
        by_gloss.setdefault(clip.parent.name, []).append(clip)
    chosen: list[Path] = []
    while len(chosen) < skip + max_clips and any(by_gloss.values()):
        for paths in by_gloss.values():
            if paths and len(chosen) < skip + max_clips:
                chosen.append(paths.pop(0))
    chosen = chosen[skip:]
    windows = [clip_window(path) for path in chosen]
    return np.stack(windows).astype(np.float32), [str(p.relative_to(clips_dir)) for p in chosen]


def _export(model: Any, spec_shape: tuple[int | None, ...], input_name: str, path: Path) -> None:
    import tensorflow as tf
    import tf2onnx

    signature = [tf.TensorSpec(spec_shape, tf.float32, name=input_name)]
    tf2onnx.convert.from_keras(model, input_signature=signature, opset=OPSET, output_path=str(path))


def _run_onnx(path: Path, inputs: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {session.get_inputs()[0].name: inputs})[0])


def measure_parity(files: dict[str, Path], keras_full: Any, windows: np.ndarray) -> dict[str, Any]:
    """ONNX vs Keras on the same real windows, and encoder+head vs full.onnx."""
    reference = keras_full.predict(windows, batch_size=2, verbose=0)
    full = _run_onnx(files["full"], windows)
    flat = windows.reshape(-1, *windows.shape[2:])
    embeddings = _run_onnx(files["encoder"], flat).reshape(len(windows), windows.shape[1], -1)
    split = _run_onnx(files["head"], embeddings)
    return {
        "windows": len(windows),
        "max_abs_diff_full_vs_keras": float(np.abs(full - reference).max()),
        "max_abs_diff_encoder_head_vs_keras": float(np.abs(split - reference).max()),
        "max_abs_diff_encoder_head_vs_full": float(np.abs(split - full).max()),
        "top1_agreement_full_vs_keras": float(np.mean(full.argmax(1) == reference.argmax(1))),
        "top1_agreement_encoder_head_vs_keras": float(np.mean(split.argmax(1) == reference.argmax(1))),
        "keras_top1": [LABELS[i] for i in reference.argmax(1)],
        "keras_max_probability": [float(p) for p in reference.max(1)],
    }


def tool_versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import tensorflow as tf
    import tf2onnx
    import tf_keras

    return {
        "tensorflow": tf.__version__,
        "tf_keras": tf_keras.__version__,
        "tf2onnx": tf2onnx.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def convert(
    h5: Path, out: Path | None = None, clips: Path = DEFAULT_CLIPS, progress: Progress = print
) -> dict[str, Any]:
    out = out or h5.parent
    out.mkdir(parents=True, exist_ok=True)
    files = {"encoder": out / ENCODER_FILE, "head": out / HEAD_FILE, "full": out / FULL_FILE}
    started = time.perf_counter()
    # A stale report must never vouch for half-written files: it is rewritten last.
    (out / REPORT_FILE).unlink(missing_ok=True)

    progress(f"loading {h5}")
    model = load_h5(h5)
    progress("exporting encoder.onnx (MobileNetV2 + pooling, dynamic batch)")
    _export(build_encoder_from(model), (None, 224, 224, 3), "frames", files["encoder"])
    progress("exporting head.onnx (GRU/Dense stack, dynamic batch)")
    _export(build_head_from(model), (None, 10, 1280), "embeddings", files["head"])
    progress("exporting full.onnx (the whole model, reference path)")
    _export(model, (None, 10, 224, 224, 3), "frames", files["full"])
    seconds = time.perf_counter() - started

    progress(f"checking ONNX against Keras on real clips in {clips}")
    windows, clip_names = real_windows(clips)
    parity = measure_parity(files, model, windows)
    parity["clips"] = clip_names

    progress("quantising the encoder to int8 (calibrated on real frames) and measuring it")
    import onnxruntime as ort

    from convert.quantize import FP16_FILE, INT8_FILE, fp16_encoder, measure_variant, quantize_encoder

    calibration, _ = real_windows(clips, max_clips=24, skip=len(clip_names))
    quantize_encoder(files["encoder"], calibration.reshape(-1, *calibration.shape[2:])[::2], out / INT8_FILE)
    check_windows, _ = real_windows(clips, max_clips=48)
    int8 = measure_variant(files["encoder"], out / INT8_FILE, files["head"], check_windows)
    progress("converting the encoder to fp16 (for CUDA) and measuring it")
    fp16_encoder(files["encoder"], out / FP16_FILE)
    cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    fp16 = measure_variant(
        files["encoder"], out / FP16_FILE, files["head"], check_windows,
        provider="CUDAExecutionProvider" if cuda else "CPUExecutionProvider",
    )  # fmt: skip
    if not cuda:  # agreement is measured; its speed only means something on CUDA
        fp16["qualifies"] = False
        fp16["note"] = "no CUDA on the converting machine: speed measured on CPU, not a CUDA number"

    (out / LABELS_FILE).write_text(json.dumps({str(i): g for i, g in enumerate(LABELS)}, indent=1) + "\n")
    report = {
        "h5": h5.name,
        "h5_sha256": sha256_of(h5),
        "opset": OPSET,
        "conversion_seconds": round(seconds, 2),
        "tools": tool_versions(),
        "files": {
            name: {"file": p.name, "sha256": sha256_of(p), "bytes": p.stat().st_size} for name, p in files.items()
        },
        "parity": parity,
        "variants": {
            "int8": {**int8, "sha256": sha256_of(out / INT8_FILE)},
            "fp16": {**fp16, "sha256": sha256_of(out / FP16_FILE)},
        },
    }
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    progress(f"wrote {', '.join(p.name for p in files.values())}, {LABELS_FILE}, {REPORT_FILE} to {out}")
    return report
