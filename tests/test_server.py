"""The client contract of SPEC section 1, against a real `cli serve` process and real Socket.IO clients."""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import time
from pathlib import Path
from typing import cast

import cv2
import httpx
import numpy as np
import pytest

from harness.peer import Peer, refused
from harness.servers import ROOT, ServerProcess, start_default_server, start_server
from service.arrays import ImageBGR
from tests.conftest import full_onnx_probabilities

LABELS = ["book", "chair", "clothes", "computer", "drink", "drum", "family", "football", "go", "hat", "hello",
          "kiss", "like", "play", "school", "street", "table", "university", "violin", "wall"]  # fmt: skip


def test_healthz_and_labels(any_server: ServerProcess) -> None:
    server = any_server
    health = httpx.get(f"{server.url}/healthz").json()
    assert health["status"] == "ok" and health["model"] == "Sequential"
    assert health["model_name"] == server.model_name
    if server.model_name == "WLASL20c":  # the fixture's fp32 encoder (ENCODER_VARIANT=fp32)
        assert health["recognizer"] == {"encoder": "fp32"}
    else:  # the landmark model says what it is made of, and has no encoder to report
        sequence = json.loads((ROOT / "model" / "landmarks" / "sequence.json").read_text())
        assert health["recognizer"]["sequence_sha256"] == sequence["sequence_onnx_sha256"][:12]
        assert "hand_landmark" in health["recognizer"]["front_end"] and "encoder" not in health["recognizer"]
    # EXECUTION_PROVIDER=auto (the default): CUDA where onnxruntime offers it, else the CPU.
    import onnxruntime as ort

    cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    assert health["provider"] == ("CUDAExecutionProvider" if cuda else "CPUExecutionProvider")
    assert f'provider="{health["provider"]}"' in httpx.get(f"{server.url}/metrics").text
    assert httpx.get(f"{server.url}/labels").json() == {str(i): g for i, g in enumerate(LABELS)}


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_every_frame_is_answered_with_the_prediction_of_its_own_window(
    server: ServerProcess, model_dir: Path, hello_jpegs: list[bytes], transport: str
) -> None:
    frames = hello_jpegs[:14]
    async with Peer(server.url, [transport]) as peer:
        assert await peer.expect("status") == {"message": "ready"}
        for i, jpeg in enumerate(frames):
            prediction = await peer.predict(jpeg)
            if i < 9:
                assert prediction == {"label": "none", "score": 0.0}
                continue
            expected = full_onnx_probabilities(model_dir, frames[i - 9 : i + 1])
            best = int(expected.argmax())
            assert prediction["score"] == pytest.approx(float(expected[best]), abs=1e-4)
            assert prediction["label"] == (LABELS[best] if expected[best] > 0.5 else "none")


async def test_data_url_png_and_binary_frames_are_accepted(any_server: ServerProcess, hello_jpegs: list[bytes]) -> None:
    server = any_server
    image = cast(ImageBGR, cv2.imdecode(np.frombuffer(hello_jpegs[0], np.uint8), cv2.IMREAD_COLOR))
    png = cv2.imencode(".png", image)[1].tobytes()
    async with Peer(server.url) as peer:
        await peer.expect("status")
        await peer.predict(hello_jpegs[0], data_url=True)
        await peer.predict(hello_jpegs[1], binary=True)
        await peer.sio.emit("frame", {"image": base64.b64encode(png).decode()})
        assert (await peer.expect("prediction"))["label"] == "none"


async def test_bad_frames_get_coded_errors_and_the_stream_goes_on(model_dir: Path, hello_jpegs: list[bytes]) -> None:
    running = start_server(
        model_dir, WINDOW_SECONDS="0", EMBEDDINGS_PER_SECOND="0", ENCODER_VARIANT="fp32", ERRORS_PER_SECOND="1000"
    )
    bad = [
        ({"image": base64.b64encode(b"garbage bytes").decode()}, "undecodable_image"),
        ({"image": base64.b64encode(hello_jpegs[0][:500]).decode()}, "undecodable_image"),
        ({"image": ""}, "empty_frame"),
        ({"image": 12345}, "bad_payload"),
        ({"picture": "x"}, "bad_payload"),
        ("not an object", "bad_payload"),
        ({"image": "***"}, "bad_base64"),
    ]
    try:
        async with Peer(running.url) as peer:
            await peer.expect("status")
            good = hello_jpegs[:12]
            for i, jpeg in enumerate(good):
                if i == 5:  # bad frames in the middle of the window must not disturb it
                    for payload, code in bad:
                        await peer.sio.emit("frame", payload)
                        error = await peer.expect("error")
                        assert error["code"] == code and error["message"]
                prediction = await peer.predict(jpeg)
            expected = full_onnx_probabilities(model_dir, good[-10:])
            assert prediction["score"] == pytest.approx(float(expected.max()), abs=1e-4)
            assert peer.sio.connected
    finally:
        running.stop()


