"""WLASL20c (MODEL=wlasl20c): MobileNetV2 per frame (encoder.onnx), then the GRU head (head.onnx) on 10
embeddings; the files come from `python cli.py convert` beside MODEL_PATH (the Keras h5)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from service.arrays import FloatArray, ImageBGR
from service.onnx_runtime import ModelError, batch_run, create_session, sha256_of
from service.recognizer import Description, Session, Steps
from service.recognizers.wlasl20c.preprocess import IMAGE_SIZE, preprocess_frame
from service.settings import Settings

ENCODER_FILE = "encoder.onnx"
HEAD_FILE = "head.onnx"
FULL_FILE = "full.onnx"
LABELS_FILE = "labels.json"
REPORT_FILE = "conversion_report.json"
CONVERT_HINT = "python cli.py convert --h5 {h5}"


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


class ImageRecognizer:
    """WLASL20c: the encoder batched across clients per frame, the head per window."""

    name = "WLASL20c"
    window_size = 10

    @staticmethod
    def check(settings: Settings) -> None:
        check_model_files(settings.model_path)

    def __init__(self, settings: Settings) -> None:
        files = check_model_files(settings.model_path)
        self.labels = load_labels(files.labels)
        threads = {"intra_op_threads": settings.intra_op_threads, "inter_op_threads": settings.inter_op_threads}
        head = create_session(files.head, settings.execution_provider, **threads)
        self.provider = str(head.get_providers()[0])
        self.encoder_variant = choose_encoder_variant(files, settings.encoder_variant, self.provider)
        encoder = create_session(files.encoder_variant(self.encoder_variant), settings.execution_provider, **threads)
        self.embedding_dim = int(encoder.get_outputs()[0].shape[-1])
        self.sessions = {
            "encoder": Session(batch_run(encoder), threads=settings.intra_op_threads),
            # Windows of all clients in one call, as soon as one is waiting.
            "head": Session(batch_run(head), max_batch=32, max_wait_ms=0.0, threads=settings.intra_op_threads),
        }

    def describe(self) -> Description:
        return Description(self.name, self.provider, {"encoder": self.encoder_variant})

    def new_tracker(self) -> None:
        return None

    async def encode(self, image_bgr: ImageBGR, tracker: None, steps: Steps) -> FloatArray:
        return await steps.run("encoder", await steps.cpu(preprocess_frame, image_bgr))

    async def classify(self, window: FloatArray, steps: Steps) -> FloatArray:
        return await steps.run("head", window)


__all__ = ["IMAGE_SIZE", "ImageRecognizer", "ModelFiles", "check_model_files", "load_labels"]
