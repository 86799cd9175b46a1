"""The demo page at `/` in a real headless Chromium, its camera fed from a real clip, against a real server.

Chromium is Debian's, installed by the project's own `.ci/install-browser` when missing (a failed
install fails this test); Playwright only drives it (`playwright install` is never used).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import pytest

from service.preprocess import iter_clip_frames
from tests.conftest import ROOT, ServerProcess, start_server
from tests.fixture_model import CLIPS

ARTIFACTS = ROOT / "artifacts"
LABELS = {"book", "chair", "clothes", "computer", "drink", "drum", "family", "football", "go", "hat", "hello",
          "kiss", "like", "play", "school", "street", "table", "university", "violin", "wall"}  # fmt: skip


def write_y4m(clip: Path, out: Path, size: tuple[int, int] = (640, 480)) -> int:
    """A real clip as a 4:2:0 YUV4MPEG2 file, Chromium's fake camera input (it loops the file)."""
    width, height = size
    count = 0
    with out.open("wb") as f:
        f.write(f"YUV4MPEG2 W{width} H{height} F25:1 Ip A1:1 C420jpeg\n".encode())
        for frame in iter_clip_frames(clip):
            f.write(b"FRAME\n")
            f.write(cv2.cvtColor(cv2.resize(frame, size), cv2.COLOR_BGR2YUV_I420).tobytes())
            count += 1
    return count


@pytest.fixture(scope="module")
def camera_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    clip = sorted((CLIPS / "hello").glob("*.mp4"))[0]
    path = tmp_path_factory.mktemp("camera") / "hello.y4m"
    assert write_y4m(clip, path) > 25
    return path


@pytest.fixture(scope="module")
def demo_server(model_dir: Path) -> Iterator[ServerProcess]:
    # Random fixture weights: threshold 0 so the page shows labels and recognised signs; one client
    # at a time so a second page sees the capacity error.
    running = start_server(
        model_dir, PREDICTION_THRESHOLD="0", SIGN_MIN_SCORE="0", SIGN_ENTER_FRAMES="3", SIGN_EXIT_FRAMES="3",
        MAX_CLIENTS="1",
    )  # fmt: skip
    yield running
    running.stop()


def test_demo_page_streams_the_camera_and_shows_predictions(
    chromium: Path, camera_file: Path, demo_server: ServerProcess
) -> None:
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    args = [
        "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-video-capture={camera_file}", "--no-sandbox", "--disable-gpu",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
    ]  # fmt: skip
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), headless=True, args=args)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            page = context.new_page()
            console: list[str] = []
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
            page.goto(demo_server.url + "/")
            expect(page).to_have_title(re.compile("signstream"))
            expect(page.locator("#connection")).to_have_text("Not connected")

            # Keyboard: focus the button and press Enter.
            page.focus("#start")
            page.keyboard.press("Enter")
            expect(page.locator("#start")).to_have_text("Stop")
            page.wait_for_function(
                "Number(document.querySelector('#predictions').dataset.count) > 60"
                " && /^\\d+$/.test(document.querySelector('#latency').textContent)",
                timeout=60_000,
            )
            expect(page.locator("#connection")).to_have_text("Ready")
            expect(page.locator("#error")).to_be_hidden()
            expect(page.locator("#top li")).to_have_count(3)
            assert page.locator("#label").inner_text() in LABELS
            page.wait_for_function(
                "document.querySelector('#transcript').textContent !== 'Nothing yet'", timeout=30_000
            )
            count = int(page.locator("#predictions").inner_text())
            latency = int(page.locator("#latency").inner_text())
            fps = int(page.locator("#fps").inner_text())
            page.screenshot(path=str(ARTIFACTS / "demo_page.png"))
            print(f"predictions={count} latency_ms={latency} fps={fps} label={page.locator('#label').inner_text()}"
                  f" transcript={page.locator('#transcript').inner_text()!r}")  # fmt: skip
            assert 0 < latency < 5000 and fps > 5
            assert httpx.get(f"{demo_server.url}/healthz").json()["clients"] == 1

            # A second page while the only slot is taken: the person is told the server is full.
            other = context.new_page()
            other.goto(demo_server.url + "/")
            other.click("#start")
            expect(other.locator("#error")).to_contain_text("capacity", timeout=20_000)
            expect(other.locator("#connection")).to_have_text("Refused")
            expect(other.locator("#start")).to_have_text("Start camera")
            other.screenshot(path=str(ARTIFACTS / "demo_page_capacity.png"))

            # Stop: the camera and the connection are released.
            page.keyboard.press("Enter")
            expect(page.locator("#start")).to_have_text("Start camera")
            expect(page.locator("#connection")).to_have_text("Not connected")
            assert not [line for line in console if line.startswith("pageerror")], console
        finally:
            browser.close()
