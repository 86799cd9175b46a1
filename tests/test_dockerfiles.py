"""Dockerfiles. No container engine runs here (nor in CI), so what can be verified is verified without one.

Statically: both images install the serving extras the README documents (no TensorFlow), run the README's serve
command, health-check /healthz and drop root.

For real, Dockerfile.cpu, parsed (its steps are not copied here): its COPY lines copied from the repository into a
temp folder that stands in for WORKDIR (.dockerignore applied), its non-root user created (`useradd`, when the test
runs as root as CI does; else the current user stands in), a fresh venv standing in for the image's Python, its
`RUN pip ...` steps run with that venv's pip as that user, with its ENV (no pip cache, as in a build) and HOME in a
temp folder. Then the venv must hold the serving dependencies and none of TensorFlow, tf2onnx, tf-keras; its CMD
runs as that user (files owned by root, as in the image) on a free 127.0.0.1 port instead of 0.0.0.0:8000, its
HEALTHCHECK command must pass within 90 s and SIGTERM must stop it within 15 s.

Dockerfile.gpu: its pip steps, in that venv, as that user: uninstalls for real, installs as dry runs resolved
against the registry (the 250 MB onnxruntime-gpu wheel is not downloaded); they must leave onnxruntime-gpu and not
onnxruntime.

Not verified: the image builds themselves (base images, apt-get, the images' own Python and pip: python:3.11-slim's,
and the GPU image's Ubuntu 24.04 python3, not the interpreter used here, so the GPU resolution holds for this
Python only), Docker's PID 1 and signal handling, HEALTHCHECK's interval and retries, CUDA/cuDNN and the CUDA
execution provider (the GPU image is never installed nor run).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from subprocess import CompletedProcess
from typing import NoReturn

import pytest

from harness.servers import ROOT, free_port

pytestmark = pytest.mark.slow  # deselected by the fast subset: pytest -m 'not slow'

README = (ROOT / "README.md").read_text()


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.gpu"])
def test_dockerfile_matches_the_readme(name: str) -> None:
    import typer.main

    import cli

    text = (ROOT / name).read_text()
    dockerfile = Dockerfile.parse(ROOT / name)
    # CMD runs the console script the package installs, as the README's quick start does.
    argv = dockerfile.cmd
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert argv[:2] == ["signstream", "serve"] and scripts["signstream"] == "cli:app", argv
    assert re.search(r"\.venv/bin/signstream serve\b", README), "the README's quick start runs another command"
    # Its options are the serve command's own and parse (a renamed or removed option fails here), and the
    # port it binds is the one EXPOSEd and health-checked.
    serve = typer.main.get_command(cli.app).commands["serve"]  # type: ignore[attr-defined]
    options = serve.make_context("serve", argv[2:]).params
    assert options["host"] == "0.0.0.0" and options["port"] == dockerfile.exposed_port == 8000, options
    _, check = dockerfile.healthcheck
    assert f"http://127.0.0.1:{dockerfile.exposed_port}/healthz" in " ".join(check)
    assert re.search(r"^USER (?!root)\w+", text, re.M)
    assert "[convert]" not in text and "[test]" not in text  # serving install only
    # Every COPY source is in the build context (exists, not .dockerignored), and the packages the
    # installed `signstream` needs are copied: cli.py, pyproject's packages, the shipped model.
    copied = {source for sources, _ in dockerfile.copies for source in sources}
    for source in copied:
        assert (ROOT / source).exists() and not dockerignored(source), source
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    needed = {"pyproject.toml", "cli.py", "model"} | {p.split(".")[0] for p in packages}
    assert needed <= copied, needed - copied


def test_gpu_image_swaps_onnxruntime_as_the_readme_says() -> None:
    text = (ROOT / "Dockerfile.gpu").read_text()
    assert "pip uninstall -y onnxruntime" in text and '".[gpu]"' in text
    assert "EXECUTION_PROVIDER=cuda" in text
    assert "pip install --no-deps --force-reinstall onnxruntime-gpu" in text
    swap = 'pip install -e ".[gpu]" && pip uninstall -y onnxruntime && pip install --no-deps --force-reinstall'
    swap += " onnxruntime-gpu"
    assert swap in README


# ---------------------------------------------------------------------------------------------------------------
# Dockerfile.cpu for real, without a container engine: its steps, parsed, reproduced in a temp "image root".


@dataclass
class Dockerfile:
    """The instructions of a Dockerfile, continuation lines joined, comments dropped."""

    path: Path
    instructions: list[tuple[str, str]]

    @classmethod
    def parse(cls, path: Path) -> Dockerfile:
        instructions: list[tuple[str, str]] = []
        pending = ""
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.endswith("\\"):
                pending += line[:-1].strip() + " "
                continue
            keyword, _, rest = (pending + line).partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
            pending = ""
        assert not pending, f"{path.name}: dangling line continuation"
        return cls(path, instructions)

    def values(self, keyword: str) -> list[str]:
        return [rest for name, rest in self.instructions if name == keyword]

    def last(self, keyword: str) -> str:
        values = self.values(keyword)
        assert values, f"{self.path.name} has no {keyword}"
        return values[-1]

    @property
    def env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for rest in self.values("ENV"):
            for pair in shlex.split(rest):
                key, sep, value = pair.partition("=")
                assert sep, f"ENV {rest}: only the KEY=VALUE form is reproduced"
                env[key] = value
        return env

    @property
    def exposed_port(self) -> int:
        return int(self.last("EXPOSE").split("/")[0])

    @property
    def copies(self) -> list[tuple[list[str], str]]:
        copies = []
        for rest in self.values("COPY"):
            parts = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
            assert not [p for p in parts if p.startswith("--")], f"COPY {rest}: flags are not reproduced"
            copies.append((parts[:-1], parts[-1]))
        return copies

    @property
    def run_steps(self) -> list[str]:
        """The commands of the RUN lines, `&&` chains split."""
        return [step.strip() for rest in self.values("RUN") for step in rest.split("&&")]

    @property
    def useradd(self) -> tuple[str, int | None]:
        """The (name, uid) of the user a `useradd` step creates."""
        for step in self.run_steps:
            argv = shlex.split(step)
            if argv[0] == "useradd":
                uid = next((int(argv[i + 1]) for i, a in enumerate(argv[:-1]) if a in ("--uid", "-u")), None)
                return argv[-1], uid
        raise AssertionError(f"{self.path.name} creates no user")

    @property
    def cmd(self) -> list[str]:
        rest = self.last("CMD")
        return list(json.loads(rest)) if rest.startswith("[") else ["/bin/sh", "-c", rest]

    @property
    def healthcheck(self) -> tuple[dict[str, str], list[str]]:
        """HEALTHCHECK's options and command (the shell form runs under /bin/sh -c, as Docker runs it)."""
        rest = self.last("HEALTHCHECK")
        options = {}
        while rest.startswith("--"):
            option, _, rest = rest.partition(" ")
            key, _, value = option[2:].partition("=")
            options[key] = value
            rest = rest.strip()
        kind, _, command = rest.partition(" ")
        assert kind == "CMD", f"HEALTHCHECK {rest}"
        command = command.strip()
        return options, list(json.loads(command)) if command.startswith("[") else ["/bin/sh", "-c", command]


