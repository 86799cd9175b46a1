"""The API described in one place: the Socket.IO events (the AsyncAPI document served at
`/asyncapi.json`, and a table in the OpenAPI description) and the HTTP response bodies, for the
OpenAPI description that `/schema` renders with Redoc. Redoc is vendored (service/static/vendor/,
with its licence files), so the docs work offline.

tests/test_docs.py checks the event names here against the handlers the server registers and the
events it emits, and the error codes against the ones the code raises.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict

from litestar import Router
from litestar.datastructures import ResponseHeader
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import RedocRenderPlugin

REDOC_JS = "/vendor/redoc.standalone.js"  # Redoc 2.5.4, MIT (vendor/redoc.LICENSE)
ASYNCAPI_PATH = "/asyncapi.json"

# Codes of the `error` event: per frame / option (the connection stays), then connection refusals.
FRAME_ERROR_CODES = ("bad_payload", "bad_id", "bad_base64", "empty_frame", "frame_too_large", "undecodable_image",
                     "image_too_large", "rate_limited", "internal", "bad_options")  # fmt: skip
REFUSAL_CODES = ("capacity", "unauthorized", "too_many_connections", "loading", "shutting_down")

_LABEL = {"type": "string", "description": "a gloss of GET /labels, or `none`"}
_SCORE = {"type": "number", "minimum": 0, "maximum": 1}
_ID = {
    "oneOf": [{"type": "integer"}, {"type": "string", "maxLength": 64}],
    "description": "the frame's own `id`, echoed",
}


@dataclass(frozen=True)
class Event:
    """One Socket.IO event of the default namespace `/`."""

    name: str
    sender: str  # "client" (the server handles it) or "server" (the server emits it)
    summary: str
    description: str
    payload: dict[str, Any]  # JSON Schema


EVENTS = (
    Event(
        "frame", "client", "A camera frame to recognise",
        "A JPEG or PNG (browsers send 640x480 `canvas.toBlob(..., 'image/jpeg', 0.8)` at ~25 fps). Every frame is "
        "answered with one `prediction`, or one `error` (then the stream goes on). At most `MAX_FPS` frames per "
        "second; frames over `MAX_FRAME_BYTES` get `frame_too_large`, and one Socket.IO message over 8 x "
        "`MAX_FRAME_BYTES` is refused by the transport (the connection is closed).",
        {
            "type": "object",
            "required": ["image"],
            "properties": {
                "image": {
                    "description": "base64 (a `data:image/jpeg;base64,` prefix is accepted), or the bytes as a "
                    "binary attachment",
                    "oneOf": [{"type": "string", "contentEncoding": "base64"}, {"type": "string", "format": "binary"}],
                },
                "id": {**_ID, "description": "optional; echoed in the reply (a longer string gets `bad_id`)"},
            },
        },
    ),
    Event(
        "subscribe", "client", "Opt in to `top` and `sign`",
        "Options for this connection (also accepted as the connect `auth` payload); keys not named keep their "
        "value, unknown keys are ignored. The acknowledgement, if asked for, is the options now in effect. "
        "Invalid values: `error` `bad_options`.",
        {
            "type": "object",
            "properties": {
                "topk": {"type": "integer", "minimum": 0, "description": "`top` in each prediction (0 = off)"},
                "signs": {"type": "boolean", "description": "`sign` events"},
            },
        },
    ),
    Event(
        "status", "server", "Connection status",
        "`{\"message\": \"ready\"}` on connect; `{\"message\": \"shutting down\", \"code\": \"shutdown\"}` on SIGTERM "
        "(frames already received are still answered, then the connection is closed and browsers reconnect).",
        {
            "type": "object",
            "required": ["message"],
            "properties": {"message": {"enum": ["ready", "shutting down"]}, "code": {"enum": ["shutdown"]}},
        },
    ),
    Event(
        "prediction", "server", "The answer to one frame",
        "`none`/0.0 until the window is full; `none` when the best probability is not above "
        "`PREDICTION_THRESHOLD`.",
        {
            "type": "object",
            "required": ["label", "score"],
            "properties": {
                "label": _LABEL,
                "score": _SCORE,
                "id": _ID,
                "top": {
                    "type": "array",
                    "description": "opted in (`topk` > 0): the most probable glosses, best first (`[]` until the "
                    "window is full)",
                    "items": {"type": "object", "properties": {"label": _LABEL, "score": _SCORE}},
                },
            },
        },
    ),
    Event(
        "error", "server", "A coded error",
        "For a frame or an option (rate-limited to `ERRORS_PER_SECOND`; the connection and the stream stay), "
        "or a refused connection (then the server disconnects).",
        {
            "type": "object",
            "required": ["message", "code"],
            "properties": {
                "message": {"type": "string"},
                "code": {"enum": [*FRAME_ERROR_CODES, *REFUSAL_CODES]},
                "id": _ID,
            },
        },
    ),
    Event(
        "sign", "server", "A recognised sign (opted in: `signs`)",
        "Once per occurrence of a gloss, right after the prediction that established it (`SIGN_ENTER_FRAMES` "
        "consecutive predictions scoring at least `SIGN_MIN_SCORE`).",
        {
            "type": "object",
            "required": ["label", "score", "start_ms", "end_ms", "transcript"],
            "properties": {
                "label": _LABEL,
                "score": _SCORE,
                "start_ms": {"type": "number", "description": "arrival of its first frame, ms since connecting"},
                "end_ms": {"type": "number", "description": "arrival of the frame that established it"},
                "transcript": {"type": "array", "items": {"type": "string"}, "description": "last signs, this last"},
            },
        },
    ),
)  # fmt: skip

CONNECT_AUTH: dict[str, Any] = {
    "type": "object",
    "description": "The Socket.IO connect `auth` payload (optional)",
    "properties": {
        "token": {"type": "string", "description": "with AUTH_TOKENS (or `?token=`, a bearer header, the cookie)"},
        "topk": {"type": "integer", "minimum": 0},
        "signs": {"type": "boolean"},
    },
}


def events(sender: str) -> list[str]:
    return [e.name for e in EVENTS if e.sender == sender]


def asyncapi(version: str) -> dict[str, Any]:
    """The AsyncAPI 2.6 document of the Socket.IO API (message name = event name)."""
    messages = {
        e.name: {"name": e.name, "title": e.name, "summary": e.summary, "description": e.description,
                 "payload": e.payload}
        for e in EVENTS
    }  # fmt: skip

    def refs(sender: str) -> list[dict[str, str]]:
        return [{"$ref": f"#/components/messages/{name}"} for name in events(sender)]

    return {
        "asyncapi": "2.6.0",
        "id": "urn:signstream:socketio",
        "info": {
            "title": "signstream Socket.IO API",
            "version": version,
            "description": "Socket.IO (v5 over Engine.IO v4) at the path `/socket.io`, websocket and polling "
            "transports. Each message is a Socket.IO event of that name in the default namespace `/`. Clients "
            "that send no `auth` and no `subscribe` get exactly the reference server's payloads.",
        },
        "servers": {
            "signstream": {
                "url": "{host}/socket.io",
                "protocol": "ws",
                "description": "the signstream server (Socket.IO path `/socket.io`; polling over http also works)",
                "variables": {"host": {"default": "localhost:8000"}},
            }
        },
        "defaultContentType": "application/json",
        "channels": {
            "/": {
                "description": "The default namespace. Connect `auth`: see components.schemas.ConnectAuth.",
                "publish": {
                    "operationId": "clientSends",
                    "summary": "Events a client sends",
                    "message": {"oneOf": refs("client")},
                },
                "subscribe": {
                    "operationId": "clientReceives",
                    "summary": "Events the server sends",
                    "message": {"oneOf": refs("server")},
                },
            },
        },
        "components": {"messages": messages, "schemas": {"ConnectAuth": CONNECT_AUTH}},
    }


def _events_table() -> str:
    rows = [f"| `{e.name}` | {e.sender} | {e.summary}: {e.description} |" for e in EVENTS]
    return "\n".join(["| event | sent by | what |", "|---|---|---|", *rows])


DESCRIPTION = f"""Real-time ASL recognition: clients stream camera frames over Socket.IO and get each
frame's recognised sign back.

