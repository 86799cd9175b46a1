"""The Socket.IO protocol of the reference server (SPEC section 1), and one worker per client.

Data flows one way: `frame` event -> bounded per-client queue -> worker (decode -> stream state ->
engine) -> `prediction`. A client that sends faster than it is served loses its *oldest* queued
frames (counted), so memory stays bounded and the reply always answers the newest frame.

Opt-in extensions (reference clients see nothing new): a client that sends `{"topk": k, "signs": true}`
as its connect `auth` payload or in a `subscribe` event gets `"top"` in each `prediction` and/or
debounced `sign` events (service/signs.py). The options live on the `Client`; the worker reads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from typing import Any

import socketio

from service.auth import UNAUTHORIZED_MESSAGE, Tokens, token_from_connect
from service.clients import Client, FrameId, OptionsError, TokenBucket, Totals, Turn, parse_options
from service.frames import FrameError, payload_bytes
from service.metrics import Metrics
from service.pipeline import Pipeline
from service.settings import Settings
from service.signs import SignDebouncer, top_k
from service.stream import Prediction
from service.transport import EngineIO

log = logging.getLogger("signstream.protocol")

CAPACITY_MESSAGE = "Server at capacity, please try again later"
SHUTDOWN_STATUS = {"message": "shutting down", "code": "shutdown"}


def client_ip(environ: dict[str, Any]) -> str:
    """The peer address from the ASGI scope (uvicorn has already applied X-Forwarded-For from trusted
    proxies); python-engineio's own REMOTE_ADDR is always 127.0.0.1."""
    client = environ.get("asgi.scope", {}).get("client")
    return str(client[0]) if client else "unknown"


MAX_ID_LENGTH = 64  # characters of a string `id`; a longer one gets `bad_id`


def frame_id_of(payload: Any) -> FrameId:
    """Optional extension: a client may tag a frame with `"id"` (int or short string); the reply to
    that frame carries the same `id`, so clients can match replies to frames. Reference clients
    send no id and get exactly the reference payloads."""
    if not isinstance(payload, dict):
        return None
    value = payload.get("id")
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    return value if not isinstance(value, str) or len(value) <= MAX_ID_LENGTH else None


def has_over_long_id(payload: Any) -> bool:
    """An `id` string too long to echo: the frame is answered with `bad_id` (not silently untagged)."""
    return isinstance(payload, dict) and isinstance(payload.get("id"), str) and len(payload["id"]) > MAX_ID_LENGTH


def with_id(event: dict[str, object], frame_id: FrameId) -> dict[str, object]:
    return event if frame_id is None else {**event, "id": frame_id}


