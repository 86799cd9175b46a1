"""Frame -> prediction latency with real Socket.IO clients streaming a real clip at 25 fps."""

from __future__ import annotations

import pytest

from benchmarks.conftest import CLIPS, write_result
from harness.servers import start_default_server, start_server
from service.loadgen import browser_jpegs, run_load
from service.settings import Settings

# Latency, one client at 25 fps, on the shared 2-core box. WLASL20c (shipped model), 10 runs: p50 2.7-3.2 ms
# and p95 14.6-38.0 ms in 9, p50 6.9 / p95 64.4 ms in one at load average 10 (other jobs). Bounds: p95 at
# the product's 100 ms goal (2.6x the highest quiet run, 1.6x the loaded one), p50 at 15 ms (2.2x the
# loaded run). The defaults (landmarks), 3 runs, all at load average 9-10: p50 6.3, 25.6, 38.2 ms, p95 57,
# 90, 103 ms (benchmarks/RESULTS_landmarks.md, quieter: p95 61 ms with 2 clients). Bounds: 2x the highest.
BOUNDS_MS = {"wlasl20c": {"p50": 15.0, "p95": 100.0}, "landmarks": {"p50": 80.0, "p95": 200.0}}


@pytest.mark.parametrize("model", ["wlasl20c", "landmarks"])
async def test_one_client_at_25_fps_gets_every_reply(settings: Settings, model: str) -> None:
    """`wlasl20c`: the image model on the shipped files; `landmarks`: the defaults (no setting at all)."""
    server = start_server(settings.model_dir) if model == "wlasl20c" else start_default_server()
    try:
        result = await run_load(server.url, browser_jpegs(CLIPS / "hello", limit=200), clients=1, fps=25, seconds=8)
    finally:
        server.stop()
    path = write_result(f"load_1_client_{model}", result.as_dict())
    print(f"\n{path}: {result.as_dict()}")
    assert result.refused_clients == 0 and result.sent == 200
    assert result.lost == 0 and result.errors == 0
    latency = result.latency_ms
    bounds = BOUNDS_MS[model]
    assert latency["p95"] <= bounds["p95"] and latency["p50"] <= bounds["p50"], (latency, bounds)
