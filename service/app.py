"""The ASGI application: a Litestar app (HTTP) with the python-socketio server mounted on it.

The model loads in the background after start-up, so `/healthz` can answer 503 `loading` until it is
ready (never a fake "ok"). A load failure is logged as one line and stops the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import socketio
from litestar import Litestar, MediaType, get, head
from litestar.config.cors import CORSConfig
from litestar.openapi import ResponseSpec
from litestar.response import Response
from litestar.static_files import create_static_files_router
from prometheus_client.core import Metric

from service import __version__
from service.auth import require_token
from service.docs import ASYNCAPI_PATH, Health, Loading, Ready, asyncapi, openapi_config
from service.engine import load_recognizer
from service.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from service.metrics import Metrics, counter, gauge, info, labelled_counter
from service.onnx_runtime import ModelError
from service.pipeline import Pipeline
from service.protocol import SignProtocol
from service.recognizer import Recognizer
from service.settings import Settings

log = logging.getLogger("signstream.app")

Loader = Callable[[Settings], Recognizer]

# The demo page (index.html, app.js, style.css, vendored socket.io client), served at `/`.
STATIC_DIR = Path(__file__).resolve().parent / "static"


@dataclass
class LoadState:
    error: str | None = None
    task: asyncio.Task[None] | None = None
    drain: asyncio.Task[None] | None = None  # held here: the event loop keeps only weak references


def create_app(settings: Settings, loader: Loader = load_recognizer) -> socketio.ASGIApp:
    origins: str | list[str] = "*" if "*" in settings.cors_origins else list(settings.cors_origins)
    sio = socketio.AsyncServer(
        async_mode="asgi",
        cors_allowed_origins=origins,
        ping_timeout=settings.ping_timeout,
        ping_interval=settings.ping_interval,
        # Send CONNECT first so events emitted from the connect handler (status / capacity error)
        # reach the client, as they did from the reference server.
        always_connect=True,
        # The transport's bound on one message; frames up to it get `frame_too_large` from the app.
        max_http_buffer_size=settings.max_message_bytes,
    )
    metrics = Metrics()
    protocol = SignProtocol(sio, settings, metrics)
    load = LoadState()
    metrics.add_collector(lambda: _collect(protocol))

    async def load_model() -> None:
        try:
            recognizer = await asyncio.to_thread(loader, settings)
        except ModelError as exc:
            load.error = str(exc)
        except Exception as exc:  # a broken file must stop the server, not leave it half-up
            load.error = f"cannot load the model: {type(exc).__name__}: {exc}"
        else:
            pipeline = Pipeline(recognizer, settings, max_streams=settings.max_clients, on_batch=metrics.observe_batch)
            pipeline.start()
            protocol.pipeline = pipeline
            return
        log.error("%s", load.error)
        signal.raise_signal(signal.SIGTERM)

    async def on_startup() -> None:
        drain_before_exit(protocol, settings.shutdown_timeout, load)
        load.task = asyncio.create_task(load_model(), name="load-model")

    async def on_shutdown() -> None:
        if load.task is not None and not load.task.done():
            load.task.cancel()
        if protocol.pipeline is not None:
            await protocol.pipeline.stop()

    @get(
        "/healthz",
        sync_to_thread=False,
        summary="Health and counters",
        responses={
            200: ResponseSpec(Health, description="The model is loaded: what is served, and the server's counters"),
            503: ResponseSpec(Loading, description='`{"status": "loading"}` until the model is ready, or "failed"'),
        },
    )
    def healthz() -> Response[dict[str, Any]]:
        """The reference server's health check (`"model": "Sequential"`), with signstream's counters: clients
        connected, frames received, predictions sent, frames dropped, replies unsent, errors, and how stale
        replies were (`staleness_ms`, `stale`). Needs no token."""
        pipeline = protocol.pipeline
        if pipeline is None:
            body: dict[str, Any] = {"status": "failed", "error": load.error} if load.error else {"status": "loading"}
            return Response(body, status_code=503)
        totals = protocol.totals
        description = pipeline.recognizer.describe()
        return Response(
            {
                "status": "ok",
                "model": "Sequential",
                "model_name": description.name,
                "provider": description.provider,
                "recognizer": dict(description.details),
                "version": __version__,
                "clients": len(protocol.clients),
                "frames": totals.frames,
                "predictions": totals.predictions,
                "dropped": totals.dropped,
                "unsent": totals.unsent,
                "errors": totals.errors,
                "staleness_ms": {
                    "max": round(totals.staleness_max_s * 1e3, 1),
                    "mean": round(totals.staleness_sum_s * 1e3 / max(1, totals.predictions), 1),
                },
                "stale": totals.stale,
            }
        )

    @head(
        "/healthz",
        sync_to_thread=False,
        summary="Health status only",
        responses={503: ResponseSpec(None, description="The model is not ready")},
    )
    def healthz_head() -> Response[None]:
        """HEAD /healthz (load balancers, `curl -I`): the status GET would answer, without the body."""
        status = 200 if protocol.pipeline is not None else 503
        return Response(None, status_code=status, headers={"content-type": MediaType.JSON.value})

    @get(
        "/readyz",
        sync_to_thread=False,
        summary="Readiness",
        responses={
            200: ResponseSpec(Ready, description='`{"ready": true, "model"}`'),
            503: ResponseSpec(Ready, description='`{"ready": false, "error"}`'),
        },
    )
    def readyz() -> Response[dict[str, Any]]:
        """Ready to serve: the model is loaded and the engine's batch loops are running. Needs no token."""
        pipeline = protocol.pipeline
        if pipeline is None or not pipeline.running:
            return Response({"ready": False, "error": load.error}, status_code=503)
        return Response({"ready": True, "model": pipeline.recognizer.name})

    @get(
        "/metrics",
        sync_to_thread=False,
        summary="Prometheus metrics",
        responses={200: ResponseSpec(str, media_type=METRICS_CONTENT_TYPE, description="Prometheus text format")},
    )
    def metrics_endpoint() -> Response[bytes]:
        """Frames received, predictions sent, frames dropped, replies unsent or stale, errors by code,
        connected clients, encoder batch size and time, frame -> prediction latency, the model and provider.
        Needs no token."""
        # As a header: from `media_type`, Litestar would append a second "; charset=utf-8".
        return Response(metrics.render(), headers={"content-type": METRICS_CONTENT_TYPE})

    @get(
        "/labels",
        sync_to_thread=False,
        summary="The glosses",
        responses={
            200: ResponseSpec(dict[str, str], description='`{"0": "book", "1": "chair", ..., "19": "wall"}`'),
            503: ResponseSpec(Loading, description="The model is not loaded yet"),
        },
    )
    def labels() -> Response[dict[str, str]]:
        """The model's labels by index (string keys, index order), as the reference server answered."""
        pipeline = protocol.pipeline
        if pipeline is None:
            return Response({"status": "loading"}, status_code=503)
        return Response({str(i): label for i, label in enumerate(pipeline.recognizer.labels)})

    @get(ASYNCAPI_PATH, sync_to_thread=False, summary="The Socket.IO API (AsyncAPI)")
    def asyncapi_document() -> dict[str, Any]:
        """The AsyncAPI 2.6 document of the Socket.IO events: what a client sends (`frame`, `subscribe`), what
        the server sends (`status`, `prediction`, `error`, `sign`), with their payload schemas."""
        return asyncapi_json

    asyncapi_json = asyncapi(__version__)
    http_app = Litestar(
        route_handlers=[
            healthz,
            healthz_head,
            readyz,
            metrics_endpoint,
            labels,
            asyncapi_document,
            create_static_files_router(path="/", directories=[STATIC_DIR], html_mode=True, name="demo"),
        ],
        on_startup=[on_startup],
        on_shutdown=[on_shutdown],
        cors_config=CORSConfig(allow_origins=list(settings.cors_origins)),
        openapi_config=openapi_config(__version__),
        logging_config=None,
    )
    return SignstreamASGI(sio, require_token(http_app, protocol.tokens), protocol, http_app)


