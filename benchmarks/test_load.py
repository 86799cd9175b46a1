"""Frame -> prediction latency with real Socket.IO clients streaming a real clip at 25 fps."""

from __future__ import annotations

from benchmarks.conftest import CLIPS, write_result
from service.loadgen import browser_jpegs, run_load
from service.settings import Settings
from tests.conftest import start_server


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
