"""Transplant a pretrained MobileNetV2 backbone from a TFLite file into tf_keras (Keras 2).

Why: Keras cannot download ImageNet weights here, but
``shared/weights/mobilenet_v2_1.0_224_finetuned_5class_int8w.tflite`` (a Keras MobileNetV2,
alpha 1.0, 224x224, fine-tuned on 5 flower classes, exported with int8 dynamic-range weights and
BatchNormalization folded into the convolutions) holds a usable pretrained backbone. This module
rebuilds ``keras.applications.MobileNetV2(include_top=False)`` from those weights and proves the
transplant against the TFLite interpreter on real frames.

Input contract of the returned backbone (the product's preprocessing, see SPEC.md section 2):
BGR frames, ``cv2.resize(img, (224, 224))``, divided by 255.0 -> float32 in [0, 1]. The TFLite
model itself wants RGB, so the channel swap (and, by default, the [0, 1] -> [-1, 1] affine map)
is folded into the first convolution; nothing else changes.

Input range of the TFLite model -- what the file does and does not tell (measured, see
``input_range_evidence``):
- the graph input feeds ``Conv1_pad`` directly: there is no Rescaling/normalisation op;
- dynamic-range quantisation quantises weights only, so no activation tensor (the input included)
  carries quantisation parameters, and the file has no metadata with mean/std;
- [0, 255] input is ruled out: it saturates ReLU6 on ~34 % of Conv1 outputs (0.1 % otherwise);
- [0, 1] and [-1, 1] are indistinguishable from the weights alone: with BatchNormalization folded,
  an affine change of input is just another bias, and activation statistics on real frames match
  (dead ReLU6 fraction 0.478 vs 0.480 on 20 clip frames);
- provenance: the repository the file comes from (tanwars/RemoteVirtualGPU) runs the full
  flower model with ``image * 1/255`` (RGB, [0, 1]) -- the classifier head was fit to that;
- the backbone weights are ImageNet MobileNetV2 weights (``weights='imagenet'`` in that
  repository) whose native input is ``mobilenet_v2.preprocess_input``, i.e. [-1, 1].
We therefore default to ``source_range="-1,1"`` (the backbone's pretraining range, best for using
it as a feature extractor) and keep ``"0,1"`` selectable (reproduces how the file was run).

Run: ``TF_USE_LEGACY_KERAS=1 python -m training.backbone --out backbone_weights.h5``
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2
import numpy as np
import tensorflow as tf
import tf_keras as keras

from service.clips import CLIPS_DIR, DATA_ROOT

SourceRange = Literal["-1,1", "0,1"]
DEFAULT_TFLITE = str(DATA_ROOT.parent / "weights" / "mobilenet_v2_1.0_224_finetuned_5class_int8w.tflite")
DEFAULT_CLIPS = str(CLIPS_DIR / "*" / "*.mp4")
FEATURE_SHAPE = (1, 7, 7, 1280)  # MobileNetV2 ``out_relu`` at 224x224, the last backbone tensor
CONV_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D")


@dataclass(frozen=True)
class TfliteConv:
    """One TFLite convolution with BN folded in, weights already dequantised to float32.

    ``kernel`` keeps the TFLite layout: CONV_2D [out, h, w, in], DEPTHWISE_CONV_2D [1, h, w, C].
    """

    op_index: int
    op_name: str
    name: str  # output tensor name, e.g. ".../block_3_expand_relu/Relu6" (cross-check only)
    weight_name: str  # kernel tensor name, e.g. ".../Conv_1/Conv2D/ReadVariableOp" (cross-check only)
    kernel: np.ndarray
    bias: np.ndarray


# ----------------------------------------------------------------------------- TFLite reading
def open_interpreter(tflite_path: str) -> tf.lite.Interpreter:
    """Interpreter with every intermediate tensor kept and no XNNPACK delegate.

    Why no delegate: XNNPACK swallows most ops into DELEGATE nodes, so ``out_relu`` (the 7x7x1280
    backbone output) and Conv1's output could not be read back; the builtin kernels keep them.
    """
    interp = tf.lite.Interpreter(
        model_path=tflite_path,
        experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        num_threads=1,
    )
    interp.allocate_tensors()
    return interp


def _dequantise(tensor: dict[str, Any], raw: np.ndarray) -> np.ndarray:
    """int8 -> float32 with per-channel scales / zero points along ``quantized_dimension``."""
    qp = tensor["quantization_parameters"]
    scales, zps = qp["scales"], qp["zero_points"]
    if raw.dtype == np.float32 or len(scales) == 0:
        return raw.astype(np.float32)
    shape = [1] * raw.ndim
    shape[qp["quantized_dimension"]] = -1 if len(scales) > 1 else 1
    return np.asarray(((raw.astype(np.float32) - zps.reshape(shape)) * scales.reshape(shape)).astype(np.float32))


def _constant(
    interp: tf.lite.Interpreter, index: int, producers: dict[int, dict[str, Any]], details: dict[int, dict[str, Any]]
) -> np.ndarray:
    """Float value of a weight tensor, following a DEQUANTIZE op back to its int8 constant.

    Why: for some layers the converter inserts DEQUANTIZE ops whose outputs only exist after
    ``invoke``; reading the int8 source and dequantising it ourselves needs no inference run.
    """
    op = producers.get(index)
    if op is not None and op["op_name"] == "DEQUANTIZE":
        return _constant(interp, int(op["inputs"][0]), producers, details)
    return _dequantise(details[index], interp.get_tensor(index))


def backbone_output_index(interp: tf.lite.Interpreter) -> int:
    """Index of the last 7x7x1280 activation (``out_relu``) produced by a convolution.

    Why by shape: the fine-tuned head (Conv2D 32 -> GAP -> Dense 5) follows it; the first
    conv output of that exact shape marks where the backbone ends, whatever the tensor names are.
    """
    details = {t["index"]: t for t in interp.get_tensor_details()}
    for op in interp._get_ops_details():
        if op["op_name"] in CONV_OPS:
            out = int(op["outputs"][0])
            if tuple(details[out]["shape"]) == FEATURE_SHAPE:
                return out
    raise ValueError("no 7x7x1280 convolution output found: not a MobileNetV2 1.0/224 file?")


def read_backbone_convs(interp: tf.lite.Interpreter) -> list[TfliteConv]:
    """All backbone convolutions in execution order, up to and including the one giving out_relu."""
    ops = interp._get_ops_details()
    details = {t["index"]: t for t in interp.get_tensor_details()}
    producers = {int(o): op for op in ops for o in op["outputs"]}
    last = backbone_output_index(interp)
    convs: list[TfliteConv] = []
    for op in ops:
        if op["op_name"] not in CONV_OPS:
            continue
        _, w_idx, b_idx = (int(i) for i in op["inputs"][:3])
        out = int(op["outputs"][0])
        convs.append(
            TfliteConv(
                op_index=int(op["index"]),
                op_name=op["op_name"],
                name=details[out]["name"],
                weight_name=details[w_idx]["name"],
                kernel=_constant(interp, w_idx, producers, details),
                bias=_constant(interp, b_idx, producers, details),
            )
        )
        if out == last:
            return convs
    raise AssertionError("unreachable: backbone output was found but not reached")


# ----------------------------------------------------------------------------- Keras side
def _keras_kernel(conv: TfliteConv) -> np.ndarray:
    """TFLite kernel layout -> Keras layout (Conv2D [h,w,in,out], DepthwiseConv2D [h,w,C,1])."""
    if conv.op_name == "CONV_2D":
        return np.transpose(conv.kernel, (1, 2, 3, 0))
    _, h, w, c = conv.kernel.shape
    return conv.kernel.reshape(h, w, c, 1)


def fold_input_transform(
    kernel: np.ndarray, bias: np.ndarray, source_range: SourceRange
) -> tuple[np.ndarray, np.ndarray]:
    """Fold "BGR [0,1] -> what TFLite wants" into the first conv (Keras layout [h,w,in,out]).

    Channel swap: the TFLite model was trained on RGB, our frames are BGR, so reversing the
    kernel's input-channel axis makes the conv see RGB semantics from BGR input (exact).
    Range (``source_range="-1,1"``): TFLite wants x = 2*y - 1 for y in [0, 1]; since
    W.(2y - 1) + b = (2W).y + (b - sum_{h,w,in} W), the kernel doubles and the bias drops by
    the kernel's sum per output channel.
    Caveat (zero padding): Conv1 is preceded by ZeroPadding2D ((0,1),(0,1)). Padded zeros now
    mean y = 0 (black, x = -1) instead of x = 0 (grey), so the last output row and column of
    Conv1 (1 of 112 each) differ from TFLite; everything else is exact. Not fixable with a
    linear fold; the effect on pooled features is small (measured by ``verify``).
    """
    k = kernel[:, :, ::-1, :].astype(np.float32)
    if source_range == "0,1":
        return np.ascontiguousarray(k), bias.astype(np.float32)
    if source_range != "-1,1":
        raise ValueError(f"source_range must be '-1,1' or '0,1', got {source_range!r}")
    return np.ascontiguousarray(2.0 * k), (bias - kernel.sum(axis=(0, 1, 2))).astype(np.float32)


def identity_bn_weights(bn: keras.layers.BatchNormalization, beta: np.ndarray) -> list[np.ndarray]:
    """[gamma, beta, moving_mean, moving_variance] so that inference-mode BN is x + beta.

    Keras BN computes (x - mean) / sqrt(var + eps) * gamma + beta; with mean=0, gamma=1 and
    var = 1 - eps the divisor is sqrt(1) = 1, so BN only adds the folded conv bias.
    """
    n = beta.shape[0]
    return [
        np.ones(n, np.float32),
        beta.astype(np.float32),
        np.zeros(n, np.float32),
        np.full(n, 1.0 - bn.epsilon, np.float32),
    ]


def conv_bn_pairs(model: keras.Model) -> list[tuple[keras.layers.Layer, keras.layers.BatchNormalization]]:
    """Each Conv2D/DepthwiseConv2D with the BatchNormalization right after it, in layer order.

    Why adjacency: ``keras.applications.MobileNetV2`` lists layers topologically and every conv
    (all ``use_bias=False``) is immediately followed by its BN; we assert it rather than trust it.
    """
    layers = model.layers
    pairs = []
    for i, layer in enumerate(layers):
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            bn = layers[i + 1]
            if not isinstance(bn, keras.layers.BatchNormalization) or layer.use_bias:
                raise ValueError(f"unexpected layout after {layer.name}: {bn.name}")
            pairs.append((layer, bn))
    return pairs


def build_backbone(
    tflite_path: str = DEFAULT_TFLITE, source_range: SourceRange = "-1,1", verbose: bool = True
) -> keras.Model:
    """MobileNetV2(include_top=False, 224x224x3) with the TFLite weights, taking BGR [0,1] input.

    Mapping is by execution order (TFLite) vs layer order (Keras), checked by kernel shape; the
    TFLite tensor names, which embed the Keras layer names, are only counted as a cross-check.
    """
    convs = read_backbone_convs(open_interpreter(tflite_path))
    model = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(224, 224, 3))
    pairs = conv_bn_pairs(model)
    if len(pairs) != len(convs):
        raise ValueError(f"{len(convs)} TFLite convs vs {len(pairs)} Keras convs")
    names_agree = 0
    for i, ((layer, bn), conv) in enumerate(zip(pairs, convs, strict=True)):
        kernel, bias = _keras_kernel(conv), conv.bias
        expected = tuple(layer.weights[0].shape)
        if kernel.shape != expected:
            raise ValueError(
                f"shape mismatch at #{i} {layer.name}: keras {expected} vs tflite {kernel.shape} ({conv.name})"
            )
        if i == 0:
            kernel, bias = fold_input_transform(kernel, bias, source_range)
        layer.set_weights([kernel])
        bn.set_weights(identity_bn_weights(bn, bias))
        names_agree += f"/{layer.name}/" in conv.weight_name
    if verbose:
        n_dw = sum(c.op_name == "DEPTHWISE_CONV_2D" for c in convs)
        print(
            f"[backbone] mapped {len(convs)} convs ({len(convs) - n_dw} Conv2D + {n_dw} DepthwiseConv2D) "
            f"by order, {len(convs)}/{len(convs)} shapes match, {names_agree}/{len(convs)} TFLite kernel "
            f"names contain the mapped Keras layer name; first: {pairs[0][0].name} <- {convs[0].name}; last: "
            f"{pairs[-1][0].name} <- {convs[-1].name}; input fold: BGR->RGB + {source_range}"
        )
    return model


# ----------------------------------------------------------------------------- verification
def tflite_input(frames_bgr01: np.ndarray, source_range: SourceRange) -> np.ndarray:
    """The TFLite-side equivalent of our BGR [0,1] frames: RGB, mapped to ``source_range``."""
    rgb = frames_bgr01[..., ::-1].astype(np.float32)
    return np.ascontiguousarray(2.0 * rgb - 1.0 if source_range == "-1,1" else rgb)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity."""
    return np.asarray((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12))


