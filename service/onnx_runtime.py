"""ONNX Runtime, in one place: provider choice, session creation with the thread settings, batched runs,
model-file hashing and the error every model-loading step raises.

A leaf (it imports only the array types), so the engine and every recogniser package can use it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.arrays import FloatArray

BatchRun = Callable[[FloatArray], FloatArray]  # (N, ...) inputs -> (N, ...) outputs, one ONNX Runtime call


class ModelError(RuntimeError):
    """The model cannot be served; the message says what is wrong and which command fixes it."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def choose_providers(requested: str, available: list[str] | None = None) -> list[str]:
    """The provider list to ask ONNX Runtime for. `auto` prefers CUDA when the wheel offers it;
    whether the session really got it is checked after creation (see `create_session`)."""
    available = ort.get_available_providers() if available is None else available
    if requested == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if requested == "cuda":
        raise ModelError(
            "EXECUTION_PROVIDER=cuda but this onnxruntime has no CUDAExecutionProvider "
            f"(available: {', '.join(available)}); install the gpu extra or use EXECUTION_PROVIDER=auto"
        )
    return ["CPUExecutionProvider"]


def create_session(
    path: Path, execution_provider: str = "cpu", intra_op_threads: int = 1, inter_op_threads: int = 1
) -> ort.InferenceSession:
    """An inference session with the service's options; `execution_provider` is the EXECUTION_PROVIDER
    setting (auto, cuda, cpu)."""
    options = ort.SessionOptions()
    options.inter_op_num_threads = inter_op_threads
    options.intra_op_num_threads = intra_op_threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle intra-op threads must not spin: between many small runs, spinning burns the cores that
    # decoding and the event loop need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    providers = choose_providers(execution_provider)
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelError(f"cannot load {path}: {exc}") from None
    got = session.get_providers()[0]
    if execution_provider == "cuda" and got != "CUDAExecutionProvider":
        raise ModelError(f"EXECUTION_PROVIDER=cuda but {path.name} could not be placed on CUDA (got {got})")
    return session


def batch_run(session: ort.InferenceSession, outputs: Sequence[int] = (0,)) -> BatchRun:
    """`session` as one call over a batch: (N, ...) inputs -> (N, K), the chosen outputs of each item
    flattened and joined in order (a model with several outputs still gives the batcher one array).
    A model exported with a fixed batch of 1 is run item by item inside the same call."""
    name = session.get_inputs()[0].name
    fixed_one = session.get_inputs()[0].shape[0] == 1

    def run_once(inputs: FloatArray) -> FloatArray:
        results = session.run(None, {name: inputs})
        n = len(inputs)
        return np.concatenate([np.asarray(results[i], np.float32).reshape(n, -1) for i in outputs], axis=1)

    def run(inputs: FloatArray) -> FloatArray:
        if fixed_one and len(inputs) > 1:
            return np.concatenate([run_once(inputs[i : i + 1]) for i in range(len(inputs))])
        return run_once(inputs)

    return run
