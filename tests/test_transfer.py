"""The pretrained GISLR embedding as serving feeds it (service/recognizers/landmarks/transfer.py), on the
tracker's features of a real clip: lips placed where the mouth is, the converted ONNX model equal to its
conversion record, and the batched run equal to the model run item by item."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from harness.servers import ROOT
from service.recognizers.landmarks.layout import ASPECT, POSE_OFFSET, POSE_POINTS
from service.recognizers.landmarks.transfer import (
    EMBEDDING_DIM,
    EMBEDDING_FILE,
    EMBEDDING_META,
    FRAME_REPEAT,
    FRAMES,
    POINTS,
    embedding_run,
    gislr_input,
    lips_from_pose,
    packed_input,
)

LANDMARKS = ROOT / "model" / "landmarks"
CLIP = "shared/clips/hello/thkazi"  # a train-split clip; data/landmarks.npz holds its tracker output


@pytest.fixture(scope="module")
def raw() -> np.ndarray:
    with np.load(ROOT / "data" / "landmarks.npz") as arrays:
        return np.asarray(arrays[CLIP].astype(np.float32))


@pytest.fixture(scope="module")
def session() -> ort.InferenceSession:
    return ort.InferenceSession(str(LANDMARKS / EMBEDDING_FILE), providers=["CPUExecutionProvider"])


def test_template_lips_sit_between_the_mouth_corners(raw: np.ndarray) -> None:
    pose = raw[:, POSE_OFFSET : POSE_OFFSET + len(POSE_POINTS) * 4].reshape(len(raw), len(POSE_POINTS), 4)
    lips = lips_from_pose(raw)
    seen = (pose[:, 9, 3] > 0.5) & (pose[:, 10, 3] > 0.5)
    assert seen.sum() >= 20 and np.isnan(lips[~seen]).all() and not np.isnan(lips[seen]).any()
    to_square = np.stack([raw[seen, ASPECT], np.ones(int(seen.sum()), np.float32)], axis=1)[:, None]  # x*W/H, y
    corners = pose[seen][:, [9, 10], :2] * to_square
    placed = lips[seen, :, :2] * to_square
    width = np.linalg.norm(corners[:, 0] - corners[:, 1], axis=1)
    # Face-mesh points 61 and 291 (template rows 0 and 10) are the mouth corners themselves.
    for row in (0, 10):
        gap = np.linalg.norm(placed[:, row, None] - corners, axis=-1).min(axis=1)
        assert np.median(gap / width) < 0.35, row
    centre_gap = np.linalg.norm(placed.mean(axis=1) - corners.mean(axis=1), axis=1)
    assert np.median(centre_gap / width) < 0.5


def test_gislr_input_is_normalised_as_the_model_was_trained(raw: np.ndarray) -> None:
    frames, idxs = gislr_input(raw[:10])
    shown = 10 * FRAME_REPEAT  # each frame FRAME_REPEAT times in a row
    assert frames.shape == (FRAMES, POINTS, 3) and idxs.shape == (FRAMES,) and shown <= FRAMES
    assert np.abs(frames).max() == pytest.approx(1.0)
    assert list(idxs[:shown]) == list(range(1, shown + 1)) and not idxs[shown:].any() and not frames[shown:].any()
    assert (frames[:shown:FRAME_REPEAT] == frames[FRAME_REPEAT - 1 : shown : FRAME_REPEAT]).all()


def test_the_embedding_is_the_converted_model_and_batches_like_single_runs(
    raw: np.ndarray, session: ort.InferenceSession
) -> None:
    from service.onnx_runtime import sha256_of

    record = json.loads((LANDMARKS / EMBEDDING_META).read_text())["conversion"]
    assert record["onnx_sha256"] == sha256_of(LANDMARKS / EMBEDDING_FILE)
    assert record["parity"]["max_abs_diff"] < 1e-4 and record["source"]["licence"] == "MIT"
    windows = [raw[i : i + 10] for i in range(0, len(raw) - 10, 7)]
    batched = embedding_run(session)(np.stack([packed_input(w) for w in windows]))
    assert batched.shape == (len(windows), EMBEDDING_DIM)
    for window, row in zip(windows, batched, strict=True):
        frames, idxs = gislr_input(window)
        single = session.run(None, {"frames": frames[None], "frame_idxs": idxs[None]})[0][0]
        np.testing.assert_allclose(row, single, atol=1e-6)
    assert np.std(batched, axis=0).mean() > 1e-3  # different windows, different embeddings


def test_the_template_maker_inverts_the_placement(raw: np.ndarray) -> None:
    """training/lips_template.py measures lips in the frame that lips_from_pose places them in: placing
    the template on a real clip's mouth corners and measuring it back gives the template."""
    from service.recognizers.landmarks.lips_template import LIPS_TEMPLATE
    from training.lips_template import template_offsets

    measured = template_offsets(lips_from_pose(raw), raw)
    assert len(measured) >= 20
    np.testing.assert_allclose(measured, np.broadcast_to(np.asarray(LIPS_TEMPLATE), measured.shape), atol=1e-4)
