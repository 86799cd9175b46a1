"""The WLASL20c architecture (SPEC section 2), built and checked in one place.

Training builds it here, the test fixture builds it here, and conversion checks a loaded h5 against it.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from typing import Any

import tf_keras as keras

from service.labels import GLOSSES

LABELS = list(GLOSSES)
WINDOW = 10
IMAGE_SHAPE = (224, 224, 3)
EMBEDDING_DIM = 1280

# (layer class, what to check) in order; the Keras layer names may differ between saves.
EXPECTED_LAYERS = [
    "TimeDistributed", "TimeDistributed", "GRU", "BatchNormalization", "GRU",
    "Dense", "Dropout", "Dense", "Dropout", "Dense",
]  # fmt: skip


class ArchitectureError(ValueError):
    """The h5 is not the WLASL20c architecture."""


def new_backbone() -> Any:
    return keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=IMAGE_SHAPE)


def head_layers() -> list[Any]:
    """New layers of the GRU/Dense stack that follows the pooled per-frame embeddings."""
    return [
        keras.layers.GRU(256, return_sequences=True),
        keras.layers.BatchNormalization(),
        keras.layers.GRU(256),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dropout(0.65),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dropout(0.65),
        keras.layers.Dense(len(LABELS), activation="softmax"),
    ]


def build_wlasl20c(backbone: Any | None = None) -> Any:
    """The exact Sequential of SPEC section 2. `backbone` defaults to an untrained MobileNetV2."""
    backbone = backbone if backbone is not None else new_backbone()
    return keras.Sequential(
        [
            keras.layers.TimeDistributed(backbone, input_shape=(WINDOW, *IMAGE_SHAPE)),
            keras.layers.TimeDistributed(keras.layers.GlobalAveragePooling2D()),
            *head_layers(),
        ]
    )


def build_head_from(model: Any) -> Any:
    """The GRU/Dense stack of `model` as its own model, (B, 10, 1280) -> (B, 20), sharing weights."""
    inputs = keras.Input((WINDOW, EMBEDDING_DIM), name="embeddings")
    x = inputs
    for layer in model.layers[2:]:
        x = layer(x)
    return keras.Model(inputs, x, name="head")


def build_encoder_from(model: Any) -> Any:
    """MobileNetV2 + pooling of `model` as its own model, (N, 224, 224, 3) -> (N, 1280)."""
    inputs = keras.Input(IMAGE_SHAPE, name="frames")
    x = model.layers[0].layer(inputs)
    x = model.layers[1].layer(x)
    return keras.Model(inputs, x, name="encoder")


def check_architecture(model: Any) -> None:
    """Raise ArchitectureError naming the first difference from SPEC section 2."""
    got = [type(layer).__name__ for layer in model.layers]
    if got != EXPECTED_LAYERS:
        raise ArchitectureError(f"expected layers {EXPECTED_LAYERS}, got {got}")
    if tuple(model.input_shape[1:]) != (WINDOW, *IMAGE_SHAPE):
        raise ArchitectureError(f"expected input (batch, 10, 224, 224, 3), got {model.input_shape}")
    inner = model.layers[0].layer
    if "mobilenetv2" not in inner.name.lower():
        raise ArchitectureError(f"the first TimeDistributed wraps {inner.name!r}, not MobileNetV2")
    if tuple(inner.output_shape[1:]) != (7, 7, EMBEDDING_DIM):
        raise ArchitectureError(f"the backbone outputs {inner.output_shape}, expected (7, 7, 1280)")
    if type(model.layers[1].layer).__name__ != "GlobalAveragePooling2D":
        raise ArchitectureError("the second TimeDistributed is not GlobalAveragePooling2D")
    if model.layers[2].units != 256 or model.layers[4].units != 256:
        raise ArchitectureError("expected two GRU(256) layers")
    if tuple(model.output_shape[1:]) != (len(LABELS),):
        raise ArchitectureError(f"expected {len(LABELS)} outputs, got {model.output_shape}")


def load_h5(path: os.PathLike[str] | str) -> Any:
    """Load and check a WLASL20c h5; clear errors for unreadable files and other architectures."""
    try:
        model = keras.models.load_model(str(path), compile=False)
    except Exception as exc:
        raise ArchitectureError(f"{path} is not a loadable Keras h5 model: {exc}") from None
    check_architecture(model)
    return model
