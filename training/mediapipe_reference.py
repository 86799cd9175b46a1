"""Reference hand landmarks from MediaPipe itself, for tests/test_landmarks.py.

Runs ONLY under a separate venv with mediapipe (it pins protobuf<5, which clashes with TensorFlow):

    python3 -m venv /work/mpvenv && /work/mpvenv/bin/pip install mediapipe==0.10.14 opencv-python-headless
    /work/mpvenv/bin/python training/mediapipe_reference.py --out tests/data/mediapipe_hands_reference.npz \
        ../shared/data/clips/hello/thkazi.mp4 ../shared/data/clips/drink/handspeak.mp4 ...
    # then, under the main venv: tracker vs reference -> model/landmarks/report.json "mediapipe_agreement"
    python -m training.mediapipe_reference --compare

mediapipe.solutions.hands in video mode (static_image_mode=False, model_complexity=1: palm_detection_full
+ hand_landmark_full, max_num_hands=2, confidences 0.5), every frame in order. Per clip key
`<gloss>/<file stem>`: `<key>/landmarks` (T, 2, 21, 3) float16 in pixels (z scaled like x),
`<key>/present` (T, 2) bool, `<key>/handedness` (T, 2) float16 (MediaPipe's score for the label
"Left", i.e. 1 - score when the label is "Right"), `<key>/size` (2,) = (width, height).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import cv2
import numpy as np

from service.clips import CLIPS_DIR, iter_clip_frames

if TYPE_CHECKING:
    from service.recognizer import DirectSteps

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REFERENCE = ROOT / "tests" / "data" / "mediapipe_hands_reference.npz"
DEFAULT_CLIPS = CLIPS_DIR


def reference(path: Path) -> dict[str, np.ndarray]:
    import mediapipe as mp

    frames = list(iter_clip_frames(path))
    h, w = frames[0].shape[:2]
    landmarks = np.zeros((len(frames), 2, 21, 3), np.float32)
    present = np.zeros((len(frames), 2), bool)
    handedness = np.zeros((len(frames), 2), np.float32)
    with mp.solutions.hands.Hands(
        static_image_mode=False,
        model_complexity=1,
        max_num_hands=2,
        min_detection_confidence=0.5,
        min_tracking_confidence=0.5,
    ) as hands:
        for i, frame in enumerate(frames):
            result = hands.process(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            if not result.multi_hand_landmarks:
                continue
            for j, (lms, cls) in enumerate(zip(result.multi_hand_landmarks, result.multi_handedness, strict=True)):
                if j >= 2:
                    break
                landmarks[i, j] = [[p.x * w, p.y * h, p.z * w] for p in lms.landmark]
                present[i, j] = True
                top = cls.classification[0]
                handedness[i, j] = top.score if top.label == "Left" else 1.0 - top.score
    return {
        "landmarks": landmarks.astype(np.float16),
        "present": present,
        "handedness": handedness.astype(np.float16),
        "size": np.array([w, h], np.int32),
    }


def compare_with_reference(
    steps: DirectSteps, key: str, reference_path: Path = DEFAULT_REFERENCE, clips_dir: Path = DEFAULT_CLIPS
) -> dict[str, Any]:
    """The landmark tracker (under the main venv) vs the reference, configured as MediaPipe Hands is
    (palm score 0.5, detector every frame while < 2 hands). Each MediaPipe hand is matched to the
    nearest tracker hand (mean landmark distance < 5% of the frame width counts as found)."""
    from service.clips import iter_clip_frames
    from service.recognizers.landmarks.tracker import HandPoseTracker

    ref = np.load(reference_path)
    landmarks = ref[f"{key}/landmarks"].astype(np.float32)
    present = ref[f"{key}/present"]
    handed = ref[f"{key}/handedness"].astype(np.float32)
    width = float(ref[f"{key}/size"][0])
    tracker = HandPoseTracker(min_detection_score=0.5, detect_every=1, run_pose=False)
    errors: list[float] = []
    handedness_agree: list[bool] = []
    ours_any: list[bool] = []
    for i, frame in enumerate(iter_clip_frames(clips_dir / f"{key}.mp4")):
        result = tracker.process_now(frame, steps)
        ours_any.append(bool(result.hands))
        for j in range(2):
            if not present[i, j] or not result.hands:
                continue
            dists = [
                float(np.linalg.norm(h.landmarks[:, :2] - landmarks[i, j, :, :2], axis=1).mean()) for h in result.hands
            ]
            best = int(np.argmin(dists))
            if dists[best] < 0.05 * width:
                errors.append(dists[best])
                handedness_agree.append((result.hands[best].handedness > 0.5) == (handed[i, j] > 0.5))
    return {
        "mediapipe_hands": int(present.sum()),
        "recall": len(errors) / max(1, int(present.sum())),
        "median_px": float(np.median(errors)) if errors else float("inf"),
        "p90_px": float(np.percentile(errors, 90)) if errors else float("inf"),
        "mean_px": float(np.mean(errors)) if errors else float("inf"),
        "handedness_agreement": float(np.mean(handedness_agree)) if handedness_agree else 0.0,
        "mediapipe_frame_rate": float(present.any(axis=1).mean()),
        "ours_frame_rate": float(np.mean(ours_any)),
        "frame_width": width,
    }


def write_agreement(reference_path: Path = DEFAULT_REFERENCE, clips_dir: Path = DEFAULT_CLIPS) -> dict[str, Any]:
    """Under the main venv: the comparison for every clip of the reference -> model/landmarks/report.json."""
    from service.recognizers.landmarks.tracker import MODEL_DIR, offline_steps

    steps = offline_steps(threads=1)
    keys = sorted({name.rsplit("/", 1)[0] for name in np.load(reference_path).files})
    out: dict[str, Any] = {
        "reference": "mediapipe 0.10.14 solutions.hands, video mode, model_complexity=1",
        "metric": "per MediaPipe hand: mean over 21 landmarks of the 2-D pixel distance",
        "clips": {},
    }
    for key in keys:
        out["clips"][key] = compare_with_reference(steps, key, reference_path, clips_dir)
        print(key, json.dumps(out["clips"][key]), flush=True)
    report_path = MODEL_DIR / "report.json"
    report = json.loads(report_path.read_text())
    report["mediapipe_agreement"] = out
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="MediaPipe Hands reference landmarks -> npz")
    parser.add_argument("clips", nargs="*", type=Path)
    parser.add_argument("--out", type=Path, default=DEFAULT_REFERENCE)
    parser.add_argument(
        "--compare",
        action="store_true",
        help="(main venv) compare service/landmarks.py with --out and write report.json",
    )
    args = parser.parse_args()
    if args.compare:
        write_agreement(args.out)
        return
    arrays: dict[str, np.ndarray] = {}
    for clip in args.clips:
        key = f"{clip.parent.name}/{clip.stem}"
        ref = reference(clip)
        for name, value in ref.items():
            arrays[f"{key}/{name}"] = value
        rate = ref["present"].any(axis=1).mean()
        both = ref["present"].all(axis=1).mean()
        print(f"{key}: {len(ref['present'])} frames, >=1 hand in {rate:.0%}, 2 hands in {both:.0%}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **cast(dict[str, Any], arrays))  # cast: mypy would match **arrays to allow_pickle
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
