"""The landmark trainer's model pieces: signer weighting and ensembles, and their ONNX export."""

from __future__ import annotations

import itertools

import numpy as np
import onnxruntime as ort
import pytest

from service.labels import GLOSSES
from training.landmark_model import CONFIGS, IDLE, RELEASE_CONFIGS, WINDOW_FIELDS, Head, Model, signer_weights, to_onnx


def test_signer_weights_make_every_signer_of_a_class_weigh_the_same() -> None:
    y = np.array([0, 0, 0, 1, 1, 1, 1])
    signers = ["a", "a", "b", "c", "c", "c", "d"]
    w = signer_weights(y, signers)
    # class 0: signer a (2 windows) and b (1 window) weigh 1.5 each; the class keeps its total weight
    assert w[:3].tolist() == [0.75, 0.75, 1.5]
    assert w[3:].tolist() == pytest.approx([2 / 3, 2 / 3, 2 / 3, 2.0])
    assert w[y == 0].sum() == 3 and w[y == 1].sum() == pytest.approx(4)


def _head(rng: np.random.Generator, dim: int, hidden: int, classes: np.ndarray) -> Head:
    sizes = [dim, *([hidden] if hidden else []), len(classes)]
    layers = [
        (rng.normal(size=(a, b)).astype(np.float32), rng.normal(size=b).astype(np.float32))
        for a, b in itertools.pairwise(sizes)
    ]
    return Head(layers, classes)


@pytest.mark.parametrize("hidden", [(0,), (0, 16), (16, 16, 0)])
def test_the_exported_graph_gives_the_trainers_probabilities_for_one_head_or_an_ensemble(
    hidden: tuple[int, ...],
) -> None:
    rng = np.random.default_rng(7)
    dim = 24
    classes = np.arange(IDLE + 1)  # the 20 glosses and the idle class
    mean, scale = rng.normal(size=dim), np.abs(rng.normal(size=dim)) + 0.5
    model = Model(mean, scale, [_head(rng, dim, h, classes) for h in hidden])
    x = rng.normal(size=(9, dim)).astype(np.float32)
    session = ort.InferenceSession(to_onnx(model, dim).SerializeToString(), providers=["CPUExecutionProvider"])
    onnx_probabilities = session.run(None, {"windows": x})[0]
    assert onnx_probabilities.shape == (9, len(GLOSSES))
    np.testing.assert_allclose(onnx_probabilities, model.probabilities(x), atol=1e-6)
    # The ensemble is the mean of its heads, each alone a model of its own.
    singles = [Model(mean, scale, [head]).probabilities(x) for head in model.heads]
    np.testing.assert_allclose(model.probabilities(x), np.mean(singles, axis=0), atol=1e-6)


def test_an_ensemble_of_models_that_standardise_differently_is_refused() -> None:
    rng = np.random.default_rng(1)
    classes = np.arange(IDLE + 1)
    a = Model(np.zeros(4), np.ones(4), [_head(rng, 4, 0, classes)])
    b = Model(np.ones(4), np.ones(4), [_head(rng, 4, 0, classes)])
    with pytest.raises(ValueError, match="standardise differently"):
        Model.average([a, b])


def test_release_ensembles_are_made_of_configs_trained_on_their_windows() -> None:
    ensembles = [name for name in RELEASE_CONFIGS if CONFIGS[name].kind == "ensemble"]
    assert ensembles
    for name in ensembles:
        config = CONFIGS[name]
        assert len(config.members) >= 2
        for member in config.members:
            assert CONFIGS[member].kind in ("logreg", "mlp")
            assert all(getattr(CONFIGS[member], f) == getattr(config, f) for f in WINDOW_FIELDS)
