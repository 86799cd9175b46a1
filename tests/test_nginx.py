"""Two real `signstream serve` processes behind a real nginx running deploy/nginx.conf.

nginx is Debian's, installed by the project's own `.ci/install-nginx` when missing (the test is skipped
only when that fails for want of a network or of apt; any other failure fails it). The config is the
file in deploy/ with only its ports and file paths changed (the substitution its header documents).

20 real Socket.IO clients (10 websocket, 10 long-polling) stream a real clip's JPEG frames through
nginx, each from its own loopback address (127.0.0.N), so nginx's per-address sticky hash spreads them
over both processes. Then one process gets SIGTERM: its clients are told (`status` shutdown), lose
their connection and reconnect through the same nginx URL to the surviving process, while the
survivor's clients lose nothing: every frame they send gets exactly one `prediction`, matched by id.
"""

from __future__ import annotations

import asyncio
import base64
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import socketio

from harness.servers import ROOT, ServerProcess, free_port, start_server, wait_healthy

pytestmark = pytest.mark.slow  # deselected by the fast subset: pytest -m 'not slow'

NGINX_CONF = ROOT / "deploy" / "nginx.conf"
TRANSPORTS = ("websocket", "polling")
PER_CELL = 5  # clients per (process, transport): 10 websocket + 10 polling, 10 per process
FPS = 5.0  # frames per second per client: 100 frames/s in all, which 2 shared cores keep up with
BEFORE_KILL_S = 5.0  # streaming before the SIGTERM
AFTER_KILL_S = 9.0  # streaming after it: long enough for the shutdown (SHUTDOWN_TIMEOUT 5 s) and reconnects
SHUTDOWN_TIMEOUT_S = 5.0  # the server's default
SHUTDOWN_STATUS = {"message": "shutting down", "code": "shutdown"}
NO_NETWORK = re.compile(
    r"Temporary failure resolving|Could not resolve|Failed to fetch|Unable to fetch|Network is unreachable"
    r"|apt-get: (command )?not found",
    re.IGNORECASE,
)


@pytest.fixture(scope="module")
def nginx() -> Path:
    result = subprocess.run(
        ["bash", str(ROOT / ".ci" / "install-nginx")], capture_output=True, text=True, timeout=900
    )  # fmt: skip
    output = result.stdout + result.stderr
    if result.returncode != 0 and NO_NETWORK.search(output):
        pytest.skip(f".ci/install-nginx could not reach the package registry (no network or no apt):\n{output[-1500:]}")
    assert result.returncode == 0, f".ci/install-nginx failed:\n{output[-3000:]}"
    binary = Path(result.stdout.strip().splitlines()[-1])
    assert binary.is_file(), f".ci/install-nginx printed {binary}, which is not a file"
    return binary


def render_config(upstream_ports: list[int], listen_port: int, folder: Path) -> str:
    """deploy/nginx.conf with its ports and file paths replaced, as its header says (nothing else;
    comments are left alone)."""
    lines = NGINX_CONF.read_text().splitlines(keepends=True)
    replacements = {
        "server 127.0.0.1:8001 ": f"server 127.0.0.1:{upstream_ports[0]} ",
        "server 127.0.0.1:8002 ": f"server 127.0.0.1:{upstream_ports[1]} ",
        "listen 80;": f"listen 127.0.0.1:{listen_port};",
        "pid /run/signstream-nginx.pid;": f"pid {folder / 'nginx.pid'};",
        "error_log /var/log/nginx/signstream-error.log ": f"error_log {folder / 'error.log'} ",
        "access_log /var/log/nginx/signstream-access.log;": f"access_log {folder / 'access.log'};",
    }
    directives = [i for i, line in enumerate(lines) if not line.lstrip().startswith("#")]
    for old, new in replacements.items():
        found = [i for i in directives if old in lines[i]]
        assert len(found) == 1, f"deploy/nginx.conf should hold the directive {old!r} once, not {len(found)} times"
        lines[found[0]] = lines[found[0]].replace(old, new)
    return "".join(lines)


@dataclass
class Nginx:
    url: str
    process: subprocess.Popen[str]
    folder: Path

    def error_log(self) -> str:
        path = self.folder / "error.log"
        return path.read_text() if path.exists() else ""


