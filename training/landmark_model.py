"""The landmark sequence model: one serving window of landmark frames -> 20 gloss probabilities.

Data: data/landmarks.npz (raw per-frame vectors, service/recognizers/landmarks/layout.py) of the catalogued
clips (training/catalogue.py). Test-signer clips are never trained on and never choose anything;
every choice (features, model, hyper-parameters) is made by cross-validation on the train split
grouped by signer (no signer in both the training and the validation folds).

Windows are made exactly as serving makes them: the landmarks are the tracker's output on the frames
serving's sampling schedule takes (`<key>|served<k>` in data/landmarks.npz, two sampling phases),
replayed through serving's own `StreamState` (sampling at EMBEDDINGS_PER_SECOND, `pick_window`), and
each window's raw frames go through `sequence_inputs` (service/recognizers/landmarks/transfer.py): the
window vector (features.py) and the pretrained GISLR embedding (model/landmarks/gislr_embed.onnx) that
serving computes the same way. A window whose frames mostly show a tracked hand is labelled with the clip's
gloss, one with no hand at all is labelled idle (an extra training class that the exported model
leaves out of its 20 outputs, so idle windows score low and are answered `none`), the others are not
trained on. Clips are scored as `cli evaluate` scores them: the most confident window above the
threshold names the clip.

Augmentation (raw space, before window_vector and the embedding): signing speed (clip time scaled by 0.75-1.33),
the sampling phase (either extracted phase), a mirror image (p 0.5), a small rotation and anisotropic
scale of the image, and hands dropped in single frames (p 0.2; the tracker loses hands near the face).

Classifiers (CONFIGS): standardisation, then a softmax regression, a one-hidden-layer MLP, or an
ensemble averaging those two's gloss probabilities; windows are weighted so that every gloss, and with
`signer_weight` every signer within a gloss, weighs the same.

    python -m training.landmark_model                 # grouped CV of RELEASE_CONFIGS, export the best
    python -m training.landmark_model --configs logreg_c0.1 --no-export
Outputs: model/landmarks/sequence.onnx (input "windows" (B, D) float32 = sequence_input;
output "probabilities" (B, 20)), sequence.json, training_report.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service.labels import GLOSSES
from service.onnx_runtime import create_session, sha256_of
from service.recognizers.landmarks.features import WINDOW_STATISTICS
from service.recognizers.landmarks.layout import (
    ASPECT,
    FEATURE_SIZE,
    HAND_BLOCK,
    POSE_BLOCK,
    POSE_MIRROR,
    POSE_OFFSET,
    POSE_POINTS,
)
from service.recognizers.landmarks.transfer import (
    EMBEDDING_DIM,
    EMBEDDING_FILE,
    EMBEDDING_LICENSE,
    EMBEDDING_META,
    FRAME_REPEAT,
    sequence_input_size,
    sequence_inputs,
)
from service.settings import Settings
from service.stream import StreamState
from training.catalogue import ROOT, load_catalogue, signer_folds
from training.landmark_features import WINDOW, served_key

OUT_DIR = ROOT / "model" / "landmarks"
LANDMARKS = ROOT / "data" / "landmarks.npz"
OPSET = 17
IDLE = len(GLOSSES)  # the extra training class
SIGN_HAND_RATE = 0.5  # a window is a sign window when at least this share of its frames has a tracked hand
DEFAULTS = Settings()


@dataclass
class Clip:
    key: str
    gloss: str
    label: int
    signer: str
    form: str
    test: bool
    fps: float
    # What serving computes for this clip: the tracker's raw vectors (n, FEATURE_SIZE) on the frames
    # its sampling schedule takes, and their timestamps (s), once per sampling phase.
    served: list[tuple[np.ndarray, np.ndarray]]
    # The tracker run on every frame (what training used before this was measured as a skew).
    dense: tuple[np.ndarray, np.ndarray]


def front_end_of(npz: Path) -> dict[str, Any]:
    """The front end data/landmarks.npz was extracted with (training/landmark_features.py records it)."""
    with np.load(npz) as data:
        meta = json.loads(str(data["_index"]))
    if "front_end" not in meta:
        raise SystemExit(
            f"{npz} does not say which front end made it: re-extract with python -m training.landmark_features"
        )
    return dict(meta["front_end"])


def load_clips(npz: Path = LANDMARKS) -> list[Clip]:
    with np.load(npz) as data:
        meta = json.loads(str(data["_index"]))
        settings = meta["served"]
        if (settings["embeddings_per_second"], settings["window_seconds"]) != (
            DEFAULTS.embeddings_per_second,
            DEFAULTS.window_seconds,
        ):
            raise SystemExit(f"{npz} was extracted for another sampling schedule ({settings}): re-extract")
        clips = []
        for rec in load_catalogue():
            served = []
            for k in range(len(settings["phases"])):
                raw = data[served_key(rec.key, k)].astype(np.float32)
                if raw.shape[1] != FEATURE_SIZE:
                    raise SystemExit(
                        f"{npz}: {raw.shape[1]} values per frame, serving makes {FEATURE_SIZE}: re-extract"
                    )
                served.append((raw, data[served_key(rec.key, k) + "|t"].astype(np.float64)))
            info = meta["clips"][rec.key]
            raw = data[rec.key].astype(np.float32)
            dense = (raw, np.arange(len(raw), dtype=np.float64) / float(info["fps"]))
            label = GLOSSES.index(rec.gloss)
            clips.append(
                Clip(rec.key, rec.gloss, label, rec.signer, rec.form, rec.test, float(info["fps"]), served, dense)
            )
    return clips


# --------------------------------------------------------------------------------------------
# Windows, as serving makes them
# --------------------------------------------------------------------------------------------


def serving_windows(times: np.ndarray, window: int, seconds: float, per_second: float) -> list[np.ndarray]:
    """Frame indices of every window serving would classify for frames arriving at `times`."""
    state = StreamState(window, 1, seconds, per_second)
    out = []
    for i, t in enumerate(times):
        if state.take(float(t)):
            state.add(np.array([i], np.float32), float(t))
            picks = state.window()
            if picks is not None:
                out.append(picks[:, 0].astype(np.int64))
    return out


def window_label(raw: np.ndarray, gloss: int) -> int | None:
    tracked = raw[:, [HAND_BLOCK - 1, 2 * HAND_BLOCK - 1]].max(axis=1) > 0.5
    rate = float(tracked.mean())
    if rate >= SIGN_HAND_RATE:
        return gloss
    return IDLE if rate == 0.0 else None


@dataclass(frozen=True)
class Aug:
    speed: float = 0.33  # clip time x U(1/(1+speed), 1+speed)
    mirror: float = 0.5
    rotate_deg: float = 8.0
    scale: float = 0.1  # x and y scaled by U(1-scale, 1+scale) each
    # per frame and hand: the tracker loses hands near the face, and more often on the test signers'
    # webcams. Grouped CV top-1 (folds of seed 1234 / 777): 0.1 77.5 / 79.8 %, 0.2 79.3 / 80.5 %, 0.3 79.8 /
    # 79.9 % with 97 % of idle windows answered none (100 % at 0.2), 0.5 78.7 % / - with 96 %.
    drop_hand: float = 0.2


def mirror_raw(raw: np.ndarray) -> np.ndarray:
    """The raw vectors of the horizontally flipped image: x -> 1 - x, hand slots and pose sides swapped."""
    out = raw.copy()
    hands = out[:, : 2 * HAND_BLOCK].reshape(len(out), 2, HAND_BLOCK)
    xs = hands[:, :, 0:63:3]
    hands[:, :, 0:63:3] = np.where(hands[:, :, 63:64] > 0.5, 1.0 - xs, xs)
    out[:, : 2 * HAND_BLOCK] = hands[:, ::-1].reshape(len(out), -1)
    pose = out[:, POSE_OFFSET : POSE_OFFSET + POSE_BLOCK].reshape(len(out), len(POSE_POINTS), 4)
    px = pose[:, :, 0]
    pose[:, :, 0] = np.where(px != 0.0, 1.0 - px, px)
    out[:, POSE_OFFSET : POSE_OFFSET + POSE_BLOCK] = pose[:, list(POSE_MIRROR)].reshape(len(out), -1)
    return out


def warp_raw(raw: np.ndarray, rng: np.random.Generator, aug: Aug) -> np.ndarray:
    """Rotate and scale every point about the image centre (square units), drop hands in single frames."""
    out = raw.copy()
    aspect = float(np.median(raw[:, ASPECT]))
    angle = math.radians(rng.uniform(-aug.rotate_deg, aug.rotate_deg))
    sx, sy = rng.uniform(1 - aug.scale, 1 + aug.scale, size=2)
    m = np.array([[math.cos(angle) * sx, -math.sin(angle) * sy], [math.sin(angle) * sx, math.cos(angle) * sy]])

    def move(xy: np.ndarray, valid: np.ndarray) -> None:
        p = np.stack([(xy[..., 0] - 0.5) * aspect, xy[..., 1] - 0.5], axis=-1) @ m.T
        xy[..., 0] = np.where(valid, p[..., 0] / aspect + 0.5, xy[..., 0])
        xy[..., 1] = np.where(valid, p[..., 1] + 0.5, xy[..., 1])

    hands = out[:, : 2 * HAND_BLOCK].reshape(len(out), 2, HAND_BLOCK)
    pts = hands[:, :, :63].reshape(len(out), 2, 21, 3)
    move(pts, np.broadcast_to(hands[:, :, 63:64] > 0.5, pts.shape[:3]))
    hands[:, :, :63] = pts.reshape(len(out), 2, 63)
    drop = rng.random((len(out), 2)) < aug.drop_hand
    hands[drop] = 0.0
    out[:, : 2 * HAND_BLOCK] = hands.reshape(len(out), -1)
    pose = out[:, POSE_OFFSET : POSE_OFFSET + POSE_BLOCK].reshape(len(out), len(POSE_POINTS), 4)
    move(pose, pose[..., 0] != 0.0)
    out[:, POSE_OFFSET : POSE_OFFSET + POSE_BLOCK] = pose.reshape(len(out), -1)
    return out


@dataclass(frozen=True)
class Windows:
    x: np.ndarray  # (n, D)
    y: np.ndarray  # (n,) class, IDLE for idle windows
    clip: np.ndarray  # (n,) index into the clip list


@dataclass(frozen=True)
class ClipWindows:
    """Every window serving classifies for one clip, as model inputs, and which have no hand at all."""

    x: np.ndarray  # (n, D)
    idle: np.ndarray  # (n,) bool


_embedding: Any = None


def embedding_session() -> Any:
    """The shipped GISLR embedding (model/landmarks/gislr_embed.onnx), one thread, loaded once."""
    global _embedding
    if _embedding is None:
        _embedding = create_session(OUT_DIR / EMBEDDING_FILE, "cpu", intra_op_threads=1)
    return _embedding


def clip_windows(clip: Clip, window: int, per_second: float, seconds: float) -> ClipWindows:
    raw, times = clip.served[0]
    picks = serving_windows(times, window, seconds, per_second)
    if not picks:  # fewer frames than one window: serving never answers such a clip
        return ClipWindows(np.zeros((0, sequence_input_size(window)), np.float32), np.zeros(0, bool))
    x = sequence_inputs(embedding_session(), [raw[p] for p in picks])
    idle = np.array([window_label(raw[p], clip.label) == IDLE for p in picks])
    return ClipWindows(x, idle)


def training_windows(
    clips: list[Clip],
    window: int,
    copies: int,
    aug: Aug | None,
    seed: int,
    seconds: float,
    per_second: float,
    rare_boost: bool = False,
    dense: bool = False,
) -> Windows:
    """Labelled windows of every clip: the plain replay plus `copies` augmented replays (with
    `rare_boost`, up to 4x more for a gloss with fewer clips than the median gloss)."""
    rng = np.random.default_rng(seed)
    per_gloss = np.bincount([c.label for c in clips], minlength=len(GLOSSES))
    median = float(np.median(per_gloss[per_gloss > 0]))
    xs, ys, owners = [], [], []
    for ci, clip in enumerate(clips):
        boost = min(4, max(1, round(median / per_gloss[clip.label]))) if rare_boost else 1
        for copy in range(1 + (copies * boost if aug else 0)):
            sources = [clip.dense] if dense else clip.served
            plain, times = sources[0 if copy == 0 else int(rng.integers(len(sources)))]
            raw = plain
            if copy:
                assert aug is not None
                times = times * math.exp(rng.uniform(-math.log1p(aug.speed), math.log1p(aug.speed)))
                raw = mirror_raw(raw) if rng.random() < aug.mirror else raw
                raw = warp_raw(raw, rng, aug)
            for p in serving_windows(times, window, seconds, per_second):
                label = window_label(plain[p], clip.label)
                if label is None:
                    continue
                xs.append(raw[p])
                ys.append(label)
                owners.append(ci)
    return Windows(sequence_inputs(embedding_session(), xs), np.asarray(ys), np.asarray(owners))


# --------------------------------------------------------------------------------------------
# Models: standardise -> softmax regression, or -> MLP; both export to the same small ONNX graph
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    kind: str  # logreg | mlp | ensemble
    c: float = 0.1  # logreg: inverse L2 strength
    hidden: int = 256  # mlp
    alpha: float = 1e-3  # mlp L2
    copies: int = 4  # augmented replays per clip
    augment: bool = True
    forms: tuple[str, ...] = ("canonical", "variant")
    idle: bool = True
    rare_boost: bool = False
    dense: bool = False  # train on every-frame tracking instead of what serving computes (for measuring)
    # Within a gloss, every signer weighs the same however many clips they have (one dictionary signer
    # has 6 COMPUTER clips): what the model learns of a gloss is less one person's way of signing it.
    signer_weight: bool = False
    # kind "ensemble": the CONFIGS names whose gloss probabilities are averaged; they share its windows.
    members: tuple[str, ...] = ()


CONFIGS: dict[str, Config] = {
    "logreg_c0.001": Config("logreg", c=0.001),
    "logreg_c0.003": Config("logreg", c=0.003),
    "logreg_c0.01": Config("logreg", c=0.01),
    "logreg_c0.001_rare": Config("logreg", c=0.001, rare_boost=True),
    "logreg_c0.003_rare": Config("logreg", c=0.003, rare_boost=True),
    "logreg_c0.01_rare": Config("logreg", c=0.01, rare_boost=True),
    "logreg_c0.03_rare": Config("logreg", c=0.03, rare_boost=True),
    "logreg_c0.003_rare_x8": Config("logreg", c=0.003, rare_boost=True, copies=8),
    "mlp256_rare": Config("mlp", hidden=256, alpha=1e-2, rare_boost=True),
    "mlp128_a1_rare": Config("mlp", hidden=128, alpha=1.0, rare_boost=True),
    "logreg_c0.003_rare_dense": Config("logreg", c=0.003, rare_boost=True, dense=True),
    "logreg_c0.03": Config("logreg", c=0.03),
    "logreg_c0.1": Config("logreg", c=0.1),
    "logreg_c1": Config("logreg", c=1.0),
    "logreg_c0.1_noaug": Config("logreg", c=0.1, augment=False),
    "logreg_c0.1_canonical": Config("logreg", c=0.1, forms=("canonical",)),
    "logreg_c0.1_noidle": Config("logreg", c=0.1, idle=False),
    "mlp256": Config("mlp", hidden=256, alpha=1e-2),
    "logreg_c0.03_rare_sw": Config("logreg", c=0.03, rare_boost=True, signer_weight=True),
    "mlp128_a1_rare_sw": Config("mlp", hidden=128, alpha=1.0, rare_boost=True, signer_weight=True),
    "ens_lr0.03_mlp128_rare": Config("ensemble", rare_boost=True, members=("logreg_c0.03_rare", "mlp128_a1_rare")),
    "ens_lr0.03_mlp128_rare_sw": Config(
        "ensemble", rare_boost=True, members=("logreg_c0.03_rare_sw", "mlp128_a1_rare_sw")
    ),
}
WINDOW_FIELDS = ("copies", "augment", "rare_boost", "dense", "forms", "idle")  # what members must share
for _name, _config in CONFIGS.items():
    for _member in _config.members:
        if any(getattr(CONFIGS[_member], f) != getattr(_config, f) for f in WINDOW_FIELDS):
            raise AssertionError(f"{_name}: member {_member} is trained on other windows")


# The configs `train --model landmarks` compares by grouped CV when none are named: this release's
# candidates (the others above are kept to reproduce the model card's rows).
RELEASE_CONFIGS = (
    "logreg_c0.03_rare",
    "mlp128_a1_rare",
    "logreg_c0.03_rare_sw",
    "mlp128_a1_rare_sw",
    "ens_lr0.03_mlp128_rare",
    "ens_lr0.03_mlp128_rare_sw",
)


Layers = list[tuple[np.ndarray, np.ndarray]]  # (W, b) pairs, ReLU between


@dataclass
class Head:
    layers: Layers
    classes: np.ndarray  # the class of each output of the last layer


class Model:
    """Standardisation + one or more classifier heads over the window vector; the model's gloss
    probabilities are the mean of its heads' (an ensemble; one head for logreg or mlp)."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray, heads: list[Head]) -> None:
        self.mean, self.scale, self.heads = mean.astype(np.float32), scale.astype(np.float32), heads

    @staticmethod
    def average(models: list[Model]) -> Model:
        """One model whose probabilities are the mean of `models`' (trained on the same windows)."""
        first = models[0]
        if any(not (np.array_equal(m.mean, first.mean) and np.array_equal(m.scale, first.scale)) for m in models):
            raise ValueError("ensemble members standardise differently (trained on other windows)")
        return Model(first.mean, first.scale, [h for m in models for h in m.heads])

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """(n, 20): per head, softmax over every trained class (idle included), then the 20 glosses
        only; the mean over heads."""
        z0 = (x - self.mean) / self.scale
        out = np.zeros((len(x), len(GLOSSES)), np.float32)
        for head in self.heads:
            h = z0
            for i, (w, b) in enumerate(head.layers):
                h = h @ w + b
                if i < len(head.layers) - 1:
                    h = np.maximum(h, 0.0)
            h = h - h.max(axis=1, keepdims=True)
            e = np.exp(h)
            p = e / e.sum(axis=1, keepdims=True)
            for j, cls in enumerate(head.classes):
                if cls < len(GLOSSES):
                    out[:, cls] += p[:, j] / len(self.heads)
        return out


