"""The layer contract (pyproject.toml, checked by import-linter) holds, and it would catch
an upward import: a copy of the package with one added is refused."""

import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO

# import-linter's `lint-imports`, run by this Python
LINT = [sys.executable, "-c", "from importlinter.cli import lint_imports_command as c; c()"]


def _lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        LINT,
        cwd=root,
        env={"PYTHONPATH": str(root / "src"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("*.egg-info"))
    shutil.copy(REPO / "pyproject.toml", root)
    return root


def test_the_layers_hold_and_an_upward_import_breaks_them(tmp_path):
    root = _copy(tmp_path)
    kept = _lint(root)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert "broken" in kept.stdout and "0 broken" in kept.stdout
    # a GAN module reaching up into the privacy layer, even inside a function
    module = root / "src/masksynth/gan/generate.py"
    module.write_text(
        module.read_text() + "\n\ndef _upward():\n    from masksynth.privacy import audit\n"
    )
    broken = _lint(root)
    assert broken.returncode != 0
    assert "masksynth.gan.generate -> masksynth.privacy.audit" in broken.stdout, broken.stdout
