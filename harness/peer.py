"""A real python-socketio client that records every event it receives, in order."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import socketio

EVENTS = ("status", "prediction", "error", "sign")


class Peer:
    def __init__(self, url: str, transports: list[str] | None = None, **connect_kwargs: Any) -> None:
        self.url = url
        self.transports = transports or ["websocket"]
        self.connect_kwargs = connect_kwargs
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.disconnected = asyncio.Event()
        for name in EVENTS:
            self.sio.on(name, self._recorder(name))
        self.sio.on("disconnect", self._on_disconnect)

    def _recorder(self, name: str) -> Any:
        async def record(data: Any = None) -> None:
            await self.events.put((name, data))

        return record

    async def _on_disconnect(self, *args: Any) -> None:
        self.disconnected.set()

    async def __aenter__(self) -> Peer:
        await self.sio.connect(self.url, transports=self.transports, wait_timeout=10, **self.connect_kwargs)
        return self

    async def __aexit__(self, *exc: object) -> None:
        # Cleanly on polling too: the server answers the open long-poll at once (an aborted polling
        # client would never tell the server, and stay counted until the ping timeout).
        await self.sio.disconnect()

    async def next(self, timeout: float = 10.0) -> tuple[str, Any]:
        return await asyncio.wait_for(self.events.get(), timeout)

    async def expect(self, name: str, timeout: float = 10.0) -> Any:
        event, data = await self.next(timeout)
        assert event == name, f"expected {name!r}, got {event!r}: {data!r}"
        return data

    async def send_jpeg(self, jpeg: bytes, binary: bool = False, data_url: bool = False) -> None:
        if binary:
            await self.sio.emit("frame", {"image": jpeg})
            return
        text = base64.b64encode(jpeg).decode()
        await self.sio.emit("frame", {"image": ("data:image/jpeg;base64," + text) if data_url else text})

    async def predict(self, jpeg: bytes, **kwargs: Any) -> Any:
        await self.send_jpeg(jpeg, **kwargs)
        return await self.expect("prediction")


async def refused(url: str, **connect_kwargs: Any) -> Any:
    """Connect, expect the server to refuse with an `error` and disconnect; return that error."""
    peer = Peer(url)
    await peer.sio.connect(url, transports=["websocket"], wait_timeout=10, **connect_kwargs)
    error = await peer.expect("error")
    await asyncio.wait_for(peer.disconnected.wait(), 10)
    return error
