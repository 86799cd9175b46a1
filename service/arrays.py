"""The array types every module speaks: images as OpenCV decodes them, and model inputs/outputs."""

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
ImageBGR = npt.NDArray[np.uint8]  # (H, W, 3) uint8, BGR as OpenCV decodes it
