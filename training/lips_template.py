"""The lip template (service/recognizers/landmarks/lips_template.py) from MediaPipe FaceMesh on the train split.

The GISLR embedding reads 40 lip points of MediaPipe's face mesh; serving has no face mesh, so it
places a mean lip shape by the pose's two mouth corners (transfer.lips_from_pose). This makes that
shape, in two steps:

1. `face-mesh`: FaceMesh (the mediapipe 0.10.14 package, video mode, one face) on every frame of every
   train-split clip that is on disk; the 40 lip points per frame go to a .npz. mediapipe pins
   protobuf < 5, which TensorFlow 2.21 refuses, so this step runs in a venv of its own; it imports
   only mediapipe, OpenCV, NumPy and the catalogue.
2. `template`: the same frames' pose mouth corners from data/landmarks.npz (the tracker's per-frame
   vectors); per lip point the median over frames of its offset from the corners' midpoint along the
   corner line, across it, and its depth, each in units of the corner distance; rewrites the
   constants of lips_template.py.

    python3 -m venv /tmp/mp && /tmp/mp/bin/pip install mediapipe==0.10.14
    /tmp/mp/bin/python -m training.lips_template face-mesh     # about 1 min on 2 cores
    python -m training.lips_template template
Test-signer clips are never read.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import numpy as np

from training.catalogue import ROOT, load_catalogue

FACE_MESH_NPZ = ROOT / "data" / "face_mesh_lips.npz"  # not committed: step 1's output, step 2's input
TEMPLATE_MODULE = ROOT / "service" / "recognizers" / "landmarks" / "lips_template.py"


def face_mesh(out: Path) -> int:
    import importlib.util

    import mediapipe as mp  # only in step 1's venv

    from service.clips import iter_clip_frames

    # By file: the package's __init__ needs onnxruntime, which step 1's venv does not have.
    spec = importlib.util.spec_from_file_location("lips_template", TEMPLATE_MODULE)
    assert spec is not None and spec.loader is not None
    constants = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(constants)
    indices: tuple[int, ...] = constants.LIPS_FACE_MESH

    arrays: dict[str, np.ndarray] = {}
    start = time.perf_counter()
    records = [r for r in load_catalogue() if not r.test and r.exists]
    for record in records:
        lips = []
        with mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1) as mesh:
            for frame in iter_clip_frames(record.path):
                found = mesh.process(frame[:, :, ::-1].copy()).multi_face_landmarks
                if not found:
                    lips.append(np.full((len(indices), 3), np.nan, np.float32))
                    continue
                points = found[0].landmark
                lips.append(np.array([[points[i].x, points[i].y, points[i].z] for i in indices], np.float32))
        arrays[record.key] = np.stack(lips)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)  # type: ignore[arg-type]
    frames = sum(len(a) for a in arrays.values())
    print(f"FaceMesh lips of {len(arrays)} clips, {frames} frames, in {time.perf_counter() - start:.0f} s -> {out}")
    return 0


def template_offsets(lips: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """(T, 40, 3) FaceMesh lips and (T, FEATURE_SIZE) raw vectors of the same frames -> (n, 40, 3)
    (along, across, depth) / corner distance, for the frames with a face and both corners visible."""
    from service.recognizers.landmarks.layout import ASPECT
    from service.recognizers.landmarks.transfer import mouth_axes

    axes, aspect = mouth_axes(raw), raw[:, ASPECT]
    keep = axes.seen & ~np.isnan(lips).any(axis=(1, 2)) & (aspect > 0)
    lips, aspect, length = lips[keep], aspect[keep], axes.length[keep][:, None]
    xy = np.stack([lips[..., 0] * aspect[:, None], lips[..., 1]], axis=-1) - axes.mid[keep][:, None]
    along = np.einsum("tpk,tk->tp", xy, axes.along[keep]) / length
    across = np.einsum("tpk,tk->tp", xy, axes.across[keep]) / length
    depth = lips[..., 2] * aspect[:, None] / length  # z is in units of the image width, like x
    return np.stack([along, across, depth], axis=-1)


def template(face_mesh_npz: Path, landmarks_npz: Path, module: Path) -> int:
    test_keys = {r.key for r in load_catalogue() if r.test}
    faces, landmarks = np.load(face_mesh_npz), np.load(landmarks_npz)
    offsets = []
    for key in faces.files:
        if key in test_keys:  # never: step 1 reads train-split clips only
            raise SystemExit(f"{face_mesh_npz} holds the test-split clip {key}")
        lips, raw = faces[key], landmarks[key].astype(np.float32)
        if len(lips) != len(raw):
            raise SystemExit(f"{key}: {len(lips)} FaceMesh frames but {len(raw)} landmark frames")
        offsets.append(template_offsets(lips, raw))
    stacked = np.concatenate(offsets)
    median = np.median(stacked, axis=0)
    rows = "\n".join(f"    ({a:.4f}, {b:.4f}, {c:.4f})," for a, b, c in median)
    head = "LIPS_TEMPLATE: tuple[tuple[float, float, float], ...] = ("
    text = re.sub(r"LIPS_TEMPLATE: .*?\n\)\n", f"{head}\n{rows}\n)\n", module.read_text(), count=1, flags=re.S)
    count = f"({len(stacked):,} frames with both mouth corners visible)"
    text = re.sub(r"\(\d[\d,]* frames with both mouth corners visible\)", count, text, count=1)
    module.write_text(text)
    print(f"template from {len(stacked)} frames of {len(faces.files)} clips -> {module}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("face-mesh", "template"))
    parser.add_argument("--face-mesh-npz", type=Path, default=FACE_MESH_NPZ)
    parser.add_argument("--landmarks", type=Path, default=ROOT / "data" / "landmarks.npz")
    args = parser.parse_args(argv)
    if args.step == "face-mesh":
        return face_mesh(args.face_mesh_npz)
    return template(args.face_mesh_npz, args.landmarks, TEMPLATE_MODULE)


if __name__ == "__main__":
    sys.exit(main())
