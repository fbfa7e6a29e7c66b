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


def test_every_cli_option_reaches_the_code():
    """Each parameter of each command is used in its body (an option that is parsed but
    silently dropped is a bug users cannot see)."""
    import inspect

    import typer

    from masksynth import cli

    for command in typer.main.get_command(cli.app).commands.values():
        function = command.callback
        source = inspect.getsource(function)
        body = source[source.index(") -> None:") :]
        for name in inspect.signature(function).parameters:
            assert f"{name}" in body.replace(f"{name}:", ""), (command.name, name)
