"""Per-frame hand/pose landmark features of every clip -> data/landmarks.npz.

Every clip of ../shared/data/clips/<gloss>/*.mp4 (source "shared"), and of each extra directory's
manifest.csv (columns gloss,file,...,split; source = "extra_<dir name>"), is streamed frame by frame,
in order, through one `service.landmarks.HandPoseTracker` per clip (as serving would see it).

data/landmarks.npz:
  `<gloss>/<source>/<file stem>`  float16 (T, FEATURE_SIZE) raw features (layout: service/landmarks.py)
  `_index`                        JSON: per clip key, path, split, frames, size, fps, hand detection rates
Detection rates (frames with >= 1 hand, with 2 hands) also go into model/landmarks/report.json.

    python -m training.landmark_features [--extra /work/extra_clips/a /work/extra_clips/b] [--threads 1]
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from service.landmarks import MODEL_DIR, HandPoseTracker, LandmarkModels
from service.preprocess import iter_clip_frames

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CLIPS = ROOT.parent / "shared" / "data" / "clips"
DEFAULT_EXTRA = [Path("/work/extra_clips/a"), Path("/work/extra_clips/b")]


def list_clips(clips_dir: Path, extra: list[Path]) -> list[dict[str, Any]]:
    splits: dict[str, str] = {}
    manifest = ROOT / "data" / "manifest.csv"
    if manifest.exists():
        with manifest.open() as handle:
            for row in csv.DictReader(handle):
                splits[Path(row["path"]).as_posix().split("clips/", 1)[-1]] = row.get("split", "")
    clips = []
    for path in sorted(clips_dir.glob("*/*.mp4")):
        rel = f"{path.parent.name}/{path.name}"
        clips.append(
            {
                "key": f"{path.parent.name}/shared/{path.stem}",
                "path": str(path),
                "gloss": path.parent.name,
                "source": "shared",
                "split": splits.get(rel, "unlisted"),
            }
        )
    for directory in extra:
        with (directory / "manifest.csv").open() as handle:
            for row in csv.DictReader(handle):
                path = directory / row["file"]
                source = f"extra_{directory.name}"
                clips.append(
                    {
                        "key": f"{row['gloss']}/{source}/{path.stem}",
                        "path": str(path),
                        "gloss": row["gloss"],
                        "source": source,
                        "split": row.get("split", ""),
                    }
                )
    return clips


def extract(
    clip: dict[str, Any], models: LandmarkModels, min_detection_score: float
) -> tuple[np.ndarray, dict[str, Any]]:
    tracker = HandPoseTracker(models, min_detection_score=min_detection_score)
    feats, n_hands = [], []
    size = (0, 0)
    for frame in iter_clip_frames(Path(clip["path"])):
        result = tracker.process(frame)
        feats.append(result.features)
        n_hands.append(len(result.hands))
        size = (frame.shape[1], frame.shape[0])
    capture = cv2.VideoCapture(clip["path"])
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    capture.release()
    hands = np.asarray(n_hands)
    s = tracker.stats
    info = {
        "path": clip["path"],
        "gloss": clip["gloss"],
        "source": clip["source"],
        "split": clip["split"],
        "frames": len(feats),
        "size": list(size),
        "fps": fps,
        "hand_rate": float((hands >= 1).mean()) if len(hands) else 0.0,
        "two_hand_rate": float((hands >= 2).mean()) if len(hands) else 0.0,
        "palm_calls": s.palm_calls,
        "hand_calls": s.hand_calls,
        "ms_per_frame": s.total_ms / max(1, s.frames),
    }
    return np.stack(feats).astype(np.float16), info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--clips", type=Path, default=DEFAULT_CLIPS)
    parser.add_argument("--extra", type=Path, nargs="*", default=DEFAULT_EXTRA)
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "landmarks.npz")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--min-detection-score", type=float, default=0.3)
    args = parser.parse_args()
    models = LandmarkModels(threads=args.threads)
    arrays: dict[str, np.ndarray] = {}
    index: dict[str, Any] = {}
    start = time.perf_counter()
    for clip in list_clips(args.clips, args.extra):
        feats, info = extract(clip, models, args.min_detection_score)
        arrays[clip["key"]] = feats
        index[clip["key"]] = info
        print(
            f"{clip['key']:45s} {info['frames']:4d} frames  hand {info['hand_rate']:.2f}"
            f"  two {info['two_hand_rate']:.2f}  {info['ms_per_frame']:.0f} ms/frame",
            flush=True,
        )
    elapsed = time.perf_counter() - start
    meta = {
        "min_detection_score": args.min_detection_score,
        "threads": args.threads,
        "seconds": elapsed,
        "clips": index,
    }
    arrays["_index"] = np.array(json.dumps(meta))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    rates = np.array([c["hand_rate"] for c in index.values()])
    summary = {
        "clips": len(index),
        "frames": int(sum(c["frames"] for c in index.values())),
        "seconds": round(elapsed, 1),
        "hand_rate_mean": float(rates.mean()),
        "hand_rate_min": float(rates.min()),
        "clips_hand_rate_below_0.5": sorted(k for k, c in index.items() if c["hand_rate"] < 0.5),
        "per_clip": {
            k: {"hand": round(c["hand_rate"], 3), "two_hands": round(c["two_hand_rate"], 3)} for k, c in index.items()
        },
    }
    report_path = MODEL_DIR / "report.json"
    if report_path.exists():
        report = json.loads(report_path.read_text())
        report["detection_rates"] = summary
        report_path.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB), {len(index)} clips in {elapsed:.0f} s; "
        f"mean hand rate {rates.mean():.2f}"
    )


if __name__ == "__main__":
    main()
