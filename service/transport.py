"""The one adapter over python-engineio's internals (its sessions' outgoing queues), which the protocol
needs for what Socket.IO has no API for: a bounded outbox per client, answering a long-poll at once,
and refusing a message with a coded error before closing. Tested against the versions pyproject.toml
pins (python-socketio 5.18, python-engineio 4.15); a new minor version is checked here first.
"""

from __future__ import annotations

from typing import Any

import engineio
import socketio

# Engine.IO packets waiting to be written to one client. A client that stops reading its socket (or
# one whose network cannot keep up) gets no more replies until it catches up, so it cannot make the
# server's memory grow; the replies it missed are counted as `unsent`.
OUTBOX_LIMIT = 64


class EngineIO:
    def __init__(self, sio: socketio.AsyncServer) -> None:
        self._sio = sio

    def _socket(self, sid: str) -> Any:
        """The Engine.IO session under a Socket.IO sid, None once it is gone."""
        try:
            return self._sio.eio.sockets.get(self._sio.manager.eio_sid_from_sid(sid, "/"))
        except (KeyError, AttributeError):
            return None

    def sid_of(self, eio_sid: str | None) -> str | None:
        """The Socket.IO sid of an Engine.IO session (None when unknown)."""
        return self._sio.manager.sid_from_eio_sid(eio_sid, "/") if eio_sid is not None else None

    def outbox_full(self, sid: str) -> bool:
        socket = self._socket(sid)
        return socket is not None and socket.queue.qsize() >= OUTBOX_LIMIT

    def end_long_poll(self, sid: str) -> None:
        """A polling client that disconnects (Socket.IO DISCONNECT or Engine.IO CLOSE) still has a GET
        open, which python-engineio would hold until the ping interval + timeout (85 s by default):
        answer it now (empty), so a client that waits for it (python-socketio's clean disconnect) is done
        at once, and clients need not abort instead (an aborted client never tells the server)."""
        socket = self._socket(sid)
        if socket is not None and not socket.upgraded:
            socket.queue.put_nowait(None)

    def unsent(self, sid: str) -> bool:
        """Packets are still waiting for this client: for a polling client, until its next GET takes
        them. A session closed before then loses them (python-engineio answers a GET on a closed session
        with 400, not with what was queued)."""
        socket = self._socket(sid)
        return socket is not None and not socket.closed and not socket.queue.empty()

    def is_open(self, eio_sid: str | None) -> bool:
        socket = self._sio.eio.sockets.get(eio_sid) if eio_sid is not None else None
        return socket is not None and not socket.closed

    def is_closed(self, eio_sid: str | None) -> bool:
        """A session that has been closed but is still listed (until its next long-poll)."""
        socket = self._sio.eio.sockets.get(eio_sid) if eio_sid is not None else None
        return bool(socket is not None and socket.closed)

    async def error_then_close(self, eio_sid: str, error: dict[str, object]) -> None:
        """Queue an `error` event and an Engine.IO CLOSE together (one long-poll answer carries both),
        then close the session: the disconnect handlers run, nothing more is queued."""
        socket = self._sio.eio.sockets[eio_sid]
        event = self._sio.packet_class(socketio.packet.EVENT, namespace="/", data=["error", error])
        socket.queue.put_nowait(engineio.packet.Packet(engineio.packet.MESSAGE, data=event.encode()))
        socket.queue.put_nowait(engineio.packet.Packet(engineio.packet.CLOSE))
        await socket.close(wait=False, abort=True)

    async def close(self, sid: str) -> None:
        """Close a client's Engine.IO connection (a CLOSE is queued; a polling client is not waited for),
        rather than send a Socket.IO disconnect, which clients take as final."""
        socket = self._socket(sid)
        if socket is not None:
            await socket.close(wait=False)

    def end_all_long_polls(self) -> None:
        """End every long-poll still open, so that none holds the server's exit."""
        for socket in list(self._sio.eio.sockets.values()):
            socket.queue.put_nowait(None)
