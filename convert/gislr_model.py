"""The SentiSign-STT GISLR transformer (.tflite, MIT) -> model/landmarks/gislr_embed.onnx, cut at its
256-value sign embedding (the GELU of the layer before the 250-sign classifier).

Source: github.com/SHN2004/SentiSign-STT, model_66landmarks.tflite at commit SOURCE_COMMIT (MIT licence,
"Copyright (c) 2024 SentiSign-STT Contributors"; trained on Kaggle's GISLR data, 250 signs, 21 signers).
The file is not on a package registry, so the converted model is committed; to rebuild it:

    git clone https://github.com/SHN2004/SentiSign-STT /tmp/sentisign && git -C /tmp/sentisign checkout <commit>
    python -m convert.gislr_model /tmp/sentisign/model_66landmarks.tflite

tf2onnx 1.17 does not know TFL_GELU (exact, approximate=0); each is rewritten as x * (1 + erf(x / sqrt 2)) / 2.
The ONNX output is checked against the .tflite interpreter on real windows (data/landmarks.npz).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from service.recognizers.landmarks.transfer import EMBEDDING_FILE, EMBEDDING_META, gislr_input

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "model" / "landmarks"
SOURCE_REPO = "SHN2004/SentiSign-STT"
SOURCE_PATH = "model_66landmarks.tflite"
SOURCE_COMMIT = "90e52d5563674d6377d452f7421d8bf9a78402aa"
EMBEDDING_TENSOR = (
    "gislr_model_1/dense_6_1/Gelu/mul_2;gislr_model_1/dense_6_1/Gelu/mul;gislr_model_1/dense_6_1/Gelu/Neg;"
    "gislr_model_1/dense_6_1/Gelu/mul_1;gislr_model_1/dense_6_1/Gelu/Erfc"
)
OPSET = 17


def replace_gelu(model: Any) -> int:
    """Every TFL_GELU node -> Div, Erf, Add, Mul, Mul (exact GELU); returns how many were replaced."""
    from onnx import helper, numpy_helper

    graph = model.graph
    consts = {
        "gelu_sqrt2": numpy_helper.from_array(np.array(math.sqrt(2.0), np.float32), "gelu_sqrt2"),
        "gelu_one": numpy_helper.from_array(np.array(1.0, np.float32), "gelu_one"),
        "gelu_half": numpy_helper.from_array(np.array(0.5, np.float32), "gelu_half"),
    }
    nodes, replaced = [], 0
    for node in graph.node:
        if node.op_type != "TFL_GELU":
            nodes.append(node)
            continue
        x, y, p = node.input[0], node.output[0], f"gelu{replaced}"
        nodes += [
            helper.make_node("Div", [x, "gelu_sqrt2"], [p + "_d"]),
            helper.make_node("Erf", [p + "_d"], [p + "_e"]),
            helper.make_node("Add", [p + "_e", "gelu_one"], [p + "_a"]),
            helper.make_node("Mul", [x, p + "_a"], [p + "_m"]),
            helper.make_node("Mul", [p + "_m", "gelu_half"], [y]),
        ]
        replaced += 1
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(consts.values())
    return replaced


def real_inputs(count: int = 48) -> list[tuple[np.ndarray, np.ndarray]]:
    """GISLR inputs of real served windows (the first clips of data/landmarks.npz; a parity check, not a choice)."""
    with np.load(ROOT / "data" / "landmarks.npz") as data:
        keys = [k for k in data.files if k.endswith("|served0")][:count]
        return [gislr_input(data[k].astype(np.float32)[:10]) for k in keys if len(data[k]) >= 10]


def convert(tflite: Path, out_dir: Path = OUT_DIR) -> dict[str, Any]:
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import onnx
    import onnxruntime as ort
    import tensorflow as tf
    import tf2onnx

    model, _ = tf2onnx.convert.from_tflite(str(tflite), output_names=[EMBEDDING_TENSOR], opset=OPSET)
    replaced = replace_gelu(model)
    model.graph.output[0].name = "embedding"
    for node in model.graph.node:
        node.output[:] = ["embedding" if o == EMBEDDING_TENSOR else o for o in node.output]
    onnx.checker.check_model(model)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / EMBEDDING_FILE
    onnx.save(model, str(path))

    interp = tf.lite.Interpreter(model_path=str(tflite), experimental_preserve_all_tensors=True)
    interp.allocate_tensors()
    ins = {d["name"]: d["index"] for d in interp.get_input_details()}
    emb_index = next(d["index"] for d in interp.get_tensor_details() if d["name"] == EMBEDDING_TENSOR)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    inputs = real_inputs()
    for frames, idxs in inputs:
        interp.set_tensor(ins["frames"], frames[None])
        interp.set_tensor(ins["frame_idxs"], idxs[None])
        interp.invoke()
        want = interp.get_tensor(emb_index)[0]
        got = session.run(None, {"frames": frames[None], "frame_idxs": idxs[None]})[0][0]
        worst = max(worst, float(np.abs(want - got).max()))
    report = {
        "source": {"repository": SOURCE_REPO, "path": SOURCE_PATH, "commit": SOURCE_COMMIT, "licence": "MIT"},
        "tflite_sha256": hashlib.sha256(tflite.read_bytes()).hexdigest(),
        "onnx_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "gelu_nodes_rewritten": replaced,
        "parity": {"windows": len(inputs), "max_abs_diff": worst},
        "tools": {"tensorflow": tf.__version__, "tf2onnx": tf2onnx.__version__, "onnx": onnx.__version__},
    }
    meta_path = out_dir / EMBEDDING_META
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    meta_path.write_text(json.dumps(meta | {"conversion": report}, indent=2) + "\n")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("tflite", type=Path)
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = parser.parse_args()
    print(json.dumps(convert(args.tflite, args.out_dir), indent=2))


if __name__ == "__main__":
    main()
