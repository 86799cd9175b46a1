"""`cli client`: a Python Socket.IO client that streams frames like the browser demo page does.

Frames (a clip, a folder of clips, or a camera) are resized to 640x480, encoded as JPEG quality 80
and sent as binary `frame` events with an `id`, paced at each clip's own frame rate (a camera's at
25 fps; `fps` overrides both); the client opts in to `top` and `sign` events and measures each frame's
latency from its `id`. Output: a live terminal view, or one JSON line per event (`--json`).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import cv2
import numpy as np
import socketio

from service.clips import clip_fps, iter_clip_frames

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
MAX_IN_FLIGHT = 4  # default: frames sent but not answered; beyond this a frame is skipped, like the demo page
CAMERA_FPS = 25.0  # what the browser page sends

# A frame and the rate its source runs at (frames per second), which paces its sending.
Frames = Iterator[tuple[np.ndarray, float]]


class ClientError(RuntimeError):
    """The server could not be reached, or refused the client."""


@dataclass(frozen=True)
class ClientConfig:
    url: str = "http://127.0.0.1:8000"
    fps: float | None = None  # None: each frame's source rate (a clip's own fps)
    topk: int = 3
    signs: bool = True
    size: tuple[int, int] = (640, 480)
    quality: int = 80
    drain_seconds: float = 5.0  # how long to wait for the last replies once the frames run out
    max_in_flight: int = MAX_IN_FLIGHT  # frames sent but not answered before the next one is skipped


def video_frames(path: Path) -> Frames:
    """The frames of a clip, or of every clip in a folder (sorted), each with its clip's frame rate
    (`clip_fps`: 25 when the file does not say); checks the path at once."""
    if path.is_dir():
        clips = sorted(p for p in path.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
        if not clips:
            raise ClientError(f"no video files in {path}")
    elif path.is_file():
        clips = [path]
    else:
        raise ClientError(f"no such file or folder: {path}")
    return _read_clips(clips)


def _read_clips(clips: list[Path]) -> Frames:
    for clip in clips:
        fps = clip_fps(clip)
        try:
            for frame in iter_clip_frames(clip):
                yield frame, fps
        except ValueError as exc:
            raise ClientError(str(exc)) from None


def camera_frames(index: int) -> Frames:
    capture = cv2.VideoCapture(index)
    if not capture.isOpened():
        raise ClientError(f"cannot open camera {index}")
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                raise ClientError(f"camera {index} stopped delivering frames")
            yield frame, CAMERA_FPS
    finally:
        capture.release()


def encode_frame(frame: np.ndarray, size: tuple[int, int], quality: int) -> bytes:
    """As the browser sends it: the canvas size, JPEG at quality 0.8."""
    resized = frame if (frame.shape[1], frame.shape[0]) == size else cv2.resize(frame, size)
    ok, data = cv2.imencode(".jpg", resized, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ClientError("cannot encode a frame as JPEG")
    return bytes(data.tobytes())


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


@dataclass
class ClientState:
    """Everything the views show; updated by the Socket.IO event handlers only."""

    connection: str = "connecting"
    label: str = "none"
    score: float = 0.0
    top: list[dict[str, Any]] = field(default_factory=list)
    transcript: list[str] = field(default_factory=list)
    sent: int = 0
    skipped: int = 0
    predictions: int = 0
    signs: int = 0
    errors: int = 0
    refused: str | None = None
    latencies_ms: list[float] = field(default_factory=list)
    recent_sends: deque[float] = field(default_factory=lambda: deque(maxlen=50))

    @property
    def fps(self) -> float:
        if len(self.recent_sends) < 2:
            return 0.0
        span = self.recent_sends[-1] - self.recent_sends[0]
        return (len(self.recent_sends) - 1) / span if span > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        lat = self.latencies_ms
        return {
            "sent": self.sent,
            "skipped": self.skipped,
            "predictions": self.predictions,
            "signs": self.signs,
            "errors": self.errors,
            "transcript": self.transcript,
            "latency_ms": {
                "p50": percentile(lat, 50),
                "p95": percentile(lat, 95),
                "mean": round(sum(lat) / len(lat), 1) if lat else None,
            },
        }


Sink = Callable[[str, Any, float | None], None]


class StreamClient:
    def __init__(self, config: ClientConfig, sink: Sink | None = None) -> None:
        self.config = config
        self.state = ClientState()
        self.sink = sink
        self.sio = socketio.AsyncClient(reconnection=False)
        self._sent_at: dict[int, float] = {}
        self._ready = asyncio.Event()
        self._closed = asyncio.Event()
        for name in ("status", "prediction", "sign", "error"):
            self.sio.on(name, self._handler(name))
        self.sio.on("disconnect", self._on_disconnect)

    def _handler(self, name: str) -> Callable[..., Any]:
        async def handle(data: Any = None) -> None:
            self._on_event(name, data)

        return handle

    def _on_event(self, name: str, data: Any) -> None:
        state = self.state
        latency: float | None = None
        if name == "status":
            state.connection = "ready"
            self._ready.set()
        elif name == "prediction" and isinstance(data, dict):
            state.predictions += 1
            frame_id = data.get("id")
            sent = self._sent_at.pop(frame_id, None) if isinstance(frame_id, int) else None
            if sent is not None:
                latency = (time.perf_counter() - sent) * 1e3
                state.latencies_ms.append(latency)
            state.label, state.score = str(data.get("label")), float(data.get("score", 0.0))
            state.top = list(data.get("top", []))
        elif name == "sign" and isinstance(data, dict):
            state.signs += 1
            state.transcript = list(data.get("transcript", []))
        elif name == "error" and isinstance(data, dict):
            state.errors += 1
            if data.get("id") is not None:
                self._sent_at.pop(data["id"], None)
            if data.get("code") in ("capacity", "loading"):
                state.refused = str(data.get("message"))
                state.connection = "refused"
                self._ready.set()
        if self.sink is not None:
            self.sink(name, data, None if latency is None else round(latency, 1))

    async def _on_disconnect(self, *args: Any) -> None:
        if self.state.connection != "refused":
            self.state.connection = "disconnected"
        self._closed.set()
        self._ready.set()

    async def run(self, frames: Frames) -> ClientState:
        config = self.config
        auth = {"topk": config.topk, "signs": config.signs}
        try:
            await self.sio.connect(config.url, transports=["websocket"], auth=auth, wait_timeout=10)
        except socketio.exceptions.ConnectionError as exc:
            await self._close()
            raise ClientError(f"cannot connect to {config.url}: {exc}") from None
        try:
            await asyncio.wait_for(self._ready.wait(), 30)
            if self.state.refused:
                raise ClientError(f"the server refused the connection: {self.state.refused}")
            await self._stream(frames)
            deadline = time.monotonic() + config.drain_seconds
            while self._sent_at and not self._closed.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.2)  # a `sign` that follows the last prediction
        finally:
            await self._close()
        return self.state

    async def _close(self) -> None:
        """Disconnect, and close the aiohttp session python-engineio opened for the connection: it
        stays open (and aiohttp warns "Unclosed client session" at exit) when the connect failed."""
        if self.sio.connected:
            await self.sio.disconnect()
        await self.sio.eio.disconnect(abort=True)  # when not connected, only closes the session

    async def _stream(self, frames: Frames) -> None:
        config, state = self.config, self.state
        next_at = time.perf_counter()
        frame_id = 0
        while not self._closed.is_set():
            item = await asyncio.to_thread(next, frames, None)
            if item is None:
                return
            frame, source_fps = item
            interval = 1.0 / (config.fps or source_fps)
            delay = next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            next_at = max(next_at + interval, time.perf_counter() - interval)
            if len(self._sent_at) >= config.max_in_flight:
                state.skipped += 1
                continue
            data = await asyncio.to_thread(encode_frame, frame, config.size, config.quality)
            self._sent_at[frame_id] = time.perf_counter()
            await self.sio.emit("frame", {"image": data, "id": frame_id})
            state.sent += 1
            state.recent_sends.append(time.perf_counter())
            frame_id += 1


def json_sink(out: TextIO = sys.stdout) -> Sink:
    def sink(name: str, data: Any, latency_ms: float | None) -> None:
        line: dict[str, Any] = {"event": name, "data": data}
        if latency_ms is not None:
            line["latency_ms"] = latency_ms
        out.write(json.dumps(line) + "\n")
        out.flush()

    return sink


def render(state: ClientState, source: str) -> Any:
    """The live terminal view."""
    from rich.console import Group
    from rich.panel import Panel
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    label = Text("–" if state.label == "none" else state.label, style="bold green" if state.label != "none" else "dim")
    score = Table.grid(padding=(0, 1))
    score.add_row(ProgressBar(total=1.0, completed=state.score, width=40), Text(f"{state.score:.0%}"))
    top = Table(show_header=False, box=None, padding=(0, 1))
    for i, entry in enumerate(state.top, start=1):
        top.add_row(f"{i}.", str(entry.get("label")), f"{float(entry.get('score', 0.0)):.0%}")
    lat = state.latencies_ms[-50:]
    stats = Table.grid(padding=(0, 2))
    stats.add_row("state", state.connection, "predictions", str(state.predictions))
    stats.add_row("sent", f"{state.sent} ({state.fps:.1f} fps)", "skipped", str(state.skipped))
    stats.add_row("latency", f"{sum(lat) / len(lat):.0f} ms" if lat else "–", "errors", str(state.errors))
    transcript = Text(" · ".join(state.transcript) or "nothing yet", style="bold" if state.transcript else "dim")
    body = Group(
        Text("Current sign", style="dim"), label, score, Text(""),
        Text("Top", style="dim"), top, Text(""),
        Text("Recognised signs", style="dim"), transcript, Text(""), stats,
    )  # fmt: skip
    return Panel(body, title=f"signstream — {source}", border_style="cyan")


async def run_client(frames: Frames, config: ClientConfig, as_json: bool, source: str) -> ClientState:
    if as_json:
        client = StreamClient(config, json_sink())
        state = await client.run(frames)
        json_sink()("summary", state.summary(), None)
        return state

    from rich.live import Live

    client = StreamClient(config)
    with Live(get_renderable=lambda: render(client.state, source), refresh_per_second=10, transient=False):
        return await client.run(frames)
