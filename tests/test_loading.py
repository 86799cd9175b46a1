"""/healthz answers 503 `loading` until the model is ready (a real uvicorn server, the real loader)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import httpx
import uvicorn

from harness.peer import Peer
from harness.servers import free_port
from service.app import create_app
from service.engine import load_recognizer
from service.settings import Settings, load_settings


async def test_503_while_loading_then_ok(model_dir: Path) -> None:
    release = threading.Event()

    def gated_loader(settings: Settings):  # type: ignore[no-untyped-def]
        release.wait(30)  # hold the real load until the test has seen 503
        return load_recognizer(settings)

    settings = load_settings({"MODEL_PATH": str(model_dir / "WLASL20c_model.h5"), "MODEL": "wlasl20c"}, env_file=None)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, gated_loader), port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as http:
            while not server.started:
                await asyncio.sleep(0.05)
            response = await http.get(f"{url}/healthz")
            assert (response.status_code, response.json()) == (503, {"status": "loading"})
            assert (await http.head(f"{url}/healthz")).status_code == 503
            async with Peer(url) as early:  # clients are told, not left hanging
                assert (await early.expect("error"))["code"] == "loading"
            release.set()
            for _ in range(200):
                response = await http.get(f"{url}/healthz")
                if response.status_code == 200:
                    break
                await asyncio.sleep(0.05)
            assert response.json()["status"] == "ok"
            assert (await http.head(f"{url}/healthz")).status_code == 200
    finally:
        release.set()
        server.should_exit = True
        await task
