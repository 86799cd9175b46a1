"""`cli client --json` against a real server: real clip frames, binary with ids, opt-in `top` and `sign`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from service.client import video_frames
from tests.conftest import ROOT, start_server
from tests.fixture_model import CLIPS

LABELS = {"book", "chair", "clothes", "computer", "drink", "drum", "family", "football", "go", "hat", "hello",
          "kiss", "like", "play", "school", "street", "table", "university", "violin", "wall"}  # fmt: skip


def run_client(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "cli.py", "client", *args], cwd=ROOT, capture_output=True, text=True, timeout=180
    )


def test_client_json_streams_a_clip_and_reports_every_event(model_dir: Path) -> None:
    clip = sorted((CLIPS / "hello").glob("*.mp4"))[0]
    server = start_server(model_dir, PREDICTION_THRESHOLD="0", SIGN_MIN_SCORE="0", SIGN_ENTER_FRAMES="3",
                          SIGN_EXIT_FRAMES="3")  # fmt: skip
    try:
        result = run_client("--video", str(clip), "--url", server.url, "--json", "--topk", "3")
        assert result.returncode == 0, result.stderr[-3000:]
        lines = [json.loads(line) for line in result.stdout.splitlines()]
        assert lines[0] == {"event": "status", "data": {"message": "ready"}}
        assert lines[-1]["event"] == "summary"
        summary = lines[-1]["data"]
        predictions = [line for line in lines if line["event"] == "prediction"]
        signs = [line["data"] for line in lines if line["event"] == "sign"]
        assert {line["event"] for line in lines} <= {"status", "prediction", "sign", "summary"}

        # Every frame of the clip was sent (25 fps, nothing skipped on one client) and answered in order.
        frames = sum(1 for _ in video_frames(clip))
        assert summary["sent"] + summary["skipped"] == frames and summary["skipped"] <= 2
        assert len(predictions) == summary["predictions"] == summary["sent"]
        assert [p["data"]["id"] for p in predictions] == list(range(summary["sent"]))
        assert all(0 < p["latency_ms"] < 5000 for p in predictions)
        assert summary["latency_ms"]["p50"] is not None and summary["latency_ms"]["p50"] <= summary["latency_ms"]["p95"]
        # `top` is [] until the window is full (10 embeddings at EMBEDDINGS_PER_SECOND=8: ~1.25 s), then always set.
        first_full = next(i for i, p in enumerate(predictions) if p["data"]["top"])
        assert first_full < 40
        full = [p["data"] for p in predictions[first_full:]]
        assert all(p["top"] for p in full)
        for p in full:
            assert p["top"][0]["label"] == p["label"] and len(p["top"]) == 3
            assert {t["label"] for t in p["top"]} <= LABELS
        for s in signs:
            assert s["label"] in LABELS and s["start_ms"] <= s["end_ms"]
        assert summary["transcript"] == (signs[-1]["transcript"] if signs else [])
    finally:
        server.stop()


def test_client_reports_an_unreachable_server_and_bad_arguments() -> None:
    clip = sorted((CLIPS / "hello").glob("*.mp4"))[0]
    result = run_client("--video", str(clip), "--url", "http://127.0.0.1:9", "--json")
    assert result.returncode == 2 and "cannot connect" in result.stderr
    result = run_client("--url", "http://127.0.0.1:9")
    assert result.returncode == 2 and "exactly one of" in result.stderr
    result = run_client("--video", str(CLIPS / "no-such-clip.mp4"), "--json")
    assert result.returncode == 2 and "no such file" in result.stderr