class SignstreamASGI(socketio.ASGIApp):  # type: ignore[misc]
    """Socket.IO in front of the Litestar app. While draining (SIGTERM), a request that would open a
    new Engine.IO session gets 503 (websocket: closed before accept) instead of a session that is
    refused at once: a proxy retries it on another process (deploy/nginx.conf), and no session is
    left holding a long-poll that the server would then wait for on its way out. A Socket.IO message
    over the transport limit (`Settings.max_message_bytes`) is refused here, with a warning and a
    coded error, rather than dropped by python-engineio without either."""

    def __init__(self, sio: socketio.AsyncServer, http_app: Any, protocol: SignProtocol, litestar: Litestar) -> None:
        super().__init__(sio, other_asgi_app=http_app)
        self.protocol = protocol
        self.litestar = litestar  # the HTTP routes (behind the token check)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket") and scope["path"].startswith("/socket.io"):
            if scope["type"] == "websocket":
                receive, send = self._guard_websocket(scope, receive, send)
            elif scope["method"] == "POST":
                length = _content_length(scope)
                if length is not None and length > self.protocol.settings.max_message_bytes:
                    # python-engineio would answer 400 and close the session without a word (and wait
                    # for a long-poll that may never come). The body is not read.
                    eio_sid = _query(scope).get("sid")
                    await self.protocol.refuse_oversized(eio_sid, length, "polling", _client_address(scope))
                    body = b'{"code":"frame_too_large","message":"request body over the transport limit"}'
                    headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
                    await send({"type": "http.response.start", "status": 413, "headers": headers})
                    await send({"type": "http.response.body", "body": body})
                    return
                if self.protocol.transport.is_closed(_query(scope).get("sid")):
                    # python-engineio (4.15) answers a GET for a session it has closed but not yet forgotten
                    # with 400, but a POST raises KeyError('Session is disconnected'): a 500 and a traceback
                    # in the log, e.g. for a polling client's frame on its way when the SIGTERM drain closed
                    # its session. Answered as the GET is.
                    headers = [(b"content-type", b"text/plain")]
                    await send({"type": "http.response.start", "status": 400, "headers": headers})
                    await send({"type": "http.response.body", "body": b"Session is disconnected"})
                    return
        if self.protocol.closing and _opens_engineio_session(scope):
            body = b'{"code":"shutting_down","message":"this server is shutting down, please reconnect"}'
            headers = [(b"content-type", b"application/json"), (b"retry-after", b"1")]
            prefix = "http"
            if scope["type"] == "websocket":
                if "websocket.http.response" not in scope.get("extensions", {}):
                    await send({"type": "websocket.close", "code": 1013})  # "try again later"
                    return
                prefix = "websocket.http"  # the ASGI extension for an HTTP answer to an upgrade
            await send({"type": f"{prefix}.response.start", "status": 503, "headers": headers})
            await send({"type": f"{prefix}.response.body", "body": body})
            return
        await super().__call__(scope, receive, send)

    def _guard_websocket(self, scope: dict[str, Any], receive: Any, send: Any) -> tuple[Any, Any]:
        """A websocket message over the transport limit: python-engineio would drop the connection
        without a word. Refuse it here instead (a warning, `frame_too_large` to the client, then the
        connection is closed). `serve` gives uvicorn the same limit (ws_max_size), which then refuses
        such a message unread, closing with 1009: that is logged here too."""
        limit = self.protocol.settings.max_message_bytes
        address = _client_address(scope)
        session: dict[str, str | None] = {"sid": _query(scope).get("sid")}  # set when upgraded from polling
        first_send = True

        async def watched_send(message: dict[str, Any]) -> None:
            nonlocal first_send
            if first_send and message["type"] == "websocket.send":
                first_send = False  # the Engine.IO OPEN packet, `0{"sid": ...}`, names the session
                text = message.get("text")
                if session["sid"] is None and isinstance(text, str) and text.startswith("0{"):
                    with contextlib.suppress(ValueError, AttributeError):
                        session["sid"] = json.loads(text[1:]).get("sid")
            await send(message)

        async def guarded_receive() -> dict[str, Any]:
            message: dict[str, Any] = await receive()
            if message["type"] == "websocket.receive":
                size = len(message.get("bytes") or message.get("text") or "")
                if size > limit:
                    await self.protocol.refuse_oversized(session["sid"], size, "websocket", address)
                    # python-engineio's writer sends what is queued (the error, CLOSE), then closes.
                    return {"type": "websocket.disconnect", "code": 1009}
            elif message["type"] == "websocket.disconnect" and message.get("code") == 1009:
                await self.protocol.refuse_oversized(session["sid"], None, "websocket", address)
            return message

        return guarded_receive, watched_send


