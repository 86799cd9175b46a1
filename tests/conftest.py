"""Shared fixtures: a real converted model, real clips, real servers on free localhost ports."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from harness.servers import (
    ROOT,
    ServerProcess,
    start_default_server,
    start_server,
)
from tests.fixture_model import CLIPS, shipped_h5


def pytest_sessionstart(session: pytest.Session) -> None:
    if not CLIPS.is_dir():
        raise pytest.UsageError(f"the real clips are expected at {CLIPS}")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped, trained WLASL20c h5 (model/WLASL20c_model.h5), converted afresh by the real `convert`
    into a folder of its own, so the conversion itself is under test and no test reads or writes the
    shipped ONNX files. SIGNSTREAM_FIXTURE_MODEL_DIR names a folder to keep it in between local runs
    (conversion with the int8 calibration takes minutes and several GB); CI always converts afresh."""
    kept = os.environ.get("SIGNSTREAM_FIXTURE_MODEL_DIR")
    folder = Path(kept) if kept else tmp_path_factory.mktemp("model")
    if kept and (folder / "conversion_report.json").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    h5 = shipped_h5(folder / "WLASL20c_model.h5")
    result = subprocess.run(
        [sys.executable, "cli.py", "convert", "--h5", str(h5), "--clips", str(CLIPS)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return folder


@pytest.fixture(scope="session")
def conversion_report(model_dir: Path) -> dict[str, object]:
    return json.loads((model_dir / "conversion_report.json").read_text())  # type: ignore[no-any-return]


def clip_jpegs(path: Path, quality: int = 80, size: tuple[int, int] = (640, 480)) -> list[bytes]:
    """A real clip's frames as the browser sends them: 640x480 JPEG at quality 0.8."""
    from service.clips import iter_clip_frames

    frames = []
    for frame in iter_clip_frames(path):
        resized = cv2.resize(frame, size)
        ok, data = cv2.imencode(".jpg", resized, [cv2.IMWRITE_JPEG_QUALITY, quality])
        assert ok
        frames.append(data.tobytes())
    return frames


@pytest.fixture(scope="session")
def hello_jpegs() -> list[bytes]:
    return clip_jpegs(CLIPS / "hello" / sorted(p.name for p in (CLIPS / "hello").glob("*.mp4"))[0])


CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's Chromium, installed by the project's own `.ci/install-browser` when missing (a failed
    install fails the test); Playwright only drives it (`playwright install` is never used)."""
    if not CHROMIUM.exists():
        result = subprocess.run(
            ["bash", str(ROOT / ".ci" / "install-browser")], capture_output=True, text=True, timeout=900
        )
        assert result.returncode == 0, f".ci/install-browser failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing after .ci/install-browser"
    return CHROMIUM


@pytest.fixture(scope="session")
def server(model_dir: Path) -> Iterator[ServerProcess]:
    """The default server (consecutive windows so predictions can be recomputed offline exactly)."""
    running = start_server(
        model_dir, WINDOW_SECONDS="0", EMBEDDINGS_PER_SECOND="0", ENCODER_VARIANT="fp32", MAX_FPS="1000"
    )
    running.model_name = "WLASL20c"
    yield running
    running.stop()


@pytest.fixture(scope="session")
def default_server() -> Iterator[ServerProcess]:
    """The server as users run it: no setting at all (the landmark model on the shipped model/, sampling
    at 8 embeddings/s, the 2 s window, the default limits)."""
    running = start_default_server()
    running.model_name = "landmarks"
    yield running
    running.stop()


@pytest.fixture(scope="session", params=["reference", "default"])
def any_server(request: pytest.FixtureRequest) -> ServerProcess:
    """Each contract test that takes it runs on both: `server` (the reference mode on the WLASL20c fixture)
    and `default_server` (the defaults users get)."""
    return request.getfixturevalue("server" if request.param == "reference" else "default_server")  # type: ignore[no-any-return]


@functools.cache
def _session(path: Path) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def full_onnx_probabilities(model_dir: Path, jpegs: list[bytes]) -> np.ndarray:
    """The reference path: full.onnx on the window of these frames, decoded as the server decodes."""
    from service.frames import decode_image
    from service.recognizers.wlasl20c.preprocess import preprocess_frame

    session = _session(model_dir / "full.onnx")
    window = np.stack([preprocess_frame(decode_image(j)) for j in jpegs])[None]
    return np.asarray(session.run(None, {session.get_inputs()[0].name: window})[0][0])
