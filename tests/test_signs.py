"""Opt-in `top` and `sign` events: the debouncer on recorded prediction sequences, and a real server."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.peer import Peer
from harness.servers import start_server
from service.signs import SignDebouncer, SignEvent, top_k
from tests.conftest import clip_jpegs
from tests.fixture_model import CLIPS

LABELS = ["book", "chair", "clothes", "computer", "drink", "drum", "family", "football", "go", "hat", "hello",
          "kiss", "like", "play", "school", "street", "table", "university", "violin", "wall"]  # fmt: skip
FRAME_MS = 40.0  # 25 fps

# Labels a WLASL20c server sent for hello, book, drink and family (40 frames each, consecutive windows,
# PREDICTION_THRESHOLD=0), run-length encoded: a recorded sequence for the debouncer (recorded on an
# earlier random-weight test model; the debouncer does not care which model made it).
RECORDED = [("none", 9), ("drum", 9), ("football", 1), ("drum", 8), ("football", 3), ("drum", 24),
            ("football", 7), ("drum", 1), ("football", 7), ("drum", 5), ("football", 3), ("drum", 4),
            ("football", 75), ("drum", 4)]  # fmt: skip


def expand(runs: list[tuple[str, int]], score: float = 0.9) -> list[tuple[str, float]]:
    return [(label, 0.0 if label == "none" else score) for label, n in runs for _ in range(n)]


def feed(debouncer: SignDebouncer, predictions: list[tuple[str, float]]) -> list[tuple[int, SignEvent]]:
    """(index of the prediction that ended the occurrence, event) for each emitted sign."""
    out = []
    for i, (label, score) in enumerate(predictions):
        event = debouncer.update(label, score, i * FRAME_MS)
        if event is not None:
            out.append((i, event))
    return out


def test_a_sign_is_emitted_once_when_it_is_established_with_the_times_of_its_first_predictions() -> None:
    debouncer = SignDebouncer(enter_frames=3, exit_frames=3, min_score=0.5, transcript_length=10)
    predictions = expand([("none", 5), ("hello", 10), ("none", 5)])
    events = feed(debouncer, predictions)
    assert len(events) == 1
    index, event = events[0]
    assert index == 7  # the third `hello` establishes it; the seven that follow and the exit add nothing
    assert (event.label, event.start_ms, event.end_ms) == ("hello", 5 * FRAME_MS, 7 * FRAME_MS)
    assert event.score == pytest.approx(0.9) and event.transcript == ("hello",)
    assert debouncer.active is None  # it exited after 3 `none`
    assert event.as_event() == {"label": "hello", "score": 0.9, "start_ms": 200.0, "end_ms": 280.0,
                                "transcript": ["hello"]}  # fmt: skip


def test_a_held_sign_is_emitted_while_it_is_held_and_never_again() -> None:
    # The browser showed "hello 100 %" for 9 s with "Nothing yet": a sign that never ends must still count.
    debouncer = SignDebouncer(enter_frames=6, exit_frames=6, min_score=0.6, transcript_length=10)
    events = feed(debouncer, expand([("none", 10), ("hello", 9 * 25)], score=1.0))  # the stream ends here
    assert [(i, e.label, e.start_ms, e.end_ms) for i, e in events] == [(15, "hello", 400.0, 600.0)]
    assert debouncer.active == "hello" and list(debouncer.transcript) == ["hello"]
    # Signed again after a real pause: a second occurrence, emitted once too.
    events = feed(debouncer, expand([("none", 6), ("hello", 30)]))
    assert [(i, e.label, e.transcript) for i, e in events] == [(11, "hello", ("hello", "hello"))]


def test_no_double_emission_and_short_interruptions_do_not_split_a_sign() -> None:
    debouncer = SignDebouncer(enter_frames=3, exit_frames=4, min_score=0.5, transcript_length=10)
    # hello is interrupted by 3 (< exit) predictions of none / another gloss, twice.
    runs = [("hello", 6), ("none", 3), ("hello", 5), ("drink", 2), ("none", 1), ("hello", 4), ("none", 10)]
    events = feed(debouncer, expand(runs))
    assert [(i, e.label) for i, e in events] == [(2, "hello")]
    assert events[0][1].start_ms == 0.0 and events[0][1].end_ms == 2 * FRAME_MS
    assert debouncer.active is None and list(debouncer.transcript) == ["hello"]


def test_flicker_and_low_scores_never_start_a_sign() -> None:
    debouncer = SignDebouncer(enter_frames=4, exit_frames=3, min_score=0.6, transcript_length=10)
    flicker = expand(
        [("hello", 3), ("drink", 3), ("hello", 2), ("none", 1), ("book", 3), ("hello", 3), ("none", 1)] * 5
    )
    assert feed(debouncer, flicker) == []
    weak = expand([("hello", 20)], score=0.55)  # labelled, but below the enter threshold
    assert feed(debouncer, weak) == []
    # One prediction below the threshold in the middle restarts the count.
    mixed = [("hello", 0.9)] * 3 + [("hello", 0.4)] + [("hello", 0.9)] * 3 + [("none", 0.0)] * 3
    assert feed(debouncer, mixed) == []
    assert debouncer.active is None and list(debouncer.transcript) == []


def test_a_new_gloss_can_start_while_the_previous_one_exits() -> None:
    debouncer = SignDebouncer(enter_frames=3, exit_frames=3, min_score=0.5, transcript_length=10)
    events = feed(debouncer, expand([("hello", 5), ("book", 6), ("none", 3)]))
    assert [(i, e.label) for i, e in events] == [(2, "hello"), (7, "book")]
    # book's occurrence starts at its first prediction, although hello was still exiting then.
    assert events[1][1].start_ms == 5 * FRAME_MS and events[1][1].end_ms == 7 * FRAME_MS
    assert events[1][1].transcript == ("hello", "book")


def test_an_established_gloss_ends_the_previous_one_even_before_its_exit_frames() -> None:
    # SIGN_ENTER_FRAMES < SIGN_EXIT_FRAMES: book is established (3 frames) while hello has not exited
    # yet (5 frames needed). It is emitted then, not left pending until the end of the stream.
    debouncer = SignDebouncer(enter_frames=3, exit_frames=5, min_score=0.5, transcript_length=10)
    events = feed(debouncer, expand([("hello", 4), ("book", 3)]))
    assert [(i, e.label) for i, e in events] == [(2, "hello"), (6, "book")]
    assert debouncer.active == "book"
    # hello for 2 frames (< enter) then book again: still the same book.
    assert feed(debouncer, expand([("hello", 2), ("book", 4)])) == []


def test_recorded_sequence_and_transcript_length() -> None:
    debouncer = SignDebouncer(enter_frames=3, exit_frames=3, min_score=0.0, transcript_length=4)
    events = feed(debouncer, expand(RECORDED, score=0.25))
    labels = [e.label for _, e in events]
    # The single-frame flickers (football at 18, drum at 61) are suppressed; the final 4 drum
    # predictions, still showing when the recording ends, are a sign too.
    assert labels == ["drum", "football", "drum", "football", "drum", "football", "drum", "football", "drum"]
    transcripts = [e.transcript for _, e in events]
    assert [len(t) for t in transcripts] == [1, 2, 3, 4, 4, 4, 4, 4, 4]
    assert transcripts[-1] == ("football", "drum", "football", "drum")
    for (_, a), (_, b) in itertools.pairwise(events):
        assert a.start_ms <= a.end_ms < b.start_ms <= b.end_ms
    # Stricter hysteresis on the same recording: only the long runs survive.
    strict = SignDebouncer(enter_frames=8, exit_frames=8, min_score=0.0, transcript_length=10)
    assert [e.label for _, e in feed(strict, expand(RECORDED, score=0.25))] == ["drum", "football"]
    assert list(strict.transcript) == ["drum", "football"]


def test_top_k() -> None:
    probabilities = np.array([0.1, 0.5, 0.05, 0.35], dtype=np.float32)
    labels = ["a", "b", "c", "d"]
    assert top_k(probabilities, labels, 2) == [{"label": "b", "score": pytest.approx(0.5)},
                                               {"label": "d", "score": pytest.approx(0.35)}]  # fmt: skip
    assert [t["label"] for t in top_k(probabilities, labels, 10)] == ["b", "d", "a", "c"]
    assert top_k(None, labels, 3) == [] and top_k(probabilities, labels, 0) == []


# --- real server -------------------------------------------------------------------------------------


def clip_frames(gloss: str, count: int) -> list[bytes]:
    return clip_jpegs(sorted((CLIPS / gloss).glob("*.mp4"))[0])[:count]


async def stream(peer: Peer, frames: list[bytes]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Send frames one at a time (binary, with ids); collect every prediction and sign event. Each
    sign gets `"after"`: the number of predictions received before it."""
    predictions: list[dict[str, Any]] = []
    signs: list[dict[str, Any]] = []
    others: list[tuple[str, Any]] = []

    def record(name: str, data: Any) -> None:
        if name == "sign":
            signs.append({**data, "after": len(predictions)})
        else:
            others.append((name, data))

    for i, jpeg in enumerate(frames):
        await peer.sio.emit("frame", {"image": jpeg, "id": i})
        while True:
            name, data = await peer.next(30)
            if name == "prediction":
                assert data["id"] == i
                predictions.append(data)
                break
            record(name, data)
    try:  # a sign emitted after the last prediction
        while True:
            record(*await peer.next(0.5))
    except TimeoutError:
        pass
    assert others == []
    return predictions, signs


