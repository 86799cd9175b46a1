"""The inference engine: model files, ONNX Runtime sessions, execution-provider choice, warm-up.

A recogniser backend (here the WLASL20c image model) splits its work like michaelfeil/infinity:
`encode_pre` (one frame -> model input, CPU, any thread), `encode_core` (a batch of inputs ->
per-frame embeddings, on the accelerator) and `classify` (a batch of embedding windows -> class
probabilities). The server, the batcher and the benchmarks only see this interface.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort

from service.preprocess import IMAGE_SIZE, FloatArray, ImageBGR, preprocess_frame
from service.settings import Settings

log = logging.getLogger("signstream.engine")

ENCODER_FILE = "encoder.onnx"
HEAD_FILE = "head.onnx"
FULL_FILE = "full.onnx"
LABELS_FILE = "labels.json"
REPORT_FILE = "conversion_report.json"
CONVERT_HINT = "python cli.py convert --h5 {h5}"


class ModelError(RuntimeError):
    """The model cannot be served; the message says what is wrong and which command fixes it."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelFiles:
    h5: Path
    encoder: Path
    head: Path
    full: Path
    labels: Path
    report: Path
    conversion: dict[str, Any] = field(default_factory=dict)  # the conversion report's contents

    def encoder_variant(self, name: str) -> Path:
        """The encoder file of a variant listed in the conversion report (fp32 = encoder.onnx)."""
        if name == "fp32":
            return self.encoder
        variant = self.conversion.get("variants", {}).get(name)
        if variant is None:
            raise ModelError(f"no {name} encoder in {self.report}: run `{CONVERT_HINT.format(h5=self.h5)}`")
        return self.h5.parent / str(variant["file"])

    @classmethod
    def beside(cls, h5: Path) -> ModelFiles:
        folder = h5.parent
        return cls(
            h5=h5,
            encoder=folder / ENCODER_FILE,
            head=folder / HEAD_FILE,
            full=folder / FULL_FILE,
            labels=folder / LABELS_FILE,
            report=folder / REPORT_FILE,
        )


def check_model_files(h5: Path) -> ModelFiles:
    """Fail with one clear line unless the converted ONNX files next to `h5` were made from it."""
    files = ModelFiles.beside(h5)
    hint = CONVERT_HINT.format(h5=h5)
    if not h5.is_file():
        raise ModelError(
            f"no model at MODEL_PATH={h5}: put the trained WLASL20c_model.h5 there "
            f"(the repository ships one in model/; `python cli.py train` rebuilds it), then run `{hint}`"
        )
    missing = [p.name for p in (files.encoder, files.head, files.labels, files.report) if not p.is_file()]
    if missing:
        raise ModelError(f"{h5} is not converted ({', '.join(missing)} missing in {h5.parent}): run `{hint}`")
    try:
        report = json.loads(files.report.read_text())
        expected = str(report["h5_sha256"])
    except (ValueError, KeyError) as exc:
        raise ModelError(f"{files.report} is unreadable ({exc}): run `{hint}`") from None
    actual = sha256_of(h5)
    if actual != expected:
        raise ModelError(
            f"the ONNX files in {h5.parent} were converted from another h5 "
            f"(sha256 {expected[:12]}..., {h5.name} is {actual[:12]}...): run `{hint}`"
        )
    return replace(files, conversion=report)


def choose_encoder_variant(files: ModelFiles, requested: str, provider: str) -> str:
    """`auto`: the variant measured for this provider (int8 for CPU, fp16 for CUDA) where the
    conversion report says it qualifies (top-1 agreement with fp32 of at least 98%, and faster on
    that provider), else fp32."""
    if requested != "auto":
        return requested
    for name, variant in files.conversion.get("variants", {}).items():
        if variant.get("provider") == provider and variant.get("qualifies"):
            return str(name)
    return "fp32"


def load_labels(path: Path) -> list[str]:
    """labels.json is {"0": "book", ...}; returns the labels in index order."""
    raw = json.loads(path.read_text())
    return [str(raw[str(i)]) for i in range(len(raw))]


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


def create_session(path: Path, settings: Settings) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.inter_op_num_threads = settings.inter_op_threads
    options.intra_op_num_threads = settings.intra_op_threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle intra-op threads must not spin: between many small runs, spinning burns the cores that
    # decoding and the event loop need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    providers = choose_providers(settings.execution_provider)
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelError(f"cannot load {path}: {exc}") from None
    got = session.get_providers()[0]
    if settings.execution_provider == "cuda" and got != "CUDAExecutionProvider":
        raise ModelError(f"EXECUTION_PROVIDER=cuda but {path.name} could not be placed on CUDA (got {got})")
    return session


class Recognizer(Protocol):
    """A recogniser backend, as the batcher, server and benchmarks see it."""

    name: str
    labels: list[str]
    window_size: int
    embedding_dim: int
    provider: str

    def new_tracker(self) -> Any:
        """Per-stream front-end state (hand tracking), or None for a stateless front end."""
        ...

    def encode_pre(self, image_bgr: ImageBGR, tracker: Any) -> FloatArray: ...

    def encode_core(self, inputs: FloatArray) -> FloatArray: ...

    def classify(self, windows: FloatArray) -> FloatArray: ...


