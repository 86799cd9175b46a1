"""The registry: the only place that knows every recogniser (MODEL=<name>), by import string, so a
recogniser's package (and its dependencies) is imported only when it is the one served.

Adding a recogniser: a package under service/recognizers/ with a class that follows
`service.recognizer.RecognizerFactory`, and one line here.
"""

from __future__ import annotations

import importlib
import logging
import time
from typing import cast

import numpy as np

from service.onnx_runtime import ModelError
from service.recognizer import DirectSteps, Recognizer, RecognizerFactory, run_now
from service.settings import Settings

log = logging.getLogger("signstream.recognizers")

RECOGNIZERS: dict[str, str] = {
    "landmarks": "service.recognizers.landmarks:LandmarkRecognizer",
    "wlasl20c": "service.recognizers.wlasl20c:ImageRecognizer",
}


def recognizer_class(name: str) -> RecognizerFactory:
    """The class MODEL=`name` names (imported on first use)."""
    try:
        module_name, attribute = RECOGNIZERS[name].split(":")
    except KeyError:
        raise ModelError(f"MODEL={name} is not a recogniser (known: {', '.join(RECOGNIZERS)})") from None
    return cast(RecognizerFactory, getattr(importlib.import_module(module_name), attribute))


def check_model(settings: Settings) -> None:
    """Fail with one clear line unless the model MODEL names can be served (cheap, before start-up)."""
    recognizer_class(settings.model).check(settings)


def load_recognizer(settings: Settings) -> Recognizer:
    """Check the model files, open the sessions and warm them up (logging each stage's time)."""
    recognizer = recognizer_class(settings.model)(settings)
    warm_up(recognizer)
    return recognizer


def warm_up(recognizer: Recognizer) -> dict[str, float]:
    """Run a frame and a window through every session once (first runs allocate); log what each costs."""
    frame = np.full((480, 640, 3), 128, dtype=np.uint8)
    steps = DirectSteps(recognizer.sessions)
    timings: dict[str, float] = {}
    tracker = recognizer.new_tracker()
    for _ in range(2):
        start = time.perf_counter()
        embedding = run_now(recognizer.encode(frame, tracker, steps))
        timings["frame_ms"] = (time.perf_counter() - start) * 1e3
        start = time.perf_counter()
        run_now(recognizer.classify(np.repeat(embedding[None], recognizer.window_size, axis=0), steps))
        timings["window_ms"] = (time.perf_counter() - start) * 1e3
    description = recognizer.describe()
    details = "".join(f", {key} {value}" for key, value in description.details.items())
    log.info(
        "model %s ready on %s (sessions %s%s): %s",
        description.name,
        description.provider,
        "/".join(recognizer.sessions),
        details,
        ", ".join(f"{k}={v:.1f}" for k, v in timings.items()),
    )
    return timings
