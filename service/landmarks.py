"""Hand and pose landmarks per frame with ONNX Runtime: MediaPipe's hand-tracking graph, re-done in numpy.

Models (converted by convert/mediapipe_models.py from the mediapipe 0.10.14 wheel, Apache-2.0):
palm_detection_full.onnx, hand_landmark_full.onnx, pose_landmark_full.onnx in model/landmarks/.
Serving needs only onnxruntime, numpy and OpenCV: no mediapipe, no TensorFlow.

Per stream, `HandPoseTracker.process(frame_bgr)` does what MediaPipe Hands does in video mode:
  * palm detection (192x192 letterbox, 2016 SSD anchors, weighted NMS) -> rotated hand ROI
    (wrist -> middle-finger MCP to 90 degrees, x2.6, shift_y -0.5, square long side);
  * hand landmarks on the ROI warped to 224x224 -> 21 landmarks projected back to the image,
    presence and handedness; the next frame's ROI comes from these landmarks, so the palm detector
    runs only while fewer than `max_hands` hands are tracked (and then at most every
    `detect_every` frames once at least one hand is tracked);
  * pose landmarks on a fixed 256x256 region (no pose detector: the ONNX conversion of pose_detection
    fails): by default the frame in the top half of a square centred on its bottom edge (pose_roi),
    as the signer's upper body fills these frames.
It returns a fixed-size float32 vector (FEATURE_SIZE values, layout below), in image-normalised
coordinates; `normalise_features` turns a clip's vectors into signer-normalised features.

Handedness follows MediaPipe's convention for a NON-mirrored camera image: the model's "Left"
score belongs to the signer's right hand. Slot 0 holds the signer's right hand, slot 1 the left.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from service.settings import Settings

FloatArray = npt.NDArray[np.float32]
ImageBGR = npt.NDArray[np.uint8]

MODEL_DIR = Path(__file__).resolve().parents[1] / "model" / "landmarks"
PALM_FILE = "palm_detection_full.onnx"
HAND_FILE = "hand_landmark_full.onnx"
POSE_FILE = "pose_landmark_full.onnx"

PALM_SIZE = 192
HAND_SIZE = 224
POSE_SIZE = 256
NUM_HAND_LANDMARKS = 21

# Pose landmarks kept: MediaPipe pose 0-22, i.e. the face (nose, eyes, ears, mouth: where HELLO, DRINK,
# HAT, KISS, SCHOOL differ) and both arms down to the pose model's own hand points, which place a hand
# that the hand tracker lost. Index i of this block is MediaPipe pose landmark i.
POSE_NAMES: tuple[str, ...] = (
    "nose", "l_eye_inner", "l_eye", "l_eye_outer", "r_eye_inner", "r_eye", "r_eye_outer", "l_ear", "r_ear",
    "mouth_l", "mouth_r", "l_shoulder", "r_shoulder", "l_elbow", "r_elbow", "l_wrist", "r_wrist",
    "l_pinky", "r_pinky", "l_index", "r_index", "l_thumb", "r_thumb",
)  # fmt: skip
POSE_POINTS: tuple[int, ...] = tuple(range(len(POSE_NAMES)))
# The same points in a horizontally mirrored image (the signer's left and right swap).
POSE_MIRROR: tuple[int, ...] = (0, 4, 5, 6, 1, 2, 3, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15, 18, 17, 20, 19, 22, 21)

# Feature layout (all float32):
#   [0, 64)    slot 0 (signer's right hand): 21 x (x/W, y/H, z/W), then presence (0 or 1)
#   [64, 128)  slot 1 (signer's left hand): same
#   [128, 220) pose: 23 points (POSE_NAMES) x (x/W, y/H, z/W, visibility)
#   [220]      pose presence score
#   [221]      frame aspect W/H (to turn x/W, y/H back into square units)
HAND_BLOCK = NUM_HAND_LANDMARKS * 3 + 1
POSE_OFFSET = 2 * HAND_BLOCK
POSE_BLOCK = len(POSE_POINTS) * 4
POSE_PRESENCE = POSE_OFFSET + POSE_BLOCK
ASPECT = POSE_PRESENCE + 1
FEATURE_SIZE = ASPECT + 1


# --------------------------------------------------------------------------------------------
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
    rotation = normalize_radians(math.pi / 2 - math.atan2(-(my - wy), mx - wx))
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
    rotation = normalize_radians(math.pi / 2 - math.atan2(-(float(mid_y) - y0), float(mid_x) - x0))
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


class LandmarkModels:
    """The three ONNX sessions; share one instance between streams."""

    def __init__(self, model_dir: Path | str = MODEL_DIR, threads: int = 1, providers: list[str] | None = None) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # see engine.create_session
        directory = Path(model_dir)
        providers = providers or ["CPUExecutionProvider"]
        self.palm = ort.InferenceSession(str(directory / PALM_FILE), sess_options=options, providers=providers)
        self.hand = ort.InferenceSession(str(directory / HAND_FILE), sess_options=options, providers=providers)
        self.pose = ort.InferenceSession(str(directory / POSE_FILE), sess_options=options, providers=providers)
        self.anchors = palm_anchors()

    def run_palm(self, batch: FloatArray) -> tuple[FloatArray, FloatArray]:
        boxes, scores = self.palm.run(None, {self.palm.get_inputs()[0].name: batch})
        return np.asarray(boxes, np.float32), np.asarray(scores, np.float32)

    def run_hand(self, batch: FloatArray) -> tuple[FloatArray, float, float]:
        landmarks, presence, handedness, _world = self.hand.run(None, {self.hand.get_inputs()[0].name: batch})
        return (
            np.asarray(landmarks, np.float32).reshape(NUM_HAND_LANDMARKS, 3),
            float(np.asarray(presence).reshape(-1)[0]),
            float(np.asarray(handedness).reshape(-1)[0]),
        )

    def run_pose(self, batch: FloatArray) -> tuple[FloatArray, float]:
        outputs = self.pose.run(None, {self.pose.get_inputs()[0].name: batch})
        return np.asarray(outputs[0], np.float32).reshape(39, 5), float(np.asarray(outputs[1]).reshape(-1)[0])


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
    palm_ms: float = 0.0
    hand_ms: float = 0.0
    pose_ms: float = 0.0
    total_ms: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


class HandPoseTracker:
    """Per-stream hand and pose tracking (create one per stream; models can be shared)."""

    def __init__(
        self,
        models: LandmarkModels,
        *,
        max_hands: int = 2,
        min_detection_score: float = 0.3,
        min_presence: float = 0.5,
        detect_every: int = 5,
        track: bool = True,
        run_pose: bool = True,
        pose_roi: str = "upper_body",
    ) -> None:
        self.models = models
        self.max_hands = max_hands
        self.min_detection_score = min_detection_score
        self.min_presence = min_presence
        self.detect_every = max(1, detect_every)
        self.track = track
        self.run_pose_model = run_pose
        if pose_roi not in POSE_ROIS:
            raise ValueError(f"pose_roi must be one of {POSE_ROIS}")
        self.pose_roi = pose_roi
        self.stats = TrackerStats()
        self._rois: list[Rect] = []
        self._since_detect = 0

    def reset(self) -> None:
        self._rois = []
        self._since_detect = 0

    # -- model steps ---------------------------------------------------------------------------

    def detect_palms(self, frame: ImageBGR) -> list[Rect]:
        h, w = frame.shape[:2]
        matrix, scale, off_x, off_y = letterbox_matrix(w, h, PALM_SIZE)
        crop = cv2.warpAffine(
            frame,
            matrix,
            (PALM_SIZE, PALM_SIZE),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(0, 0, 0),
        )
        start = time.perf_counter()
        raw_boxes, raw_scores = self.models.run_palm(to_input(np.asarray(crop, np.uint8)))
        detections = decode_palms(raw_boxes, raw_scores, self.models.anchors, self.min_detection_score)
        self.stats.palm_calls += 1
        self.stats.palm_ms += (time.perf_counter() - start) * 1000.0
        return [palm_to_rect(d, scale, off_x, off_y) for d in detections[: max(self.max_hands * 2, 2)]]

    def hand_landmarks(self, frame: ImageBGR, roi: Rect, from_detection: bool) -> Hand:
        matrix = roi.crop_to_image(HAND_SIZE)
        start = time.perf_counter()
        raw, presence, handedness = self.models.run_hand(roi_input(frame, matrix, HAND_SIZE, cv2.BORDER_REPLICATE))
        self.stats.hand_calls += 1
        self.stats.hand_ms += (time.perf_counter() - start) * 1000.0
        xy = raw[:, :2].astype(np.float64) @ matrix[:, :2].T + matrix[:, 2]
        z = raw[:, 2:3].astype(np.float64) * (roi.width / HAND_SIZE)
        points = np.hstack([xy, z]).astype(np.float32)
        return Hand(points, presence, handedness, roi, from_detection)

    def pose_landmarks(self, frame: ImageBGR) -> tuple[FloatArray, float]:
        h, w = frame.shape[:2]
        roi = pose_roi(w, h, self.pose_roi)
        matrix = roi.crop_to_image(POSE_SIZE)
        start = time.perf_counter()
        raw, presence = self.models.run_pose(roi_input(frame, matrix, POSE_SIZE, cv2.BORDER_CONSTANT))
        self.stats.pose_calls += 1
        self.stats.pose_ms += (time.perf_counter() - start) * 1000.0
        pts = raw[:33].astype(np.float64)
        out = np.empty((33, 4), np.float32)
        out[:, :2] = pts[:, :2] @ matrix[:, :2].T + matrix[:, 2]
        out[:, 2] = pts[:, 2] * (roi.width / POSE_SIZE)
        out[:, 3] = 1.0 / (1.0 + np.exp(-np.clip(pts[:, 3], -50, 50)))
        return out, presence

    # -- per frame -----------------------------------------------------------------------------

    def process(self, frame: ImageBGR) -> FrameResult:
        start = time.perf_counter()
        hands: list[Hand] = []
        if self.track:
            for roi in self._rois:
                hand = self.hand_landmarks(frame, roi, from_detection=False)
                if hand.presence >= self.min_presence:
                    hands.append(hand)
        self._since_detect += 1
        need = len(hands) < self.max_hands
        if need and (not hands or self._since_detect >= self.detect_every or not self.track):
            self._since_detect = 0
            for roi in self.detect_palms(frame):
                if len(hands) >= self.max_hands:
                    break
                if any(iou(roi.bounds(), landmarks_to_rect(h.landmarks).bounds()) > 0.5 for h in hands):
                    continue
                hand = self.hand_landmarks(frame, roi, from_detection=True)
                if hand.presence < self.min_presence:
                    continue
                new_bounds = landmarks_to_rect(hand.landmarks).bounds()
                if any(iou(new_bounds, landmarks_to_rect(h.landmarks).bounds()) > 0.5 for h in hands):
                    continue
                hands.append(hand)
        self._rois = [landmarks_to_rect(h.landmarks) for h in hands] if self.track else []
        pose: FloatArray | None = None
        pose_presence = 0.0
        if self.run_pose_model:
            pose, pose_presence = self.pose_landmarks(frame)
        h, w = frame.shape[:2]
        features = frame_features(hands, pose, pose_presence, w, h)
        self.stats.frames += 1
        self.stats.total_ms += (time.perf_counter() - start) * 1000.0
        return FrameResult(hands, pose, pose_presence, features)


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


# --------------------------------------------------------------------------------------------
# Signer normalisation (pure)
# --------------------------------------------------------------------------------------------

# Hand landmark indices: finger chains from the wrist (thumb, index, middle, ring, little).
FINGERS: tuple[tuple[int, ...], ...] = (
    (0, 1, 2, 3, 4),
    (0, 5, 6, 7, 8),
    (0, 9, 10, 11, 12),
    (0, 13, 14, 15, 16),
    (0, 17, 18, 19, 20),
)
TIPS = (4, 8, 12, 16, 20)
TIP_PAIRS = tuple((a, b) for i, a in enumerate(TIPS) for b in TIPS[i + 1 :])
# Pose indices used below (MediaPipe numbering, see POSE_NAMES).
NOSE, L_EYE, R_EYE, L_EAR, R_EAR, MOUTH_L, MOUTH_R = 0, 2, 5, 7, 8, 9, 10
L_SHOULDER, R_SHOULDER, L_ELBOW, R_ELBOW, L_WRIST, R_WRIST = 11, 12, 13, 14, 15, 16
# Per hand slot (0 = dominant = signer's right after mirroring, 1 = the other): the pose's wrist and elbow.
SLOT_POSE_WRIST = (R_WRIST, L_WRIST)
SLOT_POSE_ELBOW = (R_ELBOW, L_ELBOW)
# wrist, shape, tips, flexion, flags, elbow, index tip to nose and to mouth, palm length and pose wrist depth
HAND_FEATURES = 2 + 40 + len(TIP_PAIRS) + 15 + 2 + 2 + 2 + 2 + 2
FRAME_FEATURES = 2 * HAND_FEATURES + 10 + 3
NORMALISED_SIZE = FRAME_FEATURES


@dataclass(frozen=True)
class BodyFrame:
    """One window's landmarks in body coordinates: square units, centred on the shoulder midpoint,
    divided by the shoulder width, mirrored so that slot 0 is the dominant hand."""

    hands: FloatArray  # (T, 2, 21, 3)
    present: npt.NDArray[np.bool_]  # (T, 2) the hand tracker found this hand
    pose: FloatArray  # (T, 23, 3)
    visibility: FloatArray  # (T, 23)
    depth: FloatArray  # (T, 23) the pose model's z relative to the shoulders' (negative = nearer the camera)
    mirrored: bool


def body_frame(frames_landmarks: npt.ArrayLike, mirror_left_dominant: bool = True) -> BodyFrame:
    """(T, FEATURE_SIZE) raw vectors of one window -> body coordinates (see BodyFrame).

    Scale and centre are medians over the frames where both shoulders are visible (fallbacks: the
    frame centre and a third of the frame height). When the left hand is present more often / moves
    more than the right (a left-dominant signer), x is mirrored and hands and pose sides swapped.
    """
    raw = np.asarray(frames_landmarks, dtype=np.float32)
    if raw.ndim != 2 or raw.shape[1] != FEATURE_SIZE:
        raise ValueError(f"expected (T, {FEATURE_SIZE}), got {raw.shape}")
    t = raw.shape[0]
    aspect = float(np.median(raw[:, ASPECT])) if t else 1.0
    sq = np.array([aspect, 1.0, aspect], np.float32)
    hands = raw[:, : 2 * HAND_BLOCK].reshape(t, 2, HAND_BLOCK)
    hand_xyz = hands[:, :, :63].reshape(t, 2, 21, 3) * sq
    present = hands[:, :, 63] > 0.5
    pose4 = raw[:, POSE_OFFSET : POSE_OFFSET + POSE_BLOCK].reshape(t, len(POSE_POINTS), 4)
    pose_xyz = pose4[:, :, :3] * sq
    vis = pose4[:, :, 3].copy()
    vis[raw[:, POSE_PRESENCE] <= 0.5] = 0.0
    shoulders_ok = (vis[:, L_SHOULDER] > 0.5) & (vis[:, R_SHOULDER] > 0.5)
    if shoulders_ok.any():
        left, right = pose_xyz[shoulders_ok, L_SHOULDER, :2], pose_xyz[shoulders_ok, R_SHOULDER, :2]
        mid = np.median((left + right) / 2.0, axis=0)
        width = float(np.median(np.linalg.norm(left - right, axis=1)))
    else:
        mid = np.array([aspect / 2.0, 0.5], np.float32)
        width = 1.0 / 3.0
    width = max(width, 1e-3)
    centre = np.array([mid[0], mid[1], 0.0], np.float32)
    hand_n = ((hand_xyz - centre) / width).astype(np.float32)
    pose_n = ((pose_xyz - centre) / width).astype(np.float32)

    def activity(slot: int) -> float:
        seen = present[:, slot]
        if seen.sum() < 2:
            return float(seen.sum())
        wrist = hand_n[seen, slot, 0, :2]
        return float(seen.sum()) + float(np.linalg.norm(np.diff(wrist, axis=0), axis=1).sum())

    mirror = mirror_left_dominant and activity(1) > activity(0)
    if mirror:
        hand_n = hand_n[:, ::-1].copy()
        present = present[:, ::-1].copy()
        hand_n[..., 0] *= -1.0
        pose_n = pose_n[:, list(POSE_MIRROR)].copy()
        vis = vis[:, list(POSE_MIRROR)].copy()
        pose_n[..., 0] *= -1.0
    hand_n[~present] = 0.0
    shoulder_z = (pose_n[:, L_SHOULDER, 2] + pose_n[:, R_SHOULDER, 2]) / 2.0
    depth = (pose_n[:, :, 2] - shoulder_z[:, None]).astype(np.float32)
    return BodyFrame(hand_n, present, pose_n, vis, depth, mirror)


def _fill_gaps(values: FloatArray, known: npt.NDArray[np.bool_]) -> FloatArray:
    """Linear interpolation over time of the frames where `known` is false (held at the ends);
    zeros when nothing is known. values: (T, ...)."""
    if known.all() or not known.any():
        return values if known.any() else np.zeros_like(values)
    t = len(values)
    idx = np.nonzero(known)[0]
    flat = values.reshape(t, -1)
    out = np.empty_like(flat)
    for j in range(flat.shape[1]):
        out[:, j] = np.interp(np.arange(t), idx, flat[idx, j])
    return out.reshape(values.shape)


def _flexion(points: FloatArray) -> FloatArray:
    """(T, 21, 3) -> (T, 15) cosines of the bend at each finger's three joints (1 = straight)."""
    out = []
    for chain in FINGERS:
        for a, b, c in zip(chain[:-2], chain[1:-1], chain[2:], strict=True):
            u = points[:, b] - points[:, a]
            v = points[:, c] - points[:, b]
            denom = np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1) + 1e-6
            out.append((u * v).sum(axis=1) / denom)
    return np.stack(out, axis=1).astype(np.float32)


