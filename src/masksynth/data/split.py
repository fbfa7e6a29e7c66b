"""Grouped, stratified train/val/test assignment: no group ever straddles two splits."""

from __future__ import annotations

import logging
import random
import re
from collections import Counter

from masksynth.config import SPLITS
from masksynth.errors import MasksynthError

log = logging.getLogger(__name__)


def parse_fractions(text: str) -> tuple[float, float, float]:
    """'0.7,0.1,0.2' -> (0.7, 0.1, 0.2); the three must be >= 0 and sum to 1."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 0 or abs(sum(values) - 1.0) > 1e-6:
        raise MasksynthError(
            f"--split must be three fractions train,val,test summing to 1, "
            f"e.g. 0.7,0.1,0.2 (got {text!r})"
        )
    return values  # type: ignore[return-value]


def group_key(pattern: re.Pattern | None, filename: str) -> str | None:
    """The first capture group of `pattern` in `filename`, or None when it does not match."""
    if pattern is None:
        return None
    match = pattern.search(filename)
    return match.group(1) if match and match.group(1) else None


def compile_group_regex(text: str | None) -> re.Pattern | None:
    if not text:
        return None
    try:
        pattern = re.compile(text)
    except re.error as error:
        raise MasksynthError(f"--group-by is not a valid regular expression: {error}") from None
    if pattern.groups < 1:
        raise MasksynthError("--group-by needs a capture group, e.g. '^\\d+_\\d+_([a-z]+)_'")
    return pattern


# File-name conventions that name a person (tried by `--group-by auto`, in this order):
# RMFD's face sets, e.g. 0_0_anhu_0201.jpg, and LFW's, e.g. Aaron_Peirsol_0001.jpg.
PERSON_KEY_PATTERNS = (
    r"^\d+_\d+_([A-Za-z]+)_\d+",
    r"^([A-Z][a-z]+(?:_[A-Z][A-Za-z-]*)+)_\d{4}\.",
)
AUTO_MIN_SHARE = 0.25  # of all file names must match
AUTO_MIN_REPEATED = 5  # keys with two files or more
AUTO_MAX_KEY_SHARE = 0.10  # of all files under one key: more looks like a prefix, not a person


def detect_person_key(names: list[str]) -> tuple[str | None, dict]:
    """The first person-naming pattern that a large share of `names` follows, with its counts.

    A pattern is taken when it matches at least AUTO_MIN_SHARE of the names, at least
    AUTO_MIN_REPEATED keys repeat, and no key holds more than AUTO_MAX_KEY_SHARE of the names
    (a shared prefix such as 'image_0001' is not a person).
    """
    tried = []
    for text in PERSON_KEY_PATTERNS:
        pattern = re.compile(text)
        keys = Counter(k for k in (group_key(pattern, n) for n in names) if k is not None)
        matched = sum(keys.values())
        stats = {
            "pattern": text,
            "matched": matched,
            "of": len(names),
            "keys": len(keys),
            "repeated_keys": sum(1 for n in keys.values() if n > 1),
            "largest_key": max(keys.values(), default=0),
        }
        tried.append(stats)
        if (
            names
            and matched >= AUTO_MIN_SHARE * len(names)
            and stats["repeated_keys"] >= AUTO_MIN_REPEATED
            and stats["largest_key"] <= AUTO_MAX_KEY_SHARE * len(names)
        ):
            return text, stats
    return None, {"tried": tried}


def assign_splits(
    labels: list[str],
    groups: list[list[int]],
    fractions: tuple[float, float, float],
    seed: int,
    splits: tuple[str, ...] = SPLITS,
) -> list[str]:
    """Give every item a split so that each class is split by `fractions` and groups stay whole.

    Groups are placed largest first (ties in a seeded random order), each into the split
    with the largest open share of its per-class quota; deterministic for a given seed.
    """
    classes = sorted(set(labels))
    totals = Counter(labels)
    quota = {(s, c): f * totals[c] for s, f in zip(splits, fractions, strict=True) for c in classes}
    filled: Counter = Counter()
    rng = random.Random(seed)
    order = list(range(len(groups)))
    rng.shuffle(order)
    order.sort(key=lambda g: -len(groups[g]))
    candidates = [s for s, f in zip(splits, fractions, strict=True) if f > 0]
    result = [""] * len(labels)
    for g in order:
        counts = Counter(labels[i] for i in groups[g])

        def unmet(split: str, counts: Counter = counts) -> float:
            # Share of the split's quota still open, weighted by the group's class counts:
            # big groups spread over all splits instead of all landing in train.
            return sum(
                n * (quota[split, c] - filled[split, c]) / quota[split, c]
                for c, n in counts.items()
            )

        best_score = max(unmet(s) for s in candidates)
        best = rng.choice([s for s in candidates if unmet(s) >= best_score - 1e-12])
        for c, n in counts.items():
            filled[best, c] += n
        for i in groups[g]:
            result[i] = best
    return result


AUTO, NONE = "auto", "none"


def resolve_grouping(option: str | None, names: list[str]) -> dict:
    """Which regex groups files into people: given, detected from the names, or none."""
    if option in (None, NONE):
        return {"source": "none", "pattern": None}
    if option != AUTO:
        return {"source": "given", "pattern": option}
    pattern, stats = detect_person_key(names)
    if pattern is None:
        return {"source": "auto: no person key found in the file names", "pattern": None, **stats}
    log.info(
        "person key detected in %d of %d file names (%d people): %s",
        stats["matched"],
        stats["of"],
        stats["keys"],
        pattern,
    )
    return {"source": "auto-detected", **stats}
