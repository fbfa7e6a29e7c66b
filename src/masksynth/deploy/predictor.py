"""A trained classifier put to work on whole frames: every face found, cropped as in training,
classified in one batch, and a decision with an `uncertain` band.

The checkpoint holds the prepare settings its training data was made with (face crop,
margin, detector threshold), so a face is cut out of a new photo exactly as the training
faces were (`data.faces.crop_resized`), and the fitted temperature is applied by the
backend (`classify.checkpoint.predict_proba`, or inside the ONNX graph).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from masksynth.config import Decision
from masksynth.data.faces import FaceDetector, centre_square, crop_resized, square_around
from masksynth.deploy.backends import load_backend
from masksynth.device import pick_device


class FacePredictor:
    """Load once, then `predict(rgb)` per frame or photo (one instance per thread)."""

    def __init__(
        self,
        checkpoint: str | Path,
        device: str = "auto",
        decision: Decision | None = None,
        backend: str = "torch",
        threads: int = 0,
    ) -> None:
        """threads: onnxruntime's threads for this model (0: one per core)."""
        self.backend = load_backend(checkpoint, backend, pick_device(device), threads)
        self.meta = self.backend.meta
        self.decision = decision or Decision()
        self.classes: list[str] = list(self.meta["class_names"])
        self.positive = self.classes.index(self.meta["positive_class"])
        self.size = int(self.meta["size"])
        settings = self.meta["prepare"]
        self.margin = float(settings["face_margin"])
        # without face crops in training, the model saw centre squares: so does prediction
        self.detector = (
            FaceDetector(score_threshold=settings["face_threshold"])
            if settings["face_crop"]
            else None
        )
        self.probability_keys = [f"p_{name}" for name in self.classes]
        self.probability_key = self.probability_keys[self.positive]

    def crops(self, rgb: np.ndarray) -> tuple[list[dict], np.ndarray]:
        """Every face of an (H, W, 3) uint8 RGB frame: its box and score, and the crops
        (N, 3, size, size) as training made them; no face: ([], empty)."""
        height, width = rgb.shape[:2]
        image = Image.fromarray(rgb)
        if self.detector is None:
            found = [
                ({"box": [0, 0, width, height], "face_score": None}, centre_square(width, height))
            ]
        else:
            found = [
                (
                    {
                        "box": [round(v, 1) for v in face.box],
                        "face_score": round(face.score, 4),
                    },
                    square_around(face.box, width, height, self.margin),
                )
                for face in self.detector.detect(rgb)
            ]
        if not found:
            return [], np.zeros((0, 3, self.size, self.size), np.uint8)
        crops = np.stack([crop_resized(image, crop, self.size) for _, crop in found])
        return [face for face, _ in found], crops

    def probabilities(self, crops: np.ndarray) -> np.ndarray:
        """(N, n_classes) calibrated class probabilities of uint8 crops."""
        if len(crops) == 0:
            return np.zeros((0, len(self.classes)), np.float32)
        return self.backend(crops)

    def predict(self, rgb: np.ndarray) -> list[dict]:
        """One record per face (most confident face first); [] when there is none."""
        faces, crops = self.crops(rgb)
        probs = self.probabilities(crops)
        return [self.decide(face, row) for face, row in zip(faces, probs, strict=True)]

    def decide(self, face: dict, probs: np.ndarray) -> dict:
        p = float(probs[self.positive])
        if p >= self.decision.threshold:
            label = self.positive
        else:  # the most probable of the other classes
            others = probs.copy()
            others[self.positive] = -1.0
            label = int(others.argmax())
        return {
            **face,
            # every class's probability: with N classes the positive one alone is not enough
            **{
                key: round(float(q), 5) for key, q in zip(self.probability_keys, probs, strict=True)
            },
            "label": self.classes[label],
            "confidence": round(float(probs[label]), 5),  # the probability of that label
            "uncertain": abs(p - self.decision.threshold) < self.decision.uncertain_band,
        }
