import base64
import subprocess
import sys
import time
from collections.abc import Callable
from typing import cast

import cv2
import numpy as np
import pytest

from harness.servers import ROOT
from service.arrays import ImageBGR
from service.frames import FrameError, check_image, decode_image, payload_bytes
from tests.conftest import clip_jpegs
from tests.fixture_model import CLIPS

LIMIT = 2_000_000


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    return clip_jpegs(CLIPS / "book" / "handspeak.mp4")[10]


def test_base64_data_url_and_binary_give_the_same_image(jpeg: bytes) -> None:
    text = base64.b64encode(jpeg).decode()
    images = [
        decode_image(payload_bytes(p, LIMIT))
        for p in ({"image": text}, {"image": "data:image/jpeg;base64," + text}, {"image": jpeg})
    ]
    assert images[0].shape == (480, 640, 3)
    assert all(np.array_equal(images[0], other) for other in images[1:])


def test_png_is_accepted_and_decoded_as_bgr(jpeg: bytes) -> None:
    image = decode_image(jpeg)
    ok, png = cv2.imencode(".png", image)
    assert ok
    assert np.array_equal(
        decode_image(payload_bytes({"image": base64.b64encode(png.tobytes()).decode()}, LIMIT)), image
    )


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ("just a string", "bad_payload"), ({"img": "x"}, "bad_payload"), ({"image": 42}, "bad_payload"),
        ({"image": ["a"]}, "bad_payload"), ({"image": "%%%not base64%%%"}, "bad_base64"),
        ({"image": ""}, "empty_frame"), ({"image": b""}, "empty_frame"), ({"image": "data:image/jpeg"}, "bad_base64"),
        ({"image": "A" * (LIMIT * 2)}, "frame_too_large"),
    ],
)  # fmt: skip
def test_bad_payloads_get_codes(payload: object, code: str) -> None:
    with pytest.raises(FrameError) as info:
        payload_bytes(payload, LIMIT)
    assert info.value.code == code


