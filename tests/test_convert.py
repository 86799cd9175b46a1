"""Conversion: the real `cli convert` on a real-architecture h5, parity on frames of real clips."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

from harness.servers import ROOT
from tests.fixture_model import CLIPS


def test_report_has_versions_hash_and_parity(conversion_report: dict, model_dir: Path) -> None:  # type: ignore[type-arg]
    from service.onnx_runtime import sha256_of

    assert conversion_report["h5_sha256"] == sha256_of(model_dir / "WLASL20c_model.h5")
    assert conversion_report["opset"] == 17
    assert set(conversion_report["tools"]) >= {"tensorflow", "tf_keras", "tf2onnx", "onnx", "onnxruntime"}
    parity = conversion_report["parity"]
    assert parity["windows"] >= 10
    assert parity["max_abs_diff_full_vs_keras"] < 1e-4
    assert parity["max_abs_diff_encoder_head_vs_keras"] < 1e-4
    assert parity["top1_agreement_full_vs_keras"] == 1.0
    assert parity["top1_agreement_encoder_head_vs_keras"] == 1.0
    # The model is not degenerate: its predictions differ between clips.
    assert len(set(parity["keras_top1"])) > 1


def test_encoder_plus_head_equals_full_on_a_real_window(model_dir: Path) -> None:
    from service.recognizers.wlasl20c.preprocess import clip_window

    window = clip_window(CLIPS / "go" / sorted(p.name for p in (CLIPS / "go").glob("*.mp4"))[0])[None]
    run = {
        name: ort.InferenceSession(str(model_dir / f"{name}.onnx"), providers=["CPUExecutionProvider"])
        for name in ("encoder", "head", "full")
    }
    embeddings = run["encoder"].run(None, {"frames": window[0]})[0]
    assert embeddings.shape == (10, 1280) and embeddings.std(axis=0).mean() > 1e-3
    split = run["head"].run(None, {"embeddings": embeddings[None]})[0]
    full = run["full"].run(None, {"frames": window})[0]
    np.testing.assert_allclose(split, full, atol=1e-5)
    assert split.argmax() == full.argmax()


def convert_cli(h5: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "cli.py", "convert", "--h5", str(h5)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_other_architectures_are_refused_with_a_clear_message(tmp_path: Path) -> None:
    import tf_keras as keras

    h5 = tmp_path / "other.h5"
    keras.Sequential([keras.layers.Dense(3, input_shape=(4,))]).save(str(h5), save_format="h5")
    result = convert_cli(h5)
    assert result.returncode == 2
    assert "signstream: error: expected layers" in result.stderr
    assert not (tmp_path / "encoder.onnx").exists()


def test_a_file_that_is_not_h5_is_refused(tmp_path: Path) -> None:
    h5 = tmp_path / "broken.h5"
    h5.write_bytes(b"not an h5 file")
    result = convert_cli(h5)
    assert result.returncode == 2
    assert "is not a loadable Keras h5 model" in result.stderr
