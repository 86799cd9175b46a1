"""No container engine runs here: check what can be checked statically. Both images install the
serving extras the README documents (no TensorFlow), run the README's serve command, health-check
/healthz and drop root."""

from __future__ import annotations

import re

import pytest

from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.gpu"])
def test_dockerfile_matches_the_readme(name: str) -> None:
    text = (ROOT / name).read_text()
    cmd = re.search(r"^CMD \[(.*)\]$", text, re.M)
    assert cmd is not None
    command = " ".join(part.strip().strip('"') for part in cmd.group(1).split(","))
    assert command.startswith("signstream serve")
    assert "signstream serve" in README
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert re.search(r"^USER (?!root)\w+", text, re.M)
    assert "[convert]" not in text and "[test]" not in text  # serving install only
    for folder in ("service", "model", "convert", "training", "benchmarks"):
        assert f"COPY {folder} ./{folder}" in text


def test_gpu_image_swaps_onnxruntime_as_the_readme_says() -> None:
    text = (ROOT / "Dockerfile.gpu").read_text()
    assert "pip uninstall -y onnxruntime" in text and '".[gpu]"' in text
    assert "EXECUTION_PROVIDER=cuda" in text
    assert 'pip uninstall -y onnxruntime && pip install -e ".[gpu]"' in README
