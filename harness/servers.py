"""`python cli.py serve` as a real process on a free localhost port, waited on until /healthz answers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]


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
