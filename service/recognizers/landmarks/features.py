"""Signer normalisation (pure numpy): a window of raw per-frame vectors (layout.py) -> the features the
sequence model sees. Training (training/landmark_model.py) and serving (LandmarkRecognizer.classify)
both call `window_vector`, so what the model sees cannot differ between them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from service.arrays import FloatArray
from service.recognizers.landmarks.layout import (
    ASPECT,
    FEATURE_SIZE,
    HAND_BLOCK,
    POSE_BLOCK,
    POSE_MIRROR,
    POSE_OFFSET,
    POSE_POINTS,
    POSE_PRESENCE,
)

# --------------------------------------------------------------------------------------------
# Signer normalisation (pure)
# --------------------------------------------------------------------------------------------

# Hand landmark indices: finger chains from the wrist (thumb, index, middle, ring, little).
FINGERS: tuple[tuple[int, ...], ...] = (
    (0, 1, 2, 3, 4),
    (0, 5, 6, 7, 8),
    (0, 9, 10, 11, 12),
    (0, 13, 14, 15, 16),
    (0, 17, 18, 19, 20),
)
TIPS = (4, 8, 12, 16, 20)
TIP_PAIRS = tuple((a, b) for i, a in enumerate(TIPS) for b in TIPS[i + 1 :])
# Pose indices used below (MediaPipe numbering, see POSE_NAMES).
NOSE, L_EYE, R_EYE, L_EAR, R_EAR, MOUTH_L, MOUTH_R = 0, 2, 5, 7, 8, 9, 10
L_SHOULDER, R_SHOULDER, L_ELBOW, R_ELBOW, L_WRIST, R_WRIST = 11, 12, 13, 14, 15, 16
# Per hand slot (0 = dominant = signer's right after mirroring, 1 = the other): the pose's wrist and elbow.
SLOT_POSE_WRIST = (R_WRIST, L_WRIST)
SLOT_POSE_ELBOW = (R_ELBOW, L_ELBOW)
# wrist, shape, tips, flexion, flags, elbow, index tip to nose and to mouth, palm length and pose wrist depth
HAND_FEATURES = 2 + 40 + len(TIP_PAIRS) + 15 + 2 + 2 + 2 + 2 + 2
FRAME_FEATURES = 2 * HAND_FEATURES + 10 + 3
NORMALISED_SIZE = FRAME_FEATURES


@dataclass(frozen=True)
class BodyFrame:
    """One window's landmarks in body coordinates: square units, centred on the shoulder midpoint,
    divided by the shoulder width, mirrored so that slot 0 is the dominant hand."""

    hands: FloatArray  # (T, 2, 21, 3)
    present: npt.NDArray[np.bool_]  # (T, 2) the hand tracker found this hand
    pose: FloatArray  # (T, 23, 3)
    visibility: FloatArray  # (T, 23)
    depth: FloatArray  # (T, 23) the pose model's z relative to the shoulders' (negative = nearer the camera)
    mirrored: bool


def body_frame(frames_landmarks: npt.ArrayLike, mirror_left_dominant: bool = True) -> BodyFrame:
    """(T, FEATURE_SIZE) raw vectors of one window -> body coordinates (see BodyFrame).

    Scale and centre are medians over the frames where both shoulders are visible (fallbacks: the
    frame centre and a third of the frame height). When the left hand is present more often / moves
    more than the right (a left-dominant signer), x is mirrored and hands and pose sides swapped.
    """
    raw = np.asarray(frames_landmarks, dtype=np.float32)
    if raw.ndim != 2 or raw.shape[1] != FEATURE_SIZE:
        raise ValueError(f"expected (T, {FEATURE_SIZE}), got {raw.shape}")
    t = raw.shape[0]
    aspect = float(np.median(raw[:, ASPECT])) if t else 1.0
    sq = np.array([aspect, 1.0, aspect], np.float32)
    hands = raw[:, : 2 * HAND_BLOCK].reshape(t, 2, HAND_BLOCK)
    hand_xyz = hands[:, :, :63].reshape(t, 2, 21, 3) * sq
    present = hands[:, :, 63] > 0.5
    pose4 = raw[:, POSE_OFFSET : POSE_OFFSET + POSE_BLOCK].reshape(t, len(POSE_POINTS), 4)
    pose_xyz = pose4[:, :, :3] * sq
    vis = pose4[:, :, 3].copy()
    vis[raw[:, POSE_PRESENCE] <= 0.5] = 0.0
    shoulders_ok = (vis[:, L_SHOULDER] > 0.5) & (vis[:, R_SHOULDER] > 0.5)
    if shoulders_ok.any():
        left, right = pose_xyz[shoulders_ok, L_SHOULDER, :2], pose_xyz[shoulders_ok, R_SHOULDER, :2]
        mid = np.median((left + right) / 2.0, axis=0)
        width = float(np.median(np.linalg.norm(left - right, axis=1)))
    else:
        mid = np.array([aspect / 2.0, 0.5], np.float32)
        width = 1.0 / 3.0
    width = max(width, 1e-3)
    centre = np.array([mid[0], mid[1], 0.0], np.float32)
    hand_n = ((hand_xyz - centre) / width).astype(np.float32)
    pose_n = ((pose_xyz - centre) / width).astype(np.float32)

    def activity(slot: int) -> float:
        seen = present[:, slot]
        if seen.sum() < 2:
            return float(seen.sum())
        wrist = hand_n[seen, slot, 0, :2]
        return float(seen.sum()) + float(np.linalg.norm(np.diff(wrist, axis=0), axis=1).sum())

    mirror = mirror_left_dominant and activity(1) > activity(0)
    if mirror:
        hand_n = hand_n[:, ::-1].copy()
        present = present[:, ::-1].copy()
        hand_n[..., 0] *= -1.0
        pose_n = pose_n[:, list(POSE_MIRROR)].copy()
        vis = vis[:, list(POSE_MIRROR)].copy()
        pose_n[..., 0] *= -1.0
    hand_n[~present] = 0.0
    shoulder_z = (pose_n[:, L_SHOULDER, 2] + pose_n[:, R_SHOULDER, 2]) / 2.0
    depth = (pose_n[:, :, 2] - shoulder_z[:, None]).astype(np.float32)
    return BodyFrame(hand_n, present, pose_n, vis, depth, mirror)


def _fill_gaps(values: FloatArray, known: npt.NDArray[np.bool_]) -> FloatArray:
    """Linear interpolation over time of the frames where `known` is false (held at the ends);
    zeros when nothing is known. values: (T, ...)."""
    if known.all() or not known.any():
        return values if known.any() else np.zeros_like(values)
    t = len(values)
    idx = np.nonzero(known)[0]
    flat = values.reshape(t, -1)
    out = np.empty_like(flat)
    for j in range(flat.shape[1]):
        out[:, j] = np.interp(np.arange(t), idx, flat[idx, j])
    return out.reshape(values.shape)


def _flexion(points: FloatArray) -> FloatArray:
    """(T, 21, 3) -> (T, 15) cosines of the bend at each finger's three joints (1 = straight)."""
    out = []
    for chain in FINGERS:
        for a, b, c in zip(chain[:-2], chain[1:-1], chain[2:], strict=True):
            u = points[:, b] - points[:, a]
            v = points[:, c] - points[:, b]
            denom = np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1) + 1e-6
            out.append((u * v).sum(axis=1) / denom)
    return np.stack(out, axis=1).astype(np.float32)


