"""The command line as users run it: start-up failures are one clear line, predict streams a real clip."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from harness.servers import ROOT, free_port
from tests.fixture_model import CLIPS


def run_cli(
    *args: str, timeout: float = 120, settings: dict[str, str] | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "cli.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "MODEL": "wlasl20c", **(settings or {}), **env},
    )  # fmt: skip


def test_serve_without_a_model_exits_with_one_clear_line(tmp_path: Path) -> None:
    result = run_cli("serve", "--port", str(free_port()), MODEL_PATH=str(tmp_path / "missing.h5"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "no model at MODEL_PATH=" in lines[0] and "python cli.py convert" in lines[0]


def test_serve_without_landmark_files_names_the_commands(tmp_path: Path) -> None:
    (tmp_path / "landmarks").mkdir()  # the folder is there, its files are not
    model_path = str(tmp_path / "WLASL20c_model.h5")
    result = run_cli("serve", "--port", str(free_port()), MODEL="landmarks", MODEL_PATH=model_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "MODEL=landmarks but" in lines[0] and "python cli.py train --model landmarks" in lines[0]
    assert "sequence.onnx" in lines[0] and str(tmp_path / "landmarks") in lines[0]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"USE_DUMMY_MODEL": "1"}, "USE_DUMMY_MODEL=1 is not supported"),
        ({"MAX_CLIENTS": "lots"}, "MAX_CLIENTS='lots' is not valid"),
        ({"EXECUTION_PROVIDER": "cuda"}, "EXECUTION_PROVIDER=cuda but"),
    ],
)
def test_serve_refuses_bad_settings(model_dir: Path, env: dict[str, str], message: str) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers() and "EXECUTION_PROVIDER" in env:
        pytest.skip("this machine has CUDA")
    settings = {"MODEL_PATH": str(model_dir / "WLASL20c_model.h5"), **env}
    result = run_cli("serve", "--port", str(free_port()), settings=settings)
    assert result.returncode != 0
    assert message in result.stderr or message in result.stdout


def two_sign_clip(path: Path, first: Path, second: Path) -> Path:
    """One mp4 of two real clips' frames in a row (both 640x480 as the page sends, 25 fps)."""
    from service.clips import iter_clip_frames

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 25.0, (640, 480))
    for clip in (first, second):
        for frame in iter_clip_frames(clip):
            writer.write(cv2.resize(frame, (640, 480)))
    writer.release()
    return path


def test_predict_streams_a_clip_through_the_server_pipeline(model_dir: Path, tmp_path: Path) -> None:
    # The shipped WLASL20c model answers one label all through most single clips (drink on 6 of 6
    # drink clips, play on hello/thkazi: measured), so a drink clip followed by that hello clip gives a
    # timeline with two labels, and the clip-level rule has a choice to make.
    clip = two_sign_clip(
        tmp_path / "drink-hello.mp4", CLIPS / "drink" / "handspeak.mp4", CLIPS / "hello" / "thkazi.mp4"
    )
    # PREDICTION_THRESHOLD=0: every step after the first window is labelled, whatever its score.
    result = run_cli(
        "predict", str(clip), "--json", MODEL_PATH=str(model_dir / "WLASL20c_model.h5"), PREDICTION_THRESHOLD="0"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    timeline = report["timeline"]
    assert len(timeline) > 10
    assert all(step["label"] == "none" and step["score"] == 0.0 for step in timeline[:9])
    assert all(step["label"] != "none" and step["score"] > 0 for step in timeline[9:])
    labels = {step["label"] for step in timeline[9:]}
    assert len(labels) >= 2, labels  # else "the clip's label" and "a label of the timeline" are the same thing
    # The clip-level rule, recomputed: the label of the single most confident step (not the most
    # frequent label, nor the first or last one), with that step's score.
    best = max(timeline[9:], key=lambda step: step["score"])
    assert (report["label"], report["score"]) == (best["label"], best["score"])
    # The probabilities reported are that step's: their argmax is the label, their max the score.
    labels_of = json.loads((model_dir / "labels.json").read_text())
    probabilities = report["probabilities"]
    assert len(probabilities) == 20 and labels_of[str(int(np.argmax(probabilities)))] == report["label"]
    assert max(probabilities) == pytest.approx(report["score"], abs=1e-4)


def test_serve_on_a_port_in_use_fails_at_once_naming_the_port(model_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        result = run_cli(
            "serve", "--host", "127.0.0.1", "--port", str(port), timeout=60,
            MODEL_PATH=str(model_dir / "WLASL20c_model.h5"), LOG_LEVEL="debug",
        )  # fmt: skip
        elapsed = time.monotonic() - started
    assert result.returncode != 0
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1, lines  # nothing else: no uvicorn start-up, no model loading
    assert lines[0].startswith("signstream: error:") and f"port {port}" in lines[0] and "in use" in lines[0]
    assert elapsed < 10


@pytest.mark.parametrize("missing", ["file", "folder"])
def test_serve_with_landmarks_and_a_missing_model_path_names_that_path(tmp_path: Path, missing: str) -> None:
    """MODEL=landmarks reads MODEL_PATH's folder (its landmarks/ beside the h5): when MODEL_PATH does
    not exist, say so, rather than list the landmark files missing in a folder that was never there."""
    from service.engine import load_recognizer
    from service.onnx_runtime import ModelError
    from service.settings import load_settings

    model_path = tmp_path / "WLASL20c_model.h5" if missing == "file" else tmp_path / "nowhere" / "WLASL20c_model.h5"
    result = run_cli("serve", "--port", str(free_port()), MODEL="landmarks", MODEL_PATH=str(model_path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert f"MODEL_PATH={model_path} does not exist" in lines[0], lines[0]
    assert str(model_path.parent / "landmarks") in lines[0]
    assert not any(name in lines[0] for name in ("sequence.onnx", "palm_detection", "hand_landmark"))
    if missing == "folder":
        assert f"nor does its folder {model_path.parent}" in lines[0]
    settings = load_settings({"MODEL": "landmarks", "MODEL_PATH": str(model_path)}, env_file=None)
    with pytest.raises(ModelError) as loading:  # the server's own loader says the same
        load_recognizer(settings)
    assert str(loading.value) == lines[0].removeprefix("signstream: error: ")
