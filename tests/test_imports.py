"""Serving never imports TensorFlow (it is only in the `convert` extra)."""

import subprocess
import sys

from tests.conftest import ROOT


def test_serving_import_graph_has_no_tensorflow() -> None:
    code = (
        "import sys, cli, service.app, service.engine, service.protocol, service.streaming\n"
        "app = service.app.create_app(__import__('service.settings').settings.Settings())\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'tensorflow', 'tf_keras', 'keras', 'tf2onnx'})\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
