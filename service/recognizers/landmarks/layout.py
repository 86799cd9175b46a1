"""The landmark front end's per-frame vector: which points it keeps, and where each value sits.

The tracker (tracker.py) writes this layout and the signer normalisation (features.py) reads it, in
serving and training alike; sequence.json records FEATURE_SIZE, so a model trained on another layout
is refused at start-up.
"""

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
