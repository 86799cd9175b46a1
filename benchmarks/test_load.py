"""Frame -> prediction latency with real Socket.IO clients streaming a real clip at 25 fps."""

from __future__ import annotations

from benchmarks.conftest import CLIPS, write_result
from service.loadgen import browser_jpegs, run_load
from service.settings import Settings
from tests.conftest import start_server

# Latency (WLASL20c on the shipped model, one client at 25 fps), 10 runs on the shared 2-core box: p50
# 2.7-3.2 ms and p95 14.6-38.0 ms in 9 runs, p50 6.9 / p95 64.4 ms in one at load average 10 (other jobs).
# Bounds: p95 at the product's 100 ms goal (2.6x the highest quiet run, 1.6x the loaded one); p50 at
# 15 ms (2.2x the loaded run): a few ms of scheduling noise is most of it.
P95_BOUND_MS = 100.0
P50_BOUND_MS = 15.0


async def test_one_client_at_25_fps_gets_every_reply(settings: Settings) -> None:
    server = start_server(settings.model_dir)
    try:
        result = await run_load(server.url, browser_jpegs(CLIPS / "hello", limit=200), clients=1, fps=25, seconds=8)
    finally:
        server.stop()
    path = write_result("load_1_client", result.as_dict())
    print(f"\n{path}: {result.as_dict()}")
    assert result.refused_clients == 0 and result.sent == 200
    assert result.lost == 0 and result.errors == 0
    latency = result.latency_ms
    assert latency["p95"] <= P95_BOUND_MS and latency["p50"] <= P50_BOUND_MS, latency