def start_nginx(binary: Path, upstream_ports: list[int], folder: Path) -> Nginx:
    port = free_port()
    conf = folder / "nginx.conf"
    conf.write_text(render_config(upstream_ports, port, folder))
    command = [str(binary), "-p", str(folder), "-e", str(folder / "error.log"), "-c", str(conf)]
    check = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, f"nginx -t rejected the rendered deploy/nginx.conf:\n{check.stderr}"
    process = subprocess.Popen(
        [*command, "-g", "daemon off;"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, 15, "nginx")
    except RuntimeError as error:
        raise RuntimeError(f"{error}\n{(folder / 'error.log').read_text()[-3000:]}") from None
    return Nginx(url, process, folder)


class LogDrain:
    """Reads a server's combined output in a thread, so its pipe never fills (uvicorn logs every
    polling request), and keeps it for the assertions."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.server.process.stdout is not None
        for line in self.server.process.stdout:
            self.lines.append(line)

    def text(self) -> str:
        return "".join(self.lines)


def clients_of(server: ServerProcess) -> int:
    """Connected Socket.IO clients of one process, asked directly on its own port."""
    return int(httpx.get(f"{server.url}/healthz", timeout=5).json()["clients"])


@dataclass
class StreamClient:
    """A real python-socketio client bound to its own loopback source address (aiohttp's
    `local_addr`, used by both the polling requests and the websocket), streaming frames with ids."""

    url: str
    transport: str
    address: str
    sio: Any = None
    session: aiohttp.ClientSession | None = None
    worker: int = -1
    sent: dict[int, float] = field(default_factory=dict)  # frame id -> send time
    replies: Counter[int] = field(default_factory=Counter)  # frame id -> predictions with that id
    latencies: dict[int, float] = field(default_factory=dict)  # frame id -> seconds to its prediction
    statuses: list[tuple[float, Any]] = field(default_factory=list)
    errors: list[Any] = field(default_factory=list)
    disconnects: list[float] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    gone: asyncio.Event = field(default_factory=asyncio.Event)
    reconnected_at: float | None = None
    closing: bool = False
    first_reply_after_reconnect: float | None = None

    async def connect(self) -> None:
        if self.session is None:
            connector = aiohttp.TCPConnector(local_addr=(self.address, 0))
            self.session = aiohttp.ClientSession(connector=connector)
        self.ready, self.gone = asyncio.Event(), asyncio.Event()
        sio = socketio.AsyncClient(reconnection=False, http_session=self.session)
        ready, gone = self.ready, self.gone

        async def on_status(data: Any = None) -> None:
            self.statuses.append((time.monotonic(), data))
            if data == {"message": "ready"}:
                ready.set()

        async def on_prediction(data: Any = None) -> None:
            now = time.monotonic()
            frame_id = data["id"]
            self.replies[frame_id] += 1
            self.latencies[frame_id] = now - self.sent.get(frame_id, now)
            if self.reconnected_at is not None and self.first_reply_after_reconnect is None:
                self.first_reply_after_reconnect = now

        async def on_error(data: Any = None) -> None:
            self.errors.append(data)

        async def on_disconnect(*args: Any) -> None:
            if not self.closing:  # not the test's own disconnect at the end
                self.disconnects.append(time.monotonic())
            gone.set()

        for name, handler in (("status", on_status), ("prediction", on_prediction), ("error", on_error)):
            sio.on(name, handler)
        sio.on("disconnect", on_disconnect)
        self.sio = sio
        # Not `wait=True`: that waits out its whole timeout when the Engine.IO connection dies before
        # the Socket.IO connect completes (a session opened on a process whose listener closed next).
        await sio.connect(self.url, transports=[self.transport], wait=False)
        deadline = time.monotonic() + 10
        while not ready.is_set():
            # Refused after connecting (a process that is shutting down: `error`, then disconnect),
            # or the Engine.IO connection is gone, or nothing within 10 s.
            if gone.is_set() or sio.eio.state != "connected" or time.monotonic() > deadline:
                raise socketio.exceptions.ConnectionError(f"no ready status; errors {self.errors[-1:]}")
            await asyncio.sleep(0.01)

    async def reconnect(self, deadline: float) -> None:
        """Through the same nginx URL, from the same address, until a connection stays up: a process
        that is shutting down refuses new clients (connect, `error`, disconnect)."""
        while True:
            try:
                await self.connect()
                self.reconnected_at = time.monotonic()
                return
            except socketio.exceptions.ConnectionError as exc:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{self.address} ({self.transport}) could not reconnect: {exc!r}") from exc
                await self.close_connection()
                await asyncio.sleep(0.2)

    async def stream(self, frames: list[str], start: float, until: float, reconnect: bool) -> None:
        """FPS frames per second with increasing ids from `start` until `until`; after a disconnect,
        reconnect (if allowed) and go on from the next slot, never in a burst."""
        frame_id = 0
        slot = start
        while slot < until:
            await asyncio.sleep(max(0.0, slot - time.monotonic()))
            if self.gone.is_set():
                if not reconnect:
                    return
                await self.close_connection()
                await self.reconnect(deadline=time.monotonic() + 20)
            self.sent[frame_id] = time.monotonic()
            try:
                await self.sio.emit("frame", {"image": frames[frame_id % len(frames)], "id": frame_id})
            except socketio.exceptions.BadNamespaceError:  # disconnected just now: not sent
                del self.sent[frame_id]
            frame_id += 1
            slot = max(slot + 1 / FPS, time.monotonic())

    def unanswered(self, after: float = 0.0) -> list[int]:
        return [i for i, at in self.sent.items() if at >= after and self.replies[i] == 0]

    async def close_connection(self) -> None:
        sio, self.sio = self.sio, None
        if sio is None:
            return
        if sio.eio.state != "connected":
            return
        if sio.transport() == "polling":
            # As tests/peer.py: don't wait for the long-poll GET to come back.
            await sio.eio.disconnect(abort=True)
        else:
            await sio.disconnect()

    async def close(self) -> None:
        self.closing = True
        await self.close_connection()
        if self.session is not None:
            await self.session.close()


def addresses() -> Iterator[str]:
    for n in range(2, 255):
        yield f"127.0.0.{n}"


async def place_clients(url: str, servers: list[ServerProcess]) -> list[StreamClient]:
    """PER_CELL clients of each transport on each process. nginx decides where an address goes, so
    each address is tried with a websocket first; /healthz on each process says which one got it.
    It stays, or comes back as a polling client (same address, so the same process), or is let go."""
    placed: list[StreamClient] = []
    cells: Counter[tuple[int, str]] = Counter()
    counts = [0, 0]

    async def settle(expected_total: int) -> list[int]:
        for _ in range(200):
            now = await asyncio.gather(*(asyncio.to_thread(clients_of, s) for s in servers))
            if sum(now) == expected_total:
                return list(now)
            await asyncio.sleep(0.02)
        raise AssertionError(f"the processes report {now} clients, expected {expected_total} in all")

    for address in addresses():
        if len(placed) == 2 * PER_CELL * len(TRANSPORTS):
            break
        probe = StreamClient(url, "websocket", address)
        await probe.connect()
        now = await settle(len(placed) + 1)
        worker = next(w for w in (0, 1) if now[w] > counts[w])
        transport = next((t for t in TRANSPORTS if cells[worker, t] < PER_CELL), None)
        if transport == "websocket":
            client = probe
        else:
            await probe.close()
            await settle(len(placed))
            if transport is None:
                continue
            client = StreamClient(url, transport, address)
            await client.connect()
            now = await settle(len(placed) + 1)
            assert now[worker] > counts[worker], f"{address} went to another process over polling: not sticky"
        client.worker = worker
        cells[worker, client.transport] += 1
        counts[worker] += 1
        placed.append(client)
    else:
        raise AssertionError(f"nginx sent 253 addresses to the processes as {dict(cells)}: the hash does not spread")
    return placed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def report(clients: list[StreamClient], victim: int, kill_at: float, figures: dict[str, Any]) -> None:
    """The measured figures (pytest -s), printed before anything is judged."""
    print(f"\n2 processes behind nginx, {len(clients)} clients at {FPS:g} frames/s each; "
          f"clients per process {figures['per_worker']}, by (process, transport) "
          f"{dict(sorted(Counter((c.worker, c.transport) for c in clients).items()))}")  # fmt: skip
    for transport in TRANSPORTS:
        group = [c for c in clients if c.transport == transport]
        sent = sum(len(c.sent) for c in group)
        replies = sum(sum(c.replies.values()) for c in group)
        latencies = [(c.sent[i], x * 1e3) for c in group for i, x in c.latencies.items()]
        every = [x for _, x in latencies]
        before = [x for at, x in latencies if at < kill_at]
        after = [x for at, x in latencies if at >= kill_at]
        print(f"{transport:9}: {sent} frames sent, {replies} predictions; latency through nginx "
              f"p50 {percentile(every, 0.5):.0f} ms, p95 {percentile(every, 0.95):.0f} ms "
              f"(p95 of frames sent before SIGTERM {percentile(before, 0.95):.0f} ms, "
              f"after {percentile(after, 0.95):.0f} ms)")  # fmt: skip
    for c in clients:
        if c.worker != victim:
            continue
        told = "told" if any(data == SHUTDOWN_STATUS for _, data in c.statuses) else "NOT told"
        gone = f"disconnected {c.disconnects[0] - kill_at:+.2f} s after SIGTERM" if c.disconnects else "NOT gone"
        back = f"reconnected {c.reconnected_at - c.disconnects[0]:.2f} s later" if c.reconnected_at else "NOT back"
        first = c.first_reply_after_reconnect
        answered = f"first prediction {first - kill_at:.2f} s after SIGTERM" if first else "NO prediction after"
        lost = len([i for i in c.sent if c.replies[i] == 0])
        print(f"stopped process's {c.address:11} {c.transport:9}: {told}, {gone}, {back}, {answered}; "
              f"{lost} of {len(c.sent)} frames unanswered")  # fmt: skip
    print(f"the stopped process exited {figures['exited_s']:.2f} s after SIGTERM (exit code {figures['exit_code']}); "
          f"nginx logged {figures['refused']} refused upstream connections; clients placed "
          f"{figures['placed_s']:.1f} s in; the test took {time.monotonic() - figures['started']:.1f} s")  # fmt: skip


@pytest.mark.timeout(300)
async def test_two_processes_behind_nginx_survive_one_being_stopped(
    nginx: Path, model_dir: Path, hello_jpegs: list[bytes], tmp_path: Path
) -> None:
    started = time.monotonic()
    frames = [base64.b64encode(jpeg).decode() for jpeg in hello_jpegs]
    env = {"EMBEDDINGS_PER_SECOND": "2", "ERRORS_PER_SECOND": "100"}
    servers = list(
        await asyncio.gather(*(asyncio.to_thread(start_server, model_dir, workers=1, **env) for _ in range(2)))
    )
    logs = [LogDrain(s) for s in servers]
    proxy: Nginx | None = None
    clients: list[StreamClient] = []
    try:
        proxy = await asyncio.to_thread(start_nginx, nginx, [int(s.url.rsplit(":", 1)[1]) for s in servers], tmp_path)
        clients = await place_clients(proxy.url, servers)
        per_worker = [clients_of(s) for s in servers]
        assert per_worker == [2 * PER_CELL, 2 * PER_CELL]
        placed_s = time.monotonic() - started

        victim, survivor = 1, 0
        begin = time.monotonic()
        kill_at = begin + BEFORE_KILL_S
        until = kill_at + AFTER_KILL_S
        # The clients' frames are spread evenly over each 1/FPS period rather than all sent at once.
        streams = [
            asyncio.create_task(c.stream(frames, begin + k / FPS / len(clients), until, reconnect=c.worker == victim))
            for k, c in enumerate(clients)
        ]
        await asyncio.sleep(max(0.0, kill_at - time.monotonic()))
        servers[victim].process.terminate()
        try:
            exit_code: int | None = await asyncio.to_thread(servers[victim].process.wait, SHUTDOWN_TIMEOUT_S + 10)
        except subprocess.TimeoutExpired:
            exit_code = None  # judged below, after the figures
        exited_s = time.monotonic() - kill_at
        await asyncio.gather(*streams)
        # The last replies are on their way: wait for them (bounded), then judge.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            survivors_done = all(not c.unanswered() for c in clients if c.worker == survivor)
            moved_done = all(not c.unanswered(after=c.reconnected_at or 0) for c in clients if c.worker == victim)
            if survivors_done and moved_done:
                break
            await asyncio.sleep(0.05)
        clients_after = clients_of(servers[survivor])
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        if proxy is not None:
            proxy.process.terminate()
            proxy.process.wait(10)
        for server in servers:
            if server.process.poll() is None:
                server.process.terminate()
                try:
                    server.process.wait(20)
                except subprocess.TimeoutExpired:
                    server.process.kill()
        for log in logs:
            log.thread.join(5)

    figures = {"per_worker": per_worker, "exited_s": exited_s, "exit_code": exit_code, "placed_s": placed_s,
               "started": started, "refused": proxy.error_log().count("connect() failed") if proxy else 0}  # fmt: skip
    report(clients, victim, kill_at, figures)
    victims = [c for c in clients if c.worker == victim]
    survivors = [c for c in clients if c.worker == survivor]

    # The stopped process left within its SHUTDOWN_TIMEOUT, cleanly (uvicorn shuts down, then raises the
    # signal it caught again, so the exit status is "killed by SIGTERM").
    assert exit_code in (0, -signal.SIGTERM), logs[victim].text()[-3000:]
    assert "Application shutdown complete" in logs[victim].text(), logs[victim].text()[-3000:]
    # The drain ends every session it held (a polling client's open GET included) and, while it runs, new
    # sessions get 503, which nginx retries on the other process, so nothing is left for uvicorn to wait for.
    assert exited_s < SHUTDOWN_TIMEOUT_S, f"the process took {exited_s:.1f} s to exit after SIGTERM"

    # The survivor's clients lost nothing: one prediction per frame, never disconnected, no errors.
    for c in survivors:
        assert not c.disconnects, f"{c.address} ({c.transport}) on the surviving process was disconnected"
        assert not c.errors, f"{c.address} ({c.transport}): {c.errors[:3]}"
        assert not c.unanswered(), f"{c.address} ({c.transport}): frames {c.unanswered()[:10]} got no prediction"
        assert max(c.replies.values()) == 1, f"{c.address} ({c.transport}) got a frame answered twice"
        assert set(c.replies) == set(c.sent)
        assert len(c.sent) >= FPS * (BEFORE_KILL_S + AFTER_KILL_S) * 0.8

    # The stopped process's clients were told, lost the connection, came back through nginx (to the
    # surviving process) and were answered there, every frame once.
    for c in victims:
        assert c.disconnects, f"{c.address} ({c.transport}) was never disconnected from the stopped process"
        told = [t for t, data in c.statuses if data == SHUTDOWN_STATUS]
        assert told and told[0] <= c.disconnects[0], f"{c.address} ({c.transport}) statuses: {c.statuses}"
        # Frames it had received were answered before it closed the connection (a frame sent in the
        # last moment before SIGTERM may still have been on its way).
        before = [i for i, at in c.sent.items() if at < kill_at - 1.0]
        assert all(c.replies[i] == 1 for i in before), f"{c.address}: frames sent before SIGTERM unanswered"
        assert c.reconnected_at is not None, f"{c.address} ({c.transport}) did not reconnect"
        assert c.first_reply_after_reconnect is not None, f"{c.address} ({c.transport}): nothing after reconnect"
        moved = [i for i, at in c.sent.items() if at >= c.reconnected_at]
        assert len(moved) >= 3, f"{c.address} ({c.transport}) sent only {len(moved)} frames after reconnecting"
        assert all(c.replies[i] == 1 for i in moved), f"{c.address} ({c.transport}): lost frames after reconnecting"
        assert not [e for e in c.errors if e.get("code") != "shutting_down"], c.errors[:3]
    assert clients_after == len(clients), f"the surviving process holds {clients_after} of {len(clients)} clients"

    # nginx passed the real client address on (X-Forwarded-For), which uvicorn trusts from 127.0.0.1.
    seen = set(re.findall(r"\b(127\.0\.0\.\d+):0\b", logs[survivor].text()))
    assert {c.address for c in survivors} <= seen, f"the survivor logged client addresses {sorted(seen)[:10]}"