class SignProtocol:
    """Registers the reference server's events on a python-socketio AsyncServer."""

    def __init__(self, sio: socketio.AsyncServer, settings: Settings, metrics: Metrics) -> None:
        self.sio = sio
        self.settings = settings
        self.metrics = metrics
        self.pipeline: Pipeline | None = None  # set once the model is loaded
        self.clients: dict[str, Client] = {}
        self.connections_per_ip: Counter[str] = Counter()
        self.tokens = Tokens(settings.auth_tokens)
        self.closing = False  # set on SIGTERM: no new connections
        self.totals = Totals()
        self.transport = EngineIO(sio)
        sio.on("connect", self.on_connect)
        sio.on("disconnect", self.on_disconnect)
        sio.on("frame", self.on_frame)
        sio.on("subscribe", self.on_subscribe)

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> bool:
        ip = client_ip(environ)
        refusal = self._refusal(ip, environ, auth)
        if refusal is not None or self.pipeline is None:
            code, message = refusal or ("loading", "Model is loading, please try again shortly")
            log.warning("refusing %s: %s", sid, code, extra={"sid": sid})
            await self.sio.emit("error", {"message": message, "code": code}, to=sid)
            return False
        client = Client(
            sid=sid,
            ip=ip,
            stream=self.pipeline.new_stream(),
            queue_size=self.settings.frame_queue_size,
            error_rate=TokenBucket(self.settings.errors_per_second),
            frame_rate=TokenBucket(self.settings.max_fps),
        )
        client.worker = asyncio.create_task(self._serve(client, self.pipeline), name=f"client-{sid}")
        self.clients[sid] = client
        self.connections_per_ip[ip] += 1
        log.info("client %s connected (%d connected)", sid, len(self.clients), extra={"sid": sid})
        await self.sio.emit("status", {"message": "ready"}, to=sid)
        if auth is not None:
            await self._subscribe(client, auth)
        return True

    def _refusal(self, ip: str, environ: dict[str, Any], auth: Any) -> tuple[str, str] | None:
        """(code, message) when this connection may not be served."""
        if self.closing:
            return "shutting_down", "Server is shutting down, please reconnect"
        if self.tokens.required and not self.tokens.valid(token_from_connect(environ, auth)):
            return "unauthorized", UNAUTHORIZED_MESSAGE
        if len(self.clients) >= self.settings.max_clients:
            return "capacity", CAPACITY_MESSAGE
        if self.connections_per_ip[ip] >= self.settings.max_connections_per_ip:
            limit = self.settings.max_connections_per_ip
            return "too_many_connections", f"At most {limit} connections per address"
        return None

    async def on_subscribe(self, sid: str, payload: Any = None) -> dict[str, object] | None:
        """`subscribe` {"topk": k, "signs": bool}; the acknowledgement (if asked for) is the options
        now in effect."""
        client = self.clients.get(sid)
        if client is None:
            return None
        await self._subscribe(client, payload)
        return client.options.as_dict()

    async def _subscribe(self, client: Client, payload: Any) -> None:
        labels = self.pipeline.recognizer.labels if self.pipeline is not None else []
        try:
            options = parse_options(payload, client.options, len(labels))
        except OptionsError as error:
            await self._send_error(client, FrameError("bad_options", str(error)))
            return
        if options.signs and client.signs is None:
            s = self.settings
            client.signs = SignDebouncer(
                s.sign_enter_frames, s.sign_exit_frames, s.sign_min_score, s.sign_transcript_length
            )
        elif not options.signs:
            client.signs = None
        client.options = options

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        if reason == self.sio.reason.CLIENT_DISCONNECT:
            self.transport.end_long_poll(sid)
        client = self.clients.pop(sid, None)
        if client is None:
            return
        self.connections_per_ip[client.ip] -= 1
        if self.connections_per_ip[client.ip] <= 0:
            del self.connections_per_ip[client.ip]
        if client.worker is not None:
            client.worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await client.worker
        client.end_turns()
        s = client.stats
        log.info(
            "client %s disconnected: %d frames, %d predictions, %d dropped, %d unsent, %d errors",
            sid, s.frames, s.predictions, s.dropped, s.unsent, s.errors, extra={"sid": sid},
        )  # fmt: skip

    async def on_frame(self, sid: str, payload: Any = None, *extra: Any) -> None:
        """A frame the stream samples goes to the client's worker (bounded queue, oldest dropped);
        any other frame is checked (off the event loop; `check_image` finds what decoding would, at about a
        third of its cost) and answered with the newest window's prediction, so it never waits behind a
        frame that is being encoded: whether a broken frame gets its error does not depend on timing."""
        client = self.clients.get(sid)
        pipeline = self.pipeline
        if client is None or pipeline is None:
            return
        client.stats.frames += 1
        self.totals.frames += 1
        arrived = time.monotonic()
        turn = client.next_turn()
        queued = False
        try:
            queued = await self._frame(client, pipeline, payload, extra, arrived, turn)
        finally:
            if not queued:
                turn.finish()

    async def _frame(
        self, client: Client, pipeline: Pipeline, payload: Any, extra: tuple[Any, ...], arrived: float, turn: Turn
    ) -> bool:
        """Answer one frame in its turn; True when it went to the worker (which answers it)."""
        frame_id = frame_id_of(payload)
        try:
            if extra:  # `emit("frame", a, b)`: not a frame the protocol knows
                raise FrameError("bad_payload", "a frame is one object")
            if has_over_long_id(payload):  # answered without the id (frame_id_of gives None): it cannot be echoed
                raise FrameError("bad_id", f"'id' must be an integer or a string of at most {MAX_ID_LENGTH} "
                                 "characters; frame not used")  # fmt: skip
            if not client.frame_rate.allow():
                raise FrameError("rate_limited", f"more than {self.settings.max_fps:g} frames per second; "
                                 "this frame was not used")  # fmt: skip
            data = payload_bytes(payload, self.settings.max_frame_bytes)
            if client.stream.take(arrived):
                dropped_before = client.stats.dropped
                client.enqueue(frame_id, data, arrived, turn)
                self.totals.dropped += client.stats.dropped - dropped_before
                return True
            await pipeline.check(data)
        except FrameError as error:
            await turn.wait()
            await self._send_error(client, error, frame_id)
            return False
        await client.stream.until_fresh(arrived, self.settings.max_staleness_ms / 1e3)
        await turn.wait()
        await self._reply(client, client.stream.last, frame_id, arrived)
        return False

    def _count_error(self, client: Client, code: str) -> None:
        client.stats.errors += 1
        self.totals.errors += 1
        self.totals.errors_by_code[code] = self.totals.errors_by_code.get(code, 0) + 1

    async def _send_error(self, client: Client, error: FrameError, frame_id: FrameId = None) -> None:
        self._count_error(client, error.code)
        if client.error_rate.allow() and not self.transport.outbox_full(client.sid):
            event = with_id({"message": error.message, "code": error.code}, frame_id)
            await self.sio.emit("error", event, to=client.sid)
        else:
            client.stats.errors_suppressed += 1

    async def _serve(self, client: Client, pipeline: Pipeline) -> None:
        """The client's worker: one frame at a time, newest frames first to go when behind."""
        while True:
            if not client.pending:
                client.wake.clear()
                await client.wake.wait()
                continue
            frame_id, data, arrived, turn = client.pending.popleft()
            client.busy = True
            try:
                await self._answer(client, pipeline, frame_id, data, arrived, turn)
            finally:
                turn.finish()
                client.busy = False

    async def _answer(
        self, client: Client, pipeline: Pipeline, frame_id: FrameId, data: bytes, arrived: float, turn: Turn
    ) -> None:
        try:
            prediction = await pipeline.answer(data, client.stream, arrived)
        except FrameError as error:
            await turn.wait()
            await self._send_error(client, error, frame_id)
            return
        except Exception:
            log.exception("inference failed for client %s", client.sid, extra={"sid": client.sid})
            await turn.wait()
            await self._send_error(client, FrameError("internal", "inference failed for this frame"), frame_id)
            return
        await turn.wait()
        await self._reply(client, prediction, frame_id, arrived)

    async def _reply(self, client: Client, prediction: Prediction, frame_id: FrameId, arrived: float) -> None:
        if self.transport.outbox_full(client.sid):
            client.stats.unsent += 1
            self.totals.unsent += 1
            return
        client.stats.predictions += 1
        self.totals.predictions += 1
        newest = client.stream.newest_timestamp
        if newest is not None:
            self.totals.record_staleness(arrived - newest, self.settings.max_staleness_ms / 1e3)
        event = prediction.as_event()
        if client.options.topk and self.pipeline is not None:
            event["top"] = top_k(prediction.probabilities, self.pipeline.recognizer.labels, client.options.topk)
        await self.sio.emit("prediction", with_id(event, frame_id), to=client.sid)
        self.metrics.frame_latency.observe(time.monotonic() - arrived)
        if client.signs is not None:
            sign = client.signs.update(prediction.label, prediction.score, (arrived - client.connected_at) * 1e3)
            if sign is not None:
                await self.sio.emit("sign", sign.as_event(), to=client.sid)

    async def refuse_oversized(self, eio_sid: str | None, size: int | None, transport: str, ip: str) -> None:
        """A message over the transport limit (`Settings.max_message_bytes`): one warning line, then,
        where the session is still there (`size` is None when the ASGI server refused the message
        unread: websocket close 1009), `frame_too_large` and the connection is closed."""
        limit = self.settings.max_message_bytes
        sid = self.transport.sid_of(eio_sid)
        what = f"a {transport} message of {size} bytes" if size is not None else f"a {transport} message"
        log.warning(
            "refused %s from %s (client %s): over the transport limit of %d bytes (8 x MAX_FRAME_BYTES, at "
            "least 1 MB); connection closed", what, ip, sid or "unknown", limit, extra={"sid": sid},
        )  # fmt: skip
        client = self.clients.get(sid) if sid is not None else None
        if size is None or eio_sid is None or client is None or not self.transport.is_open(eio_sid):
            return
        self._count_error(client, "frame_too_large")
        message = f"message of {size} bytes exceeds the transport limit of {limit} bytes; connection closed"
        await self.transport.error_then_close(eio_sid, {"message": message, "code": "frame_too_large"})

    async def drain(self, timeout: float) -> None:
        """Graceful shutdown: refuse new connections, tell every client (`status` shutdown), answer
        the frames already received (at most `timeout` seconds), then close each client's Engine.IO
        connection rather than send a Socket.IO disconnect, which clients take as final: the browser
        client then reconnects by itself (through a load balancer, to another process); the Python
        client treats any server close as final and must reconnect on the `status`."""
        self.closing = True
        started = time.monotonic()
        clients = list(self.clients.values())
        log.info("shutting down: telling %d clients", len(clients))
        await asyncio.gather(*(self.sio.emit("status", SHUTDOWN_STATUS, to=c.sid) for c in clients))
        # Until every received frame is answered and every reply (the status included) has left: a
        # polling client between two GETs would otherwise lose them to the close.
        while time.monotonic() - started < timeout and any(
            c.answering or self.transport.unsent(c.sid) for c in self.clients.values()
        ):
            await asyncio.sleep(0.01)
        for client in clients:
            await self.transport.close(client.sid)
        self.transport.end_all_long_polls()
        log.info("shutdown drained %d clients in %.2f s", len(clients), time.monotonic() - started)
