"""Thread and process settings, chosen by measurement: the same load (N clients at 25 fps, real
frames) against a fresh server per configuration, interleaved over several rounds so that drifts of a
shared machine hit every configuration alike.

    python -m benchmarks.threads --clients 12 --rounds 2 --json benchmarks/threads.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from harness.servers import ServerProcess, start_server
from service.clips import CLIPS_DIR
from service.loadgen import browser_jpegs, run_load

ROOT = Path(__file__).resolve().parents[1]
CLIPS = CLIPS_DIR

# name -> (environment, uvicorn workers). The default configuration comes first.
CONFIGS: dict[str, tuple[dict[str, str], int]] = {
    "intra2_batch8_1worker (default)": ({}, 1),
    "intra1_batch8_1worker": ({"TF_INTRA_OP_THREADS": "1"}, 1),
    "intra2_batch2_1worker": ({"ENCODER_MAX_BATCH": "2"}, 1),
    "intra1_batch8_2workers": ({"TF_INTRA_OP_THREADS": "1"}, 2),
    "intra2_batch8_2workers": ({}, 2),
}


def serve(env: dict[str, str], workers: int, model: str) -> ServerProcess:
    limits = {"MAX_CONNECTIONS_PER_IP": "1000"}
    server = start_server(ROOT / "model", workers=workers, MODEL=model, LOG_LEVEL="warning", **limits, **env)
    # start_server waits for one healthy worker; the kernel spreads connections over them, so ask a
    # few times in a row until every worker has loaded the model.
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if all(httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200 for _ in range(4 * workers)):
            return server
        time.sleep(0.3)
    server.stop()
    raise RuntimeError(f"server with {env} x{workers}: not every worker became healthy")


def measure(clients: int, seconds: float, rounds: int, model: str) -> dict[str, Any]:
    frames = browser_jpegs(CLIPS / "hello", limit=200)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in CONFIGS}
    for _ in range(rounds):
        for name, (env, workers) in CONFIGS.items():
            server = serve(env, workers, model)
            try:
                asyncio.run(run_load(server.url, frames, clients=clients, fps=25, seconds=3))  # warm-up
                result = asyncio.run(run_load(server.url, frames, clients=clients, fps=25, seconds=seconds))
            finally:
                server.stop()
            runs[name].append(result.as_dict())
            print(name, result.latency_ms, "lost", result.lost, file=sys.stderr)
    summary = {
        name: {
            "p95_ms_median": statistics.median(r["latency_ms"]["p95"] for r in rs),
            "p99_ms_median": statistics.median(r["latency_ms"]["p99"] for r in rs),
            "p50_ms_median": statistics.median(r["latency_ms"]["p50"] for r in rs),
            "lost": sum(r["lost"] for r in rs),
        }
        for name, rs in runs.items()
    }
    return {"model": model, "clients": clients, "fps": 25, "seconds": seconds, "rounds": rounds,
            "cpus": os.cpu_count(), "summary": summary, "runs": runs}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model", default="wlasl20c")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = measure(args.clients, args.seconds, args.rounds, args.model)
    print(json.dumps(result["summary"], indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