def docker_seconds(duration: str) -> float:
    """A Dockerfile duration (`3s`, `1m30s`, `500ms`) in seconds."""
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration)
    assert parts, duration
    return sum(float(value) * scale[unit] for value, unit in parts)


def dockerignored(relative: str) -> bool:
    """Whether .dockerignore keeps `relative` (or a folder above it) out of the build context."""
    lines = [line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()]
    patterns = [p for p in lines if p and not p.startswith("#")]
    assert not [p for p in patterns if p.startswith("!")], "exception patterns are not reproduced"
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    # Patterns match from the context root; a leading **/ matches any depth, the root included.
    globs = [g for p in patterns for g in {p, p.removeprefix("**/")}]
    return any(fnmatch.fnmatchcase(prefix, glob) for glob in globs for prefix in prefixes)


def copy_context(dockerfile: Dockerfile, image_root: Path) -> None:
    """The COPY lines, from the repository (the build context) into image_root (the WORKDIR)."""
    workdir = dockerfile.last("WORKDIR")
    image_root.mkdir()

    def ignore(folder: str, names: list[str]) -> set[str]:
        return {n for n in names if dockerignored((Path(folder) / n).relative_to(ROOT).as_posix())}

    for sources, dest in dockerfile.copies:
        if dest.startswith("/"):
            assert dest == workdir or dest.startswith(workdir.rstrip("/") + "/"), f"COPY to {dest}, outside WORKDIR"
            dest = "./" + dest.removeprefix(workdir).lstrip("/")
        target = image_root / dest
        for source in sources:
            path = ROOT / source
            assert path.exists(), f"{dockerfile.path.name}: COPY {source}: no such file in the build context"
            assert not dockerignored(source), f"{dockerfile.path.name}: COPY {source}: excluded by .dockerignore"
            if path.is_dir():  # Docker copies a folder's contents
                shutil.copytree(path, target, ignore=ignore, dirs_exist_ok=True)
            else:
                into = dest.endswith("/") or len(sources) > 1 or target.is_dir()
                (target if into else target.parent).mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target / path.name if into else target)


