"""signstream: real-time ASL sign recognition served by ONNX Runtime over Socket.IO."""

__version__ = "0.1.0"

import os

# Decoders refuse images larger than this many pixels, checked from the header before full decode: by
# service/frames.py, and by OpenCV itself, which reads its limit from the environment once, when cv2
# is first imported (so it is set here, before any module of the service imports cv2). A header
# crafted to look small to one parser and large to the other is then refused by the other.
MAX_PIXELS = 4096 * 4096
os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] = str(MAX_PIXELS)
