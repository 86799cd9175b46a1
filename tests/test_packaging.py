"""What the project's scripts import is what its install commands bring."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from harness.servers import ROOT

FIRST_PARTY = {"benchmarks", "service", "convert", "training", "tests", "cli"}


def third_party_imports(source: str) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names) - FIRST_PARTY - {"__future__"}


def requirements(extra: str) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = [Requirement(r) for r in project["dependencies"]]
    for line in project["optional-dependencies"][extra]:
        requirement = Requirement(line)
        if canonicalize_name(requirement.name) == project["name"]:  # "signstream[other]"
            for other in requirement.extras:
                found += requirements(other)
        else:
            found.append(requirement)
    return found


def test_the_locustfile_says_how_to_install_what_it_imports() -> None:
    source = (ROOT / "benchmarks" / "locustfile.py").read_text()
    docstring = ast.get_docstring(ast.parse(source)) or ""
    install = re.search(r"""pip install (?:-e )?["']?\.\[(\w+)\]["']?""", docstring)
    assert install, f"the docstring names no extra to install: {docstring[:300]}"
    extra = install.group(1)
    assert extra == "load"
    wanted = requirements(extra)
    names = {canonicalize_name(r.name) for r in wanted}
    distributions = importlib.metadata.packages_distributions()
    for module in third_party_imports(source):
        provided_by = {canonicalize_name(d) for d in distributions.get(module, [module])}
        assert provided_by & names, f"{module} is imported but not in the dependencies or the [{extra}] extra"
    # socketio.Client (sync, websocket) needs python-socketio's `client` extra (requests, websocket-client).
    assert "socketio.Client(" in source
    assert any(canonicalize_name(r.name) == "python-socketio" and "client" in r.extras for r in wanted)
    assert f'.[{extra}]"' in (ROOT / "README.md").read_text()


def test_every_first_party_package_is_installed() -> None:
    """pyproject's packages list is not recursive: a sub-package missing from it imports in an editable
    checkout but not from the wheel the Docker images install (service.recognizers once did so). The
    benchmarks, like the tests and their harness, run from a checkout and are not installed."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("service", "convert", "training")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert found == listed
