"""The pretrained GISLR sign embedding (convert/gislr_model.py): its input, built from the tracker's raw
vectors exactly as its training notebook built it from MediaPipe Holistic, in serving and training alike.

The model (SentiSign-STT, MIT; Kaggle GISLR, 250 signs) reads 64 frames x 66 points x (x, y, z): 40 lip
points, one hand (the one tracked in more frames; a right hand is mirrored in x, as its training did) and
pose points 0, 1, 3, 4, 5, centred on those pose points per frame and divided by the largest absolute
value; frames past the window are zeros, and `frame_idxs` numbers the non-empty frames from 1.
Its 256-value embedding joins the window vector (features.py) in front of the sequence model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from service.arrays import FloatArray
from service.onnx_runtime import BatchRun
from service.recognizers.landmarks.features import window_vector, window_vector_size
from service.recognizers.landmarks.layout import ASPECT, HAND_BLOCK, NUM_HAND_LANDMARKS, POSE_OFFSET, POSE_POINTS
from service.recognizers.landmarks.lips_template import LIPS_TEMPLATE

EMBEDDING_FILE = "gislr_embed.onnx"
EMBEDDING_META = "gislr_embed.json"
EMBEDDING_LICENSE = "gislr_embed.LICENSE"
EMBEDDING_DIM = 256
FRAMES = 64
POINTS = 66
POSE_FOR_GISLR = (0, 1, 3, 4, 5)  # nose, left eye inner, left eye outer, right eye inner, right eye
MOUTH_L, MOUTH_R = 9, 10
# Each window frame is shown this many times: 10 frames over 2 s then move about as fast per frame as
# GISLR's 30 fps sequences (grouped CV, logreg C 0.03, fold seeds 1234 / 777 / 42: 85.1 / 85.1 / 85.1 %
# shown once, 86.2 / 87.9 / 87.9 % shown 4 times). sequence.json "embedding" records it.
FRAME_REPEAT = 4
PACKED = POINTS * 3 + 1  # per frame: the 66 points, then frame_idxs (one array per call for the batcher)
_TEMPLATE = np.asarray(LIPS_TEMPLATE, np.float32)


def _pose(raw: FloatArray) -> FloatArray:
    return raw[:, POSE_OFFSET : POSE_OFFSET + len(POSE_POINTS) * 4].reshape(len(raw), len(POSE_POINTS), 4)


@dataclass(frozen=True)
class MouthAxes:
    """Per frame, the frame the lip template is written in (x scaled by W/H, so both axes are in image
    heights): the mouth corners' midpoint, the unit vectors along and across the corner line, their
    distance, and whether both corners are visible and apart."""

    mid: FloatArray  # (T, 2)
    along: FloatArray  # (T, 2)
    across: FloatArray  # (T, 2)
    length: FloatArray  # (T,)
    seen: np.ndarray  # (T,) bool


def mouth_axes(raw: FloatArray) -> MouthAxes:
    """The pose's mouth corners of (T, FEATURE_SIZE) raw vectors as MouthAxes (lips_from_pose places the
    template in them; training/lips_template.py measures FaceMesh lips in them)."""
    pose, aspect = _pose(raw), raw[:, ASPECT]
    p0 = np.stack([pose[:, MOUTH_L, 0] * aspect, pose[:, MOUTH_L, 1]], axis=-1)
    p1 = np.stack([pose[:, MOUTH_R, 0] * aspect, pose[:, MOUTH_R, 1]], axis=-1)
    length = np.linalg.norm(p1 - p0, axis=1)
    along = (p1 - p0) / np.maximum(length, 1e-6)[:, None]
    across = np.stack([-along[:, 1], along[:, 0]], axis=-1)
    seen = (pose[:, MOUTH_L, 3] > 0.5) & (pose[:, MOUTH_R, 3] > 0.5) & (length >= 1e-4)
    return MouthAxes(((p0 + p1) / 2).astype(np.float32), along, across, length, seen)


def lips_from_pose(raw: FloatArray) -> FloatArray:
    """(T, 40, 3) lip points (x/W, y/H, z/W) placed by the pose's mouth corners; NaN where either is not visible."""
    axes, aspect = mouth_axes(raw), raw[:, ASPECT]
    t, length = _TEMPLATE[None], axes.length[:, None, None]
    xy = axes.mid[:, None] + (t[..., 0:1] * axes.along[:, None] + t[..., 1:2] * axes.across[:, None]) * length
    safe = np.where(aspect > 0, aspect, 1.0)[:, None]
    out = np.stack([xy[..., 0] / safe, xy[..., 1], t[..., 2] * length[..., 0] / safe], axis=-1).astype(np.float32)
    out[~axes.seen] = np.nan
    return out


def _hand(raw: FloatArray, slot: int) -> FloatArray:
    start = slot * HAND_BLOCK
    points = raw[:, start : start + NUM_HAND_LANDMARKS * 3].reshape(len(raw), NUM_HAND_LANDMARKS, 3).copy()
    points[raw[:, start + HAND_BLOCK - 1] < 0.5] = np.nan
    return points


