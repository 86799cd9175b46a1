"""Video clips as frames: what `cli predict`/`evaluate`, the client, training and the tests read clips with.

One clip-fps rule (`clip_fps`) for all of them: the container's rate, else 25 (GIFs often say nothing).
One data root (`DATA_ROOT`, the SIGNSTREAM_DATA_ROOT setting, default ../shared/data beside the
checkout) for every tool that reads the shared clips.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from service.arrays import ImageBGR

DATA_ROOT = Path(os.environ.get("SIGNSTREAM_DATA_ROOT", Path(__file__).resolve().parents[2] / "shared" / "data"))
CLIPS_DIR = DATA_ROOT / "clips"


def iter_clip_frames(path: Path) -> Iterator[ImageBGR]:
    """Every frame of a video file (mp4, gif, ...) as BGR uint8, in order."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError(f"cannot open video {path}")
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            yield np.asarray(frame, dtype=np.uint8)
    finally:
        capture.release()


def clip_fps(path: Path, default: float = 25.0) -> float:
    """The clip's frame rate, or `default` when the container does not say (GIFs often don't)."""
    capture = cv2.VideoCapture(str(path))
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    capture.release()
    return fps if 1.0 <= fps <= 120.0 else default
