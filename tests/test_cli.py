"""The command line as users run it: start-up failures are one clear line, predict streams a real clip."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CLIPS, ROOT


def run_cli(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "cli.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "MODEL": "wlasl20c", **env},
    )  # fmt: skip


def test_serve_without_a_model_exits_with_one_clear_line(tmp_path: Path) -> None:
    result = run_cli("serve", "--port", "1", MODEL_PATH=str(tmp_path / "missing.h5"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "no model at MODEL_PATH=" in lines[0] and "python cli.py convert" in lines[0]


def test_serve_without_landmark_files_names_the_commands(tmp_path: Path) -> None:
    result = run_cli("serve", "--port", "1", MODEL="landmarks", MODEL_PATH=str(tmp_path / "WLASL20c_model.h5"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "MODEL=landmarks but" in lines[0] and "python cli.py train --model landmarks" in lines[0]


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
    result = run_cli("serve", "--port", "1", MODEL_PATH=str(model_dir / "WLASL20c_model.h5"), **env)
    assert result.returncode != 0
    assert message in result.stderr or message in result.stdout


def test_predict_streams_a_clip_through_the_server_pipeline(model_dir: Path) -> None:
    clip = CLIPS / "drink" / sorted(p.name for p in (CLIPS / "drink").glob("*.mp4"))[0]
    result = run_cli("predict", str(clip), "--json", MODEL_PATH=str(model_dir / "WLASL20c_model.h5"))
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    timeline = report["timeline"]
    assert len(timeline) > 10
    assert all(step["label"] == "none" and step["score"] == 0.0 for step in timeline[:9])
    assert any(step["score"] > 0 for step in timeline[9:])
    assert report["label"] in {step["label"] for step in timeline} | {"none"}
