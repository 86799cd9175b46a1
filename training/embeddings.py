"""Per-frame backbone embeddings of every manifest clip (the expensive part of training, done once).

For each clip in the manifest, every frame goes through ``service.preprocess.preprocess_frame`` (the
one preprocessing), the transplanted MobileNetV2 (``training.backbone.build_backbone``) and global
average pooling -> (n_frames, 1280). The same is stored for horizontally flipped frames (mirror image,
used as left-handed augmentation). Stored as float16 in an .npz keyed by manifest path:
``<path>`` and ``<path>|flip``, plus ``__meta__`` (JSON: source_range, tflite, per-clip frame count, fps).

Run: ``TF_USE_LEGACY_KERAS=1 python -m training.embeddings [--manifest data/manifest.csv]
[--out data/embeddings.npz] [--source-range -1,1] [--extra-root /work/extra_clips]``
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import hashlib
import json
import time
from pathlib import Path
from typing import Any, cast

import numpy as np

from service.clips import DATA_ROOT, clip_fps, iter_clip_frames
from service.recognizers.wlasl20c.preprocess import preprocess_frame
from training.catalogue import FOUND_ROOT
from training.manifest import DEFAULT_MANIFEST, REPO_ROOT, load_manifest, resolve

DEFAULT_OUT = REPO_ROOT / "data" / "embeddings.npz"
BATCH = 32


def build_encoder(source_range: str = "-1,1", tflite_path: str | None = None) -> Any:
    """Transplanted MobileNetV2 + GlobalAveragePooling2D: (N, 224, 224, 3) BGR [0,1] -> (N, 1280)."""
    import tf_keras as keras

    from training.backbone import DEFAULT_TFLITE, build_backbone

    backbone = build_backbone(tflite_path=tflite_path or DEFAULT_TFLITE, source_range=source_range)  # type: ignore[arg-type]
    inputs = keras.Input((224, 224, 3))
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(backbone(inputs)))


def embed_frames(encoder: Any, frames: np.ndarray) -> np.ndarray:
    out = [encoder(frames[i : i + BATCH], training=False).numpy() for i in range(0, len(frames), BATCH)]
    return np.concatenate(out).astype(np.float32)


def build_embeddings(
    manifest: Path | str = DEFAULT_MANIFEST,
    out: Path | str = DEFAULT_OUT,
    source_range: str = "-1,1",
    shared_root: Path = DATA_ROOT,
    found_root: Path = FOUND_ROOT,
    tflite_path: str | None = None,
) -> dict[str, Any]:
    """Embed every frame (and its mirror image) of every manifest clip; write `out`; return meta.

    Clips already in `out` with the same frame count, source range and TFLite file are kept (the
    encoder is deterministic); so are clips whose file is absent (found clips, not in ../shared)."""
    import tensorflow as tf

    tf.random.set_seed(0)
    clips = load_manifest(manifest)
    old: dict[str, np.ndarray] = {}
    old_meta: dict[str, Any] = {}
    if Path(out).is_file():
        old, old_meta = load_embeddings(out)
    encoder = build_encoder(source_range, tflite_path)
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {"source_range": source_range, "clips": {}}
    from training.backbone import DEFAULT_TFLITE

    tfl = tflite_path or DEFAULT_TFLITE
    meta["tflite"] = os.path.basename(tfl)
    meta["tflite_md5"] = hashlib.md5(Path(tfl).read_bytes()).hexdigest()
    t0 = time.perf_counter()
    n_total = 0
    same_encoder = old_meta.get("source_range") == source_range and old_meta.get("tflite_md5") == meta["tflite_md5"]
    for i, clip in enumerate(clips):
        file = resolve(clip.path, shared_root, found_root)
        kept = old_meta.get("clips", {}).get(clip.path) if same_encoder and clip.path in old else None
        if kept is not None and (not file.is_file() or kept["n_frames"] == _frame_count(file)):
            arrays[clip.path] = old[clip.path].astype(np.float16)
            arrays[f"{clip.path}|flip"] = old[f"{clip.path}|flip"].astype(np.float16)
            meta["clips"][clip.path] = kept
            continue
        raw = list(iter_clip_frames(file))
        if not raw:
            raise ValueError(f"{file} has no readable frames")
        x = np.stack([preprocess_frame(f) for f in raw])
        emb = embed_frames(encoder, x)
        emb_flip = embed_frames(encoder, np.ascontiguousarray(x[:, :, ::-1, :]))
        arrays[clip.path] = emb.astype(np.float16)
        arrays[f"{clip.path}|flip"] = emb_flip.astype(np.float16)
        meta["clips"][clip.path] = {"n_frames": len(raw), "fps": clip_fps(file)}
        n_total += len(raw)
        el = time.perf_counter() - t0
        print(
            f"[embeddings] {i + 1}/{len(clips)} {clip.path}: {len(raw)} frames ({2 * n_total / el:.1f} frames/s)",
            flush=True,
        )
    meta["n_frames_total"] = n_total
    meta["seconds"] = round(time.perf_counter() - t0, 1)
    arrays["__meta__"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **cast(dict[str, Any], arrays))  # cast: mypy would match **arrays to allow_pickle
    print(
        f"[embeddings] {n_total} frames x2 (plain + flipped) in {meta['seconds']} s "
        f"-> {out} ({out.stat().st_size / 1e6:.1f} MB)"
    )
    return meta


def _frame_count(file: Path) -> int:
    return sum(1 for _ in iter_clip_frames(file))


def load_embeddings(path: Path | str = DEFAULT_OUT) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays keyed by manifest path / path|flip, as float32; meta)."""
    with np.load(path) as z:
        meta = json.loads(bytes(z["__meta__"]).decode())
        arrays = {k: z[k].astype(np.float32) for k in z.files if k != "__meta__"}
    return arrays, meta


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Per-frame backbone embeddings of every manifest clip")
    p.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--source-range", choices=["-1,1", "0,1"], default="-1,1")
    a = p.parse_args(argv)
    build_embeddings(a.manifest, a.out, a.source_range)


if __name__ == "__main__":
    main()