def _query(scope: dict[str, Any]) -> dict[str, str]:
    return {k: v[0] for k, v in urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1")).items()}


def _content_length(scope: dict[str, Any]) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            with contextlib.suppress(ValueError):
                return int(value)
    return None


def _client_address(scope: dict[str, Any]) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def _opens_engineio_session(scope: dict[str, Any]) -> bool:
    if scope["type"] not in ("http", "websocket") or not scope["path"].startswith("/socket.io"):
        return False
    return b"sid=" not in scope.get("query_string", b"")


def _collect(protocol: SignProtocol) -> Iterator[Metric]:
    """The server's counters, read from the same totals /healthz reports."""
    totals = protocol.totals
    yield counter("signstream_frames_received", "Frame events received", totals.frames)
    yield counter("signstream_predictions_sent", "Prediction events sent", totals.predictions)
    yield counter("signstream_frames_dropped", "Frames dropped because a client was behind", totals.dropped)
    yield counter("signstream_replies_stale", "Replies from an embedding older than MAX_STALENESS_MS", totals.stale)
    yield counter("signstream_replies_unsent", "Replies not sent because a client was not reading", totals.unsent)
    yield labelled_counter("signstream_errors", "Frame errors by code", "code", totals.errors_by_code)
    yield gauge("signstream_connected_clients", "Connected Socket.IO clients", len(protocol.clients))
    pipeline = protocol.pipeline
    if pipeline is not None:
        description = pipeline.recognizer.describe()
        yield info(
            "signstream_model",
            "The model being served",
            {"name": description.name, "provider": description.provider, **description.details},
        )


def drain_before_exit(protocol: SignProtocol, timeout: float, load: LoadState) -> None:
    """On SIGTERM/SIGINT uvicorn would close every connection at once. Run the protocol's drain
    first (tell clients, answer frames already received), then hand the signal to uvicorn's handler.
    A second signal goes straight to uvicorn (a second Ctrl-C forces the exit)."""
    if threading.current_thread() is not threading.main_thread():
        return  # signals can only be handled there (e.g. a server run in a test thread)
    loop = asyncio.get_running_loop()

    def drain_then_exit(signum: int, previous: Any) -> None:
        async def run() -> None:
            try:
                await protocol.drain(timeout)
            finally:
                _pass_on(signum, previous)

        load.drain = loop.create_task(run(), name="drain")

    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)

        def handler(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
            if protocol.closing:
                _pass_on(signum, previous, frame)
            else:
                protocol.closing = True
                loop.call_soon_threadsafe(drain_then_exit, signum, previous)

        signal.signal(sig, handler)


def _pass_on(signum: int, previous: Any, frame: FrameType | None = None) -> None:
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_DFL:
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)


def app_factory() -> socketio.ASGIApp:
    """uvicorn's `--factory` entry point (used by `cli serve`, also in each of several workers, which
    are fresh processes and need logging set up again)."""
    from service.logs import configure_logging
    from service.settings import load_settings

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)
