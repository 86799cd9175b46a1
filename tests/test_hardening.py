"""Auth tokens, per-client limits, structured logs and graceful shutdown, against real servers."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from harness.peer import Peer, refused
from harness.servers import ServerProcess, start_default_server, start_server
from service.auth import Tokens

TOKENS = ("tok-alpha-1", "tok-beta-2")


def test_tokens_match_only_exactly() -> None:
    tokens = Tokens(TOKENS)
    assert tokens.required and tokens.valid("tok-beta-2")
    assert not any(tokens.valid(t) for t in (None, "", "tok-beta-", "tok-beta-22", "TOK-BETA-2"))
    assert not Tokens(()).required


async def test_auth_tokens_guard_socketio_and_http_but_not_health(
    model_dir: Path, hello_jpegs: list[bytes], tmp_path: Path
) -> None:
    token_file = tmp_path / "tokens"
    token_file.write_text(f"# one per line\n{TOKENS[1]}\n")
    running = start_server(model_dir, AUTH_TOKENS=TOKENS[0], AUTH_TOKENS_FILE=str(token_file))
    try:
        for auth, url in ((None, running.url), ({"token": "wrong"}, running.url), (None, f"{running.url}?token=no")):
            assert (await refused(url, auth=auth))["code"] == "unauthorized"

        async with Peer(running.url, auth={"token": TOKENS[0], "topk": 2}) as peer:  # auth payload
            assert await peer.expect("status") == {"message": "ready"}
            assert "top" in await peer.predict(hello_jpegs[0])
        async with Peer(f"{running.url}?token={TOKENS[1]}", transports=["polling"]) as peer:  # token file, query
            assert await peer.expect("status") == {"message": "ready"}
            assert "label" in await peer.predict(hello_jpegs[0])

        for public in ("/healthz", "/readyz", "/metrics"):
            assert httpx.get(running.url + public).status_code == 200
        denied = httpx.get(f"{running.url}/labels")
        assert denied.status_code == 401 and denied.json()["code"] == "unauthorized"
        assert httpx.get(f"{running.url}/", params={"token": "wrong"}).status_code == 401
        bearer = httpx.get(f"{running.url}/labels", headers={"Authorization": f"Bearer {TOKENS[1]}"})
        assert bearer.status_code == 200
        with httpx.Client(base_url=running.url) as browser:  # the demo page: ?token= once, then a cookie
            assert browser.get("/", params={"token": TOKENS[0]}).status_code == 200
            assert browser.get("/app.js").status_code == 200
    finally:
        output = running.stop()
    assert "Tokens" not in output and not any(token in output for token in TOKENS)  # never logged
    assert "token=[redacted]" in output


async def test_frame_rate_and_connections_per_ip_are_limited(model_dir: Path, hello_jpegs: list[bytes]) -> None:
    running = start_server(
        model_dir, MAX_FPS="10", MAX_CONNECTIONS_PER_IP="2", ERRORS_PER_SECOND="1000", MAX_FRAME_PIXELS="400000"
    )
    try:
        async with Peer(running.url) as first, Peer(running.url) as second:
            await first.expect("status")
            await second.expect("status")
            assert (await refused(running.url))["code"] == "too_many_connections"

            payload = base64.b64encode(hello_jpegs[0]).decode()
            started = time.monotonic()
            for i in range(40):  # as fast as the socket takes them: far above 10 frames/s
                await first.sio.emit("frame", {"image": payload, "id": i})
            replies = {"prediction": 0, "rate_limited": 0}
            for _ in range(40):
                event, data = await first.next()
                replies["prediction" if event == "prediction" else data["code"]] += 1
            elapsed = time.monotonic() - started
            # A burst of one second's worth (10) plus 10 per second elapsed; the rest are refused.
            assert replies["rate_limited"] >= 40 - (10 + 10 * elapsed) - 1 and replies["rate_limited"] > 0
            assert replies["prediction"] >= 10
            await asyncio.sleep(0.3)
            assert "label" in await first.predict(hello_jpegs[1])  # refused frames don't end the stream
            assert "label" in await second.predict(hello_jpegs[1])  # and don't touch other clients
            wide = cv2.imencode(".jpg", np.zeros((500, 1000, 3), np.uint8))[1].tobytes()  # 500,000 pixels
            await second.send_jpeg(wide)
            assert (await second.expect("error"))["code"] == "image_too_large"
        async with Peer(running.url) as again:  # the address's places are freed on disconnect
            assert await again.expect("status") == {"message": "ready"}
        codes = httpx.get(f"{running.url}/metrics").text
        assert 'signstream_errors_total{code="rate_limited"}' in codes
    finally:
        running.stop()


async def test_json_logs_carry_the_session_id_and_no_frame_data(model_dir: Path, hello_jpegs: list[bytes]) -> None:
    running = start_server(model_dir, LOG_FORMAT="json", LOG_LEVEL="debug")
    try:
        async with Peer(running.url) as peer:
            await peer.expect("status")
            await peer.predict(hello_jpegs[0])
            await peer.sio.emit("frame", {"image": "@@@"})
            await peer.expect("error")
            sid = peer.sio.get_sid()
    finally:
        output = running.stop()
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    about_client = [line for line in lines if sid in line["message"]]
    assert len(about_client) >= 2 and all(line.get("sid") == sid for line in about_client)
    assert base64.b64encode(hello_jpegs[0]).decode()[:40] not in output


# A frame sent this long before its client was told may be assumed to have reached the server: later ones
# may still be on their way (a polling client's next POST, a busy event loop) when it closes the connection.
IN_TRANSIT_S = 0.25


@pytest.mark.parametrize("model", ["wlasl20c", "landmarks"])
async def test_sigterm_tells_clients_answers_received_frames_and_exits_in_bounded_time(
    model_dir: Path, hello_jpegs: list[bytes], model: str
) -> None:
    """Both in the default sampling mode: the WLASL20c fixture, and the defaults themselves (the landmark
    model; SHUTDOWN_TIMEOUT is 5 s by default).

    Every frame sent well before the client was told (`status` shutdown) must be answered. "Told" is when
    the status reaches the client's handler: this test used to take it when it got round to reading the
    polling client's queue, after the websocket client had disconnected, so it counted frames sent after
    the status (and after the server closed) as sent before it: the one unexplained failure in ~45 runs.
    A fixed slack of the last 2 frames stood for the frames in transit; it is IN_TRANSIT_S now."""
    running = start_server(model_dir, SHUTDOWN_TIMEOUT="5") if model == "wlasl20c" else start_default_server()
    peers = [Peer(running.url), Peer(running.url, transports=["polling"])]
    replies: dict[int, list[object]] = {0: [], 1: []}
    sent_at: dict[int, dict[int, float]] = {0: {}, 1: {}}
    told_at: dict[int, float] = {}

    def on_status(n: int, peer: Peer) -> Callable[[Any], Awaitable[None]]:
        async def record(data: Any) -> None:
            if isinstance(data, dict) and data.get("code") == "shutdown":
                told_at[n] = time.monotonic()
            await peer.events.put(("status", data))

        return record

    try:
        for n, peer in enumerate(peers):
            peer.sio.on("status", on_status(n, peer))
            await peer.__aenter__()
            await peer.expect("status")

        async def stream(n: int, peer: Peer) -> None:
            for i, jpeg in enumerate(hello_jpegs[:200]):
                if not peer.sio.connected:
                    return
                started = time.monotonic()
                await peer.sio.emit("frame", {"image": base64.b64encode(jpeg).decode(), "id": i})
                sent_at[n][i] = started
                await asyncio.sleep(0.04)

        streams = [asyncio.create_task(stream(n, p)) for n, p in enumerate(peers)]
        await asyncio.sleep(1.5)
        terminated = time.monotonic()
        running.process.terminate()
        statuses = []
        for n, peer in enumerate(peers):
            while True:
                event, data = await peer.next(timeout=10)
                if event == "status":
                    statuses.append(data)
                    break
                replies[n].append(data["id"])
            # Everything the client sent well before it was told has been answered (or is being).
            await asyncio.wait_for(peer.disconnected.wait(), 10)
            while not peer.events.empty():
                event, data = peer.events.get_nowait()
                if event == "prediction":
                    replies[n].append(data["id"])
            before = sorted(i for i, t in sent_at[n].items() if t < told_at[n] - IN_TRANSIT_S)
            assert len(before) >= 20, f"client {n}: only {len(before)} frames sent before the SIGTERM"
            missing = sorted(set(before) - set(replies[n]))
            assert not missing, f"client {n} lost frames {missing} of {len(before)} sent before the status"
        exit_code = running.process.wait(timeout=15)
        exit_seconds = time.monotonic() - terminated
        await asyncio.gather(*streams, return_exceptions=True)
    finally:
        output = running.stop()
    assert statuses == [{"message": "shutting down", "code": "shutdown"}] * 2, output[-3000:]
    assert exit_code in (0, -15) and exit_seconds < 5 + 3, output[-2000:]
    assert "Traceback" not in output, output[-5000:]
    print(f"\nSIGTERM -> exit in {exit_seconds:.2f} s; replies {len(replies[0])} ws, {len(replies[1])} polling")


async def test_sigterm_waits_for_a_frame_answered_outside_the_worker(model_dir: Path, hello_jpegs: list[bytes]) -> None:
    """With sampling (the default), a frame that is not sampled is decoded and answered without the
    worker, so neither `pending` nor `busy` showed it: the drain closed the connection while it was being
    decoded, and its reply was lost (12 frames received, 11 answered).
    A flat 4096x4096 PNG (60 KB, the largest image allowed) decodes for 180-420 ms here, long enough to be
    caught by the SIGTERM (a 3000x3000 JPEG, 40-180 ms, caught it in 1 of 3 runs only)."""
    large = cv2.imencode(".png", np.full((4096, 4096, 3), 128, np.uint8))[1].tobytes()
    running = start_server(model_dir)
    try:
        async with Peer(running.url) as peer:
            await peer.expect("status")
            for i in range(10):  # a full window: from here on frames are sampled at 8/s
                await peer.sio.emit("frame", {"image": hello_jpegs[i], "id": i})
                await peer.expect("prediction")
            await peer.sio.emit("frame", {"image": hello_jpegs[10], "id": "before"})
            await peer.sio.emit("frame", {"image": large, "id": "not sampled"})  # 1 ms later: not due
            deadline = time.monotonic() + 5
            while httpx.get(f"{running.url}/healthz").json()["frames"] < 12:  # both received
                assert time.monotonic() < deadline
                await asyncio.sleep(0.002)  # (the client sends from this event loop)
            running.process.terminate()
            await asyncio.wait_for(peer.disconnected.wait(), 10)
            answers = []
            while not peer.events.empty():
                event, data = peer.events.get_nowait()
                answers.append((event, data.get("id", data.get("code"))))
    finally:
        output = running.stop()
    assert ("prediction", "not sampled") in answers, (answers, output[-2000:])


def _raw_polling_session(http: httpx.Client, url: str) -> str:
    """Open an Engine.IO polling session by hand and connect Socket.IO on it; its URL."""
    base = f"{url}/socket.io/?EIO=4&transport=polling"
    sid = json.loads(http.get(base).text[1:])["sid"]  # Engine.IO open packet: 0{"sid": ...}
    session = f"{base}&sid={sid}"
    assert http.post(session, content="40").status_code == 200  # Socket.IO connect
    return session


def test_a_polling_client_between_two_polls_still_gets_the_shutdown_status(model_dir: Path) -> None:
    """The cause of the SIGTERM test's rare failure (1 of 2 clean-clone CI runs, a polling client got no
    `status`): the drain queued the status, found no frame to answer and closed the session at once;
    python-engineio answers the next GET on a closed session with 400, so what was queued never left
    (and the server had exited 0.5 s later). The drain now waits, within SHUTDOWN_TIMEOUT, until every
    client's queue has been taken. Here a raw polling client holds its next GET back for 0.5 s."""
    running = start_server(model_dir)
    try:
        with httpx.Client(timeout=10) as http:
            session = _raw_polling_session(http, running.url)
            assert "ready" in http.get(session).text  # the connect ack and the ready status
            running.process.terminate()
            time.sleep(0.5)
            late = http.get(session)
        assert late.status_code == 200 and '"code":"shutdown"' in late.text.replace(" ", ""), late.text
    finally:
        output = running.stop()
    assert "Traceback" not in output, output[-3000:]


