"""Shared fixtures: a real converted model, real clips, real servers on free localhost ports."""

from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from tests.fixture_model import CLIPS, build_random_h5

ROOT = Path(__file__).resolve().parents[1]


def pytest_sessionstart(session: pytest.Session) -> None:
    if not CLIPS.is_dir():
        raise pytest.UsageError(f"the real clips are expected at {CLIPS}")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An h5 of the exact architecture with seeded random weights, converted by the real `convert`.
    SIGNSTREAM_FIXTURE_MODEL_DIR names a folder to keep it in between local runs (conversion with the
    int8 calibration takes minutes and several GB); CI always converts afresh."""
    kept = os.environ.get("SIGNSTREAM_FIXTURE_MODEL_DIR")
    folder = Path(kept) if kept else tmp_path_factory.mktemp("model")
    if kept and (folder / "conversion_report.json").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    h5 = build_random_h5(folder / "WLASL20c_model.h5")
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    url: str
    process: subprocess.Popen[str]
    model_name: str = ""  # what /healthz must name (model_name), where the fixture knows it

    def stop(self) -> str:
        self.process.terminate()
        try:
            out, _ = self.process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, _ = self.process.communicate()
        return out


def start_server(model_dir: Path, workers: int = 1, **env: str) -> ServerProcess:
    """`python cli.py serve` as a real process on a free port; waits until /healthz says ok."""
    environment = {
        **os.environ,
        "MODEL_PATH": str(model_dir / "WLASL20c_model.h5"),
        "MODEL": "wlasl20c",  # the fixture is a WLASL20c h5; tests of the landmark model say so
        "LOG_LEVEL": "info",
        **env,
    }
    return _serve(environment, workers)


def default_environment() -> dict[str, str]:
    """This process's environment without any signstream setting: a server started with it runs the
    defaults (MODEL=landmarks on the shipped model/, EMBEDDINGS_PER_SECOND=8, WINDOW_SECONDS=2, MAX_FPS=30,
    ERRORS_PER_SECOND=2, ...), as `signstream serve` does on a fresh clone."""
    from service.settings import _ENV

    if (ROOT / ".env").is_file():
        raise pytest.UsageError(f"{ROOT / '.env'} would change the defaults the tests run: move it away")
    return {name: value for name, value in os.environ.items() if name not in _ENV}


def start_default_server(**env: str) -> ServerProcess:
    """`python cli.py serve` with no setting but those in `env` (e.g. a limit a test needs raised)."""
    return _serve({**default_environment(), **env}, 1)


def _serve(environment: dict[str, str], workers: int) -> ServerProcess:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "cli.py", "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
        cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, process, 60, "server")
    return ServerProcess(url, process)


def wait_healthy(url: str, process: subprocess.Popen[str], seconds: float, what: str) -> None:
    """Until `url`/healthz answers 200; the process's output in the error if it exits or never does."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}: {process.communicate()[0][-3000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"{what} did not answer /healthz within {seconds:g} s: {process.communicate()[0][-3000:]}")


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
