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
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import engineio
import socketio

from service.auth import UNAUTHORIZED_MESSAGE, Tokens, token_from_connect
from service.frames import FrameError, payload_bytes
from service.metrics import Metrics
from service.pipeline import Pipeline
from service.settings import Settings
from service.signs import SignDebouncer, top_k
from service.stream import Prediction, StreamState

log = logging.getLogger("signstream.protocol")

CAPACITY_MESSAGE = "Server at capacity, please try again later"
SHUTDOWN_STATUS = {"message": "shutting down", "code": "shutdown"}
# Engine.IO packets waiting to be written to one client. A client that stops reading its socket (or
# one whose network cannot keep up) gets no more replies until it catches up, so it cannot make the
# server's memory grow; the replies it missed are counted as `unsent`.
OUTBOX_LIMIT = 64


def client_ip(environ: dict[str, Any]) -> str:
    """The peer address from the ASGI scope (uvicorn has already applied X-Forwarded-For from trusted
    proxies); python-engineio's own REMOTE_ADDR is always 127.0.0.1."""
    client = environ.get("asgi.scope", {}).get("client")
    return str(client[0]) if client else "unknown"


@dataclass
class ClientStats:
    frames: int = 0
    predictions: int = 0
    dropped: int = 0
    errors: int = 0
    errors_suppressed: int = 0
    unsent: int = 0