def signer_weights(y: np.ndarray, signers: list[str]) -> np.ndarray:
    """Per window: within each class, every signer's windows together weigh the same (mean 1 per window)."""
    weight = np.ones(len(y))
    for cls in np.unique(y):
        in_class = np.nonzero(y == cls)[0]
        people = np.array([signers[i] for i in in_class])
        names, inverse, counts = np.unique(people, return_inverse=True, return_counts=True)
        weight[in_class] = len(in_class) / (len(names) * counts[inverse])
    return weight


def fit(
    windows: Windows, clips: list[Clip], config: Config, seed: int, fitted: dict[Config, Model] | None = None
) -> Model:
    """Fit `config` on `windows`; an ensemble's members are taken from `fitted` where they are there
    (the same windows and seed) and are added to it."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    fitted = {} if fitted is None else fitted
    if config in fitted:
        return fitted[config]
    if config.kind == "ensemble":
        members = [fit(windows, clips, CONFIGS[name], seed, fitted) for name in config.members]
        fitted[config] = Model.average(members)
        return fitted[config]
    keep = np.array([clips[c].form in config.forms for c in windows.clip]) & (config.idle | (windows.y != IDLE))
    x, y = windows.x[keep], windows.y[keep]
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-3
    z = (x - mean) / scale
    # Every gloss weighs the same however many windows it has (rare glosses have few clips).
    counts = np.bincount(y, minlength=IDLE + 1).astype(np.float64)
    weight = (len(y) / (np.count_nonzero(counts) * np.maximum(counts, 1.0)))[y]
    if config.signer_weight:
        weight = weight * signer_weights(y, [clips[c].signer for c in windows.clip[keep]])
    if config.kind == "logreg":
        clf = LogisticRegression(C=config.c, max_iter=300, tol=1e-3)
        clf.fit(z, y, sample_weight=weight)
        layers = [(clf.coef_.T.astype(np.float32), clf.intercept_.astype(np.float32))]
    else:
        rng = np.random.default_rng(seed)
        idx = rng.choice(len(y), size=len(y), p=weight / weight.sum())  # resample to balance
        clf = MLPClassifier((config.hidden,), alpha=config.alpha, max_iter=60, early_stopping=False, random_state=seed)
        clf.fit(z[idx], y[idx])
        layers = [
            (w.astype(np.float32), b.astype(np.float32)) for w, b in zip(clf.coefs_, clf.intercepts_, strict=True)
        ]
    fitted[config] = Model(mean, scale, [Head(layers, np.asarray(clf.classes_))])
    return fitted[config]


# --------------------------------------------------------------------------------------------
# Scoring clips as `cli evaluate` does
# --------------------------------------------------------------------------------------------


def score_clip(probs: np.ndarray, label: int, threshold: float) -> dict[str, Any]:
    """The most confident window above `threshold` names the clip (else none); top-5 from that window."""
    if len(probs) == 0:
        return {"predicted": "none", "score": 0.0, "top1": False, "top5": False, "top5_labels": []}
    best = int(probs.max(axis=1).argmax())
    p = probs[best]
    order = np.argsort(-p)
    predicted = GLOSSES[int(order[0])] if p[order[0]] > threshold else "none"
    return {
        "predicted": predicted,
        "score": round(float(p[order[0]]), 4),
        "top1": predicted == GLOSSES[label],
        "top5": bool(label in order[:5]),
        "top5_labels": [GLOSSES[int(i)] for i in order[:5]],
    }


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(rows)
    per_gloss = {}
    for gloss in GLOSSES:
        rs = [r for r in rows if r["gloss"] == gloss]
        if rs:
            per_gloss[gloss] = {"n": len(rs), "top1": sum(r["top1"] for r in rs), "top5": sum(r["top5"] for r in rs)}
    by_signer: dict[str, list[bool]] = {}
    for r in rows:
        by_signer.setdefault(r["signer"], []).append(r["top1"])
    return {
        "n": n,
        "top1": round(sum(r["top1"] for r in rows) / n, 4) if n else None,
        "top5": round(sum(r["top5"] for r in rows) / n, 4) if n else None,
        "signers": len(by_signer),
        "signer_mean_top1": round(float(np.mean([np.mean(v) for v in by_signer.values()])), 4) if n else None,
        "min_gloss_top1": round(min(v["top1"] / v["n"] for v in per_gloss.values()), 4) if per_gloss else None,
        "idle_windows": sum(r["idle_windows"] for r in rows),
        "idle_none_rate": round(
            sum(r["idle_answered_none"] for r in rows) / max(1, sum(r["idle_windows"] for r in rows)), 4
        ),
        "per_gloss": per_gloss,
    }


def confusion(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        row = out.setdefault(r["gloss"], {})
        row[r["predicted"]] = row.get(r["predicted"], 0) + 1
    return {g: dict(sorted(v.items())) for g, v in sorted(out.items())}


def evaluate(
    model: Model, clips: list[Clip], indices: list[int], cache: dict[int, ClipWindows], threshold: float
) -> list[dict[str, Any]]:
    rows = []
    for i in indices:
        clip, wins = clips[i], cache[i]
        probs = model.probabilities(wins.x)
        idle_none = int((probs[wins.idle].max(axis=1) <= threshold).sum()) if wins.idle.any() else 0
        rows.append(
            {"key": clip.key, "gloss": clip.gloss, "signer": clip.signer, "form": clip.form}
            | score_clip(probs, clip.label, threshold)  # every window, as serving answers them
            | {"idle_windows": int(wins.idle.sum()), "idle_answered_none": idle_none}
        )
    return rows


def grouped_folds(clips: list[Clip], train_idx: list[int], k: int, seed: int) -> list[list[int]]:
    """k validation folds of train-split clip indices, whole signers per fold."""
    folds = signer_folds([clips[i].label for i in train_idx], [clips[i].signer for i in train_idx], k, seed)
    return [[train_idx[j] for j in val] for val in folds]


def cross_validate(
    clips: list[Clip],
    train_idx: list[int],
    folds: list[list[int]],
    config: Config,
    args: argparse.Namespace,
    cache: dict[int, ClipWindows],
    fold_windows: dict[tuple[Any, ...], tuple[Windows, dict[Config, Model]]],
    seed: int,
) -> dict[str, Any]:
    """Grouped CV of one config on the folds of `seed`; `fold_windows` keeps each fold's training windows
    for the next config that makes the same ones (the windows, not the classifier, are most of the time),
    with the models fitted on them (an ensemble reuses its members')."""
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for f, val in enumerate(folds):
        held = set(val)
        fit_idx = [i for i in train_idx if i not in held]
        key = (seed, f, config.copies, config.augment, config.rare_boost, config.dense)
        if key not in fold_windows:
            windows = training_windows(
                [clips[i] for i in fit_idx],
                args.window,
                config.copies,
                Aug() if config.augment else None,
                seed + f,
                args.seconds,
                args.per_second,
                config.rare_boost,
                config.dense,
            )
            fold_windows[key] = (windows, {})
        wins, fitted = fold_windows[key]
        model = fit(wins, [clips[i] for i in fit_idx], config, seed + f, fitted)
        rows += evaluate(model, clips, val, cache, args.threshold)
    result = summarise(rows) | {
        "seconds": round(time.perf_counter() - start, 1),
        "confusion": confusion(rows),
        "rows": rows,
    }
    return result


# --------------------------------------------------------------------------------------------
# Export: a small ONNX graph (standardise, layers, softmax, the 20 gloss columns)
# --------------------------------------------------------------------------------------------


def to_onnx(model: Model, dim: int) -> Any:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(model.mean, "mean"), numpy_helper.from_array(model.scale, "scale")]
    nodes = [
        helper.make_node("Sub", ["windows", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "scale"], ["h0"]),
    ]
    outputs = []
    for k, head in enumerate(model.heads):
        h = "h0"
        for i, (w, b) in enumerate(head.layers):
            inits += [numpy_helper.from_array(w, f"w{k}_{i}"), numpy_helper.from_array(b, f"b{k}_{i}")]
            nodes += [
                helper.make_node("MatMul", [h, f"w{k}_{i}"], [f"m{k}_{i}"]),
                helper.make_node("Add", [f"m{k}_{i}", f"b{k}_{i}"], [f"z{k}_{i}"]),
            ]
            h = f"z{k}_{i}"
            if i < len(head.layers) - 1:
                nodes.append(helper.make_node("Relu", [h], [f"r{k}_{i}"]))
                h = f"r{k}_{i}"
        nodes.append(helper.make_node("Softmax", [h], [f"all_classes{k}"], axis=1))
        gloss_columns = [j for j, c in enumerate(head.classes) if c < len(GLOSSES)]
        if [int(head.classes[j]) for j in gloss_columns] != list(range(len(GLOSSES))):
            raise SystemExit("every gloss needs training windows before export")
        inits.append(numpy_helper.from_array(np.asarray(gloss_columns, np.int64), f"gloss_columns{k}"))
        nodes.append(helper.make_node("Gather", [f"all_classes{k}", f"gloss_columns{k}"], [f"glosses{k}"], axis=1))
        outputs.append(f"glosses{k}")
    nodes.append(helper.make_node("Mean", outputs, ["probabilities"]))  # one head: the identity
    graph = helper.make_graph(
        nodes,
        "landmark_sequence",
        [helper.make_tensor_value_info("windows", TensorProto.FLOAT, ["B", dim])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["B", len(GLOSSES)])],
        inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="signstream")
    onnx.checker.check_model(proto)
    return proto


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _line(name: str, r: dict[str, Any]) -> str:
    return (
        f"{name:24s} top1 {r['top1']:.3f} top5 {r['top5']:.3f} signer-mean {r['signer_mean_top1']:.3f}"
        f" min-gloss {r['min_gloss_top1']:.2f} idle-none {r['idle_none_rate']:.2f}"
        f"  ({r['n']} clips, {r['signers']} signers, {r.get('seconds', 0)} s)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--landmarks", type=Path, default=LANDMARKS)
    parser.add_argument("--window", type=int, default=WINDOW, help="frames per window (sequence.json's window)")
    parser.add_argument("--seconds", type=float, default=DEFAULTS.window_seconds)
    parser.add_argument("--per-second", type=float, default=DEFAULTS.embeddings_per_second)
    parser.add_argument("--threshold", type=float, default=DEFAULTS.threshold)
    parser.add_argument("--configs", nargs="+", default=list(RELEASE_CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1234, help="folds of the reported CV rows, and the final fit")
    # The same config moves up to 5 points of top-1 between fold seeds (53 signers in 5 folds), more than
    # most changes gain: the pick and the headline are the mean over these seeds too.
    parser.add_argument("--more-seeds", type=int, nargs="*", default=[777, 42], help="further fold seeds")
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    parser.add_argument("--no-export", action="store_true", help="cross-validation only")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    clips = load_clips(args.landmarks)
    train_idx = [i for i, c in enumerate(clips) if not c.test and c.form != "doubtful"]
    test_idx = [i for i, c in enumerate(clips) if c.test]
    print(
        f"{len(train_idx)} train clips ({len({clips[i].signer for i in train_idx})} signers),"
        f" {len(test_idx)} test clips",
        flush=True,
    )
    cache = {i: clip_windows(clips[i], args.window, args.per_second, args.seconds) for i in train_idx + test_idx}
    seeds = [args.seed, *[s for s in args.more_seeds if s != args.seed]]
    folds = {seed: grouped_folds(clips, train_idx, args.folds, seed) for seed in seeds}
    results: dict[str, Any] = {}
    fold_windows: dict[tuple[Any, ...], tuple[Windows, dict[Config, Model]]] = {}
    for name in args.configs:
        runs = [cross_validate(clips, train_idx, folds[s], CONFIGS[name], args, cache, fold_windows, s) for s in seeds]
        results[name] = runs[0] | {
            "by_seed": {str(s): {"top1": r["top1"], "top5": r["top5"]} for s, r in zip(seeds, runs, strict=True)},
            "mean_top1": round(float(np.mean([r["top1"] for r in runs])), 4),
            "mean_top5": round(float(np.mean([r["top5"] for r in runs])), 4),
        }
        print(_line(name, results[name]), flush=True)
        print("    " + " ".join(f"{g}:{v['top1']}/{v['n']}" for g, v in results[name]["per_gloss"].items()), flush=True)
        print(
            f"    fold seeds {' / '.join(map(str, seeds))}: top1 "
            + " / ".join(f"{r['top1']:.3f}" for r in runs)
            + f", mean {results[name]['mean_top1']:.3f} (top5 {results[name]['mean_top5']:.3f})",
            flush=True,
        )
    best = max(args.configs, key=lambda n: (results[n]["mean_top1"], results[n]["mean_top5"]))
    print(f"picked by grouped CV (mean top-1 over fold seeds {seeds}): {best}", flush=True)
    if args.no_export:
        return 0
    config = CONFIGS[best]
    start = time.perf_counter()
    fit_clips = [clips[i] for i in train_idx]
    wins = training_windows(
        fit_clips,
        args.window,
        config.copies,
        Aug() if config.augment else None,
        args.seed,
        args.seconds,
        args.per_second,
        config.rare_boost,
        config.dense,
    )
    model = fit(wins, fit_clips, config, args.seed)
    train_seconds = time.perf_counter() - start
    test_rows = evaluate(model, clips, test_idx, cache, args.threshold)  # the one look at the test split
    test = summarise(test_rows)
    print(_line("TEST " + best, test))
    dim = sequence_input_size(args.window)
    proto = to_onnx(model, dim)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    import onnx
    import onnxruntime as ort

    onnx.save(proto, str(args.out_dir / "sequence.onnx"))
    session = ort.InferenceSession(str(args.out_dir / "sequence.onnx"), providers=["CPUExecutionProvider"])
    check = np.concatenate([cache[i].x for i in test_idx])
    parity = float(np.abs(session.run(None, {"windows": check})[0] - model.probabilities(check)).max())
    digest = sha256_of(args.out_dir / "sequence.onnx")
    if args.out_dir.resolve() != OUT_DIR.resolve():  # serving reads the embedding beside sequence.onnx
        import shutil

        for name in (EMBEDDING_FILE, EMBEDDING_META, EMBEDDING_LICENSE):
            shutil.copyfile(OUT_DIR / name, args.out_dir / name)
    card = {
        "window": args.window,
        "feature": "sequence_input (service/recognizers/landmarks/transfer.py): window_vector of the window's raw"
        " frames, then the GISLR embedding of the same frames",
        "embedding": {
            "file": EMBEDDING_FILE,
            "dim": EMBEDDING_DIM,
            "sha256": sha256_of(OUT_DIR / EMBEDDING_FILE),
            "frame_repeat": FRAME_REPEAT,
        },
        "window_statistics": list(WINDOW_STATISTICS),
        "raw_feature_size": FEATURE_SIZE,
        # The front end the features were extracted with: serving builds exactly this one.
        "front_end": front_end_of(args.landmarks),
        "input": {"name": "windows", "shape": ["B", dim], "dtype": "float32"},
        "output": {
            "name": "probabilities",
            "shape": ["B", len(GLOSSES)],
            "what": "probabilities of the 20 glosses (an idle class takes the rest)",
        },
        "labels": list(GLOSSES),
        "model": best,
        "config": asdict(config),
        "grouped_cv": {
            "by": f"signer, {args.folds} folds (StratifiedGroupKFold), train split only; rows of seed {args.seed},"
            f" picked by the mean top-1 over seeds {seeds}",
            "picked": best,
            "configs": {
                n: {k: v for k, v in r.items() if k not in ("rows", "confusion")} | {"config": asdict(CONFIGS[n])}
                for n, r in results.items()
            },
        },
        "test": {k: v for k, v in test.items()}
        | {"note": "offline replay of serving's windows; `cli evaluate` streams the clips through the server pipeline"},
        "serving": {
            "window_seconds": args.seconds,
            "embeddings_per_second": args.per_second,
            "threshold": args.threshold,
        },
        "training": {
            "train_clips": len(train_idx),
            "windows": len(wins.y),
            "seconds": round(train_seconds, 1),
            "total_seconds": round(time.perf_counter() - t0, 1),
            "command": (
                "python -m training.landmark_model " + " ".join(argv if argv is not None else sys.argv[1:])
            ).strip(),
        },
        "onnx_max_abs_diff": parity,
        "sequence_onnx_sha256": digest,
    }
    (args.out_dir / "sequence.json").write_text(json.dumps(card, indent=2) + "\n")
    report = {
        "picked": best,
        "test_rows": test_rows,
        "test_confusion": confusion(test_rows),
        "cv": {n: {"rows": r["rows"], "confusion": r["confusion"]} for n, r in results.items()},
    }
    (args.out_dir / "training_report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out_dir}/sequence.onnx (max |onnx - numpy| {parity:.1e}) in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
