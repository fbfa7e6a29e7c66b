"""The audit's verdict rules on generated sets (no real photos needed): copies fail, fresh
samples pass, faceless sets cannot be judged, and without person keys the verdict is at most
'warn'. The same `judge` runs in `masksynth audit`; only the features are made up here."""

import numpy as np
import pytest
import torch

from masksynth.config import AuditConfig
from masksynth.data.identity import MATCHERS, feature_space
from masksynth.privacy.audit import judge
from masksynth.privacy.distances import pixels
from masksynth.privacy.sets import AuditSets, ClassSets, calibrate

N = 80  # images per role and class
PEOPLE = 20  # per class and role; each person has 4 photos
CONFIG = AuditConfig(bootstrap=200)


def _people(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Face embeddings of n photos of n // 4 people: unit vectors near each person's centre."""
    centres = rng.normal(size=(n // 4, 128))
    who = np.repeat(np.arange(n // 4), 4)
    x = centres[who] + 0.6 * rng.normal(size=(n, 128))
    return x / np.linalg.norm(x, axis=1, keepdims=True), who


def _role(rng: np.random.Generator) -> dict:
    """One role's images and features, every image drawn independently of the others."""
    images = torch.from_numpy(rng.integers(0, 256, (N, 3, 64, 64), dtype=np.uint8))
    identity, who = _people(rng, N)
    return {
        "images": images,
        "pixel": pixels(images),
        "inception": rng.normal(size=(N, 32)).astype(np.float32),
        "identity": identity,
        "who": who,
    }


def _sets(kind: str, person_keys: bool = True) -> AuditSets:
    rng = np.random.default_rng(7)
    classes, spaces = [], {}
    for index, name in enumerate(("with_mask", "without_mask")):
        train, holdout = _role(rng), _role(rng)
        synthetic = dict(train) if kind == "copies" else _role(rng)
        if kind == "faceless":  # YuNet found no face in most synthetic images
            synthetic["identity"] = synthetic["identity"].copy()
            synthetic["identity"][: int(0.6 * N)] = np.nan
        roles = {"synthetic": synthetic, "train": train, "holdout": holdout}
        features = {
            space: {role: r[space] for role, r in roles.items()} for space in ("pixel", "inception")
        }
        features[feature_space("sface")] = {role: r["identity"] for role, r in roles.items()}
        classes.append(
            ClassSets(
                name,
                index,
                {role: r["images"] for role, r in roles.items()},
                {role: [f"{role}/{i}" for i in range(N)] for role in roles},
                features,
                {role: np.arange(N) for role in roles},
            )
        )
        keys = np.array([f"{name}-{w}" if person_keys else "" for w in train["who"]])
        spaces[name] = (keys, train["identity"])
    keys = np.concatenate([k for k, _ in spaces.values()])
    embeddings = np.concatenate([e for _, e in spaces.values()])
    identity = {"sface": calibrate(MATCHERS["sface"], keys, embeddings, CONFIG)}
    return AuditSets(classes, identity, membership=None, gan={})


def _verdicts(result: dict) -> dict:
    return {name: m["verdict"] for name, m in result["measures"].items()}


def test_a_set_of_training_copies_fails_every_measure():
    result = judge(_sets("copies"), CONFIG)
    verdicts = _verdicts(result)
    assert verdicts.pop("membership_whitebox") == "skipped"  # no GAN behind generated arrays
    assert set(verdicts.values()) == {"fail"}, verdicts
    assert result["verdict"] == "fail"
    # each failed measure and class says why, in figures against the unseen photos
    for name in verdicts:
        for class_name in ("with_mask", "without_mask"):
            why = [r for r in result["reasons"] if r.startswith(f"{name} ({class_name}): ")]
            assert len(why) == 1 and "unseen" in why[0], (name, class_name, result["reasons"])


def test_fresh_samples_of_other_people_pass():
    sets = _sets("fresh")
    assert sets.identity["sface"].calibration["source"] == "calibrated"
    assert 0 < sets.identity["sface"].calibration["power"] <= 1
    result = judge(sets, CONFIG)
    verdicts = _verdicts(result)
    assert verdicts.pop("membership_whitebox") == "skipped"
    assert set(verdicts.values()) == {"pass"}, verdicts
    assert result["verdict"] == "pass" and result["reasons"] == []


def test_faceless_synthetic_faces_cannot_be_judged_safe():
    result = judge(_sets("faceless"), CONFIG)
    identity = result["measures"]["identity_reidentification"]
    assert identity["verdict"] == "warn"
    for r in identity["classes"].values():
        assert r["faceless_share"] == pytest.approx(0.6)
        assert "cannot judge" in r["reason"]
    assert result["verdict"] == "warn"
    assert any("cannot judge" in reason for reason in result["reasons"])
    assert result["quality"]["face_rate"]["verdict"] == "poor"


def test_without_person_keys_the_verdict_is_at_most_warn():
    sets = _sets("fresh", person_keys=False)
    space = sets.identity["sface"]
    assert space.calibration["power"] is None
    assert space.threshold == MATCHERS["sface"].published_threshold
    result = judge(sets, CONFIG)
    assert result["verdict"] == "warn"
    assert any("no person keys" in reason for reason in result["reasons"])
    # ... and copies still fail: the cap only lowers 'pass'
    assert judge(_sets("copies", person_keys=False), CONFIG)["verdict"] == "fail"