* `/`: the demo page (camera in the browser; static files, no CDN).
* `/socket.io/`: the Socket.IO endpoint (Engine.IO v4, websocket and polling). Its events are described
  below and, with their payload schemas, in the AsyncAPI document at [{ASYNCAPI_PATH}]({ASYNCAPI_PATH}).
* `/schema`: this page; `/schema/openapi.json`: the OpenAPI description.

With `AUTH_TOKENS` set, every HTTP path except `/healthz`, `/readyz` and `/metrics` needs a token
(`Authorization: Bearer <token>` or `?token=<token>`, which also sets a cookie for the page's own
requests), else `401 {{"code": "unauthorized"}}`; Socket.IO connections need one too.

## Socket.IO events

{_events_table()}
"""


# The docs pages load nothing from elsewhere: Redoc's own attribution logo (an <img> from its CDN, which
# hides itself when it cannot load) is blocked by the browser, offline or not.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'"
)


def openapi_config(version: str) -> OpenAPIConfig:
    """`/schema` (Redoc), `/schema/redoc`, `/schema/openapi.json`."""
    router = Router(
        "/schema",
        route_handlers=[],
        include_in_schema=False,
        response_headers=[ResponseHeader(name="content-security-policy", value=DOCS_CSP)],
    )
    return OpenAPIConfig(
        title="signstream",
        version=version,
        description=DESCRIPTION,
        use_handler_docstrings=True,
        openapi_router=router,
        render_plugins=[
            RedocRenderPlugin(
                path=["/", "/redoc"], js_url=REDOC_JS, google_fonts=False, favicon="<link rel='icon' href='data:,'>"
            )
        ],
    )


# Response bodies, for the OpenAPI description (the handlers build plain dicts).


class Staleness(TypedDict):
    max: float
    mean: float


class Health(TypedDict):
    status: str  # "ok"
    model: str  # "Sequential", as the reference server answered
    model_name: str
    provider: str
    recognizer: dict[str, str]  # what the recogniser says of itself, e.g. {"encoder": "int8"}
    version: str
    clients: int
    frames: int
    predictions: int
    dropped: int
    unsent: int
    errors: int
    staleness_ms: Staleness
    stale: int


class Loading(TypedDict):
    status: str  # "loading", or "failed" with `error`
    error: NotRequired[str]


class Ready(TypedDict):
    ready: bool
    model: NotRequired[str]
    error: NotRequired[str | None]