async def test_errors_are_rate_limited_and_the_client_stays_connected(
    any_server: ServerProcess, hello_jpegs: list[bytes]
) -> None:
    server = any_server
    async with Peer(server.url) as peer:
        await peer.expect("status")
        # 20 bad frames and a good one: within the default MAX_FPS burst (30), so the good one is not
        # refused for its rate (that refusal would itself be an error, and errors are rate-limited).
        for _ in range(20):
            await peer.sio.emit("frame", {"image": "@@@"})
        await peer.send_jpeg(hello_jpegs[0])
        errors = 0
        while True:
            event, prediction = await peer.next()
            if event == "prediction":
                break
            errors += 1
        assert prediction == {"label": "none", "score": 0.0}
        assert errors <= 4  # 2 per second with a burst of 2; 20 bad frames would be 20 errors
        assert peer.sio.connected


async def test_capacity(model_dir: Path) -> None:
    running = start_server(model_dir, MAX_CLIENTS="2")
    try:
        async with Peer(running.url) as first, Peer(running.url) as second:
            await first.expect("status")
            await second.expect("status")
            error = await refused(running.url)
            assert error["message"] == "Server at capacity, please try again later"
        async with Peer(running.url) as again:  # places are freed on disconnect
            assert await again.expect("status") == {"message": "ready"}
    finally:
        running.stop()


async def test_a_flooding_client_loses_its_oldest_frames_not_the_newest(
    server: ServerProcess, hello_jpegs: list[bytes]
) -> None:
    before = httpx.get(f"{server.url}/healthz").json()
    async with Peer(server.url) as peer:
        await peer.expect("status")
        for jpeg in hello_jpegs[:60]:
            await peer.send_jpeg(jpeg)
        predictions = 0
        while True:
            try:
                event, _ = await peer.next(timeout=3)
            except TimeoutError:
                break
            predictions += event == "prediction"
    after = httpx.get(f"{server.url}/healthz").json()
    dropped = after["dropped"] - before["dropped"]
    assert after["frames"] - before["frames"] == 60
    assert predictions + dropped == 60 and predictions >= 2


@pytest.mark.parametrize(("model", "max_staleness_ms"), [("wlasl20c", 200), ("landmarks", 130)])
async def test_sampled_embeddings_answer_every_paced_frame_freshly(
    model_dir: Path, hello_jpegs: list[bytes], model: str, max_staleness_ms: int
) -> None:
    """~8 embeddings/s per client, every 25 fps frame still answered, and the newest embedding behind
    each answer is at most MAX_STALENESS_MS older than the frame it answers. With the shipped landmark
    model a frame takes longer to encode than the 40 ms between frames, so at 130 ms (just above the
    125 ms sampling interval) this holds only because replies wait for the embedding in flight."""
    folder = model_dir if model == "wlasl20c" else ROOT / "model"
    running = start_server(folder, MODEL=model, MAX_STALENESS_MS=str(max_staleness_ms))
    try:
        async with Peer(running.url) as peer:
            await peer.expect("status")
            start = asyncio.get_running_loop().time()
            for i, jpeg in enumerate(hello_jpegs[:50]):
                await asyncio.sleep(max(0.0, start + i / 25 - asyncio.get_running_loop().time()))
                await peer.sio.emit("frame", {"image": base64.b64encode(jpeg).decode(), "id": i})
            replies = [await peer.expect("prediction") for _ in range(50)]
        # Frames that are not sampled are answered at once, so they may overtake a sampled frame
        # still being encoded: every frame gets exactly one reply, matched by id.
        assert sorted(r["id"] for r in replies) == list(range(50))
        assert any(r["score"] > 0 for r in replies)
        health = httpx.get(f"{running.url}/healthz").json()
        assert health["predictions"] == 50 and health["dropped"] == 0
        assert 0 <= health["staleness_ms"]["max"] <= max_staleness_ms and health["stale"] == 0
    finally:
        running.stop()