@pytest.fixture(scope="module")
def sign_server(model_dir: Path) -> Any:
    # Threshold 0: every full window gets a label, so signs follow the labels alone.
    running = start_server(
        model_dir, PREDICTION_THRESHOLD="0", SIGN_MIN_SCORE="0", SIGN_ENTER_FRAMES="3", SIGN_EXIT_FRAMES="3",
        SIGN_TRANSCRIPT_LENGTH="4", WINDOW_SECONDS="0", EMBEDDINGS_PER_SECOND="0", ENCODER_VARIANT="fp32",
        MAX_FPS="1000",  # frames are sent as fast as they are answered
    )  # fmt: skip
    yield running
    running.stop()


async def test_opted_in_client_gets_top_and_sign_events(sign_server: Any) -> None:
    frames = [f for gloss in ("hello", "book", "drink", "family") for f in clip_frames(gloss, 40)]
    async with Peer(sign_server.url, auth={"topk": 3, "signs": True}) as peer:
        assert await peer.expect("status") == {"message": "ready"}
        predictions, signs = await stream(peer, frames)

    assert len(predictions) == len(frames)
    for i, p in enumerate(predictions):
        assert set(p) == {"label", "score", "top", "id"}
        if i < 9:  # window not full yet
            assert (p["label"], p["score"], p["top"]) == ("none", 0.0, [])
            continue
        top = p["top"]
        assert len(top) == 3 and all(t["label"] in LABELS for t in top)
        assert len({t["label"] for t in top}) == 3
        scores = [t["score"] for t in top]
        assert scores == sorted(scores, reverse=True) and 0 < scores[0] <= 1
        assert (top[0]["label"], top[0]["score"]) == (p["label"], p["score"])  # threshold 0: label = best

    # The server's signs are the debouncer's on the predictions it sent (same settings).
    offline = SignDebouncer(enter_frames=3, exit_frames=3, min_score=0.0, transcript_length=4)
    expected = [e.label for _, e in feed(offline, [(p["label"], p["score"]) for p in predictions])]
    assert len(expected) >= 2, "the recording should change label at least once"
    assert [s["label"] for s in signs] == expected
    previous_end = -1.0
    for n, s in enumerate(signs, start=1):
        assert set(s) == {"label", "score", "start_ms", "end_ms", "transcript", "after"}
        assert previous_end < s["start_ms"] <= s["end_ms"] < 120_000
        previous_end = s["end_ms"]
        assert s["transcript"][-1] == s["label"] and len(s["transcript"]) == min(n, 4)
        assert 0 < s["score"] <= 1