def normalise_features(frames_landmarks: npt.ArrayLike, mirror_left_dominant: bool = True) -> FloatArray:
    """(T, FEATURE_SIZE) raw vectors of one window -> (T, FRAME_FEATURES) signer-independent features.

    Per hand slot (dominant first): wrist position (body units; the pose model's wrist where the hand
    tracker lost the hand), handshape as 20 points relative to the wrist divided by the palm length
    (scale-free), fingertip distances, finger joint flexion, [tracked, pose wrist visible], elbow, index
    fingertip relative to nose and to mouth. Face: nose, eyes, mouth and ears relative to the nose.
    Both hands: the wrist offset and distance. A hand lost for a few frames is interpolated over
    them (its handshape held at the ends of the window); a hand never found in the window is zeros.
    """
    body = body_frame(frames_landmarks, mirror_left_dominant)
    t = body.hands.shape[0]
    pose, vis = body.pose, body.visibility
    nose = pose[:, NOSE, :2]
    mouth = (pose[:, MOUTH_L, :2] + pose[:, MOUTH_R, :2]) / 2.0
    parts: list[FloatArray] = []
    wrists = []
    for slot in range(2):
        seen = body.present[:, slot]
        pts = body.hands[:, slot]
        pose_wrist = pose[:, SLOT_POSE_WRIST[slot], :2]
        pose_seen = vis[:, SLOT_POSE_WRIST[slot]] > 0.5
        # The hand's wrist where tracked, else the pose's wrist, else interpolated.
        wrist = np.where(seen[:, None], pts[:, 0, :2], pose_wrist)
        wrist = _fill_gaps(wrist, seen | pose_seen)
        wrists.append(wrist)
        rel = pts - pts[:, :1]
        palm = np.linalg.norm(rel[:, 9, :2], axis=1, keepdims=True)
        shape = (rel / np.maximum(palm, 1e-3)[:, :, None]).astype(np.float32)
        shape = _fill_gaps(shape, seen)
        tips = np.stack([np.linalg.norm(shape[:, a, :2] - shape[:, b, :2], axis=1) for a, b in TIP_PAIRS], axis=1)
        flex = _flexion(shape) if seen.any() else np.zeros((t, 15), np.float32)
        palm = _fill_gaps(palm, seen)
        index_tip = wrist + shape[:, 8, :2] * palm
        elbow = pose[:, SLOT_POSE_ELBOW[slot], :2]
        # Towards or away from the camera (STREET moves forward): the palm's apparent length and the
        # pose model's depth of the wrist relative to the shoulders.
        depth = body.depth[:, SLOT_POSE_WRIST[slot]] if pose_seen.any() else np.zeros(t, np.float32)
        depth = _fill_gaps(depth[:, None], pose_seen)
        parts += [
            wrist,
            shape[:, 1:, :2].reshape(t, 40),
            tips,
            flex,
            np.stack([seen, pose_seen], axis=1).astype(np.float32),
            elbow,
            index_tip - nose,
            index_tip - mouth,
            palm,
            depth,
        ]
    face = np.concatenate(
        [
            nose,
            (pose[:, L_EYE, :2] + pose[:, R_EYE, :2]) / 2.0 - nose,
            mouth - nose,
            pose[:, L_EAR, :2] - nose,
            pose[:, R_EAR, :2] - nose,
        ],
        axis=1,
    )
    between = wrists[0] - wrists[1]
    parts += [face, between, np.linalg.norm(between, axis=1, keepdims=True)]
    out = np.concatenate([np.asarray(p, np.float32).reshape(t, -1) for p in parts], axis=1)
    assert out.shape[1] == FRAME_FEATURES, out.shape
    return out


