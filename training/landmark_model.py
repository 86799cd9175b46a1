"""Landmark sequence model: T evenly spaced per-frame landmark vectors -> 20 gloss probabilities.

Data: data/landmarks.npz (raw per-frame features, service/landmarks.py layout) joined to
data/manifest.csv by clip path. Only `split == train` clips are used for training and for choosing
the model (leave-one-source-out CV by `source_repo`); the `test` clips are evaluated once, at the end,
by the model trained on all train clips; `excluded` clips are never used.

Windows (as serving builds them, service/stream.py): T target times evenly spaced over a span,
each mapped to the NEAREST frame (ties to the earlier one); the T raw vectors then go through
`service.landmarks.normalise_features` -- the same function serving calls -- giving (T, NORMALISED_SIZE).
Evaluation windows span the whole clip. Training windows are augmented:
  * raw space (before normalise_features): random sub-span 60-100 % of the clip with a monotone time
    warp; mirror (x -> 1 - x, hand slots swapped, pose left/right swapped) with p = 0.5 -- note that
    normalise_features(mirror_left_dominant=True) mirrors left-dominant windows back, so this mostly
    exercises its dominance decision rather than producing left-handed inputs; dropped hand frames
    (hand block incl. presence zeroed, p per frame and slot);
  * normalised space (after): scale, small rotation about the shoulder midpoint, Gaussian noise on
    present points.
A pool of augmented windows is drawn once per clip (fixed seed); each fold trains on its clips'
windows, sampled balanced over glosses (gloss uniform, then clip, then window).

Models: "gru" (GRU(units) -> Dropout -> Dense(20, softmax)), "conv" (2 x Conv1D -> global average
pool -> Dense), and the baseline "logreg" (mean and std over time -> softmax regression, numpy).

    TF_USE_LEGACY_KERAS=1 python -m training.landmark_model            # LOSO for all configs, pick,
                                                                       # train on train, test once, export
    python -m training.landmark_model --configs logreg gru64 --no-export
Outputs: model/landmarks/sequence.onnx (input "windows" (B, T, NORMALISED_SIZE) float32, already
normalised; output (B, 20) probabilities in LABELS order), sequence.json, training_report.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import csv
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from service.landmarks import (
    FEATURE_SIZE,
    HAND_BLOCK,
    NORMALISED_SIZE,
    POSE_BLOCK,
    POSE_OFFSET,
    POSE_POINTS,
    normalise_features,
)

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "model" / "landmarks"
OPSET = 17
# LABELS order as in convert/architecture.py (kept in sync by a check in main()).
LABELS = [
    "book", "chair", "clothes", "computer", "drink", "drum", "family", "football", "go", "hat",
    "hello", "kiss", "like", "play", "school", "street", "table", "university", "violin", "wall",
]  # fmt: skip
POSE_SWAP = [0, 2, 1, 4, 3, 6, 5]  # nose, l/r shoulder, l/r elbow, l/r wrist
STREAM_SECONDS = 2.0  # serving's default WINDOW_SECONDS
STREAM_STEP = 0.25


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


@dataclass
class Clip:
    key: str
    path: str
    gloss: str
    label: int
    source: str
    split: str
    raw: np.ndarray  # (N, FEATURE_SIZE) float32
    times: np.ndarray  # (N,) seconds


def npz_key(path: str) -> str:
    """Manifest path -> data/landmarks.npz key (<gloss>/<source>/<stem>)."""
    parts = Path(path).parts
    stem = Path(path).stem
    if parts[0] == "shared":
        return f"{parts[-2]}/shared/{stem}"
    if parts[0] == "extra":
        return f"{parts[-2]}/extra_{parts[1]}/{stem}"
    raise ValueError(f"unknown clip root in {path}")


def load_clips(manifest: Path, npz: Path) -> list[Clip]:
    data = np.load(npz)
    meta = json.loads(str(data["_index"]))["clips"]
    clips = []
    with manifest.open() as handle:
        for row in csv.DictReader(handle):
            key = npz_key(row["path"])
            raw = data[key].astype(np.float32)
            fps = float(meta[key].get("fps") or 0.0) or 30.0
            clips.append(
                Clip(
                    key,
                    row["path"],
                    row["gloss"],
                    LABELS.index(row["gloss"]),
                    row["source_repo"],
                    row["split"],
                    raw,
                    np.arange(len(raw), dtype=np.float64) / fps,
                )
            )
    return clips


def nearest_picks(times: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Index of the frame nearest each target time, ties to the earlier frame (as service/stream.py)."""
    n = len(times)
    if n == 1:
        return np.zeros(len(targets), dtype=np.int64)
    after = np.clip(np.searchsorted(times, targets), 1, n - 1)
    nearer_before = (targets - times[after - 1]) <= (times[after] - targets)
    return np.where(nearer_before, after - 1, after)