@dataclass
class User:
    name: str
    uid: int
    gid: int

    def command(self, argv: Sequence[str]) -> list[str]:
        """argv run as this user (setpriv leaves the environment alone, unlike su and runuser)."""
        if os.geteuid() == self.uid:
            return list(argv)
        setpriv = shutil.which("setpriv") or pytest.skip("setpriv (util-linux) is needed to drop root")
        return [setpriv, f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", "--", *argv]

    def run(self, argv: Sequence[str], env: dict[str, str], cwd: Path, timeout: float) -> CompletedProcess[str]:
        return subprocess.run(
            self.command(argv), env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )


def image_user(dockerfile: Dockerfile) -> User:
    """The Dockerfile's non-root user, created when missing (CI runs as root); else the current non-root user."""
    name, uid = dockerfile.useradd
    assert dockerfile.last("USER") in (name, str(uid)), "USER is not the user the Dockerfile creates"
    if os.geteuid() != 0:
        entry = pwd.getpwuid(os.geteuid())
        return User(entry.pw_name, entry.pw_uid, entry.pw_gid)
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        useradd = shutil.which("useradd") or pytest.skip("useradd is needed to create the image's user")
        # The Dockerfile's uid where it is free; HOME is a temp folder, so no home is created on this machine.
        for uid_args in ([] if uid is None else ["--uid", str(uid)], []):
            created = subprocess.run([useradd, "--no-create-home", *uid_args, name], capture_output=True, text=True)
            with contextlib.suppress(KeyError):
                entry = pwd.getpwnam(name)  # created here, or concurrently by another run
                break
        else:
            pytest.fail(f"useradd {name} failed: {created.stderr}")
    assert entry.pw_uid != 0
    return User(entry.pw_name, entry.pw_uid, entry.pw_gid)


def own(top: Path, user: User | None) -> None:
    """chown -R to user (None: to root, as COPY and a root `pip install` leave an image), readable by all."""
    if os.geteuid() != 0:
        return
    uid, gid = (user.uid, user.gid) if user else (0, 0)
    for folder, dirs, files in os.walk(top):
        os.chown(folder, uid, gid)
        os.chmod(folder, os.stat(folder).st_mode | 0o555)
        for name in [*dirs, *files]:
            path = os.path.join(folder, name)
            os.chown(path, uid, gid, follow_symlinks=False)
            if not os.path.islink(path) and name in files:
                os.chmod(path, os.stat(path).st_mode | 0o444)


# Registry settings of this machine (index, proxy, certificates) reach pip; nothing else of its environment does.
PASSED_ON = re.compile(r"^(PIP_\w+|(https?|no|all)_proxy|SSL_CERT_\w+|REQUESTS_CA_BUNDLE)$", re.I)
NOT_PASSED_ON = {"PIP_USER", "PIP_TARGET", "PIP_PREFIX", "PIP_ROOT", "PIP_CACHE_DIR", "PIP_REQUIRE_VIRTUALENV"}
NETWORK_ERROR = re.compile(
    r"NewConnectionError|Name or service not known|Temporary failure in name resolution|Network is unreachable"
    r"|No route to host|Connection refused|ConnectTimeout|ReadTimeout|ProxyError|Max retries exceeded"
)


def image_env(dockerfile: Dockerfile, venv: Path, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if PASSED_ON.match(k) and k.upper() not in NOT_PASSED_ON}
    env |= {"PATH": f"{venv}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(home)}
    env |= {"LANG": "C.UTF-8"}
    return env | {k: v for k, v in dockerfile.env.items() if k != "PATH"}  # the venv stands in for PATH's prefix


def pip_failed(step: str, result: CompletedProcess[str]) -> NoReturn:
    output = result.stdout + result.stderr
    network = NETWORK_ERROR.search(output)
    if network:
        pytest.skip(f"package registry unreachable ({step}): {network.group(0)}")
    pytest.fail(f"{step} failed ({result.returncode}):\n{output[-4000:]}")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(requirements: list[str]) -> set[str]:
    return {normalize(re.match(r"[A-Za-z0-9._-]+", r).group(0)) for r in requirements}  # type: ignore[union-attr]


@dataclass
class Image:
    dockerfile: Dockerfile
    user: User
    tmp: Path
    root: Path  # stands in for WORKDIR
    venv: Path  # stands in for the image's Python
    env: dict[str, str]

    def pip(self, *args: str, cwd: Path | None = None, timeout: float = 300) -> CompletedProcess[str]:
        return self.user.run(
            [str(self.venv / "bin" / "python"), "-m", "pip", *args], self.env, cwd or self.root, timeout
        )

    def installed(self) -> set[str]:
        listed = self.pip("list", "--format=json")
        assert listed.returncode == 0, listed.stderr
        return {normalize(d["name"]) for d in json.loads(listed.stdout)}


def interpreter(user: User, env: dict[str, str], cwd: Path) -> str:
    """A Python >= 3.11 with venv that the user can run (the test's own may sit under root's 0700 home)."""
    base = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    candidates = [base, shutil.which("python3"), "/usr/local/bin/python3", "/usr/bin/python3"]
    # An interpreter reached through a folder the user cannot search runs, but without its own stdlib.
    check = (
        "import ensurepip, os, sys, venv; "
        "sys.exit(sys.version_info < (3, 11) or not os.access(sys.executable, os.R_OK | os.X_OK))"
    )
    for python in dict.fromkeys(c for c in candidates if c and os.path.exists(c)):
        if user.run([python, "-c", check], env, cwd, 60).returncode == 0:
            return python
    pytest.skip(f"no Python >= 3.11 with venv and ensurepip that {user.name} can run among {candidates}")


@pytest.fixture(scope="module")
def cpu_image() -> Iterator[Image]:
    """Dockerfile.cpu's build, reproduced: COPY, the non-root user, a fresh venv, its pip install steps."""
    dockerfile = Dockerfile.parse(ROOT / "Dockerfile.cpu")
    user = image_user(dockerfile)
    with tempfile.TemporaryDirectory(prefix="signstream-image-") as name:
        tmp = Path(name)
        env = image_env(dockerfile, tmp / "venv", tmp / "home")
        image = Image(dockerfile, user, tmp, tmp / "app", tmp / "venv", env)
        copy_context(dockerfile, image.root)
        (tmp / "home").mkdir()
        own(tmp, user)
        python = interpreter(user, image.env, tmp)
        started = time.monotonic()
        created = user.run([python, "-m", "venv", str(image.venv)], image.env, tmp, 120)
        assert created.returncode == 0, created.stderr
        venv_seconds = time.monotonic() - started
        version = image.pip("--version").stdout.strip()
        print(f"\n[Dockerfile.cpu] user {user.name} (uid {user.uid}), {python}, {version}")
        print(f"[Dockerfile.cpu] venv created in {venv_seconds:.1f} s")
        # An unreachable registry shows quickly here (skip), instead of after the install's retries.
        probe = ["install", "--dry-run", "--no-deps", "--ignore-installed", "--retries", "1", "--timeout", "20"]
        reached = image.pip(*probe, "setuptools", timeout=120)
        if reached.returncode != 0:
            pip_failed("pip install --dry-run setuptools", reached)
        steps = [s for s in dockerfile.run_steps if not s.startswith("useradd ")]
        unknown = [s for s in steps if not re.match(r"(python3? -m )?pip ", s)]
        assert not unknown, f"Dockerfile.cpu has build steps this test does not reproduce: {unknown}"
        for step in steps:
            started = time.monotonic()
            result = user.run(["/bin/sh", "-c", step], image.env, image.root, 900)
            print(f"[Dockerfile.cpu] RUN {step}: {time.monotonic() - started:.1f} s (no pip cache)")
            if result.returncode != 0:
                pip_failed(step, result)
        yield image


def test_cpu_image_installs_the_serving_deps_and_no_tensorflow(cpu_image: Image) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    installed = cpu_image.installed()
    serving = requirement_names(project["dependencies"]) | {"signstream"}
    assert serving <= installed, serving - installed
    unwanted = requirement_names(project["optional-dependencies"]["convert"]) | {"tensorflow", "onnxruntime-gpu"}
    assert not unwanted & installed, unwanted & installed
    probe = (
        "import importlib.util, json, cv2, litestar, onnxruntime, socketio; print(json.dumps({"
        "'providers': onnxruntime.get_available_providers(), "
        "'present': [m for m in ('tensorflow', 'tf2onnx', 'tf_keras') if importlib.util.find_spec(m)]}))"
    )
    python = str(cpu_image.venv / "bin" / "python")
    result = cpu_image.user.run([python, "-c", probe], cpu_image.env, cpu_image.root, 120)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["present"] == []
    assert "CPUExecutionProvider" in found["providers"]


def test_cpu_image_cmd_is_healthy_as_non_root_and_stops_on_sigterm(cpu_image: Image) -> None:
    """CMD as the image's user on a free localhost port; HEALTHCHECK's own command decides when it is healthy."""
    dockerfile, user = cpu_image.dockerfile, cpu_image.user
    port, exposed = free_port(), str(dockerfile.exposed_port)
    argv = ["127.0.0.1" if a == "0.0.0.0" else str(port) if a == exposed else a for a in dockerfile.cmd]
    assert str(port) in argv and "127.0.0.1" in argv, f"CMD {dockerfile.cmd}: no host/port to replace"
    options, healthcheck = dockerfile.healthcheck
    probe = [a.replace(f":{exposed}/", f":{port}/") for a in healthcheck]
    assert probe != healthcheck, f"HEALTHCHECK {healthcheck} does not probe port {exposed}"
    probe_timeout = docker_seconds(options.get("timeout", "30s"))
    own(cpu_image.root, None)  # at run time the image's files belong to root, as COPY and `pip install` left them
    own(cpu_image.venv, None)
    log = cpu_image.tmp / "server.log"
    started = time.monotonic()
    with log.open("w") as out:
        server = subprocess.Popen(
            user.command(argv), cwd=cpu_image.root, env=cpu_image.env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        healthy_after = None
        while time.monotonic() - started < 90:
            assert server.poll() is None, f"CMD exited with {server.returncode}:\n{log.read_text()[-4000:]}"
            with contextlib.suppress(subprocess.TimeoutExpired):
                if user.run(probe, cpu_image.env, cpu_image.root, probe_timeout).returncode == 0:
                    healthy_after = time.monotonic() - started
                    break
            time.sleep(0.5)
        assert healthy_after is not None, f"not healthy within 90 s:\n{log.read_text()[-4000:]}"
        print(f"\n[Dockerfile.cpu] CMD healthy (HEALTHCHECK exit 0) after {healthy_after:.1f} s")
        status = Path(f"/proc/{server.pid}/status").read_text()
        uids = re.search(r"^Uid:\s+(.*)$", status, re.M).group(1).split()  # type: ignore[union-attr]
        assert uids == [str(user.uid)] * 4, f"the server runs as uids {uids}, not {user.name} ({user.uid})"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            health = json.load(response)
        assert health["status"] == "ok" and "CPU" in health["provider"], health
        server.send_signal(signal.SIGTERM)
        stopping = time.monotonic()
        try:
            code = server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running 15 s after SIGTERM:\n{log.read_text()[-4000:]}")
        print(f"[Dockerfile.cpu] exited with {code} {time.monotonic() - stopping:.1f} s after SIGTERM")
        # uvicorn shuts down gracefully, then re-raises the signal: -15 here, 143 for Docker. The default handler
        # would give -15 too, hence the log.
        assert code in (0, -signal.SIGTERM) and "Application shutdown complete" in log.read_text(), log.read_text()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        own(cpu_image.root, user)
        own(cpu_image.venv, user)


def test_gpu_image_install_resolves_to_the_gpu_wheel_only(cpu_image: Image) -> None:
    """Dockerfile.gpu's pip steps, in the CPU image's venv (its `pip install .` is the CPU image's), as the user.

    Uninstalls run for real; installs run as `--dry-run --report`, resolved against the registry. PyPI has no
    separate metadata for the ~250 MB onnxruntime-gpu wheel, so pip is upgraded first (the venv's may predate it)
    and reads the wheel's metadata with range requests (`fast-deps`) instead of downloading it. The distributions
    the steps leave must include onnxruntime-gpu and not onnxruntime (the two wheels own the same `onnxruntime`
    module). Runs last: it uninstalls onnxruntime from the shared venv.
    """
    dockerfile = Dockerfile.parse(ROOT / "Dockerfile.gpu")
    assert dockerfile.useradd[0] == cpu_image.user.name or os.geteuid() != 0
    root = cpu_image.tmp / "gpu-app"
    copy_context(dockerfile, root)
    own(root, cpu_image.user)
    env = image_env(dockerfile, cpu_image.venv, Path(cpu_image.env["HOME"]))
    image = Image(dockerfile, cpu_image.user, cpu_image.tmp, root, cpu_image.venv, env)
    upgraded = image.pip("install", "--upgrade", "pip")
    if upgraded.returncode != 0:
        pip_failed("pip install --upgrade pip", upgraded)
    print(f"\n[Dockerfile.gpu] {image.pip('--version').stdout.split(' from ')[0]} for the dry runs")
    lazy = ["--use-feature=fast-deps"]
    steps = [shlex.split(s) for s in dockerfile.run_steps if re.match(r"(python3? -m )?pip ", s)]
    state = image.installed()
    for number, argv in enumerate(steps):
        command = argv[argv.index("pip") + 1 :]
        started = time.monotonic()
        if command[0] == "uninstall":
            result = image.pip(*command)
            assert result.returncode == 0, result.stderr
            state -= {normalize(a) for a in command[1:] if not a.startswith("-")}
            how = "for real"
        else:
            assert command[0] == "install", argv
            report = Path(image.env["HOME"]) / f"report-{number}.json"
            dry_run = ["install", "--dry-run", "--report", str(report), *command[1:]]
            result = image.pip(*dry_run, *lazy, timeout=600)
            if result.returncode != 0 and "fast-deps" in result.stderr:  # a pip without it: download the wheels
                lazy = []
                result = image.pip(*dry_run, timeout=600)
            if result.returncode != 0:
                pip_failed(shlex.join(argv), result)
            state |= {normalize(item["metadata"]["name"]) for item in json.loads(report.read_text())["install"]}
            downloaded = re.findall(r"Downloading (\S+\.whl) \(([^)]+)\)", result.stdout)
            how = f"--dry-run {' '.join(lazy)}, downloaded: {downloaded or 'nothing'}"
        print(f"[Dockerfile.gpu] {shlex.join(argv)}: {time.monotonic() - started:.1f} s ({how})")
    assert "onnxruntime-gpu" in state
    assert "onnxruntime" not in state, "Dockerfile.gpu leaves both onnxruntime wheels installed"
