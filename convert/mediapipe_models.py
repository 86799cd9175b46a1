"""MediaPipe hand/pose .tflite models -> ONNX for the landmark front end (service/landmarks.py).

The .tflite files come out of the mediapipe 0.10.14 wheel, downloaded with `pip download --no-deps`
(mediapipe itself is never installed into the serving/training venv: it pins protobuf<5, which
TensorFlow 2.21 does not accept). Each model is converted with tf2onnx and checked against
TensorFlow's TFLite interpreter on real frames of the shared clips; the per-output max |diff|, the
wheel's SHA-256 and the licence go into model/landmarks/report.json.

pose_detection.tflite is not converted (tf2onnx fails on one of its reshapes); the tracker runs
pose landmarks on the whole letterboxed frame instead.

`--dynamic` also exports every model (the three full ones and the wheel's hand_landmark_lite and
palm_detection_lite) with a symbolic batch dimension, as `<name>_dyn.onnx`: tf2onnx fixes the batch
at 1, so the input's and outputs' dim 0 are made symbolic and the Reshape shapes that hard-code the
batch (palm: [1, -1, 18], pose: [1, 256, 256, 1]) take it from their input instead (0, or -1). Each is
checked against the TFLite interpreter (batch 1) and a batch of N real inputs against N batch-1 runs
(N = 1, 2, 4, 8); the results go into report.json under "dynamic_batch".

    python -m convert.mediapipe_models [--out model/landmarks] [--wheel-dir /tmp/mp] [--dynamic]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from service.clips import CLIPS_DIR
from service.onnx_runtime import sha256_of

MEDIAPIPE_VERSION = "0.10.14"
OPSET = 17
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CLIPS = CLIPS_DIR

# ONNX file name -> (path inside the wheel, input side in pixels)
MODELS: dict[str, tuple[str, int]] = {
    "palm_detection_full.onnx": ("mediapipe/modules/palm_detection/palm_detection_full.tflite", 192),
    "hand_landmark_full.onnx": ("mediapipe/modules/hand_landmark/hand_landmark_full.tflite", 224),
    "pose_landmark_full.onnx": ("mediapipe/modules/pose_landmark/pose_landmark_full.tflite", 256),
}

# The wheel's lighter variants (exported with a dynamic batch only, see --dynamic).
LITE_MODELS: dict[str, tuple[str, int]] = {
    "palm_detection_lite.onnx": ("mediapipe/modules/palm_detection/palm_detection_lite.tflite", 192),
    "hand_landmark_lite.onnx": ("mediapipe/modules/hand_landmark/hand_landmark_lite.tflite", 224),
}
DYNAMIC_SUFFIX = "_dyn"
BATCH_SIZES = (1, 2, 4, 8)


def dynamic_name(onnx_name: str) -> str:
    """hand_landmark_lite.onnx -> hand_landmark_lite_dyn.onnx"""
    return onnx_name.removesuffix(".onnx") + DYNAMIC_SUFFIX + ".onnx"


# What each output is (MediaPipe's graphs); coordinates are in input pixels.
OUTPUT_ROLES: dict[str, dict[str, str]] = {
    "palm_detection_full.onnx": {
        "Identity": "2016 anchors x 18: box dx, dy, w, h + 7 keypoints (x, y), /192, offsets from the anchor",
        "Identity_1": "2016 score logits (sigmoid)",
    },
    "hand_landmark_full.onnx": {
        "Identity": "21 x (x, y, z) in 224-pixel crop units",
        "Identity_1": "hand presence (already a probability)",
        "Identity_2": "handedness: probability of MediaPipe's 'Left' (= signer's right hand, non-mirrored)",
        "Identity_3": "21 world landmarks (metres), unused",
    },
    "palm_detection_lite.onnx": {
        "Identity": "2016 anchors x 18 (as palm_detection_full)",
        "Identity_1": "2016 score logits (sigmoid)",
    },
    "hand_landmark_lite.onnx": {
        "Identity": "21 x (x, y, z) in 224-pixel crop units",
        "Identity_1": "hand presence (already a probability)",
        "Identity_2": "handedness: probability of MediaPipe's 'Left'",
        "Identity_3": "21 world landmarks (metres), unused",
    },
    "pose_landmark_full.onnx": {
        "Identity": "39 x (x, y, z, visibility logit, presence logit) in 256-pixel units (33 + 6 auxiliary)",
        "Identity_1": "pose presence (probability)",
        "Identity_2": "segmentation logits 256x256, unused (largest diff: logits of a mask nobody reads)",
        "Identity_3": "heatmap 64x64x39, unused",
        "Identity_4": "39 world landmarks, unused",
    },
}


def sha256_file(path: Path) -> str:
    return sha256_of(path)


def download_wheel(wheel_dir: Path) -> Path:
    """The cp311 manylinux x86_64 wheel (whatever this machine is), without dependencies."""
    wheel_dir.mkdir(parents=True, exist_ok=True)
    found = sorted(wheel_dir.glob(f"mediapipe-{MEDIAPIPE_VERSION}-cp311-*manylinux*x86_64*.whl"))
    if not found:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                f"mediapipe=={MEDIAPIPE_VERSION}",
                "--no-deps",
                "--only-binary=:all:",
                "--platform",
                "manylinux_2_17_x86_64",
                "--python-version",
                "311",
                "-d",
                str(wheel_dir),
            ],
            check=True,
        )
        found = sorted(wheel_dir.glob(f"mediapipe-{MEDIAPIPE_VERSION}-cp311-*manylinux*x86_64*.whl"))
    if not found:
        raise FileNotFoundError(f"no mediapipe {MEDIAPIPE_VERSION} wheel in {wheel_dir}")
    return found[0]


def extract_models(wheel_dir: Path, models: dict[str, tuple[str, int]]) -> tuple[Path, Path]:
    """The wheel (downloaded once) and the folder its .tflite models of `models` are extracted into."""
    wheel = download_wheel(wheel_dir)
    extract = wheel_dir / "extracted"
    with zipfile.ZipFile(wheel) as archive:
        for member, _ in models.values():
            archive.extract(member, extract)
    return wheel, extract


def wheel_licence(wheel: Path) -> dict[str, str]:
    with zipfile.ZipFile(wheel) as archive:
        meta_name = f"mediapipe-{MEDIAPIPE_VERSION}.dist-info/METADATA"
        meta = archive.read(meta_name).decode("utf-8", "replace")
        licence_text = archive.read(f"mediapipe-{MEDIAPIPE_VERSION}.dist-info/LICENSE").decode("utf-8", "replace")
    declared = next((line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("License:")), "")
    return {
        "metadata_license": declared,
        "license_file_first_line": licence_text.strip().splitlines()[0].strip() if licence_text.strip() else "",
        "spdx": "Apache-2.0" if "Apache" in declared or "Apache License" in licence_text else "unknown",
    }


def letterbox(frame_bgr: np.ndarray, side: int) -> np.ndarray:
    """RGB float32 [0, 1] NHWC batch of one, aspect kept, zero padding."""
    h, w = frame_bgr.shape[:2]
    scale = side / max(h, w)
    nw, nh = round(w * scale), round(h * scale)
    resized = cv2.resize(frame_bgr, (nw, nh), interpolation=cv2.INTER_AREA)
    canvas = np.zeros((side, side, 3), np.uint8)
    top, left = (side - nh) // 2, (side - nw) // 2
    canvas[top : top + nh, left : left + nw] = resized
    rgb = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)
    return (rgb.astype(np.float32) / 255.0)[None]


def real_frames(clips_dir: Path, count: int = 8) -> list[np.ndarray]:
    """Middle frames of `count` clips, one per gloss first."""
    clips = sorted(clips_dir.glob("*/*.mp4"))
    if not clips:
        raise FileNotFoundError(f"no clips under {clips_dir}")
    seen: set[str] = set()
    chosen = [c for c in clips if not (c.parent.name in seen or seen.add(c.parent.name))][:count]  # type: ignore[func-returns-value]
    frames: list[np.ndarray] = []
    for clip in chosen:
        cap = cv2.VideoCapture(str(clip))
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        cap.set(cv2.CAP_PROP_POS_FRAMES, max(0, n // 2))
        ok, frame = cap.read()
        cap.release()
        if ok:
            frames.append(frame)
    return frames


def hand_crops(frames: list[np.ndarray], side: int) -> list[np.ndarray]:
    """For the hand model: the upper-centre part of each frame, where the hands are in these clips."""
    out = []
    for frame in frames:
        h, w = frame.shape[:2]
        s = min(h, w) // 2
        y0, x0 = h // 4, (w - s) // 2
        out.append(letterbox(frame[y0 : y0 + s, x0 : x0 + s], side))
    return out


def compare(tflite_path: Path, onnx_path: Path, inputs: list[np.ndarray]) -> dict[str, Any]:
    import onnxruntime as ort
    import tensorflow as tf

    interp = tf.lite.Interpreter(model_path=str(tflite_path))
    interp.allocate_tensors()
    in_detail = interp.get_input_details()[0]
    out_details = interp.get_output_details()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_in = session.get_inputs()[0].name
    onnx_outs = [o.name for o in session.get_outputs()]
    per_output: dict[str, float] = {}
    for batch in inputs:
        interp.set_tensor(in_detail["index"], batch)
        interp.invoke()
        ref = {d["name"]: interp.get_tensor(d["index"]) for d in out_details}
        got = dict(zip(onnx_outs, session.run(None, {onnx_in: batch}), strict=True))
        for name, value in ref.items():
            match = got.get(name)
            if match is None:  # tf2onnx may append ':0'
                match = next(v for k, v in got.items() if k.split(":")[0] == name)
            diff = float(np.max(np.abs(match.astype(np.float64) - value.astype(np.float64))))
            per_output[name] = max(per_output.get(name, 0.0), diff)
    return {
        "input": {"name": onnx_in, "shape": [int(x) for x in in_detail["shape"]]},
        "outputs": {d["name"]: [int(x) for x in d["shape"]] for d in out_details},
        "onnx_outputs": onnx_outs,
        "max_abs_diff": per_output,
        "frames": len(inputs),
    }


def convert_mediapipe(
    out_dir: str | Path = "model/landmarks", wheel_dir: str | Path = "/tmp/mp", clips_dir: str | Path = DEFAULT_CLIPS
) -> dict[str, Any]:
    import tf2onnx

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    wheel, extract = extract_models(Path(wheel_dir), MODELS)
    frames = real_frames(Path(clips_dir))
    report: dict[str, Any] = {
        "source": {
            "package": f"mediapipe=={MEDIAPIPE_VERSION}",
            "wheel": wheel.name,
            "wheel_sha256": sha256_file(wheel),
        },
        "licence": wheel_licence(wheel),
        "opset": OPSET,
        "converter": f"tf2onnx {tf2onnx.__version__} (from_tflite)",
        "check": f"ONNX Runtime vs tf.lite.Interpreter on {len(frames)} real frames"
        f" from {Path(clips_dir).name}/*/*.mp4",
        "skipped": {
            "pose_detection.tflite": "tf2onnx fails on a reshape; pose landmarks run on a fixed upper-body"
            " region (service/landmarks.py pose_roi)"
        },
        "models": {},
    }
    for onnx_name, (member, side) in MODELS.items():
        tflite_path = extract / member
        onnx_path = out / onnx_name
        tf2onnx.convert.from_tflite(str(tflite_path), opset=OPSET, output_path=str(onnx_path))
        inputs = hand_crops(frames, side) if "hand" in onnx_name else [letterbox(f, side) for f in frames]
        result = compare(tflite_path, onnx_path, inputs)
        result.update(
            {
                "tflite": member,
                "tflite_sha256": sha256_file(tflite_path),
                "onnx_sha256": sha256_file(onnx_path),
                "onnx_bytes": onnx_path.stat().st_size,
                "output_roles": OUTPUT_ROLES[onnx_name],
            }
        )
        report["models"][onnx_name] = result
        print(onnx_name, json.dumps(result["max_abs_diff"]), flush=True)
    report_path = out / "report.json"
    if report_path.exists():  # keep what the tracker benchmark wrote
        old = json.loads(report_path.read_text())
        for key in ("per_frame_cost_ms", "mediapipe_agreement", "detection_rates"):
            if key in old:
                report[key] = old[key]
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    return report


def make_batch_dynamic(model: Any, batch: str = "batch") -> Any:
    """A tf2onnx model with batch 1 -> the same graph with a symbolic batch dimension (in place).

    The input's and outputs' dim 0 become `batch`; intermediate shapes are dropped (ONNX Runtime infers
    them again); a Reshape whose constant shape starts with 1 takes dim 0 from its input instead
    (0 = copy, so allowzero must be unset).
    Raises ValueError on any other op that may hard-code the batch (Tile, Expand, ConstantOfShape,
    a Reshape with a computed shape) so that a new model is looked at rather than silently wrong.
    """
    from onnx import numpy_helper

    graph = model.graph
    for value in list(graph.input) + list(graph.output):
        dims = value.type.tensor_type.shape.dim
        if not dims or dims[0].dim_value not in (0, 1):
            raise ValueError(f"{value.name}: dim 0 is {dims[0] if dims else None}, expected batch 1")
        dims[0].ClearField("dim_value")
        dims[0].dim_param = batch
    del graph.value_info[:]
    inits = {init.name: init for init in graph.initializer}
    for node in graph.node:
        if node.op_type in ("Tile", "Expand", "ConstantOfShape"):
            raise ValueError(f"{node.op_type} {node.name}: may hard-code the batch, not handled")
        if node.op_type != "Reshape":
            continue
        shape_name = node.input[1]
        if shape_name not in inits:
            raise ValueError(f"Reshape {node.name}: computed shape, not handled")
        shape = numpy_helper.to_array(inits[shape_name]).copy()
        if shape[0] != 1:
            continue
        if any(a.name == "allowzero" and a.i for a in node.attribute):
            raise ValueError(f"Reshape {node.name}: allowzero set, not handled")
        shape[0] = 0  # copy dim 0 (the batch) from the input
        fixed_name = f"{shape_name}__batch"
        if fixed_name not in inits:  # shape constants are shared between reshapes
            inits[fixed_name] = numpy_helper.from_array(shape.astype(np.int64), fixed_name)
            graph.initializer.append(inits[fixed_name])
        node.input[1] = fixed_name
    still_used = {name for node in graph.node for name in node.input}
    for init in list(graph.initializer):
        if init.name not in still_used:
            graph.initializer.remove(init)
    return model


def check_batches(onnx_path: Path, inputs: list[np.ndarray], sizes: tuple[int, ...] = BATCH_SIZES) -> dict[str, Any]:
    """max |batch-of-N output - N batch-1 outputs| per output, for N in `sizes` (inputs reused cyclically)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    singles = [session.run(None, {name: x}) for x in inputs]
    out: dict[str, Any] = {}
    for n in sizes:
        picks = [i % len(inputs) for i in range(n)]
        batched = session.run(None, {name: np.concatenate([inputs[i] for i in picks])})
        diffs = []
        for k, value in enumerate(batched):
            if value.shape[0] != n:
                raise ValueError(f"{onnx_path.name} output {k}: batch {n} gave shape {value.shape}")
            ref = np.concatenate([singles[i][k] for i in picks])
            diffs.append(float(np.max(np.abs(value.astype(np.float64) - ref.astype(np.float64)))))
        out[str(n)] = max(diffs)
    return out


