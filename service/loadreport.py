"""Load-test output for people: a PNG chart (OpenCV, no plotting dependency) and RESULTS.md."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from service.loadgen import held

COLOURS = [(200, 80, 30), (40, 140, 40), (30, 30, 200), (150, 60, 150)]


def _panel(series: dict[str, list[tuple[float, float]]], title: str, size: tuple[int, int]) -> np.ndarray:
    width, height = size
    image = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 60, 20, 30, 40
    xs = [x for points in series.values() for x, _ in points]
    ys = [y for points in series.values() for _, y in points]
    x0, x1 = min(xs), max(max(xs), min(xs) + 1)
    y1 = max(ys) * 1.1 if ys and max(ys) > 0 else 1.0

    def at(x: float, y: float) -> tuple[int, int]:
        return (
            int(left + (x - x0) / (x1 - x0) * (width - left - right)),
            int(height - bottom - y / y1 * (height - top - bottom)),
        )

    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.rectangle(image, at(x0, 0), at(x1, y1), (180, 180, 180), 1)
    for fraction in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = y1 * fraction
        cv2.putText(image, f"{y:.0f}", (4, at(x0, y)[1] + 4), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    for x in sorted(set(xs)):
        cv2.putText(image, f"{x:g}", (at(x, 0)[0] - 6, height - bottom + 16), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(image, title, (left, 20), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    for i, (name, points) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        pixels = [at(x, y) for x, y in sorted(points)]
        for a, b in itertools.pairwise(pixels):
            cv2.line(image, a, b, colour, 2, cv2.LINE_AA)
        for p in pixels:
            cv2.circle(image, p, 3, colour, -1)
        cv2.putText(image, name, (width - 130, 40 + 16 * i), font, 0.45, colour, 1, cv2.LINE_AA)
    return image


def plot_runs(runs: list[dict[str, Any]], path: Path) -> None:
    """Latency percentiles and replies/s against the number of clients."""
    latency = {
        name: [(float(r["clients"]), float(r["latency_ms"].get(name, 0.0))) for r in runs]
        for name in ("p50", "p95", "p99")
    }
    throughput = {"replies/s": [(float(r["clients"]), float(r["replies_per_second"])) for r in runs]}
    chart = np.vstack(
        [
            _panel(latency, "frame -> prediction latency (ms) vs clients", (720, 300)),
            _panel(throughput, "replies per second vs clients", (720, 240)),
        ]
    )
    cv2.imwrite(str(path), chart)


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def results_markdown(output: dict[str, Any], command: str, health: dict[str, Any]) -> str:
    """The capacity section of benchmarks/RESULTS.md, written by `cli loadtest --results`."""
    lines = [
        "# Load-test results",
        "",
        "Written by `signstream loadtest --results` (do not edit by hand; rerun the command).",
        "",
        f"- when: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}, commit {_git_commit()}",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        f"- server: model {health.get('model_name')}, provider {health.get('provider')}, "
        + ", ".join(f"{key} {value}" for key, value in health.get("recognizer", {}).items()),
        f"- command: `{command}`",
        "",
        "| clients | fps | sent | replies | lost | errors | p50 ms | p95 ms | p99 ms | max ms | replies/s "
        "| stale replies | server staleness max ms | held |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in output["runs"]:
        lat = r["latency_ms"]
        server = r.get("server", {})
        lines.append(
            f"| {r['clients']} | {r['fps']:g} | {r['sent']} | {r['replies']} | {r['lost']} | {r['errors']} | "
            f"{lat.get('p50')} | {lat.get('p95')} | {lat.get('p99')} | {lat.get('max')} | "
            f"{r['replies_per_second']} | {server.get('stale', '-')} | "
            f"{server.get('staleness_max_ms_since_start', '-')} | {'yes' if held(r) else 'no'} |"
        )
    if "capacity" in output:
        lines += [
            "",
            f"**Capacity: {output['capacity']} clients** at {output['runs'][0]['fps']:g} fps "
            "(the largest number of clients with p95 frame -> prediction latency under 100 ms, no lost reply and "
            "no reply from an embedding older than 200 ms; "
            "the server and the load generator share the machine).",
        ]
    return "\n".join(lines) + "\n"
