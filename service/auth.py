"""Optional token auth (AUTH_TOKENS / AUTH_TOKENS_FILE), one check for HTTP and Socket.IO.

A client proves itself with any of: the Socket.IO `auth` payload `{"token": ...}`, `?token=` in the
URL (simple clients), `Authorization: Bearer ...`, or the cookie the demo page gets when it is opened
with `?token=` (so the browser's asset and Socket.IO requests carry it). Tokens are compared in
constant time and never logged (service/logs.py redacts `token=` from every log line).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterable, Mapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

COOKIE = "signstream_token"
# Health checks and scrapers carry no token.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
UNAUTHORIZED_MESSAGE = "A valid token is required (auth payload {'token': ...} or ?token=)"

ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]


class Tokens:
    def __init__(self, tokens: Iterable[str]) -> None:
        self._tokens = tuple(t.encode() for t in tokens)

    @property
    def required(self) -> bool:
        return bool(self._tokens)

    def valid(self, candidate: str | None) -> bool:
        """Compares against every token, so the time taken does not say which one (nearly) matched."""
        if candidate is None:
            return False
        given = candidate.encode()
        matched = False
        for token in self._tokens:
            matched |= hmac.compare_digest(given, token)
        return matched


def token_from_request(query_string: str, authorization: str | None, cookie: str | None) -> str | None:
    """The token a plain HTTP request (or a Socket.IO handshake) carries, if any."""
    query = parse_qs(query_string).get("token")
    if query:
        return query[0]
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    if cookie:
        morsel = SimpleCookie(cookie).get(COOKIE)
        if morsel is not None:
            return morsel.value
    return None


def token_from_connect(environ: Mapping[str, Any], auth: Any) -> str | None:
    """The token of a Socket.IO connect: the `auth` payload first, then the handshake request."""
    if isinstance(auth, dict) and isinstance(auth.get("token"), str):
        return str(auth["token"])
    return token_from_request(
        environ.get("QUERY_STRING", ""), environ.get("HTTP_AUTHORIZATION"), environ.get("HTTP_COOKIE")
    )


def require_token(app: ASGIApp, tokens: Tokens) -> ASGIApp:
    """ASGI middleware for the HTTP app: 401 without a valid token, except on PUBLIC_PATHS. A valid
    `?token=` sets the cookie, so a browser that opened `/?token=...` can load the page's assets."""
    if not tokens.required:
        return app

    async def guarded(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        query_string = scope.get("query_string", b"").decode("latin-1")
        token = token_from_request(query_string, headers.get("authorization"), headers.get("cookie"))
        if not tokens.valid(token):
            await _unauthorized(send)
            return
        if "token" not in parse_qs(query_string):  # not given in the URL: nothing to remember
            await app(scope, receive, send)
            return

        async def send_with_cookie(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                cookie = f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie.encode())]}
            await send(message)

        await app(scope, receive, send_with_cookie)

    return guarded


async def _unauthorized(send: Callable[[Any], Awaitable[None]]) -> None:
    body = b'{"code":"unauthorized","message":"a valid token is required (Authorization: Bearer, or ?token=)"}'
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