def clip_window(clip: Clip, t: int, start: float | None = None, end: float | None = None) -> np.ndarray:
    """(t, NORMALISED_SIZE): t frames evenly spaced in time over [start, end] (default the whole clip)."""
    s = clip.times[0] if start is None else start
    e = clip.times[-1] if end is None else end
    picks = nearest_picks(clip.times, np.linspace(s, e, t))
    return normalise_features(clip.raw[picks])


def stream_windows(clip: Clip, t: int, seconds: float = STREAM_SECONDS, step: float = STREAM_STEP) -> np.ndarray:
    """Serving-like windows: ending every `step` s (once t frames exist), over the last `seconds` of history."""
    out = []
    end_time = clip.times[min(t, len(clip.times)) - 1]
    while True:
        upto = int(np.searchsorted(clip.times, end_time, side="right"))
        times = clip.times[:upto]
        start = max(float(times[0]), float(times[-1]) - seconds)
        picks = nearest_picks(times, np.linspace(start, times[-1], t))
        out.append(normalise_features(clip.raw[picks]))
        if end_time >= clip.times[-1]:
            break
        end_time = min(end_time + step, float(clip.times[-1]))
    return np.stack(out)


# --------------------------------------------------------------------------------------------
# Augmentation
# --------------------------------------------------------------------------------------------


@dataclass
class Aug:
    span_min: float = 0.6
    warp: float = 0.25  # time warp exponent exp(U(-warp, warp))
    mirror: float = 0.5
    drop_hand: float = 0.15  # per frame and hand slot
    scale: float = 0.15  # isotropic U(1-scale, 1+scale), then x/y +-5 %
    rotate_deg: float = 10.0
    noise: float = 0.03  # shoulder widths


def mirror_raw(raw: np.ndarray) -> np.ndarray:
    """Horizontally flipped image: x -> 1 - x (where set), hand slots and pose sides swapped."""
    out = raw.copy()
    hands = out[:, : 2 * HAND_BLOCK].reshape(len(out), 2, HAND_BLOCK)
    xs = hands[:, :, 0:63:3]
    hands[:, :, 0:63:3] = np.where(hands[:, :, 63:64] > 0.5, 1.0 - xs, xs)
    out[:, : 2 * HAND_BLOCK] = hands[:, ::-1].reshape(len(out), -1)
    pose = out[:, POSE_OFFSET : POSE_OFFSET + POSE_BLOCK].reshape(len(out), len(POSE_POINTS), 4)
    px = pose[:, :, 0]
    pose[:, :, 0] = np.where(px != 0.0, 1.0 - px, px)
    out[:, POSE_OFFSET : POSE_OFFSET + POSE_BLOCK] = pose[:, POSE_SWAP].reshape(len(out), -1)
    return out


def augment_window(clip: Clip, t: int, aug: Aug, rng: np.random.Generator) -> np.ndarray:
    duration = float(clip.times[-1] - clip.times[0])
    frac = rng.uniform(aug.span_min, 1.0)
    start = clip.times[0] + rng.uniform(0.0, (1.0 - frac) * duration)
    u = np.linspace(0.0, 1.0, t) ** math.exp(rng.uniform(-aug.warp, aug.warp))
    picks = nearest_picks(clip.times, start + frac * duration * u)
    raw = clip.raw[picks].copy()
    if rng.random() < aug.mirror:
        raw = mirror_raw(raw)
    if aug.drop_hand > 0:
        for slot in range(2):
            drop = rng.random(t) < aug.drop_hand
            raw[drop, slot * HAND_BLOCK : (slot + 1) * HAND_BLOCK] = 0.0
    x = normalise_features(raw)
    hands = x[:, : 2 * HAND_BLOCK].reshape(t, 2, HAND_BLOCK)
    pts = hands[:, :, :63].reshape(t, 2, 21, 3)
    present = hands[:, :, 63] > 0.5
    pose = x[:, 2 * HAND_BLOCK :].reshape(t, len(POSE_POINTS), 3)
    angle = math.radians(rng.uniform(-aug.rotate_deg, aug.rotate_deg))
    s = rng.uniform(1 - aug.scale, 1 + aug.scale) * rng.uniform(0.95, 1.05, size=2)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]) * s[None, :]
    pts[..., :2] = pts[..., :2] @ rot.T.astype(np.float32)
    pose[..., :2] = pose[..., :2] @ rot.T.astype(np.float32)
    if aug.noise > 0:
        pts += rng.normal(0.0, aug.noise, pts.shape).astype(np.float32) * present[:, :, None, None]
        pose[..., :2] += rng.normal(0.0, aug.noise, pose[..., :2].shape).astype(np.float32)
    hands[:, :, :63] = pts.reshape(t, 2, 63)
    x[:, : 2 * HAND_BLOCK] = hands.reshape(t, -1)
    x[:, 2 * HAND_BLOCK :] = pose.reshape(t, -1)
    return x


