"""Training sees what serving computes: the default model's windows, offline and live, are the same.

A real clip goes through the server's own pipeline (default settings: landmarks, sampling at
EMBEDDINGS_PER_SECOND, 2 s window), and through the training code's offline recomputation
(training.landmark_features.extract -> training.landmark_model.serving_windows -> sequence_inputs
(window vector and GISLR embedding) -> the shipped sequence model). Every window the server classifies
must have an offline twin with the same probabilities: a change to sampling, window picking, features
or tracking on one side only fails here.
"""

from __future__ import annotations

import asyncio

import numpy as np
import onnxruntime as ort

from harness.servers import ROOT
from service.clips import clip_fps, iter_clip_frames
from service.engine import load_recognizer
from service.recognizers.landmarks import SEQUENCE_FILE
from service.recognizers.landmarks.transfer import sequence_inputs
from service.settings import Settings, load_settings
from service.stream import NOT_READY
from training.catalogue import load_catalogue
from training.landmark_features import WINDOW, extract, served_key
from training.landmark_model import embedding_session, serving_windows

# float16 storage of the training features: measured max |difference| 3.7e-3 on this clip (20 windows).
MAX_PROBABILITY_DIFF = 0.02


def _served_probabilities(settings: Settings, path: object) -> list[np.ndarray]:
    from service.pipeline import Pipeline

    recognizer = load_recognizer(settings)

    async def run() -> list[np.ndarray]:
        pipeline = Pipeline(recognizer, settings, max_streams=1)
        pipeline.start()
        out = []
        try:
            stream = pipeline.new_stream()
            fps = clip_fps(path)  # type: ignore[arg-type]
            for index, frame in enumerate(iter_clip_frames(path)):  # type: ignore[arg-type]
                before = stream.last
                prediction = await pipeline.predict(frame, stream, index / fps)
                if prediction is not before and prediction is not NOT_READY:
                    assert prediction.probabilities is not None
                    out.append(np.asarray(prediction.probabilities))
        finally:
            await pipeline.stop()
        return out

    return asyncio.run(run())


def test_default_model_windows_offline_equal_served() -> None:
    settings = load_settings({}, env_file=None)
    assert settings.model == "landmarks" and settings.embeddings_per_second > 0  # the defaults users get
    record = next(r for r in load_catalogue() if r.key == "shared/clips/hello/thkazi")
    served = _served_probabilities(settings, record.path)
    _, arrays, _ = extract(record)
    raw = arrays[served_key(record.key, 0)].astype(np.float32)
    times = arrays[served_key(record.key, 0) + "|t"]
    picks = serving_windows(times, WINDOW, settings.window_seconds, settings.embeddings_per_second)
    session = ort.InferenceSession(
        str(ROOT / "model" / "landmarks" / SEQUENCE_FILE), providers=["CPUExecutionProvider"]
    )
    offline = session.run(None, {"windows": sequence_inputs(embedding_session(), [raw[p] for p in picks])})[0]
    assert len(served) == len(offline) >= 20
    diff = float(np.abs(np.stack(served) - offline).max())
    print(f"\n{len(served)} windows, max |served - offline| = {diff:.2e}")
    assert diff < MAX_PROBABILITY_DIFF
    assert (np.stack(served).argmax(axis=1) == offline.argmax(axis=1)).all()
