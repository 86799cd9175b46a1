"""Would decoding at half size (cv2.IMREAD_REDUCED_COLOR_2) change answers? Measured, not assumed.

Every clip of ../shared/data is sent as a browser sends it (640x480 JPEG, quality 80), decoded at
full and at half size, and streamed through the server's own pipeline (sampling, windows, head).
Reports how often the per-frame label and the clip label agree, and what each decode costs.

    python -m benchmarks.reduced_decode --model wlasl20c --json benchmarks/reduced_decode_wlasl20c.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import cast

import cv2
import numpy as np

from service.arrays import ImageBGR
from service.clips import CLIPS_DIR, clip_fps, iter_clip_frames
from service.engine import load_recognizer
from service.pipeline import Pipeline
from service.recognizer import Recognizer
from service.settings import Settings, load_settings
from service.streaming import Step, clip_label

ROOT = Path(__file__).resolve().parents[1]
CLIPS = CLIPS_DIR
DECODES = {"full": cv2.IMREAD_COLOR, "reduced_2": cv2.IMREAD_REDUCED_COLOR_2}


def browser_jpeg(frame: np.ndarray) -> np.ndarray:
    return cv2.imencode(".jpg", cv2.resize(frame, (640, 480)), [cv2.IMWRITE_JPEG_QUALITY, 80])[1]


async def timeline(recognizer: Recognizer, settings: Settings, path: Path, flag: int) -> list[Step]:
    pipeline = Pipeline(recognizer, settings, max_streams=1)
    pipeline.start()
    try:
        fps, stream, steps = clip_fps(path), pipeline.new_stream(), []
        for index, frame in enumerate(iter_clip_frames(path)):
            image = cast(ImageBGR, cv2.imdecode(browser_jpeg(frame), flag))
            prediction = await pipeline.predict(image, stream, index / fps)
            steps.append(Step(index, index / fps, prediction.label, prediction.score))
        return steps
    finally:
        await pipeline.stop()


def decode_ms(jpegs: list[np.ndarray], flag: int, rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for data in jpegs:
            cv2.imdecode(data, flag)
        best = min(best, (time.perf_counter() - start) / len(jpegs))
    return round(best * 1e3, 3)


async def measure(model: str) -> dict[str, object]:
    settings = load_settings(
        {"MODEL": model, "MODEL_PATH": str(ROOT / "model" / "WLASL20c_model.h5"), "ENCODER_VARIANT": "fp32"},
        env_file=None,
    )
    recognizer = load_recognizer(settings)
    paths = sorted(CLIPS.rglob("*.mp4"))
    same_steps = steps = same_clips = 0
    correct = dict.fromkeys(DECODES, 0)
    for path in paths:
        runs = {name: await timeline(recognizer, settings, path, flag) for name, flag in DECODES.items()}
        full, reduced = runs["full"], runs["reduced_2"]
        same_steps += sum(a.label == b.label for a, b in zip(full, reduced, strict=True))
        steps += len(full)
        clip = {name: clip_label(run)[0] for name, run in runs.items()}
        same_clips += clip["full"] == clip["reduced_2"]
        for name in DECODES:
            correct[name] += clip[name] == path.parent.name
    jpegs = [browser_jpeg(frame) for frame in list(iter_clip_frames(paths[0]))[:40]]
    return {
        "model": model,
        "clips": len(paths),
        "frame_label_agreement": round(same_steps / steps, 4),
        "clip_label_agreement": round(same_clips / len(paths), 4),
        "clips_correct": correct,
        "decode_ms_640x480": {name: decode_ms(jpegs, flag) for name, flag in DECODES.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("wlasl20c", "landmarks"), default="wlasl20c")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = asyncio.run(measure(args.model))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