async def test_subscribe_event_and_reference_clients_see_nothing_new(sign_server: Any) -> None:
    frames = clip_frames("hello", 40)
    async with Peer(sign_server.url) as plain, Peer(sign_server.url) as late:
        assert await plain.expect("status") == {"message": "ready"}
        assert await late.expect("status") == {"message": "ready"}
        ack = await late.sio.call("subscribe", {"topk": 2}, timeout=10)
        assert ack == {"topk": 2, "signs": False}
        ack = await late.sio.call("subscribe", {"signs": True}, timeout=10)
        assert ack == {"topk": 2, "signs": True}
        await late.sio.emit("subscribe", {"topk": "three"})
        assert (await late.expect("error"))["code"] == "bad_options"

        # Reference payloads: no id, base64 frames, nothing but status and prediction {label, score}.
        for jpeg in frames:
            prediction = await plain.predict(jpeg)
            assert set(prediction) == {"label", "score"}
        late_predictions, _ = await stream(late, frames[:12])
        await asyncio.sleep(0.5)
        assert plain.events.empty()
    assert all(len(p["top"]) == 2 for p in late_predictions[9:])
    assert all(p["top"] == [] for p in late_predictions[:9])


async def test_a_held_sign_is_sent_as_soon_as_it_is_established(model_dir: Path) -> None:
    """A sign that never ends (SIGN_EXIT_FRAMES longer than the stream: it is held, and still showing
    when the stream ends) is sent once, right after the prediction that established it."""
    running = start_server(
        model_dir, PREDICTION_THRESHOLD="0", SIGN_MIN_SCORE="0", SIGN_ENTER_FRAMES="3", SIGN_EXIT_FRAMES="1000",
        WINDOW_SECONDS="0", EMBEDDINGS_PER_SECOND="0", ENCODER_VARIANT="fp32", MAX_FPS="1000",
    )  # fmt: skip
    try:
        async with Peer(running.url, auth={"signs": True}) as peer:
            assert await peer.expect("status") == {"message": "ready"}
            predictions, signs = await stream(peer, clip_frames("hello", 40))
    finally:
        running.stop()
    offline = SignDebouncer(enter_frames=3, exit_frames=1000, min_score=0.0, transcript_length=10)
    expected = feed(offline, [(p["label"], p["score"]) for p in predictions])
    assert signs, "a sign held until the end of the stream was never sent"
    # Each sign arrives right after the prediction that established it, before the next frame's reply.
    assert [(s["label"], s["after"]) for s in signs] == [(e.label, i + 1) for i, e in expected]
    for s, (i, _) in zip(signs, expected, strict=True):
        label_run = predictions[i - 2 : i + 1]
        assert all(p["label"] == s["label"] for p in label_run)
        assert s["start_ms"] <= s["end_ms"] and s["transcript"][-1] == s["label"]
