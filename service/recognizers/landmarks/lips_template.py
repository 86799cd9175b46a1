"""The 40 lip points the GISLR embedding model reads (transfer.py), as a mean shape placed by the pose's
mouth corners, so that the front end needs no face-mesh model.

Made by `python -m training.lips_template` from MediaPipe FaceMesh (0.10.14 wheel) on every frame of the
train-split clips (10,090 frames with both mouth corners visible): per lip point the median of
(along the mouth-corner line, across it, depth), in units of the mouth-corner distance, from the corners'
midpoint. Measured zero-shot on 101 train clips of the 9 glosses GISLR shares with us: FaceMesh lips
75/101, these template lips 71/101, no lips 11/101.
"""

# GISLR's lip points: MediaPipe face-mesh indices, in the order the model was trained on.
LIPS_FACE_MESH = (
    61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 146, 91, 181, 84, 17, 314, 405, 321, 375,
    78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308,
)  # fmt: skip

LIPS_TEMPLATE: tuple[tuple[float, float, float], ...] = (
    (0.5886, 0.0916, 0.0147),
    (0.5564, 0.1381, -0.0879),
    (0.4828, 0.1814, -0.1927),
    (0.3826, 0.2401, -0.2874),
    (0.2296, 0.2887, -0.3643),
    (0.0762, 0.2718, -0.3852),
    (-0.0816, 0.2951, -0.3686),
    (-0.2468, 0.2512, -0.2967),
    (-0.3544, 0.1920, -0.2068),
    (-0.4333, 0.1465, -0.1049),
    (-0.4684, 0.1007, -0.0041),
    (0.5342, 0.0430, -0.0629),
    (0.4589, -0.0046, -0.1582),
    (0.3486, -0.0662, -0.2282),
    (0.2137, -0.1054, -0.2896),
    (0.0642, -0.1142, -0.3025),
    (-0.0860, -0.1046, -0.2943),
    (-0.2250, -0.0616, -0.2415),
    (-0.3379, 0.0024, -0.1747),
    (-0.4146, 0.0538, -0.0826),
    (0.5167, 0.1069, -0.0260),
    (0.4555, 0.1276, -0.0762),
    (0.3822, 0.1311, -0.1457),
    (0.2926, 0.1360, -0.2058),
    (0.1883, 0.1349, -0.2575),
    (0.0704, 0.1339, -0.2751),
    (-0.0497, 0.1394, -0.2595),
    (-0.1604, 0.1420, -0.2141),
    (-0.2546, 0.1393, -0.1588),
    (-0.3327, 0.1341, -0.0925),
    (0.4500, 0.0942, -0.0715),
    (0.3917, 0.0943, -0.1377),
    (0.3000, 0.0935, -0.1958),
    (0.1900, 0.0881, -0.2478),
    (0.0661, 0.0859, -0.2655),
    (-0.0597, 0.0895, -0.2496),
    (-0.1741, 0.0972, -0.2066),
    (-0.2706, 0.1003, -0.1522),
    (-0.3309, 0.1014, -0.0886),
    (-0.3981, 0.1140, -0.0426),
)  # fmt: skip
