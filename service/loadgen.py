"""Socket.IO load generator: real clients streaming real clip frames at a fixed rate.

Every frame carries an `id` (a protocol extension the server echoes), so each reply is matched to
the frame it answers and frame -> prediction latency is exact. Replies that never come are `lost`.
"""

from __future__ import annotations

import asyncio
import base64
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import numpy as np
import socketio

from service.clips import iter_clip_frames


def browser_jpegs(video: Path, limit: int = 250) -> list[bytes]:
    """Frames of a clip (or of every clip in a folder) as a browser sends them: 640x480 JPEG q=0.8."""
    paths = sorted(p for p in video.rglob("*") if p.suffix.lower() in {".mp4", ".gif"}) if video.is_dir() else [video]
    frames: list[bytes] = []
    for path in paths:
        for frame in iter_clip_frames(path):
            ok, data = cv2.imencode(".jpg", cv2.resize(frame, (640, 480)), [cv2.IMWRITE_JPEG_QUALITY, 80])
            if ok:
                frames.append(data.tobytes())
            if len(frames) >= limit:
                return frames
    if not frames:
        raise ValueError(f"no frames in {video}")
    return frames


@dataclass
class ClientResult:
    sent: int = 0
    replies: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    connected: bool = False


@dataclass
class LoadResult:
    clients: int
    fps: float
    seconds: float
    transport: str
    binary: bool
    sent: int
    replies: int
    errors: int
    lost: int
    refused_clients: int
    latency_ms: dict[str, float]
    replies_per_second: float
    # What the server counted during the run (/healthz before and after): frames it dropped, replies
    # it did not send (client not reading), replies older than MAX_STALENESS_MS, and the largest
    # staleness it has seen since it started.
    server: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def held(self) -> bool:
        return held(self.as_dict())


def held(run: dict[str, Any]) -> bool:
    """The product's goal for a run: p95 under 100 ms, nothing lost, every client admitted, and no
    reply answered from an embedding older than the server's MAX_STALENESS_MS."""
    p95 = run["latency_ms"].get("p95", 1e9)
    return bool(p95 < 100.0 and run["lost"] == 0 and run["refused_clients"] == 0 and not run["server"].get("stale"))


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    array = np.asarray(values)
    return {
        "p50": round(float(np.percentile(array, 50)), 2),
        "p95": round(float(np.percentile(array, 95)), 2),
        "p99": round(float(np.percentile(array, 99)), 2),
        "max": round(float(array.max()), 2),
        "mean": round(float(array.mean()), 2),
    }


async def _one_client(
    url: str, frames: list[bytes], fps: float, seconds: float, transport: str, binary: bool, start_at: float
) -> ClientResult:
    result = ClientResult()
    sent_at: dict[int, float] = {}
    sio = socketio.AsyncClient(reconnection=False)
    ready = asyncio.Event()

    async def on_status(data: Any) -> None:
        ready.set()

    async def on_prediction(data: Any) -> None:
        sent = sent_at.pop(data.get("id"), None)
        if sent is not None:
            result.replies += 1
            result.latencies_ms.append((time.perf_counter() - sent) * 1e3)

    async def on_error(data: Any) -> None:
        if sent_at.pop(data.get("id"), None) is not None:
            result.errors += 1

    for event, handler in (("status", on_status), ("prediction", on_prediction), ("error", on_error)):
        sio.on(event, handler)

    payloads = frames if binary else [base64.b64encode(f).decode() for f in frames]
    try:
        await sio.connect(url, transports=[transport], wait_timeout=10)
        await asyncio.wait_for(ready.wait(), 10)
    except (socketio.exceptions.ConnectionError, TimeoutError):
        return result
    result.connected = True
    offset = random.random() / fps  # clients of a real audience are not in phase
    total = int(seconds * fps)
    for i in range(total):
        delay = start_at + offset + i / fps - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sent_at[i] = time.perf_counter()
        await sio.emit("frame", {"image": payloads[i % len(payloads)], "id": i})
        result.sent += 1
    deadline = time.perf_counter() + 3.0
    while sent_at and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    # Cleanly, on either transport: an aborted client never tells the server (python-engineio drops its
    # queued CLOSE), which then counts it as connected until the ping timeout.
    await sio.disconnect()
    return result


SERVER_COUNTERS = ("frames", "predictions", "dropped", "unsent", "stale", "errors")


async def server_health(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/healthz") as response:
        return dict(await response.json())


def server_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    delta: dict[str, float] = {k: after[k] - before[k] for k in SERVER_COUNTERS if k in after and k in before}
    if "staleness_ms" in after:
        delta["staleness_max_ms_since_start"] = after["staleness_ms"]["max"]
    return delta


async def run_load(
    url: str,
    frames: list[bytes],
    clients: int = 1,
    fps: float = 25.0,
    seconds: float = 10.0,
    transport: str = "websocket",
    binary: bool = False,
) -> LoadResult:
    before = await server_health(url)
    start_at = time.perf_counter() + 1.0 + clients * 0.05  # everyone connected before the first frame
    results = await asyncio.gather(
        *(_one_client(url, frames, fps, seconds, transport, binary, start_at) for _ in range(clients))
    )
    after = await server_health(url)
    latencies = [x for r in results for x in r.latencies_ms]
    sent = sum(r.sent for r in results)
    replies = sum(r.replies for r in results)
    errors = sum(r.errors for r in results)
    return LoadResult(
        clients=clients,
        fps=fps,
        seconds=seconds,
        transport=transport,
        binary=binary,
        sent=sent,
        replies=replies,
        errors=errors,
        lost=sent - replies - errors,
        refused_clients=sum(not r.connected for r in results),
        latency_ms=percentiles(latencies),
        replies_per_second=round(replies / seconds, 1),
        server=server_delta(before, after),
    )
