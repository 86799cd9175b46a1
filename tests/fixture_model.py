"""A WLASL20c h5 with seeded, non-degenerate random weights, so every test can run without the trained
model. SPEC: a MobileNetV2 with `weights=None` gives near-constant embeddings, so parity tests on it
prove nothing; here each BatchNormalization's moving statistics are set from real frames (one
training-mode pass with momentum 0), which makes embeddings vary from frame to frame, and the last
Dense is scaled so the softmax is not flat.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from service.clips import CLIPS_DIR

CLIPS = CLIPS_DIR


def build_random_h5(path: Path, seed: int = 7) -> Path:
    import tf_keras as keras

    from convert.architecture import build_wlasl20c
    from service.recognizers.wlasl20c.preprocess import clip_window

    keras.utils.set_random_seed(seed)
    model = build_wlasl20c()
    clips = sorted(CLIPS.glob("*/*.mp4"))
    calibration = np.stack([clip_window(c) for c in clips[1::6]]).reshape(-1, 224, 224, 3)[::3]
    backbone = model.layers[0].layer
    norms = [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in norms:
        layer.momentum = 0.0
    backbone(calibration, training=True)  # moving statistics := statistics of real frames
    for layer in norms:
        layer.momentum = 0.999
    last = model.layers[-1]
    kernel, bias = last.get_weights()
    last.set_weights([kernel * 8.0, bias])
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(str(path), save_format="h5")
    return path
