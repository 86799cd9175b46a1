"""The registry: the only place that knows every recogniser (MODEL=<name>), by import string, so a
recogniser's package (and its dependencies) is imported only when it is the one served, and the
trainer that rebuilds its model only when `cli train --model <name>` runs.

Adding a recogniser: a package under service/recognizers/ with a class that follows
`service.recognizer.RecognizerFactory`, and one line here. This module imports nothing of the service.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Entry:
    recognizer: str  # "package.module:Class", a service.recognizer.RecognizerFactory
    trainer: str  # "package.module:function", main(argv) of the training code that rebuilds its model


RECOGNIZERS: dict[str, Entry] = {
    "landmarks": Entry("service.recognizers.landmarks:LandmarkRecognizer", "training.landmark_model:main"),
    "wlasl20c": Entry("service.recognizers.wlasl20c:ImageRecognizer", "training.train:main"),
}


def load_object(import_string: str) -> Any:
    """The object an import string ("package.module:name") names, importing its module on first use."""
    module_name, attribute = import_string.split(":")
    return getattr(importlib.import_module(module_name), attribute)
