"""Benchmarks run on the shipped model (model/), the one users get, on real clip frames."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from service.clips import CLIPS_DIR
from service.recognizers.wlasl20c import ImageRecognizer
from service.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
CLIPS = CLIPS_DIR
RESULTS = Path(os.environ.get("SIGNSTREAM_RESULTS", ROOT / "artifacts" / "benchmarks"))


@pytest.fixture(scope="session")
def settings() -> Settings:
    """The shipped model, or the one MODEL_PATH names."""
    return load_settings(
        {"MODEL_PATH": os.environ.get("MODEL_PATH", str(ROOT / "model" / "WLASL20c_model.h5"))}, env_file=None
    )


@pytest.fixture(scope="session")
def recognizer(settings: Settings) -> ImageRecognizer:
    return ImageRecognizer(settings)


def write_result(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every benchmark is slow: `pytest -m 'not slow'` is the fast subset, CI runs everything."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.slow)
