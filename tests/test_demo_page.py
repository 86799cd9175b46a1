"""The demo page at `/` in a real headless Chromium, its camera fed from a real clip, against a real server.

Chromium is Debian's, installed by the project's own `.ci/install-browser` when missing (a failed
install fails this test); Playwright only drives it (`playwright install` is never used).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import pytest

from harness.servers import ROOT, ServerProcess, free_port, start_server
from service.clips import iter_clip_frames
from tests.fixture_model import CLIPS

pytestmark = pytest.mark.slow  # deselected by the fast subset: pytest -m 'not slow'

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


def browser_args(camera_file: Path) -> list[str]:
    """Chromium with a fake camera that plays the clip, and no permission prompt."""
    return [
        "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-video-capture={camera_file}", "--no-sandbox", "--disable-gpu",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
    ]  # fmt: skip


def wait_until_no_client(server: ServerProcess) -> None:
    """MAX_CLIENTS=1: the previous test's page must be gone before the next one connects."""
    deadline = time.monotonic() + 20
    while httpx.get(f"{server.url}/healthz").json()["clients"] and time.monotonic() < deadline:
        time.sleep(0.1)


def test_demo_page_streams_the_camera_and_shows_predictions(
    chromium: Path, camera_file: Path, demo_server: ServerProcess
) -> None:
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    wait_until_no_client(demo_server)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), headless=True, args=browser_args(camera_file))
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

            # Stop: the camera and the connection are released, and the live result is cleared (the
            # recognised signs stay, as a record of what was signed).
            transcript = page.locator("#transcript").inner_text()
            page.keyboard.press("Enter")
            expect(page.locator("#start")).to_have_text("Start camera")
            expect(page.locator("#connection")).to_have_text("Not connected")
            expect(page.locator("#label")).to_have_text("–")
            expect(page.locator("#score")).to_have_text("0%")
            expect(page.locator("#top li")).to_have_count(0)
            assert page.locator("#confidence").get_attribute("aria-valuenow") == "0"
            assert page.locator("#transcript").inner_text() == transcript
            page.wait_for_timeout(500)  # no late prediction brings a label back
            expect(page.locator("#label")).to_have_text("–")
            assert not [line for line in console if line.startswith("pageerror")], console
        finally:
            browser.close()


def test_an_unreachable_server_is_named_while_the_page_retries(
    chromium: Path, camera_file: Path, demo_server: ServerProcess
) -> None:
    from playwright.sync_api import expect, sync_playwright

    nobody = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), headless=True, args=browser_args(camera_file))
        try:
            page = browser.new_page()
            page.goto(f"{demo_server.url}/?server={nobody}")
            page.click("#start")
            expect(page.locator("#error")).to_contain_text(f"Cannot reach the server at {nobody}", timeout=20_000)
            expect(page.locator("#error")).to_contain_text("Retrying")
            expect(page.locator("#connection")).to_have_text("Unreachable")
            # Without ?server=, the page's own origin is the server it names.
            page.goto(f"{demo_server.url}/")
            assert "http" not in page.locator("#error").inner_text()
        finally:
            browser.close()


def test_on_a_phone_the_result_is_visible_without_scrolling(
    chromium: Path, camera_file: Path, demo_server: ServerProcess
) -> None:
    """375 x 667 (a small phone): the video keeps its 4:3 box (the HTML height=480 made it 480 px tall, the
    image black-barred inside) and the label and its confidence are above the fold."""
    from playwright.sync_api import expect, sync_playwright

    wait_until_no_client(demo_server)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), headless=True, args=browser_args(camera_file))
        try:
            context = browser.new_context(viewport={"width": 375, "height": 667}, is_mobile=True, has_touch=True)
            page = context.new_page()
            page.goto(demo_server.url + "/")
            page.click("#start")
            expect(page.locator("#connection")).to_have_text("Ready", timeout=30_000)
            page.wait_for_function("document.querySelector('#label').textContent !== '–'", timeout=60_000)
            layout = page.evaluate(
                """() => {
                    const box = (id) => document.getElementById(id).getBoundingClientRect().toJSON();
                    return {scrollY: window.scrollY, innerWidth: window.innerWidth, innerHeight: window.innerHeight,
                            scrollWidth: document.documentElement.scrollWidth,
                            video: box("video"), label: box("label"), confidence: box("confidence"),
                            score: box("score"), start: box("start")};
                }"""
            )
            page.screenshot(path=str(ARTIFACTS / "demo_page_phone.png"))
            print(layout)
            assert layout["scrollY"] == 0 and layout["scrollWidth"] <= layout["innerWidth"]
            video = layout["video"]
            assert video["height"] == pytest.approx(video["width"] * 3 / 4, abs=2), video
            for name in ("start", "label", "confidence", "score"):
                rect = layout[name]
                assert rect["top"] >= 0 and rect["bottom"] <= layout["innerHeight"], (name, rect, layout)
            page.click("#start")  # Stop
            expect(page.locator("#connection")).to_have_text("Not connected")
        finally:
            browser.close()
