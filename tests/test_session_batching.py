"""Every model call of the default recogniser goes through the engine's per-session batchers: the
palm / hand / pose / sequence calls of concurrent streams are batched together, and what each stream
gets is exactly what it gets alone (real models, real clip frames, the defaults users get)."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import numpy as np

from service.clips import CLIPS_DIR as CLIPS
from service.clips import iter_clip_frames
from service.engine import Engine, load_recognizer
from service.recognizer import DirectSteps, run_now
from service.settings import load_settings

STREAMS = 6


def test_concurrent_streams_share_batches_and_get_their_own_answers() -> None:
    settings = load_settings({}, env_file=None)
    recognizer = load_recognizer(settings)
    frames = list(iter_clip_frames(CLIPS / "hello" / "thkazi.mp4"))[:30:3]
    # Alone, offline: one tracker per stream, every call run at once.
    steps = DirectSteps(recognizer.sessions)
    alone_tracker = recognizer.new_tracker()
    alone = np.stack([run_now(recognizer.encode(f, alone_tracker, steps)) for f in frames])
    alone_probabilities = run_now(recognizer.classify(alone, steps))
    batches: dict[str, list[int]] = defaultdict(list)

    async def together() -> list[tuple[np.ndarray, np.ndarray]]:
        engine = Engine(recognizer, settings, STREAMS, on_batch=lambda name, size, _s: batches[name].append(size))
        engine.start()
        try:

            async def stream() -> tuple[np.ndarray, np.ndarray]:
                tracker = recognizer.new_tracker()
                embeddings = np.stack([await engine.encode(f, tracker) for f in frames])
                return embeddings, await engine.classify(embeddings)

            return await asyncio.gather(*(stream() for _ in range(STREAMS)))
        finally:
            await engine.stop()

    for embeddings, probabilities in asyncio.run(together()):
        np.testing.assert_allclose(embeddings, alone, atol=1e-5)
        np.testing.assert_allclose(probabilities, alone_probabilities, atol=1e-5)
    assert set(batches) >= {"palm", "hand", "pose", "sequence"}, dict(batches)
    for name in ("hand", "pose"):  # the streams' per-frame calls met in one ONNX Runtime call
        assert max(batches[name]) >= 2, (name, batches[name])
    assert sum(batches["pose"]) == STREAMS * len(frames)  # every call went through its batcher
    assert sum(batches["sequence"]) == STREAMS
