"""Memory per connected client: RSS of a real server process as 50 clients connect and fill their
windows (SPEC budget: under 5 MB per client)."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest

from benchmarks.conftest import CLIPS, write_result
from harness.peer import Peer
from harness.servers import start_default_server, start_server
from service.loadgen import browser_jpegs
from service.settings import Settings

CLIENTS = 50
# The SPEC budget is 5 MB per client; what a client costs here is far less, and the guard is set from that
# so that a regression several times worse fails. Measured (WLASL20c on the shipped model, 2 s window, 10
# runs on the shared 2-core box): 0.19, 0.27, 0.32, 0.33, 0.42, 0.47, 0.59, 0.62, 0.66 MB per client, and
# 1.01 in one run at load average 10 (RSS deltas are noisy: allocator arenas, pages touched late, frames in
# flight); the ring alone is 0.31 MB once full (test_stream). Bound: 2x the highest run. The defaults
# (landmarks: a 222-float ring, 0.06 MB, and a hand tracker per client), 3 runs at load average 9-10: 0.20,
# 0.31, 0.33 MB. Bound: 1 MB, 3x the highest (the RSS noise above is absolute, about 0.4 MB).
BOUNDS = {"wlasl20c": 2.0e6, "landmarks": 1.0e6}


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


async def _connect_and_fill(url: str, frames: list[str]) -> list[Peer]:
    peers = [Peer(url) for _ in range(CLIENTS // 2)]
    for peer in peers:
        await peer.__aenter__()
        await peer.expect("status")
    for frame in frames:  # fill every client's ring buffer past the window
        for peer in peers:
            await peer.sio.emit("frame", {"image": frame})
        for peer in peers:
            await peer.expect("prediction", timeout=60)
    return peers


@pytest.mark.parametrize("model", ["wlasl20c", "landmarks"])
async def test_state_per_client_is_far_under_the_5_mb_budget(settings: Settings, model: str) -> None:
    """`landmarks`: the default model, with its per-client hand tracker; every frame encoded in both."""
    if model == "wlasl20c":
        server = start_server(settings.model_dir, EMBEDDINGS_PER_SECOND="0", MAX_CONNECTIONS_PER_IP="100")
    else:
        server = start_default_server(EMBEDDINGS_PER_SECOND="0", MAX_CONNECTIONS_PER_IP="100")
    frames = [base64.b64encode(j).decode() for j in browser_jpegs(CLIPS / "hello", limit=16)]
    try:
        # The first 25 clients also grow what is allocated once (ONNX Runtime's arena for batched
        # encoder calls, thread pools); the next 25, added to the same process, show what a
        # connected client holds.
        first = await _connect_and_fill(server.url, frames)
        await asyncio.sleep(1.0)
        before = rss_bytes(server.process.pid)
        second = await _connect_and_fill(server.url, frames)
        after = rss_bytes(server.process.pid)
        for peer in first + second:
            await peer.__aexit__()
    finally:
        server.stop()
    per_client = (after - before) / (CLIENTS // 2)
    path = write_result(
        f"memory_per_client_{model}",
        {"clients": CLIENTS, "rss_before_mb": round(before / 1e6, 1), "rss_after_mb": round(after / 1e6, 1),
         "per_client_mb": round(per_client / 1e6, 3), "budget_mb": 5.0, "bound_mb": BOUNDS[model] / 1e6},
    )  # fmt: skip
    print(f"\n{path}: {per_client / 1e6:.3f} MB per client")
    assert per_client < BOUNDS[model], f"{per_client / 1e6:.3f} MB per client"
