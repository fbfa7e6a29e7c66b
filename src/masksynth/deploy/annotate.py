"""Boxes and labels drawn on a copy of a frame, for `predict --annotate`."""

from __future__ import annotations

import cv2
import numpy as np

# BGR colours: the positive class (e.g. without_mask) red, any other green, uncertain amber
POSITIVE, NEGATIVE, UNCERTAIN = (40, 40, 230), (60, 180, 60), (0, 170, 255)


def draw(rgb: np.ndarray, records: list[dict], positive: str) -> np.ndarray:
    """A BGR copy of `rgb` with each face's box, label and that label's probability."""
    bgr = np.ascontiguousarray(rgb[:, :, ::-1]).copy()
    thickness = max(1, round(max(bgr.shape[:2]) / 400))
    for record in records:
        if record.get("box") is None:
            continue
        x, y, w, h = (int(round(v)) for v in record["box"])
        colour = (
            UNCERTAIN
            if record["uncertain"]
            else POSITIVE
            if record["label"] == positive
            else NEGATIVE
        )
        cv2.rectangle(bgr, (x, y), (x + w, y + h), colour, thickness)
        text = f"{record['label']}{'?' if record['uncertain'] else ''} {record['confidence']:.2f}"
        scale = 0.4 * thickness
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        top = max(0, y - th - base - 2)
        cv2.rectangle(bgr, (x, top), (x + tw + 2, top + th + base + 2), colour, -1)
        cv2.putText(
            bgr,
            text,
            (x + 1, top + th + 1),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            (255, 255, 255),
            thickness,
            cv2.LINE_AA,
        )
    return bgr
