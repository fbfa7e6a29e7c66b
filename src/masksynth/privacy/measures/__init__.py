"""The audit's measures: each a small function `(ClassSets, AuditSets, config) -> result`.

A measure registers itself with `@measure(...)`; the audit runs every registered measure
on every class. A per-class result is a dict with at least `value`, `threshold` and
`verdict` ('pass' | 'warn' | 'fail' for privacy, 'good' | 'poor' for quality, or
'skipped' with a `reason`). Add a measure by writing one function in a module imported
below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

PRIVACY, QUALITY = "privacy", "quality"


@dataclass(frozen=True)
class Measure:
    name: str
    kind: str  # PRIVACY: decides whether the set is safe; QUALITY: is it worth releasing
    space: str  # 'pixel', 'identity', 'inception' or 'discriminator'
    question: str  # what it asks, in one sentence, for the report
    rule: str  # how the verdict is decided, printed beside the thresholds
    run: Callable


REGISTRY: dict[str, Measure] = {}


def measure(name: str, kind: str, space: str, question: str, rule: str):
    def register(function: Callable) -> Callable:
        REGISTRY[name] = Measure(name, kind, space, question, rule, function)
        return function

    return register


# Importing the modules registers their measures, in the order the report lists them.
# isort: off
from masksynth.privacy.measures import (  # noqa: E402,F401
    identity,
    dcr,
    copying,
    authenticity,
    membership,
    quality,
)
# isort: on
