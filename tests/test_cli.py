import subprocess
import sys

import pytest


def run(*args):
    return subprocess.run(
        [sys.executable, "-m", "masksynth.cli", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("args", [["--help"], ["prepare", "--help"], ["--version"]])
def test_help_and_version(args):
    result = run(*args)
    assert result.returncode == 0, result.stderr
    assert "masksynth" in result.stdout or "Usage" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["prepare", "/no/such/folder", "--out", "x"], "is not a folder"),
        (["prepare", ".", "--out", "x", "--bogus"], "No such option: --bogus"),
        (["prepare", ".", "--out", "x", "--split", "0.5,0.5"], "--split must be three"),
        (["prepare", ".", "--out", "x", "--group-by", "("], "not a valid regular expression"),
        (["nope"], "No such command"),
    ],
)
def test_user_errors_are_one_line(args, message, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "masksynth.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("masksynth: error: ") and message in lines[0]
