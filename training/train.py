"""Train the WLASL20c head on stored backbone embeddings, evaluate it, save the full model.

Only the layers after pooling are trained (GRU256 -> BN -> GRU256 -> Dense64 -> Drop -> Dense32 ->
Drop -> Dense20); the backbone is the transplanted MobileNetV2 (training/backbone.py), frozen, so
training runs on per-frame embeddings (training/embeddings.py) and takes seconds per model.

Windows are sampled the original way (12 chunks over the clip, drop the first and last, one frame
per remaining chunk). Training augmentation: a random 70-100 % sub-span of the clip (speed/crop),
a random frame inside each chunk (temporal jitter), the mirrored clip with p=0.5 (left-handed
signers), Gaussian noise on the embeddings. Balanced sampling: each batch item picks a gloss
uniformly among the glosses that have training clips, then a clip of it.

Evaluation (window level, NOT the streaming numbers): each clip -> ONE window with
``sample_training_indices`` on the plain embeddings, top-1/top-5 over the 20 outputs.
- cross-validation on the train split grouped by signer (5 folds, no signer in both training and
  validation; the code still calls it `loso`); this is what hyper-parameters are chosen by;
- the test split (every clip of the test signers), once, with the final model.

Run: ``TF_USE_LEGACY_KERAS=1 python -m training.train [--sweep] [--rebuild-embeddings]``
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import json
import platform
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convert.architecture import EMBEDDING_DIM, LABELS, WINDOW, build_head_from, build_wlasl20c
from service.recognizers.wlasl20c.preprocess import sample_training_indices
from training.catalogue import signer_folds
from training.embeddings import DEFAULT_OUT as DEFAULT_EMBEDDINGS
from training.embeddings import build_embeddings, load_embeddings
from training.manifest import DEFAULT_MANIFEST, REPO_ROOT, Clip, load_manifest

DEFAULT_OUT_DIR = REPO_ROOT / "model"


@dataclass(frozen=True)
class HParams:
    steps: int = 400
    batch: int = 32
    lr: float = 1e-3
    label_smoothing: float = 0.0
    noise: float = 0.1  # Gaussian noise std, as a fraction of the embeddings' global std
    span_min: float = 0.7  # random sub-span of the clip: fraction in [span_min, 1]
    flip_p: float = 0.5


# ----------------------------------------------------------------------------- windows
def _portable(path: Path) -> str:
    """A path as reports record it: relative to the repository when inside it (no machine paths)."""
    resolved = path.resolve()
    return str(resolved.relative_to(REPO_ROOT)) if resolved.is_relative_to(REPO_ROOT) else path.name


def clip_indices(n: int, rng: np.random.Generator | None, span_min: float = 0.7) -> np.ndarray:
    """10 frame indices of an n-frame clip. rng None: the original deterministic sampling."""
    if rng is None:
        return np.asarray(sample_training_indices(n, WINDOW))
    span = n * rng.uniform(span_min, 1.0)
    start = rng.uniform(0.0, n - span)
    edges = np.linspace(start, start + span, WINDOW + 3)[1:-1]  # 12 chunks, first and last dropped
    idx = np.floor(rng.uniform(edges[:-1], edges[1:])).astype(int)
    return np.asarray(np.clip(idx, 0, n - 1))


def make_batch(
    clips: list[Clip],
    emb: dict[str, np.ndarray],
    by_gloss: dict[str, list[int]],
    rng: np.random.Generator,
    hp: HParams,
    sigma: float,
    n: int,
) -> tuple[np.ndarray, np.ndarray]:
    glosses = sorted(by_gloss)
    x = np.empty((n, WINDOW, EMBEDDING_DIM), np.float32)
    y = np.empty(n, np.int64)
    for i in range(n):
        g = glosses[rng.integers(len(glosses))]
        c = clips[by_gloss[g][rng.integers(len(by_gloss[g]))]]
        key = f"{c.path}|flip" if rng.random() < hp.flip_p else c.path
        a = emb[key]
        x[i] = a[clip_indices(len(a), rng, hp.span_min)]
        y[i] = LABELS.index(c.gloss)
    if hp.noise > 0:
        x += rng.normal(0.0, hp.noise * sigma, x.shape).astype(np.float32)
    return x, y


def eval_windows(clips: list[Clip], emb: dict[str, np.ndarray]) -> np.ndarray:
    return np.stack([emb[c.path][clip_indices(len(emb[c.path]), None)] for c in clips])


# ----------------------------------------------------------------------------- model
def new_head() -> Any:
    """The head layers of ``build_wlasl20c`` on their own (fast; used for the LOSO folds)."""
    import tf_keras as keras

    from convert.architecture import head_layers

    return keras.Sequential([keras.Input((WINDOW, EMBEDDING_DIM)), *head_layers()])


def set_seeds(seed: int) -> None:
    import tensorflow as tf
    import tf_keras as keras

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def fit_head(
    head: Any, clips: list[Clip], emb: dict[str, np.ndarray], hp: HParams, seed: int, log: bool = False
) -> dict[str, Any]:
    """Train `head` in place on `clips`; return a small history."""
    import tf_keras as keras

    set_seeds(seed)
    rng = np.random.default_rng(seed)
    by_gloss: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(clips):
        by_gloss[c.gloss].append(i)
    sigma = float(np.std(np.concatenate([emb[c.path] for c in clips])))
    y_smooth = hp.label_smoothing
    head.compile(
        optimizer=keras.optimizers.Adam(hp.lr),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=y_smooth),
        metrics=["accuracy"],
    )
    chunk = 50  # steps per generated block ("epoch")
    history = []
    done = 0
    while done < hp.steps:
        k = min(chunk, hp.steps - done)
        x, y = make_batch(clips, emb, by_gloss, rng, hp, sigma, k * hp.batch)
        h = head.fit(
            x,
            keras.utils.to_categorical(y, len(LABELS)),
            batch_size=hp.batch,
            epochs=1,
            shuffle=False,
            verbose=0,
        )
        done += k
        history.append(
            {
                "step": done,
                "loss": round(float(h.history["loss"][0]), 4),
                "acc": round(float(h.history["accuracy"][0]), 4),
            }
        )
        if log:
            print(
                f"[train] step {done}/{hp.steps} loss {history[-1]['loss']:.3f} acc {history[-1]['acc']:.3f}",
                flush=True,
            )
    return {"history": history, "embedding_std": sigma}


def predict(head: Any, clips: list[Clip], emb: dict[str, np.ndarray]) -> np.ndarray:
    if not clips:
        return np.zeros((0, len(LABELS)), np.float32)
    return np.asarray(head.predict(eval_windows(clips, emb), batch_size=64, verbose=0))


def score(clips: list[Clip], probs: np.ndarray) -> dict[str, Any]:
    """top-1/top-5 overall and per gloss, and per clip rows."""
    rows = []
    for c, p in zip(clips, probs, strict=True):
        order = np.argsort(-p)
        t = LABELS.index(c.gloss)
        rows.append(
            {
                "path": c.path,
                "gloss": c.gloss,
                "source_repo": c.source_repo,
                "predicted": LABELS[order[0]],
                "score": round(float(p[order[0]]), 4),
                "true_score": round(float(p[t]), 4),
                "rank": int(np.where(order == t)[0][0]) + 1,
                "top5": [LABELS[j] for j in order[:5]],
            }
        )
    return summarise(rows)


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def acc(rs: list[dict[str, Any]], k: int) -> float | None:
        return round(sum(r["rank"] <= k for r in rs) / len(rs), 4) if rs else None

    per_gloss = {}
    for g in LABELS:
        rs = [r for r in rows if r["gloss"] == g]
        if rs:
            per_gloss[g] = {"n": len(rs), "top1": acc(rs, 1), "top5": acc(rs, 5)}
    return {"n": len(rows), "top1": acc(rows, 1), "top5": acc(rows, 5), "per_gloss": per_gloss, "clips": rows}


CV_FOLDS = 5


def loso(clips: list[Clip], emb: dict[str, np.ndarray], hp: HParams, seed: int, log: bool = True) -> dict[str, Any]:
    """Cross-validation over the given (train-split) clips grouped by signer (5 folds; the name
    is historical: it was leave-one-source-out, which let a signer re-hosted by two repositories
    be in training and validation at once)."""
    import tf_keras as keras

    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    folds = signer_folds([LABELS.index(c.gloss) for c in clips], [c.signer for c in clips], CV_FOLDS, seed)
    for f, val in enumerate(folds):
        held = [clips[j] for j in val]
        rest = [c for j, c in enumerate(clips) if j not in set(val)]
        keras.backend.clear_session()
        head = new_head()
        fit_head(head, rest, emb, hp, seed)
        res = score(held, predict(head, held, emb))
        rows += res["clips"]
        if log:
            print(f"[cv] fold {f}: {sum(r['rank'] == 1 for r in res['clips'])}/{len(held)} top-1", flush=True)
    out = summarise(rows)
    out["folds"] = len(folds)
    out["grouped_by"] = "signer"
    out["on_glosses_seen_in_other_sources"] = {k: v for k, v in out.items() if k in ("n", "top1", "top5")}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


# ----------------------------------------------------------------------------- main entry points
SWEEP = [
    ("base", HParams()),
    ("steps200", HParams(steps=200)),
    ("steps800", HParams(steps=800)),
    ("lr3e-4_steps800", HParams(lr=3e-4, steps=800)),
    ("label_smoothing0.1", HParams(label_smoothing=0.1)),
    ("no_noise_no_flip", HParams(noise=0.0, flip_p=0.0)),
]


def sweep(
    manifest: Path | str = DEFAULT_MANIFEST,
    embeddings: Path | str = DEFAULT_EMBEDDINGS,
    seed: int = 0,
    configs: list[tuple[str, HParams]] | None = None,
    save: Path | str | None = None,
) -> list[dict[str, Any]]:
    """LOSO for each config (train split only). Each row keeps the full LOSO result under "loso";
    with `save`, the table so far is written there after every config."""
    clips = [c for c in load_manifest(manifest) if c.split == "train" and c.note != "form=doubtful"]
    emb, meta = load_embeddings(embeddings)
    table = []
    for name, hp in configs or SWEEP:
        r = loso(clips, emb, hp, seed, log=True)
        row = {
            "name": name,
            "source_range": meta["source_range"],
            "hparams": asdict(hp),
            "loso_top1": r["top1"],
            "loso_top5": r["top5"],
            "loso_top1_seen": r["on_glosses_seen_in_other_sources"]["top1"],
            "seconds": r["seconds"],
        }
        print(f"[sweep] {json.dumps(row)}", flush=True)
        table.append({**row, "loso": r})
        if save:
            Path(save).write_text(json.dumps(table, indent=1) + "\n")
    return table


def train(
    manifest: Path = DEFAULT_MANIFEST,
    embeddings: Path = DEFAULT_EMBEDDINGS,
    out_dir: Path | str = DEFAULT_OUT_DIR,
    seed: int = 0,
    hp: HParams | None = None,
    sweep_table: list[dict[str, Any]] | None = None,
    run_loso: bool = True,
    command: str | None = None,
    loso_result: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train the head on the train split, save model/WLASL20c_model.h5 + training_report.json."""
    import tf_keras as keras

    from training.backbone import DEFAULT_TFLITE, build_backbone

    hp = hp or HParams()
    t_start = time.perf_counter()
    all_clips = load_manifest(manifest)
    train_clips = [c for c in all_clips if c.split == "train" and c.note != "form=doubtful"]
    test_clips = [c for c in all_clips if c.split == "test"]
    emb, meta = load_embeddings(embeddings)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    # LOSO of exactly this config; reuse the sweep's when given (same code, seed and data)
    loso_res = loso_result if loso_result is not None else (loso(train_clips, emb, hp, seed) if run_loso else None)

    # final model: the exact Sequential, head trained through build_head_from (shared weights)
    keras.backend.clear_session()
    set_seeds(seed)
    backbone = build_backbone(DEFAULT_TFLITE, source_range=meta["source_range"])
    model = build_wlasl20c(backbone)
    head = build_head_from(model)
    t0 = time.perf_counter()
    fit_info = fit_head(head, train_clips, emb, hp, seed, log=True)
    train_seconds = time.perf_counter() - t0
    h5 = out_dir / "WLASL20c_model.h5"
    model.save(h5, include_optimizer=False)

    train_res = score(train_clips, predict(head, train_clips, emb))
    test_res = score(test_clips, predict(head, test_clips, emb))
    seen = {c.gloss for c in train_clips}
    test_seen = summarise([r for r in test_res["clips"] if r["gloss"] in seen])

    def counts(cs: list[Clip]) -> dict[str, dict[str, Any]]:
        out = {}
        for g in LABELS:
            gs = [c for c in cs if c.gloss == g]
            out[g] = {"clips": len(gs), "sources": sorted({c.source_repo for c in gs})}
        return out

    report = {
        "model": _portable(h5),
        "command": command,
        "seed": seed,
        "hparams": asdict(hp),
        "optimizer": "Adam",
        "loss": "categorical cross-entropy",
        "sampling": "balanced: gloss uniform among glosses with training clips, then clip uniform",
        "augmentation": {
            "span": f"random sub-span {hp.span_min:.0%}-100% of the clip, random position",
            "temporal_jitter": "random frame inside each of the 10 kept chunks (12 chunks, first/last dropped)",
            "flip": f"mirrored-frame embeddings with p={hp.flip_p}",
            "noise": f"Gaussian, std {hp.noise} x embeddings' global std ({fit_info['embedding_std']:.4f})",
        },
        "steps": hp.steps,
        "batch": hp.batch,
        "windows_seen": hp.steps * hp.batch,
        "history": fit_info["history"],
        "train_seconds_final_model": round(train_seconds, 1),
        "total_seconds": None,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores (shared)",
        "backbone": {
            "source": "transplanted from " + meta.get("tflite", "?"),
            "tflite_md5": meta.get("tflite_md5"),
            "source_range": meta["source_range"],
            "trained": False,
        },
        "embeddings": {
            "file": _portable(embeddings),
            "frames": meta.get("n_frames_total"),
            "seconds": meta.get("seconds"),
        },
        "data": {
            "manifest": _portable(manifest),
            "train_clips": len(train_clips),
            "test_clips": len(test_clips),
            "excluded_clips": [c.path for c in all_clips if c.split not in ("train", "test")],
            "train_per_gloss": counts(train_clips),
            "test_per_gloss": counts(test_clips),
            "glosses_without_training_clips": [g for g in LABELS if g not in seen],
        },
        "note": (
            "All accuracies here are WINDOW-LEVEL: one 10-embedding window per clip sampled the original "
            "way over the whole clip (sample_training_indices), computed on stored embeddings. They are "
            "NOT the streaming numbers (cli evaluate), where the window position is not known."
        ),
        "train_accuracy": {k: train_res[k] for k in ("n", "top1", "top5")},
        "loso": loso_res,
        "sweep": [{k: v for k, v in r.items() if k != "loso"} for r in sweep_table] if sweep_table else None,
        "test": {
            **test_res,
            "on_glosses_with_training_clips": {k: test_seen[k] for k in ("n", "top1", "top5")},
        },
    }
    report["total_seconds"] = round(time.perf_counter() - t_start, 1)
    (out_dir / "training_report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"[train] saved {h5} ({h5.stat().st_size / 1e6:.1f} MB) and {out_dir / 'training_report.json'}")
    print(f"[train] train top-1 {train_res['top1']}")
    if loso_res:
        print(
            f"[train] grouped CV (signer) top-1 {loso_res['top1']} top-5 {loso_res['top5']} "
            f"({loso_res['n']} clips, {loso_res['folds']} folds)"
        )
    print(
        f"[train] test top-1 {test_res['top1']} top-5 {test_res['top5']} ({test_res['n']} clips; "
        f"on glosses with training clips: {test_seen['top1']} / {test_seen['top5']}, {test_seen['n']} clips)"
    )
    return report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description="Train the WLASL20c head on stored embeddings")
    p.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    p.add_argument("--embeddings", type=Path, default=DEFAULT_EMBEDDINGS)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR, help="output folder (model/)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rebuild-embeddings", action="store_true", help="recompute the embeddings first")
    p.add_argument("--source-range", choices=["-1,1", "0,1"], default="-1,1", help="with --rebuild-embeddings")
    p.add_argument("--sweep", action="store_true", help="LOSO over the SWEEP configs first, train the best")
    p.add_argument("--no-loso", action="store_true")
    p.add_argument("--sweep-file", type=Path, help="use a saved sweep table (JSON) instead of running it")
    p.add_argument("--steps", type=int, default=HParams.steps)
    p.add_argument("--lr", type=float, default=HParams.lr)
    p.add_argument("--label-smoothing", type=float, default=HParams.label_smoothing)
    a = p.parse_args(argv)
    if a.rebuild_embeddings or not a.embeddings.exists():
        build_embeddings(a.manifest, a.embeddings, a.source_range)
    hp = HParams(steps=a.steps, lr=a.lr, label_smoothing=a.label_smoothing)
    table = None
    best_loso = None
    if a.sweep or a.sweep_file:
        table = json.loads(a.sweep_file.read_text()) if a.sweep_file else sweep(a.manifest, a.embeddings, a.seed)
        best = max(table, key=lambda r: (r["loso_top1"], r["loso_top5"]))
        hp = HParams(**best["hparams"])
        best_loso = best.get("loso")
        print(f"[train] best by LOSO: {best['name']} {best['hparams']}")
    import sys

    return train(
        a.manifest,
        a.embeddings,
        a.out,
        a.seed,
        hp,
        table,
        not a.no_loso,
        command="python -m training.train " + " ".join(sys.argv[1:] if argv is None else argv),
        loso_result=best_loso,
    )


if __name__ == "__main__":
    main()
