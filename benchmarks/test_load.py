"""Frame -> prediction latency with real Socket.IO clients streaming a real clip at 25 fps."""

from __future__ import annotations

from benchmarks.conftest import CLIPS, write_result
from benchmarks.loadgen import browser_jpegs, run_load
from service.settings import Settings
from tests.conftest import start_server

# Latency (WLASL20c on the shipped model, one client at 25 fps; 6 runs on the shared 2-core box):
# p50 2.7-3.0 ms, p95 15.0-38.0 ms, max 22-53 ms. Bounds: p95 at 2x the highest measured (and under
# the product's 100 ms goal); p50 at about 3x, since a few ms of scheduling noise is most of it.
P95_BOUND_MS = 80.0
P50_BOUND_MS = 10.0


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