class ImageRecognizer:
    """WLASL20c: MobileNetV2 per frame (encoder.onnx) then the GRU head (head.onnx) on 10 embeddings."""

    name = "WLASL20c"
    window_size = 10

    def __init__(self, files: ModelFiles, settings: Settings) -> None:
        self.labels = load_labels(files.labels)
        self._head = create_session(files.head, settings)
        self.provider = self._head.get_providers()[0]
        self.encoder_variant = choose_encoder_variant(files, settings.encoder_variant, self.provider)
        self._encoder = create_session(files.encoder_variant(self.encoder_variant), settings)
        self._encoder_input = self._encoder.get_inputs()[0].name
        self._head_input = self._head.get_inputs()[0].name
        self.embedding_dim = int(self._encoder.get_outputs()[0].shape[-1])

    def new_tracker(self) -> None:
        return None

    def encode_pre(self, image_bgr: ImageBGR, tracker: Any = None) -> FloatArray:
        return preprocess_frame(image_bgr)

    def encode_core(self, inputs: FloatArray) -> FloatArray:
        out = self._encoder.run(None, {self._encoder_input: inputs})[0]
        return np.asarray(out, dtype=np.float32)

    def classify(self, windows: FloatArray) -> FloatArray:
        out = self._head.run(None, {self._head_input: windows})[0]
        return np.asarray(out, dtype=np.float32)


LANDMARK_HINT = (
    "point MODEL_PATH at a file in the folder that holds landmarks/ (the repository's is ./model/WLASL20c_model.h5), "
    "or build it with `python -m convert.mediapipe_models` (front end) and `python cli.py train --model landmarks`"
)


def landmark_model_dir(settings: Settings) -> Path:
    """MODEL=landmarks reads its files from the `landmarks` folder beside MODEL_PATH. When that folder
    is not there, fail with one line naming the path that is missing: MODEL_PATH itself (and its
    folder) when it does not exist, else the landmarks folder (which files are missing in a folder
    that is there is check_landmark_files' to say)."""
    folder = settings.model_dir / "landmarks"
    if folder.is_dir():
        return folder
    model_path = settings.model_path
    if not model_path.exists():
        parent = "" if settings.model_dir.is_dir() else f", nor does its folder {settings.model_dir}"
        raise ModelError(
            f"MODEL=landmarks but MODEL_PATH={model_path} does not exist{parent} "
            f"(the landmark model is read from {folder}, beside it): {LANDMARK_HINT}"
        )
    raise ModelError(f"MODEL=landmarks but there is no {folder} beside MODEL_PATH={model_path}: {LANDMARK_HINT}")


def check_model(settings: Settings) -> None:
    """Fail with one clear line unless the model MODEL names can be served (cheap, before start-up)."""
    if settings.model == "landmarks":
        from service.landmarks import check_landmark_files

        check_landmark_files(landmark_model_dir(settings))
    else:
        check_model_files(settings.model_path)


def load_recognizer(settings: Settings) -> Recognizer:
    """Check the model files, open the sessions and warm them up (logging each stage's time)."""
    recognizer: Recognizer
    if settings.model == "landmarks":
        from service.landmarks import LandmarkRecognizer

        recognizer = LandmarkRecognizer(landmark_model_dir(settings), settings)
    else:
        recognizer = ImageRecognizer(check_model_files(settings.model_path), settings)
    warm_up(recognizer)
    return recognizer


def warm_up(recognizer: Recognizer) -> dict[str, float]:
    """Run every stage once (first runs allocate) and log what each costs, in milliseconds."""
    frame = np.full((480, 640, 3), 128, dtype=np.uint8)
    timings: dict[str, float] = {}
    tracker = recognizer.new_tracker()
    for _ in range(2):
        start = time.perf_counter()
        inputs = recognizer.encode_pre(frame, tracker)[None]
        timings["encode_pre_ms"] = (time.perf_counter() - start) * 1e3
        start = time.perf_counter()
        embedding = recognizer.encode_core(inputs)
        timings["encode_core_ms"] = (time.perf_counter() - start) * 1e3
        start = time.perf_counter()
        recognizer.classify(np.repeat(embedding[None], recognizer.window_size, axis=1))
        timings["classify_ms"] = (time.perf_counter() - start) * 1e3
    log.info(
        "model %s (%s encoder) ready on %s: %s",
        recognizer.name,
        getattr(recognizer, "encoder_variant", "fp32"),
        recognizer.provider,
        ", ".join(f"{k}={v:.1f}" for k, v in timings.items()),
    )
    return timings


__all__ = ["IMAGE_SIZE", "ImageRecognizer", "ModelError", "ModelFiles", "Recognizer", "load_recognizer"]
