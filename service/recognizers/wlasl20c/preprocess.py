"""The one preprocessing function: what the WLASL20c model sees, in serving, conversion checks,
evaluation and training alike (SPEC section 2).

BGR as OpenCV decodes it (no colour conversion), `cv2.resize` to 224x224 (bilinear), divided by 255.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from service.arrays import FloatArray, ImageBGR
from service.clips import iter_clip_frames

IMAGE_SIZE = 224


def preprocess_frame(image_bgr: ImageBGR) -> FloatArray:
    """BGR uint8 image of any size -> float32 (224, 224, 3) in [0, 1]."""
    resized = cv2.resize(image_bgr, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_LINEAR)
    return resized.astype(np.float32) / np.float32(255.0)


def sample_training_indices(n_frames: int, n_samples: int = 10) -> list[int]:
    """The original WLASL20c sampling: split the clip into n+2 chunks, drop the first and last,
    take the middle frame of each of the other n."""
    chunks = n_samples + 2
    edges = np.linspace(0, n_frames, chunks + 1)
    middles = (edges[1:-1][:-1] + edges[2:-1]) / 2.0
    return [min(n_frames - 1, int(m)) for m in middles]


def clip_window(path: Path, n_samples: int = 10) -> FloatArray:
    """A whole clip as the model was trained on it: (n_samples, 224, 224, 3)."""
    frames = list(iter_clip_frames(path))
    if not frames:
        raise ValueError(f"{path} has no readable frames")
    return np.stack([preprocess_frame(frames[i]) for i in sample_training_indices(len(frames), n_samples)])
