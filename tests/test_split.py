import random
from collections import Counter

import pytest

from masksynth.data.dedupe import UnionFind, exact_duplicate_groups, near_duplicate_pairs
from masksynth.data.split import (
    assign_splits,
    compile_group_regex,
    detect_person_key,
    group_key,
    parse_fractions,
)
from masksynth.errors import MasksynthError


def _random_groups(seed: int, n: int = 600):
    rng = random.Random(seed)
    labels, groups, i = [], [], 0
    while i < n:
        size = rng.choice([1, 1, 1, 2, 3, 5, 12])
        label = rng.choice(["with_mask", "without_mask"])
        groups.append(list(range(i, i + size)))
        labels += [label] * size
        i += size
    return labels, groups


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_no_group_crosses_splits_and_fractions_hold(seed):
    labels, groups = _random_groups(seed)
    splits = assign_splits(labels, groups, (0.7, 0.1, 0.2), seed)
    for group in groups:
        assert len({splits[i] for i in group}) == 1
    for label in set(labels):
        members = [s for s, lab in zip(splits, labels, strict=True) if lab == label]
        counts = Counter(members)
        for split, fraction in [("train", 0.7), ("val", 0.1), ("test", 0.2)]:
            assert abs(counts[split] / len(members) - fraction) < 0.05, (label, split, counts)


def test_split_is_deterministic_and_seed_dependent():
    labels, groups = _random_groups(7)
    first = assign_splits(labels, groups, (0.7, 0.1, 0.2), 1)
    assert first == assign_splits(labels, groups, (0.7, 0.1, 0.2), 1)
    assert first != assign_splits(labels, groups, (0.7, 0.1, 0.2), 2)


def test_big_groups_do_not_all_land_in_train():
    labels = ["a"] * 200
    groups = [list(range(k, k + 10)) for k in range(0, 200, 10)]
    counts = Counter(assign_splits(labels, groups, (0.6, 0.2, 0.2), 0))
    assert counts == {"train": 120, "val": 40, "test": 40}


def test_zero_fraction_split_stays_empty():
    labels, groups = _random_groups(3)
    assert "val" not in assign_splits(labels, groups, (0.8, 0.0, 0.2), 0)


def test_parse_fractions():
    assert parse_fractions("0.7,0.1,0.2") == (0.7, 0.1, 0.2)
    for bad in ["0.7,0.3", "0.5,0.5,0.5", "a,b,c", "-0.1,0.6,0.5"]:
        with pytest.raises(MasksynthError, match="--split"):
            parse_fractions(bad)


def test_group_regex():
    pattern = compile_group_regex(r"^\d+_\d+_([A-Za-z]+)_\d+")
    assert group_key(pattern, "0_0_anhu_0201.jpg") == "anhu"
    assert group_key(pattern, "1_0_anhu_0003.jpg") == "anhu"
    assert group_key(pattern, "augmented_image_3.jpg") is None
    with pytest.raises(MasksynthError, match="capture group"):
        compile_group_regex(r"^\d+")
    with pytest.raises(MasksynthError, match="regular expression"):
        compile_group_regex(r"([a-z")


def test_exact_and_near_duplicates_by_hand():
    assert exact_duplicate_groups(["a", "b", "a", "c", "b", "a"]) == [[0, 2, 5], [1, 4]]
    hashes = ["0000000000000000", "0000000000000007", "00000000000000ff", "ffffffffffffffff"]
    # distances: 0-1: 3 bits, 0-2: 8, 1-2: 5, 3 is 56+ bits from everything
    assert near_duplicate_pairs(hashes, 3) == [(0, 1, 3)]
    assert near_duplicate_pairs(hashes, 8) == [(0, 1, 3), (0, 2, 8), (1, 2, 5)]
    finder = UnionFind(5)
    finder.union(3, 1)
    finder.union(1, 4)
    assert finder.groups() == [[0], [1, 3, 4], [2]]


def _rmfd_names(people: int, photos: int) -> list[str]:
    """`<a>_<b>_<person>_<nnnn>.jpg`, person names in letters only (as in the dev set)."""
    letters = ["P" + "".join(chr(97 + int(d)) for d in str(p)) for p in range(people)]
    return [f"{p}_{k % 2}_{letters[p]}_{k:04d}.jpg" for p in range(people) for k in range(photos)]


def test_person_keys_are_detected_in_rmfd_and_lfw_style_names():
    pattern, stats = detect_person_key(_rmfd_names(30, 4) + [f"img{k}.jpg" for k in range(40)])
    assert pattern == r"^\d+_\d+_([A-Za-z]+)_\d+" and stats["keys"] == 30
    assert group_key(compile_group_regex(pattern), "3_1_Pd_0007.jpg") == "Pd"
    lfw = [
        f"{first}_{last}_{k:04d}.jpg"
        for first, last in (
            ("Ada", "Lovelace"),
            ("Alan", "Turing"),
            ("Grace", "Hopper"),
            ("Kurt", "Godel"),
            ("Emmy", "Noether"),
            ("Alan", "Kay"),
        )
        for k in range(1, 4)
    ]
    pattern, stats = detect_person_key(lfw + [f"x{k}.png" for k in range(50)])
    assert pattern is not None and stats["keys"] == 6 and stats["repeated_keys"] == 6


@pytest.mark.parametrize(
    "names",
    [
        [f"image_{k:04d}.jpg" for k in range(200)],  # numbered files: no person in the name
        _rmfd_names(30, 4)[:40] + [f"img{k}.jpg" for k in range(200)],  # too few match
        [f"{k}_0_Same_{k:04d}.jpg" for k in range(100)],  # one key for all: a prefix
        [f"{k}_0_P{k}_{k:04d}.jpg" for k in range(100)],  # no key repeats
        [],
    ],
)
def test_names_without_a_person_key_are_left_ungrouped(names):
    pattern, stats = detect_person_key(names)
    assert pattern is None and "tried" in stats
