"""CORS_ORIGINS is applied to HTTP and to Socket.IO, checked with real clients sending Origin headers."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import socketio

from tests.conftest import start_server
from tests.peer import Peer

GOOD = "https://good.example"
BAD = "https://evil.example"


async def test_disallowed_origin_is_refused_and_allowed_origin_connects(model_dir: Path) -> None:
    running = start_server(model_dir, CORS_ORIGINS=GOOD)
    try:
        allowed = httpx.get(f"{running.url}/labels", headers={"Origin": GOOD})
        assert allowed.headers.get("access-control-allow-origin") == GOOD
        refused = httpx.get(f"{running.url}/labels", headers={"Origin": BAD})
        assert "access-control-allow-origin" not in refused.headers

        async with Peer(running.url, headers={"Origin": GOOD}) as peer:
            assert await peer.expect("status") == {"message": "ready"}
        intruder = socketio.AsyncClient(reconnection=False)
        with pytest.raises(socketio.exceptions.ConnectionError):
            await intruder.connect(running.url, transports=["websocket"], headers={"Origin": BAD}, wait_timeout=5)
        with pytest.raises(socketio.exceptions.ConnectionError):
            await intruder.connect(running.url, transports=["polling"], headers={"Origin": BAD}, wait_timeout=5)
    finally:
        running.stop()