def window_pool(clips: list[Clip], t: int, per_clip: int, aug: Aug | None, seed: int) -> dict[str, np.ndarray]:
    """`per_clip` training windows per clip (the first is always the plain whole-clip window)."""
    rng = np.random.default_rng(seed)
    pool = {}
    for clip in clips:
        wins = [clip_window(clip, t)]
        for _ in range(per_clip - 1):
            wins.append(augment_window(clip, t, aug, rng) if aug is not None else clip_window(clip, t))
        pool[clip.key] = np.stack(wins).astype(np.float32)
    return pool


def balanced_indices(
    clips: list[Clip], pool: dict[str, np.ndarray], n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    by_gloss: dict[int, list[Clip]] = {}
    for clip in clips:
        by_gloss.setdefault(clip.label, []).append(clip)
    glosses = sorted(by_gloss)
    xs, ys = [], []
    for g in rng.choice(glosses, size=n):
        members = by_gloss[int(g)]
        clip = members[int(rng.integers(len(members)))]
        wins = pool[clip.key]
        xs.append(wins[int(rng.integers(len(wins)))])
        ys.append(clip.label)
    return np.stack(xs), np.asarray(ys, dtype=np.int64)


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


@dataclass
class HParams:
    kind: str = "gru"  # gru | conv | logreg
    units: int = 64
    dropout: float = 0.3
    l2: float = 1e-4
    lr: float = 2e-3
    epochs: int = 30
    samples_per_epoch: int = 1024
    batch: int = 64
    augment: bool = True
    per_clip: int = 64
    aug: Aug = field(default_factory=Aug)


CONFIGS: dict[str, HParams] = {
    "logreg": HParams(kind="logreg", l2=1e-2, lr=0.5, epochs=200, samples_per_epoch=2048),
    "gru64": HParams(kind="gru", units=64),
    "gru64_noaug": HParams(kind="gru", units=64, augment=False),
    "conv64": HParams(kind="conv", units=64),
}


def set_seeds(seed: int) -> None:
    import tensorflow as tf
    import tf_keras as keras

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def build_keras(hp: HParams, t: int) -> Any:
    import tf_keras as keras

    reg = keras.regularizers.l2(hp.l2) if hp.l2 else None
    inputs = keras.Input((t, NORMALISED_SIZE), name="windows")
    if hp.kind == "gru":
        x = keras.layers.GRU(hp.units, unroll=True, kernel_regularizer=reg, name="gru")(inputs)
    elif hp.kind == "conv":
        x = keras.layers.Conv1D(hp.units, 3, padding="same", activation="relu", kernel_regularizer=reg)(inputs)
        x = keras.layers.Conv1D(hp.units, 3, padding="same", activation="relu", kernel_regularizer=reg)(x)
        x = keras.layers.GlobalAveragePooling1D()(x)
    else:
        raise ValueError(hp.kind)
    x = keras.layers.Dropout(hp.dropout)(x)
    outputs = keras.layers.Dense(len(LABELS), activation="softmax", kernel_regularizer=reg, name="probabilities")(x)
    model = keras.Model(inputs, outputs, name=f"landmark_{hp.kind}")
    model.compile(optimizer=keras.optimizers.Adam(hp.lr), loss="sparse_categorical_crossentropy")
    return model


class LogReg:
    """Baseline: mean and std of each feature over the window -> standardised -> softmax regression."""

    def __init__(self, hp: HParams) -> None:
        self.hp = hp

    @staticmethod
    def pooled(x: np.ndarray) -> np.ndarray:
        return np.concatenate([x.mean(axis=1), x.std(axis=1)], axis=1)

    def fit(self, x: np.ndarray, y: np.ndarray) -> LogReg:
        f = self.pooled(x)
        self.mu, self.sd = f.mean(0), f.std(0) + 1e-6
        f = ((f - self.mu) / self.sd).astype(np.float32)
        n, d = f.shape
        self.w = np.zeros((d, len(LABELS)), np.float32)
        self.b = np.zeros(len(LABELS), np.float32)
        onehot = np.eye(len(LABELS), dtype=np.float32)[y]
        for _ in range(self.hp.epochs):  # full-batch gradient descent
            p = self._softmax(f @ self.w + self.b)
            g = (p - onehot) / n
            self.w -= np.float32(self.hp.lr) * (f.T @ g + np.float32(self.hp.l2) * self.w)
            self.b -= np.float32(self.hp.lr) * g.sum(0)
        return self

    @staticmethod
    def _softmax(z: np.ndarray) -> np.ndarray:
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return np.asarray(e / e.sum(axis=1, keepdims=True))

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self._softmax(((self.pooled(x) - self.mu) / self.sd) @ self.w + self.b)


def train(clips: list[Clip], pool: dict[str, np.ndarray], hp: HParams, t: int, seed: int) -> Any:
    rng = np.random.default_rng(seed)
    if hp.kind == "logreg":
        x, y = balanced_indices(clips, pool, hp.samples_per_epoch, rng)
        return LogReg(hp).fit(x, y)
    set_seeds(seed)
    x, y = balanced_indices(clips, pool, hp.samples_per_epoch * hp.epochs, rng)
    model = build_keras(hp, t)
    model.fit(x, y, batch_size=hp.batch, epochs=1, shuffle=False, verbose=0)
    return model


def predict(model: Any, x: np.ndarray) -> np.ndarray:
    if isinstance(model, LogReg):
        return model.predict(x)
    return np.asarray(model(x.astype(np.float32), training=False))


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


def clip_row(clip: Clip, probs: np.ndarray, stream_probs: np.ndarray, trainable: set[int]) -> dict[str, Any]:
    order = np.argsort(-probs)
    mean_stream = stream_probs.mean(axis=0)
    return {
        "key": clip.key,
        "path": clip.path,
        "source_repo": clip.source,
        "gloss": clip.gloss,
        "frames": len(clip.raw),
        "seconds": round(float(clip.times[-1]), 2),
        "hand_rate": round(float((clip.raw[:, [HAND_BLOCK - 1, 2 * HAND_BLOCK - 1]].max(axis=1) > 0.5).mean()), 3),
        "gloss_in_training": clip.label in trainable,
        "top5": [[LABELS[i], round(float(probs[i]), 4)] for i in order[:5]],
        "rank": int(np.nonzero(order == clip.label)[0][0]) + 1,
        "top1": bool(order[0] == clip.label),
        "in_top5": bool(clip.label in order[:5]),
        "p_true": round(float(probs[clip.label]), 4),
        "stream_windows": len(stream_probs),
        "stream_window_top1_rate": round(float((stream_probs.argmax(1) == clip.label).mean()), 3),
        "stream_mean_top1": bool(mean_stream.argmax() == clip.label),
    }


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def rates(rs: list[dict[str, Any]]) -> dict[str, Any]:
        n = len(rs)
        return {
            "clips": n,
            "top1": round(sum(r["top1"] for r in rs) / n, 4) if n else None,
            "top5": round(sum(r["in_top5"] for r in rs) / n, 4) if n else None,
            "top1_count": sum(r["top1"] for r in rs),
            "top5_count": sum(r["in_top5"] for r in rs),
            "stream_window_top1": round(float(np.mean([r["stream_window_top1_rate"] for r in rs])), 4) if n else None,
        }

    per_gloss = {}
    for gloss in LABELS:
        rs = [r for r in rows if r["gloss"] == gloss]
        if rs:
            per_gloss[gloss] = {k: v for k, v in rates(rs).items() if k in ("clips", "top1_count", "top5_count")}
    return {
        "all": rates(rows),
        "gloss_in_training": rates([r for r in rows if r["gloss_in_training"]]),
        "per_gloss": per_gloss,
    }


def evaluate(model: Any, clips: list[Clip], t: int, trainable: set[int]) -> list[dict[str, Any]]:
    rows = []
    for clip in clips:
        probs = predict(model, clip_window(clip, t)[None])[0]
        stream = predict(model, stream_windows(clip, t))
        rows.append(clip_row(clip, probs, stream, trainable))
    return rows


def loso(clips: list[Clip], pool: dict[str, np.ndarray], hp: HParams, t: int, seed: int) -> dict[str, Any]:
    rows = []
    sources = sorted({c.source for c in clips})
    start = time.perf_counter()
    for i, source in enumerate(sources):
        train_clips = [c for c in clips if c.source != source]
        held = [c for c in clips if c.source == source]
        model = train(train_clips, pool, hp, t, seed + i)
        rows += evaluate(model, held, t, {c.label for c in train_clips})
        if hp.kind != "logreg":
            import tf_keras as keras

            keras.backend.clear_session()
    result = summarise(rows)
    result["folds"] = len(sources)
    result["seconds"] = round(time.perf_counter() - start, 1)
    result["rows"] = rows
    return result


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------


def export_onnx(model: Any, t: int, path: Path, windows: np.ndarray) -> dict[str, Any]:
    import onnxruntime as ort
    import tensorflow as tf
    import tf2onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    signature = [tf.TensorSpec((None, t, NORMALISED_SIZE), tf.float32, name="windows")]
    tf2onnx.convert.from_keras(model, input_signature=signature, opset=OPSET, output_path=str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inp, out = session.get_inputs()[0], session.get_outputs()[0]
    onnx_probs = np.asarray(session.run(None, {inp.name: windows.astype(np.float32)})[0])
    keras_probs = predict(model, windows)
    return {
        "windows": len(windows),
        "what": "test clips: whole-clip window + serving-like 2 s windows",
        "input": {"name": inp.name, "shape": [str(d) for d in inp.shape]},
        "output": {"name": out.name, "shape": [str(d) for d in out.shape]},
        "max_abs_diff": float(np.abs(onnx_probs - keras_probs).max()),
        "top1_agreement": float((onnx_probs.argmax(1) == keras_probs.argmax(1)).mean()),
        "opset": OPSET,
        "converter": f"tf2onnx {tf2onnx.__version__}",
    }


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _fmt(summary: dict[str, Any]) -> str:
    a, g = summary["all"], summary["gloss_in_training"]
    return (
        f"top1 {a['top1_count']}/{a['clips']} ({a['top1']:.1%}) top5 {a['top5_count']}/{a['clips']} ({a['top5']:.1%})"
        f" | gloss-in-training top1 {g['top1_count']}/{g['clips']} top5 {g['top5_count']}/{g['clips']}"
        f" | stream-window top1 {a['stream_window_top1']:.1%}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--manifest", type=Path, default=ROOT / "data" / "manifest.csv")
    parser.add_argument("--landmarks", type=Path, default=ROOT / "data" / "landmarks.npz")
    parser.add_argument("--window", type=int, default=10, help="T frames per window (serving uses 10)")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--pick", default=None, help="use this config instead of the LOSO best Keras one")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    parser.add_argument("--no-export", action="store_true", help="LOSO only: no final training, test or export")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    t = args.window

    from convert.architecture import LABELS as ARCH_LABELS

    if list(ARCH_LABELS) != LABELS:
        raise SystemExit("LABELS differ from convert/architecture.py")
    clips = load_clips(args.manifest, args.landmarks)
    train_clips = [c for c in clips if c.split == "train"]
    test_clips = [c for c in clips if c.split == "test"]
    print(
        f"clips: {len(train_clips)} train ({len({c.source for c in train_clips})} sources), {len(test_clips)} test,"
        f" {sum(c.split == 'excluded' for c in clips)} excluded;"
        f" T={t}, raw {FEATURE_SIZE} -> normalised {NORMALISED_SIZE}",
        flush=True,
    )
    pools: dict[bool, dict[str, np.ndarray]] = {}
    per_clip = max(CONFIGS[c].per_clip for c in args.configs)

    def pool_for(hp: HParams) -> dict[str, np.ndarray]:
        if hp.augment not in pools:
            start = time.perf_counter()
            pools[hp.augment] = window_pool(train_clips, t, per_clip, hp.aug if hp.augment else None, args.seed)
            print(
                f"window pool (augment={hp.augment}): {per_clip}/clip in {time.perf_counter() - start:.1f} s",
                flush=True,
            )
        return pools[hp.augment]

    loso_results: dict[str, Any] = {}
    for name in args.configs:
        hp = CONFIGS[name]
        res = loso(train_clips, pool_for(hp), hp, t, args.seed)
        loso_results[name] = res
        print(f"LOSO {name:12s} {_fmt(res)}  ({res['seconds']} s)", flush=True)
    keras_names = [n for n in args.configs if CONFIGS[n].kind != "logreg"]
    if args.pick:
        best = args.pick
    elif keras_names:
        best = max(keras_names, key=lambda n: (loso_results[n]["all"]["top1"], loso_results[n]["all"]["top5"]))
    else:
        best = args.configs[0]
    print(f"picked by LOSO: {best}", flush=True)
    if args.no_export:
        print(f"done in {time.perf_counter() - t0:.0f} s (no export)")
        return 0

    hp = CONFIGS[best]
    start = time.perf_counter()
    model = train(train_clips, pool_for(hp), hp, t, args.seed)
    train_seconds = time.perf_counter() - start
    trainable = {c.label for c in train_clips}
    test_rows = evaluate(model, test_clips, t, trainable)  # the one test evaluation
    test = summarise(test_rows)
    print(f"TEST {best:12s} {_fmt(test)}")
    for r in test_rows:
        print(
            f"  {r['key']:38s} {r['gloss']:10s} -> {r['top5'][0][0]:10s} p={r['top5'][0][1]:.2f} rank {r['rank']:2d}"
            f"  stream {r['stream_window_top1_rate']:.2f}"
            f"{'' if r['gloss_in_training'] else '  (gloss not in training)'}"
        )
    baseline_test = None
    if "logreg" in args.configs and best != "logreg":
        base = train(train_clips, pool_for(CONFIGS["logreg"]), CONFIGS["logreg"], t, args.seed)
        baseline_test = summarise(evaluate(base, test_clips, t, trainable))
        print(f"TEST {'logreg':12s} {_fmt(baseline_test)}  (baseline, for comparison only)")

    test_windows = np.concatenate([np.concatenate([clip_window(c, t)[None], stream_windows(c, t)]) for c in test_clips])
    parity = None
    if CONFIGS[best].kind != "logreg":
        parity = export_onnx(model, t, args.out_dir / "sequence.onnx", test_windows)
        print(
            f"ONNX vs Keras on {parity['windows']} windows: max |diff| {parity['max_abs_diff']:.2e},"
            f" top-1 agreement {parity['top1_agreement']:.1%}"
        )
    command = "python -m training.landmark_model " + " ".join(argv if argv is not None else sys.argv[1:])
    hp_dict = asdict(hp)
    card = {
        "window": t,
        "feature": "normalise_features(service/landmarks.py)",
        "raw_feature_size": FEATURE_SIZE,
        "input": {
            "name": "windows",
            "shape": ["B", t, NORMALISED_SIZE],
            "dtype": "float32",
            "how": f"{t} raw per-frame vectors, nearest frame to each of {t} evenly spaced times over the span "
            "(whole clip in evaluation; serving: last WINDOW_SECONDS), then normalise_features over those frames",
        },
        "output": {"shape": ["B", len(LABELS)], "what": "softmax probabilities in LABELS order"},
        "labels": LABELS,
        "model": best,
        "loso": {
            "by": "source_repo, train split only",
            "picked": best,
            "configs": {
                n: {k: v for k, v in r.items() if k != "rows"} | {"hparams": asdict(CONFIGS[n])}
                for n, r in loso_results.items()
            },
        },
        "test": {
            "clips": len(test_clips),
            "window": "whole clip, evenly sampled",
            **{k: v for k, v in test.items()},
            "baseline_logreg": baseline_test,
            "note": "evaluated once with the picked model; clothes and street have no training clip",
        },
        "training": {
            "hparams": hp_dict,
            "seed": args.seed,
            "train_clips": len(train_clips),
            "train_seconds": round(train_seconds, 1),
            "total_seconds": round(time.perf_counter() - t0, 1),
            "command": command.strip(),
        },
        "onnx_vs_keras": parity,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "sequence.json").write_text(json.dumps(card, indent=2) + "\n")
    report = {
        "model": best,
        "window": t,
        "test_rows": test_rows,
        "loso_rows": {n: r["rows"] for n, r in loso_results.items()},
    }
    (args.out_dir / "training_report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"wrote {args.out_dir / 'sequence.onnx'}, sequence.json, training_report.json"
        f" in {time.perf_counter() - t0:.0f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