def test_garbage_and_truncated_images_get_codes(jpeg: bytes) -> None:
    for data in (b"hello world", b"\x89PNG\r\n\x1a\n" + b"\0" * 30, jpeg[: len(jpeg) // 4], b"\xff\xd8\xff"):
        with pytest.raises(FrameError) as info:
            decode_image(data)
        assert info.value.code == "undecodable_image", data[:8]


def test_huge_declared_dimensions_are_refused_before_decoding() -> None:
    header = b"\x89PNG\r\n\x1a\n" + b"\0\0\0\rIHDR" + (60000).to_bytes(4, "big") + (60000).to_bytes(4, "big")
    with pytest.raises(FrameError) as info:
        decode_image(header + b"\0" * 100)
    assert info.value.code == "image_too_large"


def _tiny_jpeg_declaring(width: int, height: int) -> bytes:
    jpeg = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    sof = jpeg.index(b"\xff\xc0")
    return jpeg[: sof + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + jpeg[sof + 9 :]


def test_a_small_decoy_header_cannot_smuggle_a_huge_image_past_the_pixel_limit() -> None:
    """Found by fuzzing: libjpeg treats RST0 as a marker without a length, a naive header walk read a
    length there and found a decoy 16x16 frame header, while libjpeg decoded 20000x20000 (1.2 GB)."""
    jpeg = _tiny_jpeg_declaring(20000, 20000)
    decoy = b"\xff\xc0\x00\x11\x08\x00\x10\x00\x10"
    comment = b"\xff\xfe" + (65000).to_bytes(2, "big") + bytes(64998)
    pad = bytes(65538 - (4 + len(comment) + 4))
    second = b"\xff\xfe" + (1000).to_bytes(2, "big") + pad + decoy + bytes(998 - len(pad) - len(decoy))
    for evil in (
        jpeg[:2] + b"\xff\xd0" + comment + second + jpeg[2:],
        jpeg[:2] + b"\xff" + comment + second + jpeg[2:],
    ):
        with pytest.raises(FrameError) as error:
            decode_image(evil)
        assert error.value.code == "image_too_large"


def test_opencv_refuses_what_the_header_check_misses() -> None:
    """The second line of defence: OpenCV's own limit, set by the service before cv2 is imported. Run
    in a fresh interpreter that imports the service first, as the server does."""
    code = (
        "import service.frames, cv2, numpy as np;"
        "big = cv2.imencode('.png', np.zeros((4100, 4100, 3), np.uint8))[1].tobytes();"
        "cv2.imdecode(np.frombuffer(big, np.uint8), cv2.IMREAD_COLOR)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode != 0 and "CV_IO_MAX_IMAGE_PIXELS" in result.stderr


def _outcome(function: Callable[[bytes], object], data: bytes) -> str:
    try:
        function(data)
    except FrameError as error:
        return error.code
    return "ok"


def _corrupted(frames: list[bytes], cases: int) -> list[bytes]:
    """Real frames cut short, with bytes overwritten, with random bytes after a real header, or with a
    stretch cut out of the middle (the damage a broken client or network does)."""
    rng = np.random.default_rng(20261202)
    out = []
    for k in range(cases):
        frame = bytearray(frames[k % len(frames)])
        kind = k % 4
        if kind == 0:
            out.append(bytes(frame[: rng.integers(2, len(frame))]))
        elif kind == 1:
            for _ in range(rng.integers(1, 20)):
                frame[rng.integers(0, len(frame))] = rng.integers(0, 256)
            out.append(bytes(frame))
        elif kind == 2:
            noise = rng.integers(0, 256, rng.integers(1, 30000), dtype=np.uint8).tobytes()
            out.append(bytes(frame[: rng.integers(2, 700)]) + noise)
        else:
            start = rng.integers(0, len(frame))
            out.append(bytes(frame[:start] + frame[rng.integers(start, len(frame)) :]))
    return out


def test_checking_a_frame_gives_the_answer_decoding_it_would() -> None:
    """Frames the stream does not sample are only checked (`check_image`), sampled ones decoded: the same
    broken frame must get the same answer either way (the answer may not depend on timing)."""
    frames = [jpeg for clip in sorted(CLIPS.glob("*/*.mp4"))[::15] for jpeg in clip_jpegs(clip)[5:7]]
    rng = np.random.default_rng(7)
    tiny = [  # 1-20 pixels a side: found by the live fuzzer, a 7x7 PNG that OpenCV cannot decode at 1/8
        cv2.imencode(ext, rng.integers(0, 256, (h, w, 3), dtype=np.uint8))[1].tobytes()
        for ext in (".png", ".jpg") for h in range(1, 21, 3) for w in range(1, 21, 4)
    ]  # fmt: skip
    pngs = [
        cv2.imencode(".png", cast(ImageBGR, cv2.imdecode(np.frombuffer(f, np.uint8), cv2.IMREAD_COLOR)))[1].tobytes()
        for f in frames[:4]
    ]
    specials = [b"\x89PNG\r\n\x1a\n" + b"\0" * 30, _tiny_jpeg_declaring(20000, 20000)]
    cases = _corrupted(frames, 1200) + _corrupted(pngs + tiny, 400) + frames + tiny + specials
    outcomes = [(_outcome(decode_image, data), _outcome(check_image, data)) for data in cases]
    disagree = [(i, full, checked) for i, (full, checked) in enumerate(outcomes) if full != checked]
    assert not disagree, disagree[:10]
    failed = sum(full != "ok" for full, _ in outcomes)
    assert 0.3 < failed / len(cases) < 0.7, failed  # both kinds of answer are well represented


def test_checking_a_frame_costs_at_most_half_of_decoding_it() -> None:
    """The point of `check_image` (measured 0.26-0.35x on 640x480 q80 frames of real clips, quiet machine;
    bound 0.5 for noise). Interleaved rounds, fastest of each, so machine noise hits both alike."""
    frames = clip_jpegs(CLIPS / "hello" / "aslflashcards.mp4")[:20]
    best = {"decode": float("inf"), "check": float("inf")}
    for _ in range(10):
        for name, function in (("decode", decode_image), ("check", check_image)):
            start = time.perf_counter()
            for frame in frames:
                function(frame)
            best[name] = min(best[name], time.perf_counter() - start)
    assert best["check"] < best["decode"] / 2, best
