"""Fuzzing the frame path (issue #6): whatever a client sends as a `frame`, the answer is a prediction or a
coded error, never a crash.

1. In process: `decode_image(payload_bytes(p))` on random, truncated, bit-flipped and spliced real JPEG/PNG
   frames, huge declared dimensions, wrong JSON types, bad base64 and data URLs, oversized strings: it returns a
   uint8 HxWx3 image or raises FrameError with a known code, nothing else.
2. Live: the same payloads over one Socket.IO connection to a real server process that decodes and encodes every
   frame. The oracle is the server's own functions run here: a frame that fails here must get an `error` with that
   code (and its id), one that decodes must get a `prediction`. Meanwhile a second client streams a real clip and
   must get exactly the reference predictions; afterwards the fuzzed connection still predicts exactly.

Derandomized and database-less, so CI runs the same cases every time. `-s` prints the counts.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import itertools
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar
from unittest import mock

import cv2
import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from harness.peer import Peer
from harness.servers import start_default_server, start_server
from service import MAX_PIXELS
from service.clips import iter_clip_frames
from service.frames import FrameError, decode_image, payload_bytes
from tests.conftest import clip_jpegs, full_onnx_probabilities
from tests.fixture_model import CLIPS

pytestmark = pytest.mark.slow  # deselected by the fast subset: pytest -m 'not slow'

T = TypeVar("T")

LIMIT = 2_000_000  # the server's MAX_FRAME_BYTES default
CODES = frozenset(
    {"bad_payload", "bad_base64", "empty_frame", "frame_too_large", "undecodable_image", "image_too_large"}
)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FUZZ: dict[str, Any] = {
    "deadline": None,
    "database": None,
    "derandomize": True,
    "phases": (Phase.explicit, Phase.generate, Phase.shrink),
    "suppress_health_check": (HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example),
}
# Against the live server: no shrinking (each step would be a round trip to a stateful server; the in-process
# property shrinks the same payloads), so a failure reports the payload that failed, at once.
LIVE = {**FUZZ, "phases": (Phase.explicit, Phase.generate)}


# Real frames, small: 64x48 crops of a real clip, as JPEG at several qualities and as PNG (colour and grey).
@functools.cache
def real_images() -> tuple[bytes, ...]:
    clip = CLIPS / "book" / "handspeak.mp4"
    frames = list(itertools.islice(iter_clip_frames(clip), 0, 40, 8))
    images = []
    for i, frame in enumerate(frames):
        y, x = 100 + 40 * i, 150 + 60 * i
        crop = np.ascontiguousarray(frame[y : y + 48, x : x + 64])
        images.append(cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 30 + 15 * i])[1].tobytes())
        images.append(cv2.imencode(".png", crop)[1].tobytes())
        images.append(cv2.imencode(".png", cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY))[1].tobytes())
    small = cv2.resize(frames[0], (64, 48), interpolation=cv2.INTER_AREA)
    images.append(cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes())
    return tuple(images)


def real_where(keep: Callable[[bytes], bool]) -> st.SearchStrategy[bytes]:
    """One of the real images (drawn by index, so hypothesis never has to print the image list)."""
    indices = st.deferred(lambda: st.sampled_from([i for i, data in enumerate(real_images()) if keep(data)]))
    return indices.map(lambda i: real_images()[i])


real = real_where(lambda data: True)
real_jpeg = real_where(lambda data: data[:2] == b"\xff\xd8")
real_png = real_where(lambda data: data[:8] == PNG_SIGNATURE)


@st.composite
def truncated(draw: st.DrawFn) -> bytes:
    data = draw(real)
    return data[: draw(st.integers(0, len(data) - 1))]


@st.composite
def bit_flipped(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(real))
    header = draw(st.booleans())  # half the flips land in the headers (markers, tables, IHDR), where they hurt most
    for _ in range(draw(st.integers(1, 8))):
        position = draw(st.integers(0, min(len(data), 700) - 1 if header else len(data) - 1))
        data[position] ^= 1 << draw(st.integers(0, 7))
    return bytes(data)


@st.composite
def spliced(draw: st.DrawFn) -> bytes:
    data = draw(real)
    start = draw(st.integers(0, len(data)))
    end = draw(st.integers(start, min(len(data), start + 64)))
    return data[:start] + draw(st.binary(max_size=64)) + data[end:]


def weighted(*options: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of the strategies, in these proportions (a plain one_of drifts towards its simplest branches)."""
    picks = [i for i, (weight, _) in enumerate(options) for _ in range(weight)]
    return st.sampled_from(picks).flatmap(lambda i: options[i][1])


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")


