"""Reference hand landmarks from MediaPipe itself, for tests/test_landmarks.py.

Runs ONLY under a separate venv with mediapipe (it pins protobuf<5, which clashes with TensorFlow):

    python3 -m venv /work/mpvenv && /work/mpvenv/bin/pip install mediapipe==0.10.14 opencv-python-headless
    /work/mpvenv/bin/python training/mediapipe_reference.py --out tests/data/mediapipe_hands_reference.npz \
        ../shared/data/clips/hello/thkazi.mp4 ../shared/data/clips/drink/handspeak.mp4 ...

mediapipe.solutions.hands in video mode (static_image_mode=False, model_complexity=1: palm_detection_full
+ hand_landmark_full, max_num_hands=2, confidences 0.5), every frame in order. Per clip key
`<gloss>/<file stem>`: `<key>/landmarks` (T, 2, 21, 3) float16 in pixels (z scaled like x),
`<key>/present` (T, 2) bool, `<key>/handedness` (T, 2) float16 (MediaPipe's score for the label
"Left", i.e. 1 - score when the label is "Right"), `<key>/size` (2,) = (width, height).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np


def reference(path: Path) -> dict[str, np.ndarray]:
    import mediapipe as mp

    capture = cv2.VideoCapture(str(path))
    frames: list[np.ndarray] = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    h, w = frames[0].shape[:2]
    landmarks = np.zeros((len(frames), 2, 21, 3), np.float32)
    present = np.zeros((len(frames), 2), bool)
    handedness = np.zeros((len(frames), 2), np.float32)
    with mp.solutions.hands.Hands(static_image_mode=False, model_complexity=1, max_num_hands=2,
                                  min_detection_confidence=0.5, min_tracking_confidence=0.5) as hands:
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
    return {"landmarks": landmarks.astype(np.float16), "present": present,
            "handedness": handedness.astype(np.float16), "size": np.array([w, h], np.int32)}


def main() -> None:
    parser = argparse.ArgumentParser(description="MediaPipe Hands reference landmarks -> npz")
    parser.add_argument("clips", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("tests/data/mediapipe_hands_reference.npz"))
    args = parser.parse_args()
    arrays: dict[str, np.ndarray] = {}
    for clip in args.clips:
        key = f"{clip.parent.name}/{clip.stem}"
        ref = reference(clip)
        for name, value in ref.items():
            arrays[f"{key}/{name}"] = value
        rate = ref["present"].any(axis=1).mean()
        print(f"{key}: {len(ref['present'])} frames, >=1 hand in {rate:.0%}, 2 hands in {ref['present'].all(axis=1).mean():.0%}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