def export_dynamic(
    out_dir: str | Path = "model/landmarks", wheel_dir: str | Path = "/tmp/mp", clips_dir: str | Path = DEFAULT_CLIPS
) -> dict[str, Any]:
    """Every model (MODELS and LITE_MODELS) as <name>_dyn.onnx with a symbolic batch; checked and reported."""
    import tempfile

    import onnx
    import tf2onnx

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    every = MODELS | LITE_MODELS
    _, extract = extract_models(Path(wheel_dir), every)
    frames = real_frames(Path(clips_dir))
    result: dict[str, Any] = {
        "how": "tf2onnx from_tflite (batch 1), then make_batch_dynamic: input/output dim 0 symbolic 'batch',"
        " Reshape shapes starting with 1 take dim 0 from their input",
        "check_tflite": f"batch 1, ONNX Runtime vs tf.lite.Interpreter on {len(frames)} real frames",
        "check_batches": "max |batch of N - N batch-1 runs| over every output, N real inputs",
        "models": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for onnx_name, (member, side) in every.items():
            tflite_path = extract / member
            fixed_path = Path(tmp) / onnx_name
            dyn_path = out / dynamic_name(onnx_name)
            tf2onnx.convert.from_tflite(str(tflite_path), opset=OPSET, output_path=str(fixed_path))
            proto = make_batch_dynamic(onnx.load(str(fixed_path)))
            onnx.checker.check_model(proto)
            onnx.save(proto, str(dyn_path))
            inputs = hand_crops(frames, side) if "hand" in onnx_name else [letterbox(f, side) for f in frames]
            tflite_check = compare(tflite_path, dyn_path, inputs)
            batches = check_batches(dyn_path, inputs)
            fixed_vs_dyn = check_same(fixed_path, dyn_path, inputs)
            entry = {
                "tflite": member,
                "tflite_sha256": sha256_file(tflite_path),
                "onnx_sha256": sha256_file(dyn_path),
                "onnx_bytes": dyn_path.stat().st_size,
                "input": tflite_check["input"] | {"shape": ["batch", *tflite_check["input"]["shape"][1:]]},
                "tflite_max_abs_diff": tflite_check["max_abs_diff"],
                "batch_max_abs_diff": batches,
                "batch1_vs_fixed_batch_max_abs_diff": fixed_vs_dyn,
                "output_roles": OUTPUT_ROLES[onnx_name],
            }
            worst = max(batches.values())
            if worst > 1e-4:
                raise SystemExit(f"{dyn_path.name}: batched outputs differ from batch-1 runs by {worst:.2e}")
            result["models"][dyn_path.name] = entry
            print(
                dyn_path.name,
                f"{entry['onnx_bytes'] / 1e6:.1f} MB",
                "tflite",
                json.dumps(entry["tflite_max_abs_diff"]),
                "batches",
                json.dumps(batches),
                "vs fixed",
                json.dumps(fixed_vs_dyn),
                flush=True,
            )
    report_path = out / "report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    report["dynamic_batch"] = result
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    return result


def check_same(a: Path, b: Path, inputs: list[np.ndarray]) -> dict[str, float]:
    """max |a - b| per output over the inputs (batch 1): the batch-1 export against the dynamic one."""
    import onnxruntime as ort

    sa = ort.InferenceSession(str(a), providers=["CPUExecutionProvider"])
    sb = ort.InferenceSession(str(b), providers=["CPUExecutionProvider"])
    names = [o.name for o in sa.get_outputs()]
    worst = dict.fromkeys(names, 0.0)
    for x in inputs:
        ra = sa.run(None, {sa.get_inputs()[0].name: x})
        rb = sb.run(None, {sb.get_inputs()[0].name: x})
        for name, u, v in zip(names, ra, rb, strict=True):
            worst[name] = max(worst[name], float(np.max(np.abs(u.astype(np.float64) - v.astype(np.float64)))))
    return worst


BENCH_CLIPS = ("hello/thkazi.mp4", "drink/handspeak.mp4", "book/signtific.mp4", "hello/kirichovka.mp4")


def measure_costs(
    out_dir: str | Path = "model/landmarks", clips_dir: str | Path = DEFAULT_CLIPS, threads: int = 2
) -> dict[str, Any]:
    """Per-frame cost of service/landmarks.py on this machine (ms per call / per frame), with and
    without ROI tracking, over BENCH_CLIPS streamed in order; written into report.json."""
    import os

    from service.clips import iter_clip_frames
    from service.recognizers.landmarks.tracker import HandPoseTracker, offline_steps

    frames = [f for name in BENCH_CLIPS for f in iter_clip_frames(Path(clips_dir) / name)]
    HandPoseTracker().process_now(frames[0], offline_steps(Path(out_dir), threads=threads))  # warm-up
    result: dict[str, Any] = {
        "threads": threads,
        "cpu_count": os.cpu_count(),
        "clips": list(BENCH_CLIPS),
        "frames": len(frames),
        "note": "shared 2-core machine (other jobs running): treat as upper bounds",
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
    }
    for label, track in (("with_tracking", True), ("without_tracking", False)):
        tracker = HandPoseTracker(track=track)
        steps = offline_steps(Path(out_dir), threads=threads)
        for name in BENCH_CLIPS:
            tracker.reset()
            for frame in iter_clip_frames(Path(clips_dir) / name):
                tracker.process_now(frame, steps)
        s = tracker.stats
        ms = {name: steps.seconds[name] * 1e3 / max(1, steps.calls[name]) for name in steps.calls}
        result[label] = {
            "palm_detection_ms_per_call": round(ms["palm"], 2),
            "hand_landmarks_ms_per_hand": round(ms["hand"], 2),
            "pose_ms_per_frame": round(ms["pose"], 2),
            "total_ms_per_frame": round(s.total_ms / max(1, s.frames), 2),
            "palm_calls_per_frame": round(s.palm_calls / max(1, s.frames), 3),
            "hand_calls_per_frame": round(s.hand_calls / max(1, s.frames), 3),
        }
        print(label, json.dumps(result[label]), flush=True)
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    report_path = Path(out_dir) / "report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    report["per_frame_cost_ms"] = result
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", default=str(ROOT / "model" / "landmarks"))
    parser.add_argument("--wheel-dir", default="/tmp/mp")
    parser.add_argument("--clips", default=str(DEFAULT_CLIPS))
    parser.add_argument("--bench-only", action="store_true", help="only measure the tracker's per-frame cost")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--dynamic",
        action="store_true",
        help="only export every model (full and lite) as <name>_dyn.onnx, batch symbolic",
    )
    args = parser.parse_args()
    if args.dynamic:
        export_dynamic(args.out, args.wheel_dir, args.clips)
        return
    if not args.bench_only:
        convert_mediapipe(args.out, args.wheel_dir, args.clips)
    measure_costs(args.out, args.clips, args.threads)


if __name__ == "__main__":
    main()
