import numpy as np
import pytest

from service.stream import NOT_READY, StreamState, decide

LABELS = [f"g{i}" for i in range(20)]


def fill(state: StreamState, n: int, fps: float = 25.0) -> None:
    for i in range(n):
        state.add(np.full(4, i, dtype=np.float32), i / fps)


def test_no_window_until_ten_frames() -> None:
    state = StreamState(10, 4, window_seconds=2.0)
    fill(state, 9)
    assert state.window() is None
    fill(state, 1)
    assert state.window() is not None


def test_consecutive_window_is_the_last_ten_frames() -> None:
    state = StreamState(10, 4, window_seconds=0.0)
    fill(state, 37)
    assert state.window()[:, 0].tolist() == list(range(27, 37))  # type: ignore[index]


def test_spread_window_covers_the_span_and_ends_with_the_newest_frame() -> None:
    state = StreamState(10, 4, window_seconds=2.0)
    fill(state, 200)  # 8 s at 25 fps; ring holds ~2 s
    picked = state.window()[:, 0]  # type: ignore[index]
    assert picked[-1] == 199
    assert picked[0] == 199 - 50  # 2 s at 25 fps
    assert np.all(np.diff(picked) > 0)


# Real embedding sizes: the WLASL20c encoder's output (1280) and the landmark features (FEATURE_SIZE, 222).
@pytest.mark.parametrize("dim", [1280, 222])
def test_a_client_state_is_a_fixed_ring_sized_by_the_window(dim: int) -> None:
    """At the real sizes and the default 2 s window the ring holds 61 embeddings (2 s at MAX_FPS 30,
    + 1): 312,808 bytes at 1280 floats (the memory benchmark measured 0.33-0.66 MB of RSS per client),
    55,022 at 222. Bounded at 1.25x that, and it must not grow with the stream."""
    state = StreamState(10, dim, window_seconds=2.0, embeddings_per_second=8.0)
    ring = (2 * 30 + 1) * (dim * 4 + 8)  # float32 embeddings + float64 timestamps
    empty = state.nbytes
    assert ring <= empty <= 1.25 * ring, (empty, ring)
    for i in range(250):  # 10 s at 25 fps: four times what the ring holds
        state.add(np.zeros(dim, np.float32), i / 25)
    assert state.nbytes == empty
    assert state.window() is not None


def test_short_history_spreads_over_what_there_is() -> None:
    state = StreamState(10, 4, window_seconds=3.0)
    fill(state, 20)
    picked = state.window()[:, 0]  # type: ignore[index]
    assert picked[0] == 0 and picked[-1] == 19 and len(set(picked.tolist())) == 10


def test_decide_applies_the_threshold() -> None:
    p = np.full(20, 0.01, dtype=np.float32)
    p[3] = 0.81
    assert decide(p, LABELS, 0.5).label == "g3"
    p[3] = 0.5
    assert decide(p, LABELS, 0.5).label == "none"
    assert decide(p, LABELS, 0.5).score == 0.5
    assert NOT_READY.as_event() == {"label": "none", "score": 0.0}


def test_sampling_encodes_at_the_requested_rate_from_25_fps() -> None:
    state = StreamState(10, 4, window_seconds=2.0, embeddings_per_second=8.0)
    encoded = []
    for i in range(250):  # 10 s at 25 fps, with +-5 ms arrival jitter
        t = i / 25 + (0.005 if i % 2 else -0.005)
        if state.take(t):
            state.add(np.zeros(4, np.float32), t)
            encoded.append(t)
    rate = len(encoded) / 10
    assert 7.5 <= rate <= 9.0, rate
    assert max(np.diff(encoded)) <= 0.125 + 0.01  # the newest embedding is never older than this


def test_without_sampling_every_frame_is_due() -> None:
    state = StreamState(10, 4, window_seconds=2.0, embeddings_per_second=0.0)
    for i in range(30):
        assert state.take(i / 25)
        state.add(np.zeros(4, np.float32), i / 25)


def test_sampled_stream_answers_after_ten_frames_and_spreads_picks_evenly_in_time() -> None:
    state = StreamState(10, 1, window_seconds=2.0, embeddings_per_second=8.0)
    times = []
    for i in range(100):  # 4 s at 25 fps
        t = i / 25
        if state.take(t):
            state.add(np.array([t], dtype=np.float32), t)
            times.append(t)
        if i == 9:
            assert state.window() is not None  # dense start: the first window is full at frame 10
    picked = state.window()[:, 0]  # type: ignore[index]
    assert picked[-1] == times[-1]
    assert picked[0] == pytest.approx(times[-1] - 2.0, abs=0.07)
    gaps = np.diff(picked)
    assert gaps.min() > 0.1 and gaps.max() < 0.35  # ~0.22 s apart, within one sampling interval


def test_a_frame_being_encoded_is_not_scheduled_twice_and_release_frees_its_place() -> None:
    state = StreamState(10, 1, window_seconds=2.0, embeddings_per_second=8.0)
    for i in range(10):
        assert state.take(i / 25)
        state.add(np.zeros(1, np.float32), i / 25)
    assert state.take(0.6)  # sampled, still being encoded
    assert not state.take(0.64) and not state.take(0.68)  # not scheduled again meanwhile
    state.release()  # the sampled frame turned out undecodable
    assert state.take(0.72)
