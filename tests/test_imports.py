"""Serving never imports TensorFlow (it is only in the `convert` extra)."""

import ast
import subprocess
import sys
from pathlib import Path

from harness.servers import ROOT


def test_serving_import_graph_has_no_tensorflow() -> None:
    code = (
        "import sys, cli, service.app, service.engine, service.protocol, service.streaming\n"
        "app = service.app.create_app(__import__('service.settings').settings.Settings())\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'tensorflow', 'tf_keras', 'keras', 'tf2onnx'})\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def _imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    names |= {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module and not node.level
    }
    return {name.split(".")[0] for name in names}


def test_nothing_outside_tests_imports_tests_and_serving_imports_no_test_code() -> None:
    """tests/ is pytest's; benchmarks share only harness/ with it. The product (cli, service, convert,
    training) imports neither the tests, nor the benchmarks, nor the harness."""
    product = [ROOT / "cli.py", *(p for d in ("service", "convert", "training") for p in (ROOT / d).rglob("*.py"))]
    shared = [*(ROOT / "benchmarks").rglob("*.py"), *(ROOT / "harness").rglob("*.py")]
    assert len(product) > 40 and len(shared) > 10
    wrong = {
        str(p.relative_to(ROOT)): sorted(_imported_packages(p) & {"tests", "benchmarks", "harness"}) for p in product
    }
    wrong |= {str(p.relative_to(ROOT)): sorted(_imported_packages(p) & {"tests"}) for p in shared}
    assert {name: found for name, found in wrong.items() if found} == {}