def normalise_features(frames_landmarks: npt.ArrayLike, mirror_left_dominant: bool = True) -> FloatArray:
    """(T, FEATURE_SIZE) raw vectors of one window -> (T, FRAME_FEATURES) signer-independent features.

    Per hand slot (dominant first): wrist position (body units; the pose model's wrist where the hand
    tracker lost the hand), handshape as 20 points relative to the wrist divided by the palm length
    (scale-free), fingertip distances, finger joint flexion, [tracked, pose wrist visible], elbow, index
    fingertip relative to nose and to mouth. Face: nose, eyes, mouth and ears relative to the nose.
    Both hands: the wrist offset and distance. A hand lost for a few frames is interpolated over
    them (its handshape held at the ends of the window); a hand never found in the window is zeros.
    """
    body = body_frame(frames_landmarks, mirror_left_dominant)
    t = body.hands.shape[0]
    pose, vis = body.pose, body.visibility
    nose = pose[:, NOSE, :2]
    mouth = (pose[:, MOUTH_L, :2] + pose[:, MOUTH_R, :2]) / 2.0
    parts: list[FloatArray] = []
    wrists = []
    for slot in range(2):
        seen = body.present[:, slot]
        pts = body.hands[:, slot]
        pose_wrist = pose[:, SLOT_POSE_WRIST[slot], :2]
        pose_seen = vis[:, SLOT_POSE_WRIST[slot]] > 0.5
        # The hand's wrist where tracked, else the pose's wrist, else interpolated.
        wrist = np.where(seen[:, None], pts[:, 0, :2], pose_wrist)
        wrist = _fill_gaps(wrist, seen | pose_seen)
        wrists.append(wrist)
        rel = pts - pts[:, :1]
        palm = np.linalg.norm(rel[:, 9, :2], axis=1, keepdims=True)
        shape = (rel / np.maximum(palm, 1e-3)[:, :, None]).astype(np.float32)
        shape = _fill_gaps(shape, seen)
        tips = np.stack([np.linalg.norm(shape[:, a, :2] - shape[:, b, :2], axis=1) for a, b in TIP_PAIRS], axis=1)
        flex = _flexion(shape) if seen.any() else np.zeros((t, 15), np.float32)
        palm = _fill_gaps(palm, seen)
        index_tip = wrist + shape[:, 8, :2] * palm
        elbow = pose[:, SLOT_POSE_ELBOW[slot], :2]
        # Towards or away from the camera (STREET moves forward): the palm's apparent length and the
        # pose model's depth of the wrist relative to the shoulders.
        depth = body.depth[:, SLOT_POSE_WRIST[slot]] if pose_seen.any() else np.zeros(t, np.float32)
        depth = _fill_gaps(depth[:, None], pose_seen)
        parts += [
            wrist,
            shape[:, 1:, :2].reshape(t, 40),
            tips,
            flex,
            np.stack([seen, pose_seen], axis=1).astype(np.float32),
            elbow,
            index_tip - nose,
            index_tip - mouth,
            palm,
            depth,
        ]
    face = np.concatenate(
        [
            nose,
            (pose[:, L_EYE, :2] + pose[:, R_EYE, :2]) / 2.0 - nose,
            mouth - nose,
            pose[:, L_EAR, :2] - nose,
            pose[:, R_EAR, :2] - nose,
        ],
        axis=1,
    )
    between = wrists[0] - wrists[1]
    parts += [face, between, np.linalg.norm(between, axis=1, keepdims=True)]
    out = np.concatenate([np.asarray(p, np.float32).reshape(t, -1) for p in parts], axis=1)
    assert out.shape[1] == FRAME_FEATURES, out.shape
    return out