class TokenBucket:
    """At most `rate` events per second on average, in bursts of at most `rate` (one second's worth)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._tokens = rate
        self._last = time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self.rate, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class OptionsError(ValueError):
    """A `subscribe` / connect `auth` payload with options the server cannot use."""


@dataclass(frozen=True)
class ClientOptions:
    """Opt-in extensions; the defaults are the reference protocol."""

    topk: int = 0
    signs: bool = False

    def as_dict(self) -> dict[str, object]:
        return {"topk": self.topk, "signs": self.signs}


def parse_options(payload: Any, current: ClientOptions, max_topk: int) -> ClientOptions:
    """Options from a `subscribe` / `auth` payload; keys it does not name keep their current value,
    unknown keys are ignored (an `auth` payload may carry other things)."""
    if payload is None:
        return current
    if not isinstance(payload, dict):
        raise OptionsError('options must be an object like {"topk": 3, "signs": true}')
    topk, signs = current.topk, current.signs
    if "topk" in payload:
        value = payload["topk"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise OptionsError("'topk' must be a non-negative integer")
        topk = min(value, max_topk)
    if "signs" in payload:
        if not isinstance(payload["signs"], bool):
            raise OptionsError("'signs' must be true or false")
        signs = payload["signs"]
    return ClientOptions(topk, signs)


@dataclass
class Client:
    sid: str
    ip: str
    stream: StreamState
    queue_size: int
    error_rate: TokenBucket
    frame_rate: TokenBucket
    stats: ClientStats = field(default_factory=ClientStats)
    options: ClientOptions = field(default_factory=ClientOptions)
    signs: SignDebouncer | None = None  # present while the client subscribes to `sign` events
    connected_at: float = field(default_factory=time.monotonic)
    # (payload, arrival time, its reply turn); the oldest is dropped when a frame arrives on a full queue.
    pending: deque[tuple[Any, float, Turn]] = field(init=False)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    worker: asyncio.Task[None] | None = None
    busy: bool = False  # the worker holds a frame it has not answered yet
    # Set (and replaced) each time the worker has added an embedding: replies that would otherwise
    # be answered from a too old window wait on it.
    embedded: asyncio.Event = field(default_factory=asyncio.Event)
    # The turn of the newest frame: replies go out in the order the frames came.
    last_turn: Turn | None = None

    def __post_init__(self) -> None:
        self.pending = deque()

    def next_turn(self) -> Turn:
        turn = Turn(self.last_turn)
        self.last_turn = turn
        return turn

    def enqueue(self, payload: Any, arrived: float, turn: Turn) -> None:
        if len(self.pending) == self.queue_size:
            self.stats.dropped += 1
            self.pending.popleft()[2].skip()
        self.pending.append((payload, arrived, turn))
        self.wake.set()

    @property
    def answering(self) -> bool:
        """A frame received from this client has not had its turn yet (answered, or given up): the
        worker's frames, and those answered outside it (not sampled: decoded, then answered with the
        newest window once fresh and in turn), which `pending` and `busy` do not show."""
        return self.last_turn is not None and not self.last_turn.done

    def end_turns(self) -> None:
        """The client is gone: nothing it sent will be answered, so no reply waits for one."""
        while self.pending:
            self.pending.popleft()[2].skip()


class Turn:
    """One frame's place in its client's reply order: a reply waits until the frame before has been
    answered (or dropped), so replies go out in the order frames came, as from the reference server,
    even when a frame that is not sampled is decoded faster than the one before it is encoded."""

    def __init__(self, previous: Turn | None) -> None:
        self._previous = previous
        self._done = asyncio.Event()

    async def wait(self) -> None:
        if self._previous is not None:
            await self._previous._done.wait()
            self._previous = None  # the chain behind it is released

    def finish(self) -> None:
        self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def skip(self) -> None:
        """This frame gets no reply: its turn ends when the one before it ends."""
        previous = self._previous
        if previous is None or previous._done.is_set():
            self._done.set()
            return

        async def after() -> None:
            await self.wait()
            self._done.set()

        task = asyncio.get_running_loop().create_task(after())
        _SKIPPED.add(task)
        task.add_done_callback(_SKIPPED.discard)


_SKIPPED: set[asyncio.Task[None]] = set()  # held so that they are not garbage-collected while waiting


@dataclass
class Totals:
    """Server-wide counters (reported by /healthz)."""

    frames: int = 0
    predictions: int = 0
    dropped: int = 0
    unsent: int = 0  # replies not sent because the client was not reading them
    errors: int = 0
    errors_by_code: dict[str, int] = field(default_factory=dict)
    # Freshness: how much older the newest embedding behind a prediction is than the frame answered.
    staleness_max_s: float = 0.0
    staleness_sum_s: float = 0.0
    stale: int = 0  # replies whose newest embedding was older than MAX_STALENESS_MS

    def record_staleness(self, seconds: float, limit: float) -> None:
        self.staleness_max_s = max(self.staleness_max_s, seconds)
        self.staleness_sum_s += seconds
        self.stale += seconds > limit


FrameId = int | str | None
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
            self._end_long_poll(sid)
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
        any other frame is decoded (off the event loop, like a sampled one) and answered with the
        newest window's prediction, so it never waits behind a frame that is being encoded. Every
        frame is decoded either way: whether a broken one gets its error does not depend on timing."""
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
        if extra:  # `emit("frame", a, b)`: not a frame the protocol knows
            await turn.wait()
            await self._send_error(client, FrameError("bad_payload", "a frame is one object"), frame_id_of(payload))
            return False
        if has_over_long_id(payload):  # answered without the id: it is what cannot be echoed
            message = f"'id' must be an integer or a string of at most {MAX_ID_LENGTH} characters; frame not used"
            await turn.wait()
            await self._send_error(client, FrameError("bad_id", message))
            return False
        if not client.frame_rate.allow():
            limit = f"more than {self.settings.max_fps:g} frames per second; this frame was not used"
            await turn.wait()
            await self._send_error(client, FrameError("rate_limited", limit), frame_id_of(payload))
            return False
        if client.stream.take(arrived):
            dropped_before = client.stats.dropped
            client.enqueue(payload, arrived, turn)
            self.totals.dropped += client.stats.dropped - dropped_before
            return True
        frame_id = frame_id_of(payload)
        try:
            await pipeline.decode(payload_bytes(payload, self.settings.max_frame_bytes))
        except FrameError as error:
            await turn.wait()
            await self._send_error(client, error, frame_id)
            return False
        await self._wait_until_fresh(client, arrived)
        await turn.wait()
        await self._reply(client, client.stream.last, frame_id, arrived)
        return False

    async def _wait_until_fresh(self, client: Client, arrived: float) -> None:
        """Freshness: the newest embedding behind a reply is at most MAX_STALENESS_MS older than the
        frame it answers. When the newest one is older and a newer frame is being encoded (it takes
        longest under load), the reply waits for that embedding, at most MAX_STALENESS_MS."""
        limit = self.settings.max_staleness_ms / 1e3
        newest = client.stream.newest_timestamp
        if newest is None or arrived - newest <= limit or not client.stream.in_flight:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(client.embedded.wait(), limit)

    def _count_error(self, client: Client, code: str) -> None:
        client.stats.errors += 1
        self.totals.errors += 1
        self.totals.errors_by_code[code] = self.totals.errors_by_code.get(code, 0) + 1

    async def _send_error(self, client: Client, error: FrameError, frame_id: FrameId = None) -> None:
        self._count_error(client, error.code)
        if client.error_rate.allow() and not self._outbox_full(client.sid):
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
            payload, arrived, turn = client.pending.popleft()
            client.busy = True
            try:
                await self._answer(client, pipeline, payload, arrived, turn)
            finally:
                turn.finish()
                client.busy = False
                client.embedded.set()
                client.embedded = asyncio.Event()

    async def _answer(self, client: Client, pipeline: Pipeline, payload: Any, arrived: float, turn: Turn) -> None:
        frame_id = frame_id_of(payload)
        try:
            image = await pipeline.decode(payload_bytes(payload, self.settings.max_frame_bytes))
            prediction = await pipeline.encode_and_classify(image, client.stream, arrived)
        except FrameError as error:
            client.stream.release()
            await turn.wait()
            await self._send_error(client, error, frame_id)
            return
        except Exception:
            client.stream.release()
            log.exception("inference failed for client %s", client.sid, extra={"sid": client.sid})
            await turn.wait()
            await self._send_error(client, FrameError("internal", "inference failed for this frame"), frame_id)
            return
        await turn.wait()
        await self._reply(client, prediction, frame_id, arrived)

    async def _reply(self, client: Client, prediction: Prediction, frame_id: FrameId, arrived: float) -> None:
        if self._outbox_full(client.sid):
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
        unread: websocket close 1009), `frame_too_large` and an Engine.IO CLOSE are queued together
        (one long-poll answer carries both) and the session is closed."""
        limit = self.settings.max_message_bytes
        sid = self.sio.manager.sid_from_eio_sid(eio_sid, "/") if eio_sid is not None else None
        what = f"a {transport} message of {size} bytes" if size is not None else f"a {transport} message"
        log.warning(
            "refused %s from %s (client %s): over the transport limit of %d bytes (8 x MAX_FRAME_BYTES, at "
            "least 1 MB); connection closed", what, ip, sid or "unknown", limit, extra={"sid": sid},
        )  # fmt: skip
        socket = self.sio.eio.sockets.get(eio_sid) if eio_sid is not None else None
        client = self.clients.get(sid) if sid is not None else None
        if size is None or socket is None or client is None or socket.closed:
            return
        self._count_error(client, "frame_too_large")
        message = f"message of {size} bytes exceeds the transport limit of {limit} bytes; connection closed"
        event = self.sio.packet_class(socketio.packet.EVENT, namespace="/", data=["error", {"message": message,
                                      "code": "frame_too_large"}])  # fmt: skip
        socket.queue.put_nowait(engineio.packet.Packet(engineio.packet.MESSAGE, data=event.encode()))
        socket.queue.put_nowait(engineio.packet.Packet(engineio.packet.CLOSE))
        await socket.close(wait=False, abort=True)  # the disconnect handlers run; nothing more is queued

    def engineio_session_closed(self, eio_sid: str | None) -> bool:
        """An Engine.IO session that has been closed but is still listed (until its next long-poll)."""
        socket = self.sio.eio.sockets.get(eio_sid) if eio_sid is not None else None
        return bool(socket is not None and socket.closed)

    def _engineio_socket(self, sid: str) -> Any:
        """The Engine.IO session under a Socket.IO sid (its outgoing queue), None once it is gone."""
        try:
            return self.sio.eio.sockets.get(self.sio.manager.eio_sid_from_sid(sid, "/"))
        except (KeyError, AttributeError):
            return None

    def _end_long_poll(self, sid: str) -> None:
        """A polling client that disconnects (Socket.IO DISCONNECT or Engine.IO CLOSE) still has a GET
        open, which python-engineio would hold until the ping interval + timeout (85 s by default):
        answer it now (empty), so a client that waits for it (python-socketio's clean disconnect) is done
        at once, and clients need not abort instead (an aborted client never tells the server)."""
        socket = self._engineio_socket(sid)
        if socket is not None and not socket.upgraded:
            socket.queue.put_nowait(None)

    def _outbox_full(self, sid: str) -> bool:
        socket = self._engineio_socket(sid)
        return socket is not None and socket.queue.qsize() >= OUTBOX_LIMIT

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
        while any(c.answering for c in self.clients.values()) and time.monotonic() - started < timeout:
            await asyncio.sleep(0.01)
        for client in clients:
            socket = self._engineio_socket(client.sid)
            if socket is not None:  # queue a CLOSE; don't wait for a polling client to fetch it
                await socket.close(wait=False)
        for socket in list(self.sio.eio.sockets.values()):
            socket.queue.put_nowait(None)  # end any long-poll still open, so nothing holds the exit
        log.info("shutdown drained %d clients in %.2f s", len(clients), time.monotonic() - started)