def with_dimensions(data: bytes, width: int, height: int) -> bytes:
    """A real JPEG/PNG whose header (SOF / IHDR, CRC fixed) declares another size; the pixels are unchanged."""
    patched = bytearray(data)
    if data[:8] == PNG_SIGNATURE:
        patched[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
        patched[29:33] = zlib.crc32(bytes(patched[12:29])).to_bytes(4, "big")
        return bytes(patched)
    i = 2  # walk the JPEG's segments to its SOF (baseline or progressive)
    while not 0xC0 <= data[i + 1] <= 0xC2:
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    patched[i + 5 : i + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(patched)


def _too_many(size: tuple[int, int]) -> bool:
    return size[0] * size[1] > MAX_PIXELS


huge = st.one_of(
    st.tuples(real_jpeg, st.tuples(st.integers(1, 65535), st.integers(1, 65535)).filter(_too_many)),
    st.tuples(real_png, st.tuples(st.integers(1, 2**31 - 1), st.integers(1, 2**31 - 1)).filter(_too_many)),
).map(lambda case: with_dimensions(case[0], *case[1]))


@st.composite
def tiny_images(draw: st.DrawFn) -> bytes:
    """Valid images of odd shapes and formats: 1-pixel sides, grey, alpha, 16-bit PNG."""
    width, height = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    channels = draw(st.sampled_from([1, 3, 4]))
    dtype = draw(st.sampled_from([np.uint8, np.uint16]))
    pixels = np.full((height, width, channels), draw(st.integers(0, 255)), dtype=dtype)
    if draw(st.booleans()) and channels != 4 and dtype == np.uint8:
        return cv2.imencode(".jpg", pixels)[1].tobytes()
    return cv2.imencode(".png", pixels)[1].tobytes()


headers = st.one_of(
    st.binary(max_size=64).map(lambda tail: b"\xff\xd8" + tail),
    st.binary(max_size=64).map(lambda tail: PNG_SIGNATURE + tail),
    st.builds(
        lambda w, h, tail: PNG_SIGNATURE + png_chunk(b"IHDR", w.to_bytes(4, "big") + h.to_bytes(4, "big") + tail),
        st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.binary(min_size=5, max_size=5),
    ),
)  # fmt: skip
image_bytes = weighted(
    (1, st.binary(max_size=512)), (2, real), (2, truncated()), (3, bit_flipped()), (2, spliced()), (1, headers),
    (1, huge), (1, tiny_images()),
)  # fmt: skip


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@st.composite
def bad_base64(draw: st.DrawFn) -> str:
    text = b64(draw(image_bytes))
    mutation = draw(st.sampled_from(["insert", "drop_padding", "drop_char", "extra_padding", "urlsafe"]))
    if mutation == "insert":
        at = draw(st.integers(0, len(text)))
        return text[:at] + draw(st.text(alphabet="@#*!-_ \n\t.,;:\x00é%", min_size=1, max_size=3)) + text[at:]
    if mutation == "drop_padding":
        return text.rstrip("=")
    if mutation == "drop_char":
        at = draw(st.integers(0, max(0, len(text) - 1)))
        return text[:at] + text[at + 1 :]
    if mutation == "extra_padding":
        return text + "=" * draw(st.integers(1, 3))
    return text.replace("+", "-").replace("/", "_")


# Oversized frames, built from a small choice so the strategy itself stays cheap.
OVERSIZED: list[Callable[[], Any]] = [
    lambda: "A" * (LIMIT * 4 // 3 + 5),  # longer than any frame's base64: refused before decoding it
    lambda: "A" * (LIMIT * 4 // 3 + 4),  # valid base64 of 2,000,001 bytes
    lambda: "data:image/jpeg;base64," + "B" * (LIMIT * 4 // 3 + 8),
    lambda: b64(b"\0" * LIMIT),  # exactly the limit: accepted, then not an image
    lambda: b"\xff\xd8" + b"\0" * (LIMIT - 1),  # binary, one byte over
    lambda: b"\xff" * LIMIT,  # binary, exactly the limit
]
oversized = st.sampled_from(range(len(OVERSIZED))).map(lambda i: OVERSIZED[i]())

# Socket.IO uses {"_placeholder": true, "num": n} inside binary packets; a client that sends such a dict itself
# breaks python-socketio's packet decoding (reported separately), so the fuzzer's dicts never use that key.
keys = st.text(max_size=8).filter(lambda k: k not in ("_placeholder", "image", "id"))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=16) | st.binary(max_size=16),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=8,
)
image_field = weighted(
    (4, image_bytes),  # binary attachment
    (4, image_bytes.map(b64)),
    (1, st.builds(lambda kind, data: f"data:{kind};base64,{b64(data)}",
                  st.sampled_from(["image/jpeg", "image/png", ""]), image_bytes)),
    (1, st.text(max_size=40).filter(lambda t: "," not in t).map(lambda t: "data:" + t)),  # data URL without a comma
    (1, bad_base64()),
    (1, st.text(max_size=40)),
    (1, st.sampled_from(["", b"", "data:,", "data:image/png;base64,"])),
    (1, oversized),
    (1, json_values),  # wrong types: None, numbers, booleans, lists, nested dicts
)  # fmt: skip
with_image = st.builds(
    lambda image, extra: {**extra, "image": image}, image_field, st.dictionaries(keys, json_values, max_size=2)
)
without_image = st.dictionaries(keys, json_values, max_size=4)
not_an_object = st.one_of(  # top-level JSON of every other type, or raw bytes
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=40), st.binary(max_size=64),
    st.lists(json_values, max_size=4),
)  # fmt: skip
payloads = weighted((12, with_image), (1, without_image), (2, not_an_object))

PNG_60000 = PNG_SIGNATURE + png_chunk(b"IHDR", (60000).to_bytes(4, "big") * 2 + b"\x08\x02\0\0\0") + b"\0" * 64


def outcome(payload: Any) -> str:
    """What the server must answer: "prediction" or an error code. Anything but FrameError propagates."""
    try:
        image = decode_image(payload_bytes(payload, LIMIT))
    except FrameError as error:
        assert error.code in CODES, error.code
        assert error.message
        return error.code
    assert isinstance(image, np.ndarray) and image.dtype == np.uint8
    assert image.ndim == 3 and image.shape[2] == 3 and image.shape[0] >= 1 and image.shape[1] >= 1
    return "prediction"


SEEN: dict[str, Counter[str]] = {"decode": Counter(), "header": Counter(), "live": Counter(), "live_form": Counter()}


def report(part: str) -> None:
    counts = SEEN[part]
    print(f"\n[fuzz {part}] {sum(counts.values())} cases: {dict(sorted(counts.items()))}")


# 1. In process.


@settings(max_examples=1000, **FUZZ)
@given(payloads)
@example({"image": b64(PNG_60000)})
@example({"image": "data:image/jpeg;base64"})
@example({"image": "data:"})
@example({"image": "A" * (LIMIT * 4 // 3 + 5)})
@example({"image": None})
@example({"picture": "x"})
@example([{"image": "x"}])
def _decode_property(payload: Any) -> None:
    SEEN["decode"][outcome(payload)] += 1


def test_decode_path_returns_an_image_or_a_coded_error() -> None:
    _decode_property()
    report("decode")
    assert sum(SEEN["decode"].values()) >= 1000
    assert {"prediction", *CODES} <= set(SEEN["decode"])  # every outcome was reached


@settings(max_examples=200, **FUZZ)
@given(huge, st.sampled_from(["binary", "base64", "data_url"]))
@example(PNG_60000, "binary")
@example(with_dimensions(cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes(), 60000, 60000), "base64")
def _huge_property(data: bytes, form: str) -> None:
    image = {"binary": data, "base64": b64(data), "data_url": "data:image/png;base64," + b64(data)}[form]
    refused = AssertionError("decoded a frame its header should have refused")
    with mock.patch("service.frames.cv2.imdecode", side_effect=refused), pytest.raises(FrameError) as info:
        decode_image(payload_bytes({"image": image}, LIMIT))
    assert info.value.code == "image_too_large"
    SEEN["header"][info.value.code] += 1


def test_huge_declared_dimensions_are_refused_from_the_header() -> None:
    _huge_property()
    report("header")
    assert SEEN["header"]["image_too_large"] >= 200


# 2 and 3. Live, against a real server process.


class LoopThread:
    """An asyncio loop in a background thread, so hypothesis (synchronous) can drive async Socket.IO clients."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-loop", daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


async def connect(url: str) -> Peer:
    peer = Peer(url)
    await peer.__aenter__()
    assert await peer.expect("status") == {"message": "ready"}
    return peer


async def stream_real_frames(peer: Peer, frames: list[bytes], stop: threading.Event, fps: float = 8.0) -> list[Any]:
    """The bystander: a real clip, looped, paced, every frame tagged with its index; returns the replies."""
    replies: list[Any] = []
    while not (stop.is_set() and len(replies) >= 12):
        i, started = len(replies), time.monotonic()
        await peer.sio.emit("frame", {"image": b64(frames[i % len(frames)]), "id": i})
        event, data = await peer.next(timeout=30)
        assert event == "prediction" and data["id"] == i, (event, data)
        replies.append(data)
        await asyncio.sleep(max(0.0, 1 / fps - (time.monotonic() - started)))
    return replies


@functools.cache
def book_jpegs() -> list[bytes]:
    return clip_jpegs(CLIPS / "book" / "handspeak.mp4")


def form_of(payload: Any) -> str:
    image = payload.get("image") if isinstance(payload, dict) else None
    if not isinstance(payload, dict):
        return "not_an_object"
    if isinstance(image, bytes):
        return "binary"
    if isinstance(image, str):
        return "data_url" if image.startswith("data:") else "string"
    return "no_image" if image is None else "wrong_type"


def check_against_reference(model_dir: Path, prediction: dict[str, Any], window: list[bytes]) -> None:
    expected = full_onnx_probabilities(model_dir, window)
    assert prediction["score"] == pytest.approx(float(expected.max()), abs=1e-4)
    assert (prediction["label"] == "none") == (float(expected.max()) <= 0.5)


@pytest.mark.parametrize("mode", ["reference", "default"])
def test_live_fuzzing_never_breaks_the_server_or_other_clients(
    model_dir: Path, hello_jpegs: list[bytes], mode: str
) -> None:
    """`reference`: the WLASL20c fixture encoding every frame into consecutive windows, so the bystander's
    predictions are recomputed exactly. `default`: the defaults users get (the landmark model on the shipped
    model/, sampling at 8 embeddings/s, the 2 s window), where most frames are not encoded: the answer to a
    frame must not depend on that. Only the limits are raised, in both (the fuzzer sends as fast as it can)."""
    if mode == "reference":
        running = start_server(
            model_dir, WINDOW_SECONDS="0", EMBEDDINGS_PER_SECOND="0", ENCODER_VARIANT="fp32",
            ERRORS_PER_SECOND="1000000", MAX_FPS="1000000",
        )  # fmt: skip
    else:
        running = start_default_server(ERRORS_PER_SECOND="1000000", MAX_FPS="1000000")
    SEEN["live"].clear()  # counted per server: its /metrics are compared with them
    SEEN["live_form"].clear()
    loop = LoopThread()
    try:
        fuzzed = loop.run(connect(running.url))
        bystander = loop.run(connect(running.url))
        clip = book_jpegs()
        stop = threading.Event()
        streaming = asyncio.run_coroutine_threadsafe(stream_real_frames(bystander, clip, stop), loop.loop)
        ids = itertools.count()

        async def exchange(payload: Any) -> tuple[str, Any]:
            await fuzzed.sio.emit("frame", payload)
            return await fuzzed.next(timeout=20)

        @settings(max_examples=1000, **LIVE)
        @given(payloads)
        @example({"image": b64(PNG_60000)})
        @example({"image": PNG_60000})
        @example({"image": "A" * (LIMIT * 4 // 3 + 5)})
        @example({"image": b"\xff" * (LIMIT + 1)})
        @example(None)
        def live(payload: Any) -> None:
            expected = outcome(payload)
            is_dict = isinstance(payload, dict)
            if is_dict:
                payload = {**payload, "id": next(ids)}
            event, data = loop.run(exchange(payload))
            SEEN["live_form"][form_of(payload)] += 1
            if expected == "prediction":
                assert event == "prediction", (event, data)
                assert isinstance(data["label"], str) and isinstance(data["score"], float)
            else:
                assert event == "error", (event, data)
                assert data["code"] == expected and data["message"], data
            if is_dict:
                assert data["id"] == payload["id"], data
            else:
                assert "id" not in data
            SEEN["live"][expected] += 1

        live()
        stop.set()
        replies = streaming.result(60)
        report("live")
        print(f"[fuzz live] payload forms: {dict(SEEN['live_form'])}; bystander frames: {len(replies)}")
        assert sum(SEEN["live"].values()) >= 1000

        # 3. The fuzzed connection still predicts exactly: 10 real frames fill a fresh window (bad frames never
        # entered it; frames that decoded did, and are pushed out by these 10).
        frames = hello_jpegs[:10]
        for i, jpeg in enumerate(frames):
            event, prediction = loop.run(exchange({"image": b64(jpeg), "id": f"real-{i}"}))
            assert event == "prediction" and prediction["id"] == f"real-{i}", (event, prediction)
        if mode == "reference":
            check_against_reference(model_dir, prediction, frames)

        # The bystander saw no error (stream_real_frames checks each reply) and, in reference mode, the
        # reference predictions all along; its first window is full at its 10th frame in both modes.
        assert all(r == {"label": "none", "score": 0.0, "id": i} for i, r in enumerate(replies[:9]))
        assert all(r["score"] > 0 for r in replies[9:]), replies[9:]
        sent = [clip[i % len(clip)] for i in range(len(replies))]
        checked = sorted({9, len(replies) - 1, *range(9, len(replies), max(1, len(replies) // 6))})
        for k in checked if mode == "reference" else []:
            check_against_reference(model_dir, replies[k], sent[k - 9 : k + 1])

        health = httpx.get(f"{running.url}/healthz", timeout=10)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert running.process.poll() is None
        # Every error reply was counted under its code (the bystander had none).
        metrics = httpx.get(f"{running.url}/metrics", timeout=10).text
        counted = {
            code: float(line.rsplit(" ", 1)[1])
            for code in CODES
            for line in metrics.splitlines()
            if line.startswith(f'signstream_errors_total{{code="{code}"}}')
        }
        assert counted == {code: n for code, n in SEEN["live"].items() if code in CODES}
        loop.run(fuzzed.__aexit__())
        loop.run(bystander.__aexit__())
    finally:
        loop.close()
        output = running.stop()
    assert "Traceback" not in output, output[-6000:]
