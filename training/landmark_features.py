"""Per-frame hand/pose landmark vectors of every catalogued clip -> data/landmarks.npz.

Every clip of the catalogue (training/catalogue.py: ../shared/data/clips.csv plus data/found_clips.csv)
is streamed frame by frame, in order, through one `HandPoseTracker` per clip
(service/recognizers/landmarks/tracker.py), the tracker serving runs. Clips run in parallel worker processes,
one ONNX thread each.

data/landmarks.npz:
  `<clip key>`            float16 (frames, FEATURE_SIZE) raw vectors of every frame (layout: service/landmarks.py)
  `<clip key>|served<k>`  float16 (n, FEATURE_SIZE): the tracker run only on the frames serving's sampling
                          schedule takes, at phase k (SERVED_PHASES); `...|t` their timestamps (s)
  `_index`                JSON: per clip key, frames, size, fps, hand detection rates, ms per frame
A found clip (not in ../shared) whose file is absent keeps the features already in the file.

    python -m training.landmark_features [--workers 2] [--only KEY_PREFIX ...]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from pathlib import Path
from typing import Any

import numpy as np

from service.clips import clip_fps, iter_clip_frames
from service.recognizer import DirectSteps
from service.recognizers.landmarks.layout import HAND_BLOCK
from service.recognizers.landmarks.tracker import FrontEnd, offline_steps
from service.settings import Settings
from service.stream import StreamState
from training.catalogue import ROOT, ClipRecord, load_catalogue

DEFAULT_OUT = ROOT / "data" / "landmarks.npz"
WINDOW = 10  # model/landmarks/sequence.json "window": the schedule encodes every frame until the first window

_steps: DirectSteps | None = None
_front_end = FrontEnd()


def _init_worker(front_end: FrontEnd) -> None:
    global _steps, _front_end
    _front_end, _steps = front_end, offline_steps(threads=1, front_end=front_end)


def _worker_steps() -> DirectSteps:
    if _steps is None:
        _init_worker(_front_end)
    assert _steps is not None
    return _steps


# Serving runs the tracker only on the frames its sampling schedule takes (EMBEDDINGS_PER_SECOND), so
# the tracker sees frames 1/8 s apart and finds fewer hands than on every frame (on 36 train clips:
# 0.507 vs 0.550 of hand slots). The model is trained on what serving computes: the tracker run on the
# frames StreamState takes, at two sampling phases (the second half an interval later).
SERVED_PHASES = (0.0, 0.5)  # fractions of the sampling interval


def served_key(key: str, phase: int) -> str:
    return f"{key}|served{phase}"


def extract(record: ClipRecord) -> tuple[str, dict[str, np.ndarray], dict[str, Any]]:
    """Every frame through one tracker (dense), and the served frames through one tracker per phase."""
    settings = Settings()
    fps = clip_fps(record.path)
    # The tracker exactly as serving creates it (LandmarkRecognizer.new_tracker: the defaults).
    steps = _worker_steps()
    dense = _front_end.tracker()
    served = [_front_end.tracker() for _ in SERVED_PHASES]
    interval = 1.0 / settings.embeddings_per_second
    states = [StreamState(WINDOW, 1, settings.window_seconds, settings.embeddings_per_second) for _ in SERVED_PHASES]
    feats: list[np.ndarray] = []
    served_feats: list[list[np.ndarray]] = [[] for _ in SERVED_PHASES]
    served_times: list[list[float]] = [[] for _ in SERVED_PHASES]
    size = (0, 0)
    for index, frame in enumerate(iter_clip_frames(record.path)):
        feats.append(dense.process_now(frame, steps).features)
        size = (frame.shape[1], frame.shape[0])
        for k, phase in enumerate(SERVED_PHASES):
            t = index / fps + phase * interval
            if states[k].take(t):
                states[k].add(np.zeros(1, np.float32), t)
                served_feats[k].append(served[k].process_now(frame, steps).features)
                served_times[k].append(t)
    raw = np.stack(feats)
    present = raw[:, [HAND_BLOCK - 1, 2 * HAND_BLOCK - 1]] > 0.5
    arrays = {record.key: raw.astype(np.float16)}
    for k in range(len(SERVED_PHASES)):
        arrays[served_key(record.key, k)] = np.stack(served_feats[k]).astype(np.float16)
        arrays[served_key(record.key, k) + "|t"] = np.asarray(served_times[k], np.float64)
    served_present = arrays[served_key(record.key, 0)][:, [HAND_BLOCK - 1, 2 * HAND_BLOCK - 1]] > 0.5
    info = {
        "gloss": record.gloss,
        "signer": record.signer,
        "test": record.test,
        "frames": len(raw),
        "size": list(size),
        "fps": fps,
        "hand_rate": round(float(present.any(axis=1).mean()), 4),
        "two_hand_rate": round(float(present.all(axis=1).mean()), 4),
        "served_hand_rate": round(float(served_present.any(axis=1).mean()), 4),
        "ms_per_frame": round(dense.stats.total_ms / max(1, dense.stats.frames), 2),
    }
    return record.key, arrays, info


def stored_to_keep(
    arrays: dict[str, np.ndarray], index: dict[str, Any], catalogued: set[str], redo: set[str]
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The stored arrays and index entries that stay: those of catalogued clips not re-extracted now.
    A clip taken out of the catalogue leaves the file (training reads only catalogued keys, but the
    committed file should hold no features of clips the project no longer uses)."""

    def keep(key: str) -> bool:
        return key in catalogued and key not in redo

    kept = {name: value for name, value in arrays.items() if keep(name.split("|", 1)[0])}
    return kept, {key: info for key, info in index.items() if keep(key)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", nargs="*", default=None, help="re-extract only keys with these prefixes")
    defaults = FrontEnd()
    parser.add_argument("--palm", default=defaults.palm, help="palm detector file in model/landmarks")
    parser.add_argument("--hand", default=defaults.hand, help="hand landmark model file in model/landmarks")
    parser.add_argument("--pose", default=defaults.pose, help="pose landmark model file in model/landmarks")
    parser.add_argument("--pose-every", type=int, default=defaults.pose_every, help="pose on every k-th frame")
    parser.add_argument(
        "--detect-every", type=int, default=defaults.detect_every, help="palm detector every k-th frame (1 hand)"
    )
    parser.add_argument(
        "--hands-from-pose",
        action=argparse.BooleanOptionalAction,
        default=defaults.hands_from_pose,
        help="look for an untracked hand where the pose model puts its palm before running the palm detector",
    )
    args = parser.parse_args()
    front_end = FrontEnd(
        args.palm, args.hand, args.pose, args.pose_every, args.detect_every, hands_from_pose=args.hands_from_pose
    )
    old: dict[str, np.ndarray] = {}
    old_meta: dict[str, Any] = {}
    old_index: dict[str, Any] = {}
    if args.out.is_file():
        with np.load(args.out) as data:
            old = {k: data[k] for k in data.files if k != "_index"}
            old_meta = json.loads(str(data["_index"])) if "_index" in data.files else {}
            old_index = old_meta.get("clips", {})
    records = load_catalogue()
    todo = [r for r in records if r.exists and (args.only is None or any(r.key.startswith(p) for p in args.only))]
    missing = [r.key for r in records if not r.exists]
    redo = {r.key for r in todo}
    arrays, index = stored_to_keep(old, old_index, {r.key for r in records}, redo)
    start = time.perf_counter()
    kept = {name.split("|", 1)[0] for name in arrays}
    if kept and FrontEnd.from_dict(old_meta.get("front_end")) != front_end:  # two front ends in one file
        raise SystemExit(
            f"{args.out} holds features of another front end ({old_meta.get('front_end')}) for clips not re-extracted"
            f" here ({len(kept)}, e.g. {sorted(kept)[0]}): extract every clip (their files must be present)"
        )
    with multiprocessing.get_context("spawn").Pool(args.workers, _init_worker, (front_end,)) as pool:
        for key, clip_arrays, info in pool.imap_unordered(extract, todo):
            arrays |= clip_arrays
            index[key] = info
            print(
                f"{key:60s} {info['frames']:4d} frames  hand {info['hand_rate']:.2f}"
                f" (served {info['served_hand_rate']:.2f})"
                f"  {info['ms_per_frame']:.0f} ms/frame",
                flush=True,
            )
    elapsed = time.perf_counter() - start
    lost = [r.key for r in records if served_key(r.key, 0) not in arrays]
    if lost:
        raise SystemExit(f"no clip file and no stored features for: {', '.join(lost)}")
    settings = Settings()
    meta = {
        "tracker": "FrontEnd.tracker(), as serving creates it for a model trained on this front end",
        "front_end": front_end.as_dict(),
        "served": {
            "phases": list(SERVED_PHASES),
            "embeddings_per_second": settings.embeddings_per_second,
            "window_seconds": settings.window_seconds,
            "window": WINDOW,
        },
        "seconds": round(elapsed, 1),
        "workers": args.workers,
        "clips": index,
    }
    arrays["_index"] = np.array(json.dumps(meta))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)  # type: ignore[arg-type]
    print(
        f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB): {len(todo)} clips extracted in {elapsed:.0f} s "
        f"with {args.workers} workers; {len(missing)} clip files absent (features kept: {len(missing) - len(lost)})"
    )


if __name__ == "__main__":
    main()
