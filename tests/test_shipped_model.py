"""The trained model in model/: it loads, its ONNX files are its own, and serving sees what training saw.

If serving preprocessed frames differently from training (colour order, scaling, resizing), the
model would stop recognising even the clips it was trained on; streaming them through the server
pipeline and getting most of them right guards against that.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from service.engine import check_model_files, load_recognizer
from service.evaluation import LabelledClip, evaluate
from service.settings import load_settings
from tests.conftest import ROOT

MODEL = ROOT / "model" / "WLASL20c_model.h5"
SHARED = ROOT.parent / "shared" / "data"


def test_shipped_model_files_belong_together() -> None:
    files = check_model_files(MODEL)
    report = json.loads(files.report.read_text())
    assert report["parity"]["top1_agreement_full_vs_keras"] == 1.0
    assert report["parity"]["max_abs_diff_full_vs_keras"] < 1e-4
    assert json.loads(files.labels.read_text())["19"] == "wall"


def _train_clips() -> list[LabelledClip]:
    import csv

    with (ROOT / "data" / "manifest.csv").open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == "train" and r["path"].startswith("shared/")]
    return [LabelledClip(SHARED / r["path"].removeprefix("shared/"), r["gloss"], r["source_repo"]) for r in rows]


# Streamed top-1 on these clips, measured with `cli evaluate` (model/MODEL_CARD.md): wlasl20c 0.52,
# landmarks 0.94. A preprocessing mismatch between training and serving drops this towards chance.
@pytest.mark.timeout(1200)
@pytest.mark.parametrize(("model", "floor"), [("wlasl20c", 0.4), ("landmarks", 0.7)])
def test_streamed_training_clips_are_recognised(model: str, floor: float) -> None:
    clips = _train_clips()
    assert len(clips) >= 40
    settings = load_settings({"MODEL_PATH": str(MODEL), "MODEL": model, "ENCODER_VARIANT": "fp32"}, env_file=None)
    report = asyncio.run(evaluate(load_recognizer(settings), settings, clips))
    print(f"\n{model} streamed training clips: n={report['n']} top1={report['top1']} top5={report['top5']}")
    assert report["top1"] >= floor, report["per_gloss"]


def test_landmark_model_files_belong_together() -> None:
    from convert.architecture import LABELS
    from service.landmarks import NORMALISED_SIZE, check_landmark_files

    meta = check_landmark_files(MODEL.parent / "landmarks")
    assert meta["labels"] == LABELS and meta["window"] == 10
    assert meta["onnx_vs_keras"]["top1_agreement"] == 1.0
    assert list(meta["input"]["shape"])[-1] == NORMALISED_SIZE