def test_a_post_to_a_session_the_server_has_closed_is_refused_without_a_traceback(model_dir: Path) -> None:
    """python-engineio answers a GET for a session it has closed but not yet forgotten with 400, but a POST
    with a 500 and a KeyError traceback in the log. Seen in the SIGTERM test (1 of 12 runs on the default
    model): a polling client's frame on its way when the drain closed its session. Here the session is
    closed by the transport-limit refusal, and the next POST comes before any GET."""
    running = start_server(model_dir, MAX_FRAME_BYTES="100000")  # the transport limit is then 1 MB
    try:
        with httpx.Client(timeout=10) as http:
            session = _raw_polling_session(http, running.url)
            assert http.post(session, content=b"4" + b"x" * 1_100_000).status_code == 413  # closes the session
            late = http.post(session, content='42["frame",{"image":"x"}]')
        assert late.status_code == 400, late.text
    finally:
        output = running.stop()
    assert "Traceback" not in output, output[-3000:]


def test_a_draining_server_refuses_new_connections_with_a_code() -> None:
    """The drain itself takes milliseconds when clients are idle, too short to race a real connect
    against; the refusal is checked on the protocol object the server uses."""
    import socketio

    from service.metrics import Metrics
    from service.protocol import SignProtocol
    from service.settings import Settings

    protocol = SignProtocol(socketio.AsyncServer(async_mode="asgi"), Settings(), Metrics())
    environ = {"asgi.scope": {"client": ("10.0.0.7", 5000)}}
    assert protocol._refusal("10.0.0.7", environ, None) is None
    protocol.closing = True
    assert protocol._refusal("10.0.0.7", environ, None) == (
        "shutting_down",
        "Server is shutting down, please reconnect",
    )


async def test_a_frame_event_with_extra_arguments_gets_a_coded_error(any_server: ServerProcess) -> None:
    """Found by fuzzing: `emit("frame", a, b)` used to raise inside the handler and get no answer."""
    server = any_server
    async with Peer(server.url) as peer:
        await peer.expect("status")
        await peer.sio.emit("frame", ({"image": "x", "id": 7}, 2))
        assert await peer.expect("error") == {"message": "a frame is one object", "code": "bad_payload", "id": 7}
        assert peer.sio.connected