def scrape(url: str) -> dict[str, float]:
    """/metrics as {sample name with labels: value}."""
    text = httpx.get(f"{url}/metrics").text
    samples = (line.rpartition(" ") for line in text.splitlines() if line and line[0] != "#")
    return {name: float(value) for name, _, value in samples}  # label values may hold spaces


async def test_readyz_and_prometheus_metrics(any_server: ServerProcess, hello_jpegs: list[bytes]) -> None:
    """Counted from before to after this test's own traffic (3 frames answered, 1 bad one): the session
    server has served other tests already, so absolute counts would be met by their traffic."""
    server = any_server
    assert httpx.get(f"{server.url}/readyz").json()["ready"] is True
    bad = 'signstream_errors_total{code="bad_base64"}'
    deadline = time.monotonic() + 5  # at rest first: an earlier test's client may still be disconnecting
    while httpx.get(f"{server.url}/healthz").json()["clients"] and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    before = scrape(server.url)
    async with Peer(server.url) as peer:
        await peer.expect("status")
        for jpeg in hello_jpegs[:3]:
            await peer.predict(jpeg)
        await peer.sio.emit("frame", {"image": "@@@"})
        await peer.expect("error")
        during = scrape(server.url)
        clients_during = httpx.get(f"{server.url}/healthz").json()["clients"]
    after = scrape(server.url)
    health = httpx.get(f"{server.url}/healthz").json()  # after the scrape, nothing sent in between

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert delta("signstream_frames_received_total") == 4
    assert delta("signstream_predictions_sent_total") == 3
    assert delta(bad) == 1
    assert delta("signstream_frame_to_prediction_seconds_count") == 3
    # Each of the 3 frames is encoded (reference mode encodes every frame; with sampling, every frame is
    # taken until the first window), one at a time (the next is sent after the reply): 3 batches of one
    # frame in the per-frame session that runs once per frame (WLASL20c's encoder, the landmark pose model).
    per_frame = '{session="encoder"}' if server.model_name == "WLASL20c" else '{session="pose"}'
    assert delta(f"signstream_session_batch_size_count{per_frame}") == 3
    assert delta(f"signstream_session_batch_size_sum{per_frame}") == 3
    assert before["signstream_connected_clients"] == 0
    assert during["signstream_connected_clients"] == 1 == clients_during
    # One source of truth: /metrics and /healthz read the same totals.
    assert after["signstream_frames_received_total"] == health["frames"]
    assert after["signstream_predictions_sent_total"] == health["predictions"]
    text = httpx.get(f"{server.url}/metrics").text
    info = next(line for line in text.splitlines() if line.startswith("signstream_model_info{"))
    assert f'name="{server.model_name}"' in info and f'provider="{health["provider"]}"' in info
    assert ('encoder="fp32"' in info) == (server.model_name == "WLASL20c")  # no encoder guessed for landmarks


