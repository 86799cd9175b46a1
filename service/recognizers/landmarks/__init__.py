"""The landmark recogniser (MODEL=landmarks, the default): hand and pose landmarks per frame (tracked per
stream, tracker.py); per window of 10 of them the window vector (features.py) and the pretrained GISLR
embedding (transfer.py), and a small sequence model on both.

Its files are read from the `landmarks` folder beside MODEL_PATH: the three front-end models
(`python -m convert.mediapipe_models`), the embedding gislr_embed.onnx (`python -m convert.gislr_model`)
and sequence.onnx / sequence.json (`python cli.py train --model landmarks`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from service.arrays import FloatArray, ImageBGR
from service.onnx_runtime import ModelError, batch_run, create_session, sha256_of
from service.recognizer import Description, Session, Steps
from service.recognizers.landmarks.features import WINDOW_STATISTICS
from service.recognizers.landmarks.layout import FEATURE_SIZE
from service.recognizers.landmarks.tracker import FrontEnd, HandPoseTracker, front_end_sessions
from service.recognizers.landmarks.transfer import (
    EMBEDDING_FILE,
    FRAME_REPEAT,
    embedding_run,
    sequence_input_size,
    window_item,
    window_run,
)
from service.settings import Settings

SEQUENCE_FILE = "sequence.onnx"
SEQUENCE_META = "sequence.json"
HINT = (
    "point MODEL_PATH at a file in the folder that holds landmarks/ (the repository's is ./model/WLASL20c_model.h5), "
    "or build it with `python -m convert.mediapipe_models` (front end), `python -m convert.gislr_model` (embedding)"
    " and `python cli.py train --model landmarks`"
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
            f"(the landmark model is read from {folder}, beside it): {HINT}"
        )
    raise ModelError(f"MODEL=landmarks but there is no {folder} beside MODEL_PATH={model_path}: {HINT}")


def check_landmark_files(model_dir: Path) -> dict[str, Any]:
    """Fail with one clear line unless every landmark model file is there (the front end sequence.json
    names, the embedding), and sequence.onnx and gislr_embed.onnx are the ones sequence.json describes
    (their sha256) for this layout of features; returns sequence.json."""
    hint = (
        "`python -m convert.mediapipe_models` (front end), `python -m convert.gislr_model` (embedding)"
        " and `python cli.py train --model landmarks`"
    )
    has_meta = (model_dir / SEQUENCE_META).is_file()
    meta: dict[str, Any] = json.loads((model_dir / SEQUENCE_META).read_text()) if has_meta else {}
    files = [*FrontEnd.from_dict(meta.get("front_end")).files, EMBEDDING_FILE, SEQUENCE_FILE, SEQUENCE_META]
    missing = [name for name in files if not (model_dir / name).is_file()]
    if missing:
        raise ModelError(f"MODEL=landmarks but {', '.join(missing)} missing in {model_dir}: run {hint}")
    want = sequence_input_size(int(meta["window"]))
    if meta.get("raw_feature_size") != FEATURE_SIZE or list(meta["input"]["shape"])[-1] != want:
        raise ModelError(
            f"{model_dir / SEQUENCE_META} was trained on other landmark features (raw {meta.get('raw_feature_size')},"
            f" input {meta['input']['shape']}; serving makes raw {FEATURE_SIZE}, input {want}): retrain with"
            " `python cli.py train --model landmarks`"
        )
    if meta.get("window_statistics") != list(WINDOW_STATISTICS):  # same input size, other meaning
        raise ModelError(
            f"{model_dir / SEQUENCE_META} was trained on other window statistics ({meta.get('window_statistics')};"
            f" serving computes {list(WINDOW_STATISTICS)}): retrain with `python cli.py train --model landmarks`"
        )
    if meta.get("embedding", {}).get("sha256") != sha256_of(model_dir / EMBEDDING_FILE):
        raise ModelError(
            f"{model_dir / SEQUENCE_META} was trained on another embedding than {model_dir / EMBEDDING_FILE}"
            " (sha256 differs): retrain with `python cli.py train --model landmarks`"
        )
    if meta["embedding"].get("frame_repeat") != FRAME_REPEAT:  # same file, other input
        raise ModelError(
            f"{model_dir / SEQUENCE_META} was trained on embeddings of frames shown"
            f" {meta['embedding'].get('frame_repeat')} times (serving shows each {FRAME_REPEAT} times):"
            " retrain with `python cli.py train --model landmarks`"
        )
    if meta.get("sequence_onnx_sha256") != sha256_of(model_dir / SEQUENCE_FILE):
        raise ModelError(
            f"{model_dir / SEQUENCE_FILE} is not the model {SEQUENCE_META} describes (sha256 differs): "
            "retrain with `python cli.py train --model landmarks`"
        )
    return meta


class LandmarkRecognizer:
    """Front end per frame (palm only when tracking is lost, hand per tracked hand, pose), batched
    across streams session by session; per window the signer-normalised vector, the GISLR embedding
    and the sequence model."""

    name = "landmarks"

    @staticmethod
    def check(settings: Settings) -> None:
        check_landmark_files(landmark_model_dir(settings))

    def __init__(self, settings: Settings) -> None:
        model_dir = landmark_model_dir(settings)
        meta = check_landmark_files(model_dir)
        self.labels = [str(label) for label in meta["labels"]]
        self.window_size = int(meta["window"])
        self.embedding_dim = FEATURE_SIZE
        # Every session of this recogniser is small: one intra-op thread each, and the engine runs as many
        # calls at once as there are cores (INFERENCE_THREADS=0).
        sequence = create_session(model_dir / SEQUENCE_FILE, settings.execution_provider, 1, settings.inter_op_threads)
        self.provider = str(sequence.get_providers()[0])
        self.front_end = FrontEnd.from_dict(meta.get("front_end"))
        self._sequence_sha = str(meta["sequence_onnx_sha256"])[:12]
        provider, inter_op = settings.execution_provider, settings.inter_op_threads
        embedding = create_session(model_dir / EMBEDDING_FILE, provider, 1, inter_op)
        self.sessions = front_end_sessions(model_dir, settings.execution_provider, 1, self.front_end) | {
            # Per window (8 per second per stream, not per frame): the GISLR embedding, then the sequence
            # model on the window vector and the embedding, as one batched call.
            "sequence": Session(
                window_run(embedding_run(embedding), batch_run(sequence)), max_batch=32, max_wait_ms=0.0
            ),
        }

    def describe(self) -> Description:
        front = ", ".join(name.removesuffix(".onnx") for name in self.front_end.files)
        if self.front_end.pose_every > 1:
            front += f" (pose every {self.front_end.pose_every} frames)"
        if self.front_end.hands_from_pose:
            front += " (hands looked for where the pose puts them first)"
        return Description(
            self.name,
            self.provider,
            {
                "front_end": front,
                "embedding": EMBEDDING_FILE.removesuffix(".onnx"),
                "sequence_sha256": self._sequence_sha,
            },
        )

    def new_tracker(self) -> HandPoseTracker:
        return self.front_end.tracker()

    async def encode(self, image_bgr: ImageBGR, tracker: HandPoseTracker, steps: Steps) -> FloatArray:
        return (await tracker.process(image_bgr, steps)).features

    async def classify(self, window: FloatArray, steps: Steps) -> FloatArray:
        return await steps.run("sequence", await steps.cpu(window_item, window))
