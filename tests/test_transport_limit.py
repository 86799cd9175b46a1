"""Frames too large to use, against real servers and real Socket.IO clients (websocket and polling).

A frame over MAX_FRAME_BYTES is answered with `error` `frame_too_large` (with its id) and the stream
goes on, up to the transport's own bound on one Engine.IO message (8 x MAX_FRAME_BYTES: a websocket
message, or a polling request body). A message over that bound is refused by the transport: the
connection is closed, the client is told with the same code where the server can still send it, and
the server logs one warning line.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.peer import Peer
from harness.servers import ROOT, ServerProcess, free_port, start_server, wait_healthy

MAX_FRAME = 1_000_000  # MAX_FRAME_BYTES for these servers: the transport bound is then 8 MB
LIMITED = {"MAX_FRAME_BYTES": str(MAX_FRAME), "WINDOW_SECONDS": "0", "EMBEDDINGS_PER_SECOND": "0",
           "ENCODER_VARIANT": "fp32", "MAX_FPS": "1000", "ERRORS_PER_SECOND": "1000"}  # fmt: skip
REFUSAL = "over the transport limit"


def fake_jpeg(size: int) -> bytes:
    return b"\xff\xd8" + b"\0" * (size - 2)


def refusals(output: str) -> list[str]:
    """The server's warning lines about refused messages (and no traceback anywhere)."""
    assert "Traceback" not in output, output[-3000:]
    return [line for line in output.splitlines() if "WARNING" in line and REFUSAL in line]


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_frames_over_max_frame_bytes_get_frame_too_large_and_the_stream_goes_on(
    model_dir: Path, hello_jpegs: list[bytes], transport: str
) -> None:
    # 3 MB used to be over python-engineio's limit (2 x MAX_FRAME_BYTES): the connection dropped
    # without a word. 1.5 MB (binary) was already refused with the code.
    running = start_server(model_dir, workers=1, **LIMITED)
    try:
        async with Peer(running.url, [transport]) as peer:
            assert await peer.expect("status") == {"message": "ready"}
            oversized = [
                {"image": fake_jpeg(1_500_000), "id": 1},
                {"image": fake_jpeg(3_000_000), "id": 2},
                {"image": base64.b64encode(fake_jpeg(3_000_000)).decode(), "id": 3},  # a 4 MB message
                {"image": fake_jpeg(5_500_000), "id": 4},
            ]
            for payload in oversized:
                await peer.sio.emit("frame", payload)
                error = await peer.expect("error", timeout=20)
                assert (error["code"], error["id"]) == ("frame_too_large", payload["id"]), error
            assert set(await peer.predict(hello_jpegs[0], binary=True)) == {"label", "score"}
            assert peer.sio.connected and not peer.disconnected.is_set()
    finally:
        output = running.stop()
    assert refusals(output) == []


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_a_message_over_the_transport_limit_closes_the_connection_with_one_warning(
    model_dir: Path, transport: str
) -> None:
    running = start_server(model_dir, workers=1, **LIMITED)
    try:
        async with Peer(running.url, [transport]) as peer:
            assert await peer.expect("status") == {"message": "ready"}
            await peer.sio.emit("frame", {"image": fake_jpeg(9_000_000), "id": 1})
            await asyncio.wait_for(peer.disconnected.wait(), 20)
            received = [peer.events.get_nowait() for _ in range(peer.events.qsize())]
            if transport == "polling":  # the server reads no body over the limit, but can still answer
                assert [(name, data["code"]) for name, data in received] == [("error", "frame_too_large")]
            else:  # uvicorn's websocket limit (ws_max_size) closes it with 1009 before reading it
                assert received == []
    finally:
        output = running.stop()
    lines = refusals(output)
    assert len(lines) == 1, output[-3000:]
    assert "8000000 bytes" in lines[0] and "127.0.0.1" in lines[0]


async def test_under_a_host_with_a_larger_websocket_limit_the_app_refuses_with_the_code(model_dir: Path) -> None:
    """Served by plain uvicorn whose own websocket limit is above the app's: the app sees the message,
    tells the client `frame_too_large` and closes the connection, instead of python-engineio dropping it
    without a word."""
    port = free_port()
    env = {**os.environ, "MODEL_PATH": str(model_dir / "WLASL20c_model.h5"), "MODEL": "wlasl20c", **LIMITED}
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "service.app:app_factory", "--factory", "--host", "127.0.0.1",
         "--port", str(port), "--ws-max-size", str(64 * 2**20)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    running = ServerProcess(f"http://127.0.0.1:{port}", process)
    try:
        wait_healthy(running.url, process, 60, "uvicorn")
        async with Peer(running.url) as peer:
            assert await peer.expect("status") == {"message": "ready"}
            await peer.sio.emit("frame", {"image": fake_jpeg(9_000_000), "id": 1})
            error = await peer.expect("error", timeout=20)
            assert error["code"] == "frame_too_large"
            await asyncio.wait_for(peer.disconnected.wait(), 20)
    finally:
        output = running.stop()
    assert len(refusals(output)) == 1, output[-3000:]