def broken_jpegs(jpeg: bytes) -> list[bytes]:
    """Frames with a real JPEG header that cv2.imdecode cannot decode: the JPEG cut to a quarter, and
    its header (up to the start of scan) followed by random bytes."""
    start_of_scan = jpeg.find(b"\xff\xda")
    noise = np.random.default_rng(7).integers(0, 256, len(jpeg), dtype=np.uint8).tobytes()
    return [jpeg[: len(jpeg) // 4], jpeg[:start_of_scan] + noise]


@pytest.mark.parametrize("model", ["wlasl20c", "landmarks"])
async def test_a_broken_frame_gets_an_error_whether_it_is_sampled_or_not(
    model_dir: Path, hello_jpegs: list[bytes], model: str
) -> None:
    """With sampling on (the default EMBEDDINGS_PER_SECOND), most frames are not encoded, but every
    frame is decoded: a broken one is answered with `undecodable_image` however it was scheduled."""
    from service.frames import FrameError, check_image_header, decode_image

    broken = broken_jpegs(hello_jpegs[0])
    for data in broken:  # the local oracle: the header passes, the decode does not
        check_image_header(data)
        with pytest.raises(FrameError, match="could not be decoded"):
            decode_image(data)
    # The WLASL20c fixture in the default sampling mode, and the defaults themselves (the landmark model);
    # limits raised in both: 50 errors in 2 s, 50 frames/s.
    if model == "wlasl20c":
        running = start_server(model_dir, ERRORS_PER_SECOND="1000", MAX_FPS="1000")
    else:
        running = start_default_server(ERRORS_PER_SECOND="1000", MAX_FPS="1000")
    try:
        async with Peer(running.url) as peer:
            await peer.expect("status")
            start = asyncio.get_running_loop().time()
            sent_broken: list[str] = []
            for i, jpeg in enumerate(hello_jpegs[:50]):
                await asyncio.sleep(max(0.0, start + i / 25 - asyncio.get_running_loop().time()))
                await peer.sio.emit("frame", {"image": jpeg, "id": i})
                bad = broken[i % 2]
                await peer.sio.emit("frame", {"image": bad, "id": f"broken-{i}"})
                sent_broken.append(f"broken-{i}")
            replies = [await peer.next() for _ in range(100)]
        answers = {data["id"]: data.get("code", event) for event, data in replies}
        assert len(answers) == 100
        assert {i: answers[i] for i in range(50)} == dict.fromkeys(range(50), "prediction")
        assert {b: answers[b] for b in sent_broken} == dict.fromkeys(sent_broken, "undecodable_image")
        health = httpx.get(f"{running.url}/healthz").json()
        assert health["predictions"] == 50 and health["errors"] == 50
    finally:
        running.stop()


def test_head_healthz_and_the_metrics_content_type(any_server: ServerProcess) -> None:
    server = any_server
    head = httpx.head(f"{server.url}/healthz")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-type"] == httpx.get(f"{server.url}/healthz").headers["content-type"]
    content_type = httpx.get(f"{server.url}/metrics").headers["content-type"]
    assert content_type.startswith("text/plain; version=0.0.4") and content_type.count("charset=utf-8") == 1


async def test_an_over_long_frame_id_gets_a_coded_error(any_server: ServerProcess, hello_jpegs: list[bytes]) -> None:
    server = any_server
    async with Peer(server.url) as peer:
        await peer.expect("status")
        await peer.sio.emit("frame", {"image": hello_jpegs[0], "id": "x" * 65})
        error = await peer.expect("error")
        assert error["code"] == "bad_id" and "64" in error["message"] and "id" not in error
        await peer.sio.emit("frame", {"image": hello_jpegs[0], "id": "y" * 64})  # the longest allowed
        assert (await peer.expect("prediction"))["id"] == "y" * 64
        assert peer.sio.connected


def connected_clients(url: str) -> tuple[int, float]:
    """(/healthz clients, /metrics signstream_connected_clients)."""
    metrics = httpx.get(f"{url}/metrics").text
    gauge = next(line for line in metrics.splitlines() if line.startswith("signstream_connected_clients "))
    return httpx.get(f"{url}/healthz").json()["clients"], float(gauge.split()[1])


async def test_a_polling_client_that_disconnects_cleanly_stops_counting_at_once(
    model_dir: Path, hello_jpegs: list[bytes]
) -> None:
    """The long-poll a polling client leaves open is answered as soon as it disconnects: python-socketio's
    clean disconnect used to wait for it until the ping interval + timeout (85 s by default), which is
    why clients (the load generator among them) aborted instead, and an aborted client never tells the
    server: it stayed counted until the ping timeout."""
    import socketio

    running = start_server(model_dir)  # the default ping interval (25 s) and timeout (60 s)
    try:
        replies: asyncio.Queue[str] = asyncio.Queue()
        for _ in range(2):  # a second client on the same server, after the first one's session is gone
            sio = socketio.AsyncClient(reconnection=False)
            for name in ("status", "prediction"):
                sio.on(name, functools.partial(lambda name, data: replies.put_nowait(name), name))
            await sio.connect(running.url, transports=["polling"], wait_timeout=10)
            assert await asyncio.wait_for(replies.get(), 10) == "status"
            await sio.emit("frame", {"image": hello_jpegs[0]})
            assert await asyncio.wait_for(replies.get(), 10) == "prediction"
            assert connected_clients(running.url) == (1, 1.0)
            await asyncio.wait_for(sio.disconnect(), 5)
            assert connected_clients(running.url) == (0, 0.0)
    finally:
        running.stop()


async def test_a_polling_load_test_leaves_no_client_counted(model_dir: Path, hello_jpegs: list[bytes]) -> None:
    from service.loadgen import run_load

    running = start_server(model_dir, MAX_FPS="1000")
    try:
        result = await asyncio.wait_for(
            run_load(running.url, hello_jpegs[:20], clients=3, fps=10, seconds=1, transport="polling"), 60
        )
        assert result.refused_clients == 0 and result.replies == result.sent == 30
        assert connected_clients(running.url) == (0, 0.0)  # right after the load generator returns
    finally:
        running.stop()
