"""What a stage was built from: fingerprints that each stage records and checks before reuse.

A stage writes `inputs` (fingerprints of what it consumed and the settings that shape its
result) into its JSON record. Before it reuses earlier work it compares that record with
what it would consume now; `changes` names every difference, so the stage can say in one
line why it recomputes (or why it refuses).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def _canonical(value: Any) -> str:
    # tuples and lists compare alike (JSON turns tuples into lists); 1 and 1.0 do not, which
    # typed configs never mix
    return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))


def digest(value: Any) -> str:
    """A short, stable fingerprint of a JSON-like value."""
    return hashlib.sha256(_canonical(value).encode()).hexdigest()[:16]


def changes(recorded: dict | None, current: dict) -> list[str]:
    """'key: was A, now B' for every input that differs; ['...'] when nothing was recorded."""
    if not recorded:
        return ["no record of the inputs it was built from"]
    out = []
    for key in sorted(set(recorded) | set(current)):
        was, now = recorded.get(key), current.get(key)
        if _canonical(was) != _canonical(now):
            out.append(f"{key}: was {_short(was)}, now {_short(now)}")
    return out


def _short(value: Any) -> str:
    text = _canonical(value)
    return text if len(text) <= 40 else f"<{digest(value)}>"