def gislr_points(raw: FloatArray) -> FloatArray:
    """(T, FEATURE_SIZE) raw vectors -> (T, 66, 3): lips, the hand tracked in more frames, 5 pose points.
    Slot 0 (the signer's right hand) is GISLR's right hand, which it mirrors (x -> -x)."""
    right, left = _hand(raw, 0), _hand(raw, 1)
    use_right = int(np.sum(~np.isnan(right))) > int(np.sum(~np.isnan(left)))
    pose = _pose(raw)[:, list(POSE_FOR_GISLR), :3]
    points = np.concatenate([lips_from_pose(raw), right if use_right else left, pose], axis=1).astype(np.float32)
    if use_right:
        points[:, :, 0] = -points[:, :, 0]
    return points


def gislr_input(raw: FloatArray) -> tuple[FloatArray, np.ndarray]:
    """One window's raw vectors -> the model's (64, 66, 3) frames and (64,) frame_idxs."""
    x = np.repeat(gislr_points(raw), FRAME_REPEAT, axis=0)
    if len(x) > FRAMES:
        x = x[np.linspace(0, len(x) - 1, FRAMES).astype(int)]
    frames = np.zeros((FRAMES, POINTS, 3), np.float32)
    frames[: len(x)] = np.nan_to_num(x, nan=0.0)
    pose = frames[:, POINTS - len(POSE_FOR_GISLR) :]
    valid = np.any(pose != 0, axis=-1, keepdims=True)
    count = valid.sum(axis=1, keepdims=True)
    centre = np.where(count > 0, (pose * valid).sum(axis=1, keepdims=True) / np.maximum(count, 1), 0.0)
    frames = frames - centre
    scale = float(np.abs(frames).max())
    if scale > 0:
        frames = frames / scale
    non_empty = np.abs(frames).sum(axis=(1, 2)) > 0
    idxs = np.zeros(FRAMES, np.int32)
    idxs[non_empty] = np.arange(1, int(non_empty.sum()) + 1)
    return frames.astype(np.float32), idxs


def packed_input(raw: FloatArray) -> FloatArray:
    """gislr_input as one (64, 199) array, the form the engine batches (`embedding_run` unpacks it)."""
    frames, idxs = gislr_input(raw)
    return np.concatenate([frames.reshape(FRAMES, -1), idxs[:, None].astype(np.float32)], axis=1)


def embedding_run(session: ort.InferenceSession) -> BatchRun:
    """The embedding session over packed inputs (N, 64, 199) -> (N, 256); the model has a batch of 1."""

    def run(packed: FloatArray) -> FloatArray:
        rows = []
        for item in packed:
            frames = item[:, : POINTS * 3].reshape(1, FRAMES, POINTS, 3).astype(np.float32)
            idxs = item[:, POINTS * 3].astype(np.int32)[None]
            rows.append(np.asarray(session.run(None, {"frames": frames, "frame_idxs": idxs})[0], np.float32)[0])
        return np.stack(rows)

    return run


def window_item(raw: FloatArray) -> FloatArray:
    """One window's raw vectors as the serving stage `window_run` reads them: the window vector, then
    packed_input flattened (what serving computes on the CPU pool before the one model call)."""
    return np.concatenate([window_vector(raw), packed_input(raw).reshape(-1)]).astype(np.float32)


def window_run(embedding: BatchRun, sequence: BatchRun) -> BatchRun:
    """Embedding then sequence model over a batch of window_items, in one call of the inference thread:
    two calls would queue twice behind the front end's calls (each up to a pose call, about 20 ms)."""

    def run(items: FloatArray) -> FloatArray:
        split = items.shape[1] - FRAMES * PACKED
        vectors, packed = items[:, :split], items[:, split:].reshape(len(items), FRAMES, PACKED)
        return sequence(sequence_input(vectors, embedding(packed)))

    return run


def embed_windows(session: ort.InferenceSession, windows: Sequence[FloatArray]) -> FloatArray:
    """Embeddings of many windows' raw vectors at once (training), through the same run as serving."""
    if not windows:
        return np.zeros((0, EMBEDDING_DIM), np.float32)
    return embedding_run(session)(np.stack([packed_input(w) for w in windows]))


def sequence_input(vector: FloatArray, embedding: FloatArray) -> FloatArray:
    """What the sequence model reads of a window (or of a batch, one row each): the window vector
    (features.py), then the embedding."""
    return np.concatenate([vector, embedding], axis=-1).astype(np.float32)


def sequence_inputs(session: ort.InferenceSession, windows: Sequence[FloatArray]) -> FloatArray:
    """sequence_input of many windows' raw vectors (training, offline checks)."""
    return sequence_input(np.stack([window_vector(w) for w in windows]), embed_windows(session, windows))


def sequence_input_size(window: int) -> int:
    return window_vector_size(window) + EMBEDDING_DIM