def _tflite_features(interp: tf.lite.Interpreter, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: pooled out_relu (N, 1280) and Conv1's ReLU6 output (N, 112, 112, 32)."""
    in_idx = interp.get_input_details()[0]["index"]
    out_idx = backbone_output_index(interp)
    conv1_idx = int(next(op for op in interp._get_ops_details() if op["op_name"] == "CONV_2D")["outputs"][0])
    pooled, conv1 = [], []
    for frame in x:  # the file has batch size 1
        interp.set_tensor(in_idx, frame[None])
        interp.invoke()
        pooled.append(interp.get_tensor(out_idx).mean(axis=(0, 1, 2)))
        conv1.append(interp.get_tensor(conv1_idx)[0])
    return np.stack(pooled), np.stack(conv1)


def verify(
    tflite_path: str,
    frames_bgr01: np.ndarray,
    source_range: SourceRange = "-1,1",
    model: keras.Model | None = None,
    clip_ids: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Compare the Keras backbone's pooled 1280-d features with the TFLite interpreter's.

    Keras gets BGR [0,1] frames; TFLite gets the same frames as RGB in ``source_range`` and we
    average its ``out_relu`` (the pooled 1280-d features do not exist in the file: its head is
    Conv2D(32) -> GAP -> Dense(5)). TFLite's hybrid int8 kernels quantise activations on the
    fly, so agreement is close but not exact. Conv1 runs in float in TFLite (its weights are
    kept float), so its output is also compared: that isolates the input fold, exact except on
    the padded border in the "-1,1" mode. Non-degeneracy: feature std across frames and the
    cosine between frames of different clips (vs the same clip) must show real variation.
    """
    model = model or build_backbone(tflite_path, source_range, verbose=False)
    frames_bgr01 = np.asarray(frames_bgr01, np.float32)
    conv1_model = keras.Model(model.input, model.get_layer("Conv1_relu").output)
    k_maps = model.predict(frames_bgr01, batch_size=8, verbose=0)
    k_feat = k_maps.mean(axis=(1, 2))
    k_conv1 = conv1_model.predict(frames_bgr01, batch_size=8, verbose=0)
    t_feat, t_conv1 = _tflite_features(open_interpreter(tflite_path), tflite_input(frames_bgr01, source_range))

    cos = _cosines(k_feat, t_feat)
    c1 = np.abs(k_conv1 - t_conv1)
    report: dict[str, Any] = {
        "source_range": source_range,
        "n_frames": len(frames_bgr01),
        "pooled_max_abs_diff": float(np.abs(k_feat - t_feat).max()),
        "pooled_mean_abs_diff": float(np.abs(k_feat - t_feat).mean()),
        "pooled_mean_abs_value": float(np.abs(t_feat).mean()),
        "cosine_mean": float(cos.mean()),
        "cosine_min": float(cos.min()),
        "conv1_max_abs_diff_interior": float(c1[:, :-1, :-1].max()),
        "conv1_max_abs_diff_border": float(c1.max()),
        "keras_feature_std_across_frames": float(k_feat.std(axis=0).mean()),
        "keras_feature_mean": float(k_feat.mean()),
    }
    if clip_ids is not None:
        ids = np.asarray(clip_ids)
        kn = k_feat / np.linalg.norm(k_feat, axis=1, keepdims=True)
        sim = kn @ kn.T
        same = (ids[:, None] == ids[None, :]) & ~np.eye(len(ids), dtype=bool)
        diff = ids[:, None] != ids[None, :]
        report["cosine_between_frames_same_clip"] = float(sim[same].mean()) if same.any() else None
        report["cosine_between_frames_different_clips"] = float(sim[diff].mean())
    return report


def input_range_evidence(tflite_path: str, frames_bgr01: np.ndarray) -> dict[str, Any]:
    """Activation statistics of the TFLite model under each candidate input range.

    Why: the file has no normalisation op and no activation quantisation parameters, so the only
    evidence inside it is how its (BN-folded) activations behave on real images.
    """
    interp = open_interpreter(tflite_path)
    ops = interp._get_ops_details()
    details = {t["index"]: t for t in interp.get_tensor_details()}
    relu = [
        int(o["outputs"][0])
        for o in ops
        if o["op_name"] in CONV_OPS and "relu" in details[int(o["outputs"][0])]["name"].lower()
    ]
    in_idx = interp.get_input_details()[0]["index"]
    rgb = frames_bgr01[..., ::-1].astype(np.float32)
    out: dict[str, Any] = {}
    for label, x in (("0,1", rgb), ("-1,1", 2 * rgb - 1), ("0,255", 255 * rgb)):
        dead, sat_conv1 = [], []
        for frame in x:
            interp.set_tensor(in_idx, np.ascontiguousarray(frame[None]))
            interp.invoke()
            acts = [interp.get_tensor(i) for i in relu]
            dead.append(np.mean([(a == 0).mean() for a in acts]))
            sat_conv1.append((acts[0] >= 6).mean())
        out[label] = {
            "relu6_dead_fraction": round(float(np.mean(dead)), 4),
            "conv1_saturated_fraction": round(float(np.mean(sat_conv1)), 4),
        }
    out["activation_tensors_with_quant_params"] = sum(
        1 for t in details.values() if t["dtype"] != np.int8 and len(t["quantization_parameters"]["scales"])
    )
    out["first_ops"] = [o["op_name"] for o in ops[:2]]
    return out


# ----------------------------------------------------------------------------- frames + CLI
def load_frames(
    pattern: str = DEFAULT_CLIPS, n_clips: int = 10, per_clip: int = 2
) -> tuple[np.ndarray, list[int], list[str]]:
    """Middle frames of clips spread over the sorted list, preprocessed like the product (BGR/255)."""
    clips = sorted(glob.glob(pattern))
    if not clips:
        raise FileNotFoundError(pattern)
    chosen = [clips[int(i)] for i in np.linspace(0, len(clips) - 1, min(n_clips, len(clips)))]
    frames, ids = [], []
    for cid, path in enumerate(chosen):
        cap = cv2.VideoCapture(path)
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        for pos in np.linspace(0.4, 0.6, per_clip) if per_clip > 1 else [0.5]:
            cap.set(cv2.CAP_PROP_POS_FRAMES, int(n * pos))
            ok, img = cap.read()
            if ok:
                frames.append(cv2.resize(img, (224, 224)).astype(np.float32) / 255.0)
                ids.append(cid)
        cap.release()
    return np.stack(frames), ids, chosen


def main() -> None:
    """Build, verify on real frames, print JSON, save the Keras weights."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tflite", default=DEFAULT_TFLITE)
    ap.add_argument("--clips", default=DEFAULT_CLIPS)
    ap.add_argument("--range", dest="source_range", choices=["-1,1", "0,1"], default="-1,1")
    ap.add_argument("--out", default="backbone_weights.h5")
    ap.add_argument("--evidence", action="store_true", help="also print input-range activation statistics")
    args = ap.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    t0 = time.perf_counter()
    model = build_backbone(args.tflite, args.source_range)
    t_build = time.perf_counter() - t0
    frames, ids, chosen = load_frames(args.clips)
    report = verify(args.tflite, frames, args.source_range, model=model, clip_ids=ids)
    report["clips"] = [os.path.relpath(c, os.path.dirname(os.path.dirname(c))) for c in chosen]
    report["build_s"] = round(t_build, 2)
    if args.evidence:
        report["input_range_evidence"] = input_range_evidence(args.tflite, frames)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    model.save_weights(args.out)
    report["saved"] = args.out
    report["total_s"] = round(time.perf_counter() - t0, 2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