# What the sequence model sees of a window: statistics over time of each per-frame feature. They replaced
# the frames in order (plus their differences), which tie a sign to where in the window it happens: with
# logistic regression, grouped-by-signer CV top-1 75.1 % -> 77.5 % and signer-mean 66.5 % -> 74.3 %
# (5 folds, seed 1234; 77.5 % -> 79.8 % with seed 777), at 1,336 inputs instead of 3,507.
# The 20th and 80th percentiles replaced the min and max (one frame's lost or misplaced hand moves those):
# grouped CV top-1 of the MLP 128 (the previous release) over fold seeds 1234 / 777 / 42: 80.5 / 79.3 /
# 75.3 % with min and max, 82.2 / 79.9 / 75.9 % with the percentiles (top-5 92.5 / 93.1 / 92.5 -> 93.1 x3).
WINDOW_STATISTICS = ("mean", "std", "q20", "q80", "first_half_mean", "second_half_mean", "mean_abs_step", "mean_step")


def window_vector(frames_landmarks: npt.ArrayLike) -> FloatArray:
    """One window's (T >= 2, FEATURE_SIZE) raw vectors -> the sequence model's input vector: for each
    per-frame feature (normalise_features), the WINDOW_STATISTICS over the window's frames."""
    x = normalise_features(frames_landmarks)
    if len(x) < 2:
        raise ValueError(f"a window needs at least 2 frames, got {len(x)}")
    half = len(x) // 2
    step = np.diff(x, axis=0)
    stats = (
        x.mean(axis=0),
        x.std(axis=0),
        np.quantile(x, 0.2, axis=0),
        np.quantile(x, 0.8, axis=0),
        x[:half].mean(axis=0),
        x[half:].mean(axis=0),
        np.abs(step).mean(axis=0),
        step.mean(axis=0),
    )
    assert len(stats) == len(WINDOW_STATISTICS)
    return np.concatenate(stats).astype(np.float32)


def window_vector_size(window: int) -> int:
    """Inputs of the sequence model for a window of `window` frames (the statistics do not depend on it)."""
    if window < 2:
        raise ValueError(f"a window needs at least 2 frames, got {window}")
    return len(WINDOW_STATISTICS) * FRAME_FEATURES