def window_vector(frames_landmarks: npt.ArrayLike) -> FloatArray:
    """One window's (T, FEATURE_SIZE) raw vectors -> the sequence model's input vector:
    the per-frame features in time order, their frame-to-frame differences, their mean and std."""
    x = normalise_features(frames_landmarks)
    return np.concatenate([x.reshape(-1), np.diff(x, axis=0).reshape(-1), x.mean(axis=0), x.std(axis=0)]).astype(
        np.float32
    )


def window_vector_size(window: int) -> int:
    return (2 * window + 1) * FRAME_FEATURES


# --------------------------------------------------------------------------------------------
# The landmark recogniser backend (MODEL=landmarks)
# --------------------------------------------------------------------------------------------

SEQUENCE_FILE = "sequence.onnx"
SEQUENCE_META = "sequence.json"


def check_landmark_files(model_dir: Path) -> dict[str, Any]:
    """Fail with one clear line unless every landmark model file is there; returns sequence.json."""
    from service.engine import ModelError

    files = [PALM_FILE, HAND_FILE, POSE_FILE, SEQUENCE_FILE, SEQUENCE_META]
    missing = [name for name in files if not (model_dir / name).is_file()]
    if missing:
        raise ModelError(
            f"MODEL=landmarks but {', '.join(missing)} missing in {model_dir}: run "
            "`python -m convert.mediapipe_models` (front end) and `python cli.py train --model landmarks`"
        )
    meta: dict[str, Any] = json.loads((model_dir / SEQUENCE_META).read_text())
    want = window_vector_size(int(meta["window"]))
    if meta.get("raw_feature_size") != FEATURE_SIZE or list(meta["input"]["shape"])[-1] != want:
        raise ModelError(
            f"{model_dir / SEQUENCE_META} was trained on other landmark features (raw {meta.get('raw_feature_size')},"
            f" input {meta['input']['shape']}; serving makes raw {FEATURE_SIZE}, input {want}): retrain with"
            " `python cli.py train --model landmarks`"
        )
    return meta


