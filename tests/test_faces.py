import numpy as np
import pytest

from masksynth.data.faces import FaceDetector, centre_square, square_around


@pytest.mark.parametrize(
    "box", [(10, 10, 30, 40), (0, 0, 100, 100), (-20, 50, 80, 90), (90, 5, 40, 20)]
)
@pytest.mark.parametrize("margin", [0.0, 0.1, 0.5])
def test_square_stays_inside_and_covers_face_when_possible(box, margin):
    width, height = 120, 100
    x0, y0, side = square_around(box, width, height, margin)
    assert x0 >= 0 and y0 >= 0 and x0 + side <= width and y0 + side <= height
    wanted = max(box[2], box[3]) * (1 + 2 * margin)
    assert side == min(round(wanted), width, height)


def test_centre_square():
    assert centre_square(200, 100) == (50, 0, 100)
    assert centre_square(80, 120) == (0, 20, 80)


def test_detector_finds_nothing_in_noise_and_returns_sorted_faces():
    detector = FaceDetector()
    noise = np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    assert detector.detect(noise) == []
    # the same noise with a threshold near zero yields weak candidates, best first
    faces = FaceDetector(score_threshold=0.01).detect(noise)
    assert all(f.score >= 0.01 for f in faces)
    assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)
