"""Hand and pose landmarks per frame with ONNX Runtime: MediaPipe's hand-tracking graph, re-done in numpy.

Models (converted by convert/mediapipe_models.py from the mediapipe 0.10.14 wheel, Apache-2.0):
palm_detection_full.onnx, hand_landmark_full.onnx, pose_landmark_full.onnx in model/landmarks/.
Serving needs only onnxruntime, numpy and OpenCV: no mediapipe, no TensorFlow.

Per stream, `await HandPoseTracker.process(frame_bgr, steps)` does what MediaPipe Hands does in video mode:
  * palm detection (192x192 letterbox, 2016 SSD anchors, weighted NMS) -> rotated hand ROI
    (wrist -> middle-finger MCP to 90 degrees, x2.6, shift_y -0.5, square long side);
  * hand landmarks on the ROI warped to 224x224 -> 21 landmarks projected back to the image,
    presence and handedness; the next frame's ROI comes from these landmarks, so the palm detector
    runs only while fewer than `max_hands` hands are tracked (and then at most every
    `detect_every` frames once at least one hand is tracked);
  * pose landmarks on a fixed 256x256 region (no pose detector: the ONNX conversion of pose_detection
    fails): by default the frame in the top half of a square centred on its bottom edge (pose_roi),
    as the signer's upper body fills these frames.
It returns a fixed-size float32 vector (FEATURE_SIZE values, layout.py), in image-normalised
coordinates; features.py turns a window of them into signer-normalised features. Every model call
goes through `steps.run` (palm / hand / pose sessions), so the engine batches them across streams.

Handedness follows MediaPipe's convention for a NON-mirrored camera image: the model's "Left"
score belongs to the signer's right hand. Slot 0 holds the signer's right hand, slot 1 the left.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from service.arrays import FloatArray, ImageBGR
from service.onnx_runtime import batch_run, create_session
from service.recognizer import DirectSteps, Session, Steps, run_now
from service.recognizers.landmarks.layout import (
    ASPECT,
    FEATURE_SIZE,
    HAND_BLOCK,
    NUM_HAND_LANDMARKS,
    POSE_BLOCK,
    POSE_OFFSET,
    POSE_POINTS,
    POSE_PRESENCE,
)

MODEL_DIR = Path(__file__).resolve().parents[3] / "model" / "landmarks"  # the repository's model/landmarks
PALM_FILE = "palm_detection_full.onnx"
HAND_FILE = "hand_landmark_full.onnx"
POSE_FILE = "pose_landmark_full.onnx"
# The same graphs with a symbolic batch (convert/mediapipe_models.py --dynamic; the outputs used are
# identical to the batch-1 exports), so the engine can batch them across streams. The wheel's lite hand
# model costs half as much and scored the same in grouped CV, but found fewer hands on the test signers'
# clips and answered 9 of their 24 clips where the full one answers 15 (model/MODEL_CARD.md).
PALM_DYNAMIC = "palm_detection_full_dyn.onnx"
HAND_DYNAMIC = "hand_landmark_full_dyn.onnx"
POSE_DYNAMIC = "pose_landmark_full_dyn.onnx"

PALM_SIZE = 192
HAND_SIZE = 224
POSE_SIZE = 256

# Geometry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rect:
    """A rotated rectangle in image pixels (MediaPipe's NormalizedRect, un-normalised)."""

    cx: float
    cy: float
    width: float
    height: float
    rotation: float  # radians, clockwise in image coordinates (y down), as in MediaPipe

    def transformed(self, scale: float, shift_x: float, shift_y: float, square_long: bool) -> Rect:
        """MediaPipe's RectTransformationCalculator, in pixels."""
        cos, sin = math.cos(self.rotation), math.sin(self.rotation)
        cx = self.cx + self.width * shift_x * cos - self.height * shift_y * sin
        cy = self.cy + self.width * shift_x * sin + self.height * shift_y * cos
        w, h = self.width, self.height
        if square_long:
            w = h = max(w, h)
        return Rect(cx, cy, w * scale, h * scale, self.rotation)

    def crop_to_image(self, side: int) -> npt.NDArray[np.float64]:
        """2x3 affine matrix mapping crop pixels (side x side) to image pixels."""
        cos, sin = math.cos(self.rotation), math.sin(self.rotation)
        sx, sy = self.width / side, self.height / side
        # image = centre + R @ diag(sx, sy) @ (crop - side/2)
        a = np.array([[cos * sx, -sin * sy], [sin * sx, cos * sy]], dtype=np.float64)
        t = np.array([self.cx, self.cy]) - a @ np.array([side / 2.0, side / 2.0])
        return np.hstack([a, t[:, None]]).astype(np.float64)

    def bounds(self) -> tuple[float, float, float, float]:
        """Axis-aligned bounds (x0, y0, x1, y1) of the rotated rectangle."""
        cos, sin = abs(math.cos(self.rotation)), abs(math.sin(self.rotation))
        hw = (self.width * cos + self.height * sin) / 2.0
        hh = (self.width * sin + self.height * cos) / 2.0
        return self.cx - hw, self.cy - hh, self.cx + hw, self.cy + hh


def normalize_radians(angle: float) -> float:
    return angle - 2.0 * math.pi * math.floor((angle + math.pi) / (2.0 * math.pi))


def upright_rotation(wrist_x: float, wrist_y: float, middle_x: float, middle_y: float) -> float:
    """MediaPipe's hand ROI rotation: the angle that turns the wrist -> middle-finger direction upright."""
    return normalize_radians(math.pi / 2 - math.atan2(-(middle_y - wrist_y), middle_x - wrist_x))


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def letterbox_matrix(width: int, height: int, side: int) -> tuple[npt.NDArray[np.float64], float, float, float]:
    """Affine image -> letterboxed square (aspect kept, centred, zero padding); scale and offsets."""
    scale = side / max(width, height)
    off_x = (side - width * scale) / 2.0
    off_y = (side - height * scale) / 2.0
    matrix = np.array([[scale, 0.0, off_x], [0.0, scale, off_y]], dtype=np.float64)
    return matrix, scale, off_x, off_y


def to_input(image_bgr: ImageBGR) -> FloatArray:
    """BGR uint8 crop -> RGB float32 [0, 1] NHWC batch of one."""
    rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
    return (rgb.astype(np.float32) * np.float32(1.0 / 255.0))[None]


# --------------------------------------------------------------------------------------------
# Palm detection: anchors, decoding, weighted NMS
# --------------------------------------------------------------------------------------------


def roi_input(frame: ImageBGR, matrix: npt.NDArray[np.float64], side: int, border: int) -> FloatArray:
    """The side x side crop of a rotated ROI (`matrix` maps crop pixels to image pixels), as model input."""
    crop = cv2.warpAffine(
        frame,
        matrix,
        (side, side),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=border,
        borderValue=(0, 0, 0),
    )
    return to_input(np.asarray(crop, np.uint8))


def palm_anchors(
    input_size: int = PALM_SIZE,
    strides: tuple[int, ...] = (8, 16, 16, 16),
    min_scale: float = 0.1484375,
    max_scale: float = 0.75,
    anchor_offset: float = 0.5,
) -> FloatArray:
    """MediaPipe SsdAnchorsCalculator with palm_detection_full's options: (2016, 2) centres.

    fixed_anchor_size is set, so every anchor is 1x1 and only the centres matter; each layer has
    aspect ratio 1.0 plus the interpolated scale (2 anchors), layers with the same stride share a grid.
    """
    del min_scale, max_scale  # the scales only size the anchors, and fixed_anchor_size discards them
    centres: list[tuple[float, float]] = []
    layer = 0
    while layer < len(strides):
        same = 0
        while layer + same < len(strides) and strides[layer + same] == strides[layer]:
            same += 1
        per_cell = 2 * same
        grid = math.ceil(input_size / strides[layer])
        for y in range(grid):
            for x in range(grid):
                centre = ((x + anchor_offset) / grid, (y + anchor_offset) / grid)
                centres.extend([centre] * per_cell)
        layer += same
    return np.asarray(centres, dtype=np.float32)


ANCHORS = palm_anchors()  # the same for every frame and stream


@dataclass(frozen=True)
class PalmDetection:
    """In letterbox-normalised coordinates: box (xmin, ymin, xmax, ymax), 7 keypoints (7, 2)."""

    score: float
    box: tuple[float, float, float, float]
    keypoints: FloatArray


def decode_palms(
    raw_boxes: FloatArray,
    raw_scores: FloatArray,
    anchors: FloatArray,
    min_score: float,
    scale: float = float(PALM_SIZE),
) -> list[PalmDetection]:
    """TensorsToDetectionsCalculator (sigmoid scores, clipping 100) + weighted NMS (IoU 0.3)."""
    logits = np.clip(raw_scores.reshape(-1).astype(np.float64), -100.0, 100.0)
    scores = 1.0 / (1.0 + np.exp(-logits))
    keep = np.nonzero(scores >= min_score)[0]
    if keep.size == 0:
        return []
    raw = raw_boxes.reshape(-1, 18)[keep].astype(np.float64)
    anc = anchors[keep].astype(np.float64)
    cx = raw[:, 0] / scale + anc[:, 0]
    cy = raw[:, 1] / scale + anc[:, 1]
    w = raw[:, 2] / scale
    h = raw[:, 3] / scale
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    kps = raw[:, 4:].reshape(-1, 7, 2) / scale + anc[:, None, :]
    return weighted_nms(boxes, kps, scores[keep], threshold=0.3)


def weighted_nms(
    boxes: npt.NDArray[np.float64],
    keypoints: npt.NDArray[np.float64],
    scores: npt.NDArray[np.float64],
    threshold: float,
) -> list[PalmDetection]:
    order = [int(i) for i in np.argsort(-scores, kind="stable")]
    out: list[PalmDetection] = []
    while order:
        top = order[0]
        top_box = (float(boxes[top, 0]), float(boxes[top, 1]), float(boxes[top, 2]), float(boxes[top, 3]))
        members: list[int] = []
        rest: list[int] = []
        for idx in order:
            b = (float(boxes[idx, 0]), float(boxes[idx, 1]), float(boxes[idx, 2]), float(boxes[idx, 3]))
            (members if iou(top_box, b) > threshold else rest).append(int(idx))
        weights = scores[members][:, None]
        total = float(weights.sum())
        box = (boxes[members] * weights).sum(axis=0) / total
        kps = (keypoints[members] * weights[:, :, None]).sum(axis=0) / total
        out.append(
            PalmDetection(
                float(scores[top]), (float(box[0]), float(box[1]), float(box[2]), float(box[3])), kps.astype(np.float32)
            )
        )
        order = rest
    return out


def palm_to_rect(det: PalmDetection, scale: float, off_x: float, off_y: float) -> Rect:
    """Detection (letterbox-normalised) -> hand ROI in image pixels (DetectionsToRects + RectTransformation)."""

    def px(x: float, y: float) -> tuple[float, float]:
        return (x * PALM_SIZE - off_x) / scale, (y * PALM_SIZE - off_y) / scale

    x0, y0 = px(det.box[0], det.box[1])
    x1, y1 = px(det.box[2], det.box[3])
    wx, wy = px(float(det.keypoints[0, 0]), float(det.keypoints[0, 1]))
    mx, my = px(float(det.keypoints[2, 0]), float(det.keypoints[2, 1]))
    rotation = upright_rotation(wx, wy, mx, my)
    rect = Rect((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0, rotation)
    return rect.transformed(scale=2.6, shift_x=0.0, shift_y=-0.5, square_long=True)


# Landmarks MediaPipe uses for the next-frame hand ROI: wrist, thumb CMC/MCP/IP, and MCP+PIP of each finger.
_ROI_LANDMARKS = (0, 1, 2, 3, 5, 6, 9, 10, 13, 14, 17, 18)


def landmarks_to_rect(points: FloatArray) -> Rect:
    """HandLandmarksToRectCalculator + RectTransformation(scale 2.0, shift_y -0.1, square long), in pixels."""
    p = points[list(_ROI_LANDMARKS), :2].astype(np.float64)
    x0, y0 = p[0]
    mid_x = ((points[5, 0] + points[13, 0]) / 2.0 + points[9, 0]) / 2.0
    mid_y = ((points[5, 1] + points[13, 1]) / 2.0 + points[9, 1]) / 2.0
    rotation = upright_rotation(float(x0), float(y0), float(mid_x), float(mid_y))
    centre = (p.min(axis=0) + p.max(axis=0)) / 2.0
    reverse = -rotation
    rot = np.array([[math.cos(reverse), -math.sin(reverse)], [math.sin(reverse), math.cos(reverse)]])
    projected = (p - centre) @ rot.T
    lo, hi = projected.min(axis=0), projected.max(axis=0)
    pc = (lo + hi) / 2.0
    forward = np.array([[math.cos(rotation), -math.sin(rotation)], [math.sin(rotation), math.cos(rotation)]])
    c = forward @ pc + centre
    size = hi - lo
    rect = Rect(float(c[0]), float(c[1]), float(size[0]), float(size[1]), rotation)
    return rect.transformed(scale=2.0, shift_x=0.0, shift_y=-0.1, square_long=True)


# MediaPipe pose indices of each arm's palm points: (wrist, pinky, index), the signer's left arm first.
POSE_PALMS = ((15, 17, 19), (16, 18, 20))
L_SHOULDER, R_SHOULDER = 11, 12
POSE_PALM_VISIBILITY = 0.5


def pose_palm_rects(pose: FloatArray, width: int, height: int) -> list[Rect]:
    """Hand ROIs from the pose model's palm points, as MediaPipe Holistic makes them
    (HandDetectionsFromPoseToRectsCalculator, then scale 2.7, shift_y -0.1, square long), for each arm
    whose wrist is visible, inside the frame and raised: less than one shoulder width below the
    shoulders (a hand at rest is not looked for, so a window of hands at rest stays a window of no sign)."""
    out = []
    shoulder_y = (float(pose[L_SHOULDER, 1]) + float(pose[R_SHOULDER, 1])) / 2.0
    shoulder_width = math.hypot(*(pose[L_SHOULDER, :2] - pose[R_SHOULDER, :2]).tolist())
    for wrist, pinky, index in POSE_PALMS:
        wx, wy, _, visibility = (float(v) for v in pose[wrist])
        if visibility < POSE_PALM_VISIBILITY or not (0.0 <= wx < width and 0.0 <= wy < height):
            continue
        if wy > shoulder_y + shoulder_width:
            continue
        mx = (2.0 * float(pose[index, 0]) + float(pose[pinky, 0])) / 3.0
        my = (2.0 * float(pose[index, 1]) + float(pose[pinky, 1])) / 3.0
        size = 2.0 * math.hypot(mx - wx, my - wy)
        if size < 1.0:
            continue
        rotation = upright_rotation(wx, wy, mx, my)
        out.append(Rect(mx, my, size, size, rotation).transformed(2.7, 0.0, -0.1, square_long=True))
    return out


POSE_ROIS = ("upper_body", "frame")


def pose_roi(width: int, height: int, kind: str = "upper_body") -> Rect:
    """The pose model's input region (there is no pose detector: its ONNX conversion fails).

    "upper_body" (default): a square of side max(2H, W) centred at (W/2, H), so the frame fills its
    top half, roughly where MediaPipe's own ROI (centred on the hips) puts an upper body that the
    frame cuts at the waist. On 8 shared clips this gave pose presence 0.98-1.00, against 0.18-0.89
    for "frame" (the whole frame letterboxed), which misplaces the shoulders when an arm is raised.
    """
    if kind == "frame":
        side = float(max(width, height))
        return Rect(width / 2.0, height / 2.0, side, side, 0.0)
    side = float(max(2 * height, width))
    return Rect(width / 2.0, float(height), side, side, 0.0)


# --------------------------------------------------------------------------------------------
# Models and tracker
# --------------------------------------------------------------------------------------------


# The front end's ONNX sessions, by the names the engine batches them under, and their outputs.
PALM, HAND, POSE = "palm", "hand", "pose"
# A hand row: 21 x (x, y, z), presence, handedness. A pose row: POSE_OUTPUTS x (x, y, z, visibility
# logit, presence logit), then presence; the first 33 are MediaPipe's pose landmarks.
POSE_OUTPUTS = 39


@dataclass(frozen=True)
class FrontEnd:
    """Which front-end models, and how often pose runs: what a sequence model was trained on, so
    sequence.json records it ("front_end") and serving builds exactly that front end. The defaults are
    what `python -m training.landmark_features` extracts, and so what the shipped model is trained on."""

    palm: str = PALM_DYNAMIC
    hand: str = HAND_DYNAMIC
    pose: str = POSE_DYNAMIC
    pose_every: int = 1  # k > 1: the pose model runs on every k-th processed frame, the others reuse it
    detect_every: int = 5  # with one hand tracked, the palm detector looks for the other every k-th frame
    # A hand not tracked from the last frame is first looked for where the pose model puts its palm
    # (as MediaPipe Holistic does); the palm detector runs only where that finds nothing.
    hands_from_pose: bool = False

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> FrontEnd:
        """sequence.json's "front_end"; a model trained before it was recorded used the full models."""
        return cls(**values) if values is not None else LEGACY_FRONT_END

    def as_dict(self) -> dict[str, Any]:
        return {
            "palm": self.palm, "hand": self.hand, "pose": self.pose,
            "pose_every": self.pose_every, "detect_every": self.detect_every,
            "hands_from_pose": self.hands_from_pose,
        }  # fmt: skip

    @property
    def files(self) -> tuple[str, str, str]:
        return self.palm, self.hand, self.pose

    def tracker(self) -> HandPoseTracker:
        return HandPoseTracker(
            pose_every=self.pose_every, detect_every=self.detect_every, hands_from_pose=self.hands_from_pose
        )


LEGACY_FRONT_END = FrontEnd(PALM_FILE, HAND_FILE, POSE_FILE)


def front_end_sessions(
    model_dir: Path = MODEL_DIR, execution_provider: str = "cpu", threads: int = 1, front_end: FrontEnd = FrontEnd()
) -> dict[str, Session]:
    """palm / hand / pose, each as one batched run (outputs flattened into one row per item). Their
    batches take what is waiting without waiting for more: a sampled frame makes two to four calls in
    a row, and on CPU a batch costs the same per item as single calls (benchmarks/test_frontend.py),
    so a wait would only add latency; under load the queues fill while the inference thread is busy."""

    def session(name: str, outputs: tuple[int, ...]) -> Session:
        onnx = create_session(model_dir / name, execution_provider, intra_op_threads=threads)
        return Session(batch_run(onnx, outputs=outputs), max_wait_ms=0.0)

    return {
        PALM: session(front_end.palm, (0, 1)),
        HAND: session(front_end.hand, (0, 1, 2)),
        POSE: session(front_end.pose, (0, 1)),
    }


def offline_steps(model_dir: Path = MODEL_DIR, threads: int = 1, front_end: FrontEnd = FrontEnd()) -> DirectSteps:
    """The front-end sessions run at once in the caller's thread (training, conversion checks), on CPU."""
    return DirectSteps(front_end_sessions(model_dir, "cpu", threads, front_end))


@dataclass
class Hand:
    """One hand found in a frame: landmarks in image pixels (x, y, z scaled like x)."""

    landmarks: FloatArray
    presence: float
    handedness: float  # MediaPipe's raw score: > 0.5 = model's "Left" = signer's right hand (non-mirrored image)
    roi: Rect  # the ROI the landmarks were computed in
    from_detection: bool


@dataclass
class FrameResult:
    hands: list[Hand]
    pose: FloatArray | None  # (33, 4): x, y (pixels), z (pixel-scaled), visibility
    pose_presence: float
    features: FloatArray


@dataclass
class TrackerStats:
    frames: int = 0
    palm_calls: int = 0
    hand_calls: int = 0
    pose_calls: int = 0
    total_ms: float = 0.0  # wall time of `process`, model calls (and, when served, their batch waits) included
    extra: dict[str, float] = field(default_factory=dict)


def palm_input(frame: ImageBGR) -> tuple[FloatArray, float, float, float]:
    """The letterboxed 192x192 palm-detector input, and the letterbox's scale and offsets."""
    h, w = frame.shape[:2]
    matrix, scale, off_x, off_y = letterbox_matrix(w, h, PALM_SIZE)
    crop = cv2.warpAffine(
        frame, matrix, (PALM_SIZE, PALM_SIZE), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0),
    )  # fmt: skip
    return to_input(np.asarray(crop, np.uint8))[0], scale, off_x, off_y


Matrix = npt.NDArray[np.float64]  # 2x3: crop pixels -> image pixels
HandInput = tuple[FloatArray, Matrix]  # the model input, and where its pixels are in the frame
PoseInput = tuple[FloatArray, Matrix, Rect]


def hand_input(frame: ImageBGR, roi: Rect) -> HandInput:
    matrix = roi.crop_to_image(HAND_SIZE)
    return roi_input(frame, matrix, HAND_SIZE, cv2.BORDER_REPLICATE)[0], matrix


def pose_input(frame: ImageBGR, kind: str) -> PoseInput:
    h, w = frame.shape[:2]
    roi = pose_roi(w, h, kind)
    matrix = roi.crop_to_image(POSE_SIZE)
    return roi_input(frame, matrix, POSE_SIZE, cv2.BORDER_CONSTANT)[0], matrix, roi


def hand_from_row(row: FloatArray, matrix: npt.NDArray[np.float64], roi: Rect, from_detection: bool) -> Hand:
    """A hand-model output row -> the hand in image pixels."""
    raw = row[: NUM_HAND_LANDMARKS * 3].reshape(NUM_HAND_LANDMARKS, 3)
    xy = raw[:, :2].astype(np.float64) @ matrix[:, :2].T + matrix[:, 2]
    z = raw[:, 2:3].astype(np.float64) * (roi.width / HAND_SIZE)
    points = np.hstack([xy, z]).astype(np.float32)
    return Hand(points, float(row[-2]), float(row[-1]), roi, from_detection)


def pose_from_row(row: FloatArray, matrix: npt.NDArray[np.float64], roi: Rect) -> tuple[FloatArray, float]:
    """A pose-model output row -> 33 x (x, y pixels, z pixel-scaled, visibility), and the pose presence."""
    pts = row[: POSE_OUTPUTS * 5].reshape(POSE_OUTPUTS, 5)[:33].astype(np.float64)
    out = np.empty((33, 4), np.float32)
    out[:, :2] = pts[:, :2] @ matrix[:, :2].T + matrix[:, 2]
    out[:, 2] = pts[:, 2] * (roi.width / POSE_SIZE)
    out[:, 3] = 1.0 / (1.0 + np.exp(-np.clip(pts[:, 3], -50, 50)))
    return out, float(row[-1])


class HandPoseTracker:
    """Per-stream hand and pose tracking (one per stream). Its model calls go through `steps`: batched
    across streams by the engine when served, run at once offline (DirectSteps)."""

    def __init__(
        self,
        *,
        max_hands: int = 2,
        min_detection_score: float = 0.3,
        min_presence: float = 0.5,
        detect_every: int = 5,
        track: bool = True,
        run_pose: bool = True,
        pose_roi: str = "upper_body",
        pose_every: int = 1,
        hands_from_pose: bool = False,
    ) -> None:
        self.max_hands = max_hands
        self.min_detection_score = min_detection_score
        self.min_presence = min_presence
        self.detect_every = max(1, detect_every)
        self.track = track
        self.run_pose_model = run_pose
        if pose_roi not in POSE_ROIS:
            raise ValueError(f"pose_roi must be one of {POSE_ROIS}")
        self.pose_roi = pose_roi
        self.pose_every = max(1, pose_every)
        self.hands_from_pose = hands_from_pose and run_pose
        self.stats = TrackerStats()
        self._rois: list[Rect] = []
        self._since_detect = 0
        self._since_pose = 0
        self._last_pose: tuple[FloatArray, float] | None = None

    def reset(self) -> None:
        self._rois = []
        self._since_detect = 0
        self._since_pose = 0
        self._last_pose = None

    # -- model steps ---------------------------------------------------------------------------

    async def detect_palms(self, frame: ImageBGR, steps: Steps) -> list[Rect]:
        inputs, scale, off_x, off_y = await steps.cpu(palm_input, frame)
        row = await steps.run(PALM, inputs)
        self.stats.palm_calls += 1
        boxes, scores = row[: len(ANCHORS) * 18], row[len(ANCHORS) * 18 :]
        detections = await steps.cpu(decode_palms, boxes, scores, ANCHORS, self.min_detection_score)
        return [palm_to_rect(d, scale, off_x, off_y) for d in detections[: max(self.max_hands * 2, 2)]]

    async def hand_landmarks(self, frame: ImageBGR, roi: Rect, from_detection: bool, steps: Steps) -> Hand:
        inputs, matrix = await steps.cpu(hand_input, frame, roi)
        row = await steps.run(HAND, inputs)
        self.stats.hand_calls += 1
        return hand_from_row(row, matrix, roi, from_detection)

    # -- per frame -----------------------------------------------------------------------------

    async def process(self, frame: ImageBGR, steps: Steps) -> FrameResult:
        """One frame: the pose model and the hands tracked from the last frame are started together
        (their crops made in one CPU step), then the palm detector where a hand is missing."""
        start = time.perf_counter()
        rois = list(self._rois) if self.track else []
        want_pose = self.run_pose_model and (self._last_pose is None or self._since_pose + 1 >= self.pose_every)
        pose_in, tracked_in = await steps.cpu(self._tracked_inputs, frame, rois, want_pose)
        pose_call = steps.begin(POSE, pose_in[0]) if pose_in is not None else None
        tracked_calls = [steps.begin(HAND, crop) for crop, _ in tracked_in]
        hands: list[Hand] = []
        for roi, (_, matrix), call in zip(rois, tracked_in, tracked_calls, strict=True):
            hand = hand_from_row(await call, matrix, roi, False)
            self.stats.hand_calls += 1
            if hand.presence >= self.min_presence:
                hands.append(hand)
        pose_result: tuple[FloatArray, float] | None = None
        if self.hands_from_pose and len(hands) < self.max_hands:
            # Only here is the pose awaited before the palm detector starts (it needs this frame's pose).
            if pose_call is not None and pose_in is not None:
                pose_result = pose_from_row(await pose_call, pose_in[1], pose_in[2])
            latest = pose_result or self._last_pose
            if latest is not None:
                h, w = frame.shape[:2]
                for roi in pose_palm_rects(latest[0], w, h):
                    if len(hands) >= self.max_hands:
                        break
                    await self._add_hand(frame, roi, hands, steps)
        self._since_detect += 1
        need = len(hands) < self.max_hands
        if need and (not hands or self._since_detect >= self.detect_every or not self.track):
            self._since_detect = 0
            for roi in await self.detect_palms(frame, steps):
                if len(hands) >= self.max_hands:
                    break
                await self._add_hand(frame, roi, hands, steps)
        self._rois = [landmarks_to_rect(h.landmarks) for h in hands] if self.track else []
        pose: FloatArray | None = None
        pose_presence = 0.0
        if self.run_pose_model:
            if pose_result is None and pose_call is not None and pose_in is not None:
                pose_result = pose_from_row(await pose_call, pose_in[1], pose_in[2])
            if pose_result is not None:
                self._last_pose = pose_result
                self.stats.pose_calls += 1
                self._since_pose = 0
            else:
                self._since_pose += 1
            assert self._last_pose is not None
            pose, pose_presence = self._last_pose
        h, w = frame.shape[:2]
        features = frame_features(hands, pose, pose_presence, w, h)
        self.stats.frames += 1
        self.stats.total_ms += (time.perf_counter() - start) * 1000.0
        return FrameResult(hands, pose, pose_presence, features)

    async def _add_hand(self, frame: ImageBGR, roi: Rect, hands: list[Hand], steps: Steps) -> None:
        """Run the hand model in `roi` and keep the hand unless it is absent or one already found."""
        if any(iou(roi.bounds(), landmarks_to_rect(h.landmarks).bounds()) > 0.5 for h in hands):
            return
        hand = await self.hand_landmarks(frame, roi, True, steps)
        if hand.presence < self.min_presence:
            return
        new_bounds = landmarks_to_rect(hand.landmarks).bounds()
        if any(iou(new_bounds, landmarks_to_rect(h.landmarks).bounds()) > 0.5 for h in hands):
            return
        hands.append(hand)

    def _tracked_inputs(
        self, frame: ImageBGR, rois: list[Rect], want_pose: bool
    ) -> tuple[
        tuple[FloatArray, npt.NDArray[np.float64], Rect] | None, list[tuple[FloatArray, npt.NDArray[np.float64]]]
    ]:
        return (pose_input(frame, self.pose_roi) if want_pose else None), [hand_input(frame, roi) for roi in rois]

    def process_now(self, frame: ImageBGR, steps: DirectSteps) -> FrameResult:
        """`process` without an event loop, with offline steps: the same code serving runs."""
        return run_now(self.process(frame, steps))


def assign_slots(hands: list[Hand]) -> list[Hand | None]:
    """Slot 0 = signer's right hand (handedness > 0.5), slot 1 = left; a clash goes by the more confident."""
    slots: list[Hand | None] = [None, None]
    for hand in sorted(hands, key=lambda h: -abs(h.handedness - 0.5)):
        want = 0 if hand.handedness > 0.5 else 1
        if slots[want] is None:
            slots[want] = hand
        elif slots[1 - want] is None:
            slots[1 - want] = hand
    return slots


def frame_features(
    hands: list[Hand], pose: FloatArray | None, pose_presence: float, width: int, height: int
) -> FloatArray:
    out = np.zeros(FEATURE_SIZE, np.float32)
    scale = np.array([width, height, width], np.float32)
    for slot, hand in enumerate(assign_slots(hands)):
        if hand is None:
            continue
        base = slot * HAND_BLOCK
        out[base : base + 63] = (hand.landmarks / scale).reshape(-1)
        out[base + 63] = 1.0
    if pose is not None:
        pts = pose[list(POSE_POINTS)]
        block = np.concatenate([pts[:, :3] / scale, pts[:, 3:4]], axis=1)
        out[POSE_OFFSET : POSE_OFFSET + POSE_BLOCK] = block.reshape(-1)
        out[POSE_PRESENCE] = pose_presence
    out[ASPECT] = width / max(height, 1)
    return out
