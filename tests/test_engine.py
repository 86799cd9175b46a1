"""Model files, provider choice and the recogniser backend, on the shipped WLASL20c model converted afresh."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from service.engine import load_recognizer
from service.onnx_runtime import ModelError, choose_providers
from service.recognizers.wlasl20c import ImageRecognizer, check_model_files
from service.recognizers.wlasl20c.preprocess import preprocess_frame
from service.settings import load_settings


def test_provider_choice() -> None:
    cpu_only = ["CPUExecutionProvider"]
    with_cuda = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers("cpu", with_cuda) == cpu_only
    assert choose_providers("auto", cpu_only) == cpu_only
    assert choose_providers("auto", with_cuda) == with_cuda
    assert choose_providers("cuda", with_cuda) == with_cuda
    with pytest.raises(ModelError, match="EXECUTION_PROVIDER=cuda but this onnxruntime has no CUDAExecutionProvider"):
        choose_providers("cuda", cpu_only)


def test_auto_on_this_machine_reports_the_provider_it_got(model_dir: Path) -> None:
    import onnxruntime as ort

    settings = load_settings({"MODEL_PATH": str(model_dir / "WLASL20c_model.h5"), "MODEL": "wlasl20c"}, env_file=None)
    recognizer = load_recognizer(settings)
    expected = (
        "CUDAExecutionProvider" if "CUDAExecutionProvider" in ort.get_available_providers() else "CPUExecutionProvider"
    )
    assert recognizer.provider == expected
    assert len(recognizer.labels) == 20 and recognizer.labels[0] == "book" and recognizer.labels[19] == "wall"


def test_missing_h5_names_the_path_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"no model at MODEL_PATH=.*nothing\.h5.*python cli.py convert"):
        check_model_files(tmp_path / "nothing.h5")


def test_unconverted_h5_names_the_convert_command(tmp_path: Path, model_dir: Path) -> None:
    shutil.copy(model_dir / "WLASL20c_model.h5", tmp_path / "m.h5")
    with pytest.raises(ModelError, match=r"is not converted .*encoder.onnx.*python cli.py convert --h5"):
        check_model_files(tmp_path / "m.h5")


def test_onnx_converted_from_another_h5_is_refused(tmp_path: Path, model_dir: Path) -> None:
    for item in model_dir.iterdir():
        shutil.copy(item, tmp_path / item.name)
    report = json.loads((tmp_path / "conversion_report.json").read_text())
    report["h5_sha256"] = "0" * 64
    (tmp_path / "conversion_report.json").write_text(json.dumps(report))
    with pytest.raises(ModelError, match="converted from another h5"):
        check_model_files(tmp_path / "WLASL20c_model.h5")


def test_backend_stages_compose_to_the_full_model(model_dir: Path) -> None:
    import onnxruntime as ort

    from service.clips import iter_clip_frames
    from tests.fixture_model import CLIPS

    settings = load_settings({"MODEL_PATH": str(model_dir / "WLASL20c_model.h5"), "MODEL": "wlasl20c"}, env_file=None)
    recognizer = ImageRecognizer(settings)
    frames = list(iter_clip_frames(CLIPS / "play" / sorted(p.name for p in (CLIPS / "play").glob("*.mp4"))[0]))[:10]
    inputs = np.stack([preprocess_frame(f) for f in frames])
    probabilities = recognizer.sessions["head"].run(recognizer.sessions["encoder"].run(inputs)[None])
    full = ort.InferenceSession(str(model_dir / "full.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(probabilities, full.run(None, {"frames": inputs[None]})[0], atol=1e-5)


def test_int8_encoder_is_chosen_only_where_the_report_says_it_qualifies(tmp_path: Path, model_dir: Path) -> None:
    for item in model_dir.iterdir():
        shutil.copy(item, tmp_path / item.name)
    h5 = tmp_path / "WLASL20c_model.h5"
    report_path = tmp_path / "conversion_report.json"
    report = json.loads(report_path.read_text())
    int8 = report["variants"]["int8"]
    assert 0.0 <= int8["top1_agreement_vs_fp32"] <= 1.0 and int8["speedup_vs_fp32"] > 0
    for qualifies, expected in ((False, "fp32"), (True, "int8")):
        report["variants"]["int8"]["qualifies"] = qualifies
        report_path.write_text(json.dumps(report))
        settings = load_settings(
            {"MODEL_PATH": str(h5), "MODEL": "wlasl20c", "EXECUTION_PROVIDER": "cpu"}, env_file=None
        )
        assert ImageRecognizer(settings).encoder_variant == expected


def test_int8_encoder_embeddings_stay_close_to_fp32(model_dir: Path) -> None:
    from service.recognizers.wlasl20c.preprocess import clip_window
    from tests.fixture_model import CLIPS

    h5 = model_dir / "WLASL20c_model.h5"
    window = clip_window(CLIPS / "hello" / "handspeak.mp4")
    embeddings = {}
    for variant in ("fp32", "int8"):
        settings = load_settings(
            {"MODEL_PATH": str(h5), "MODEL": "wlasl20c", "ENCODER_VARIANT": variant}, env_file=None
        )
        embeddings[variant] = ImageRecognizer(settings).sessions["encoder"].run(window)
    a, b = embeddings["fp32"], embeddings["int8"]
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cosine.min() > 0.8  # measured 0.94-0.96 on the shipped model (0.90-0.95 on an earlier random-weight one)
