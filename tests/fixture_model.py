"""The WLASL20c model the tests convert and serve: the shipped, trained h5, copied to a folder of the
test's own (no test model has made-up weights; the SPEC's warning that a `weights=None` MobileNetV2
gives near-constant embeddings does not apply to the transplanted, trained backbone)."""

from __future__ import annotations

import shutil
from pathlib import Path

from service.clips import CLIPS_DIR
from service.settings import Settings

CLIPS = CLIPS_DIR
SHIPPED_H5 = Path(__file__).resolve().parents[1] / Settings().model_path  # the default MODEL_PATH


def shipped_h5(path: Path) -> Path:
    """A copy of the shipped h5 at `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SHIPPED_H5, path)
    return path
