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


def test_identity_embeddings_are_reused_only_for_the_same_pixels(model, monkeypatch):
    """The audit after the release filter embeds the same images again: the second call is
    served from memory, identical; a changed pixel or another matcher is embedded anew."""
    import torch

    from masksynth.data import identity, load_split

    _, root = model
    faces = load_split(root / "prep", "test", 64).images[:6].clone()
    calls = []
    real = identity._embed_all
    monkeypatch.setattr(
        identity, "_embed_all", lambda x, w, n: calls.append(len(x)) or real(x, w, n)
    )
    monkeypatch.setattr(identity, "_EMBEDDED", type(identity._EMBEDDED)())
    first = identity.embed_identities(faces, 1)
    again = identity.embed_identities(faces, 1)
    assert calls == [6] and np.array_equal(first, again, equal_nan=True)
    assert not np.isnan(first).all()  # real faces: embeddings, not only "no face"
    changed = faces.clone()
    changed[2, :, 10, 10] = torch.where(changed[2, :, 10, 10] > 128, 0, 255).to(torch.uint8)
    mixed = identity.embed_identities(changed, 1)
    assert calls == [6, 1]  # only the changed image
    assert np.array_equal(mixed[[0, 1, 3, 4, 5]], first[[0, 1, 3, 4, 5]], equal_nan=True)
    identity.embed_identities(faces[:2], 1, "dlib")
    assert calls == [6, 1, 2]
