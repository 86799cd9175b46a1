"""Locust users that stream real clip frames over Socket.IO, like `signstream loadtest`.

    pip install -e ".[load]"   # locust and python-socketio's sync client; no other extra has them
    SIGNSTREAM_VIDEO=../shared/data/clips/hello locust -f benchmarks/locustfile.py --host http://127.0.0.1:8000

Each user sends 25 frames/s tagged with an `id` and reports frame -> prediction latency to Locust
as a request named `frame`; errors and lost replies show up as failures.
"""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path
from typing import Any

import socketio
from locust import User, between, events, task

from service.loadgen import browser_jpegs

FRAMES = [base64.b64encode(j).decode() for j in browser_jpegs(Path(os.environ.get("SIGNSTREAM_VIDEO", "")))]
FPS = float(os.environ.get("SIGNSTREAM_FPS", "25"))


class SignStreamUser(User):  # type: ignore[misc]  # locust is untyped here (ignore_missing_imports)
    wait_time = between(0, 0)

    def on_start(self) -> None:
        self.sent: dict[int, float] = {}
        self.next_id = 0
        self.sio = socketio.Client(reconnection=False)
        self.sio.on("prediction", self._on_reply)
        self.sio.on("error", self._on_reply)
        self.sio.connect(self.host, transports=["websocket"])

    def on_stop(self) -> None:
        for _ in self.sent:
            events.request.fire(request_type="sio", name="frame", response_time=0, response_length=0,
                                exception=RuntimeError("lost reply"))  # fmt: skip
        self.sio.disconnect()

    def _on_reply(self, data: Any) -> None:
        sent = self.sent.pop(data.get("id"), None)
        if sent is None:
            return
        failed = RuntimeError(data.get("code")) if "code" in data else None
        events.request.fire(request_type="sio", name="frame", response_time=(time.perf_counter() - sent) * 1e3,
                            response_length=0, exception=failed)  # fmt: skip

    @task  # type: ignore[untyped-decorator]
    def stream(self) -> None:
        frame_id = self.next_id
        self.next_id += 1
        self.sent[frame_id] = time.perf_counter()
        self.sio.emit("frame", {"image": FRAMES[frame_id % len(FRAMES)], "id": frame_id})
        time.sleep(1.0 / FPS)