class LandmarkRecognizer:
    """Hand and pose landmarks per frame (tracked per stream), a small sequence model on 10 of them.

    `encode_pre` runs the per-stream tracker (palm detection only when tracking is lost), so it is
    the expensive stage here; `encode_core` has nothing left to do; `classify` turns each
    window into the signer-normalised window vector (`window_vector`) and runs the sequence model.
    """

    name = "landmarks"

    def __init__(self, model_dir: Path, settings: Settings) -> None:
        from service.engine import choose_providers, create_session

        meta = check_landmark_files(model_dir)
        self.labels = [str(label) for label in meta["labels"]]
        self.window_size = int(meta["window"])
        self.embedding_dim = FEATURE_SIZE
        self.models = LandmarkModels(model_dir, threads=1, providers=choose_providers(settings.execution_provider))
        self._sequence = create_session(model_dir / SEQUENCE_FILE, settings)
        self._input = self._sequence.get_inputs()[0].name
        self.provider = str(self._sequence.get_providers()[0])

    def new_tracker(self) -> HandPoseTracker:
        return HandPoseTracker(self.models)

    def encode_pre(self, image_bgr: ImageBGR, tracker: HandPoseTracker) -> FloatArray:
        return tracker.process(image_bgr).features

    def encode_core(self, inputs: FloatArray) -> FloatArray:
        return inputs

    def classify(self, windows: FloatArray) -> FloatArray:
        vectors = np.stack([window_vector(window) for window in windows])
        return np.asarray(self._sequence.run(None, {self._input: vectors})[0], dtype=np.float32)
