import json
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
        (["prepare", ".", "--out", "sub/prep"], "is inside the data folder"),
        (["nope"], "No such command"),
        (["predict", "missing.pt", "photo.jpg"], "missing.pt: no such model file"),
        (["serve", "missing.pt"], "missing.pt: no such model file"),
        (["watch", "missing.pt", ".", "--out", "o"], "missing.pt: no such model file"),
        (["export", "missing.pt", "--onnx", "m.onnx"], "missing.pt"),
        # before any work: the GAN preset is checked with the experiment's options
        (["experiment", ".", "--out", "x", "--gan-preset", "nope"], "unknown GAN preset 'nope'"),
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


# train-gan option -> (value given, config field): every value differs from the paper preset
TRAIN_GAN_OPTIONS = {
    "epochs": ("1", "epochs", 1),
    "minutes": ("0", "minutes", 0.0),
    "family": ("fastgan", "family", "fastgan"),
    "loss": ("hinge", "loss", "hinge"),
    "d_input_size": ("96", "d_input_size", 96),
    "discriminator": ("dcgan", "discriminator", "dcgan"),
    "mode": ("conditional", "mode", "conditional"),
    "seed": ("3", "seed", 3),
    "batch_size": ("8", "batch_size", 8),
    "lr_g": ("0.0003", "lr_g", 3e-4),
    "lr_d": ("0.0004", "lr_d", 4e-4),
    "diffaugment": ("color", "diffaugment", "color"),
    "xflip": (None, "xflip", True),
    "ema_decay": ("0.5", "ema_decay", 0.5),
    "ema_ramp": ("4", "ema_ramp", 4.0),
    "d_norm": ("spectral", "d_norm", "spectral"),
    "ac_weight": ("0.5", "ac_weight", 0.5),
    "ac_twin": (None, "ac_twin", True),
    "class_keep": ("0.6", "class_keep", 0.6),
    "g_width": ("8", "g_width", 8),
    "d_width": ("8", "d_width", 8),
    "g_class_norm": (None, "g_class_norm", True),
    "g_low_pass": (None, "g_low_pass", True),
    "device": ("cpu", "device", "cpu"),
    "precision": ("fp32", "precision", "fp32"),
    "deterministic": (None, "deterministic", True),
    "max_minutes": ("5", "max_minutes", 5.0),
    "checkpoint_minutes": ("3", "checkpoint_minutes", 3.0),
    "checkpoint_every_steps": ("7", "checkpoint_every_steps", 7),
    "metrics_every": ("9", "metrics_every_epochs", 9),
    "metrics_samples": ("20", "metrics_samples", 20),
    "final_metrics": ("--no-final-metrics", "final_metrics", False),
    "dp_epsilon": ("0", "dp_epsilon", 0.0),
    "dp_delta": ("0.000001", "dp_delta", 1e-6),
    "dp_max_grad_norm": ("2.5", "dp_max_grad_norm", 2.5),
}


def test_every_train_gan_option_reaches_the_run_config(tiny_prep, tmp_path):
    """Each option of train-gan, given a non-default value, is what the run records (an
    option that is parsed but dropped on the way is a bug users cannot see)."""
    import typer

    from masksynth import cli

    command = typer.main.get_command(cli.app).commands["train-gan"]
    options = {p.name for p in command.params} - {"prep_dir", "out", "preset", "resume"}
    assert options == set(TRAIN_GAN_OPTIONS), options ^ set(TRAIN_GAN_OPTIONS)
    args = ["train-gan", str(tiny_prep), "--out", str(tmp_path / "run"), "--preset", "paper"]
    for name, (value, _, _) in TRAIN_GAN_OPTIONS.items():
        flag = "--" + name.replace("_", "-")
        if value is None:
            args.append(flag)
        elif value.startswith("--"):
            args.append(value)
        else:
            args += [flag, value]
    result = run(*args)
    assert result.returncode == 0, result.stderr
    config = json.loads((tmp_path / "run" / "gan.json").read_text())["config"]
    assert config["preset"] == "paper"
    for name, (_, field, expected) in TRAIN_GAN_OPTIONS.items():
        assert config[field] == expected, (name, config[field])


def test_option_defaults_are_the_configs_own():
    """A default exists once, in the config dataclass: every option named like a config
    field defaults to that field's default (GAN and experiment options default to None:
    the preset's value, checked above for train-gan)."""
    import dataclasses

    import typer

    from masksynth import cli
    from masksynth.config import (
        AuditConfig,
        ClassifierConfig,
        Decision,
        ExperimentConfig,
        PrepareConfig,
        ServiceConfig,
    )

    commands = typer.main.get_command(cli.app).commands
    checked = 0
    for name, config in {
        "prepare": PrepareConfig,
        "audit": AuditConfig,
        "train-classifier": ClassifierConfig,
        "predict": Decision,
        "serve": ServiceConfig,
        "experiment": ExperimentConfig,
    }.items():
        defaults = {f.name: f.default for f in dataclasses.fields(config)}
        for param in commands[name].params:
            if param.name not in defaults or param.default is None:
                continue
            expected = defaults[param.name]
            if isinstance(expected, tuple):  # written as 'a,b,c' on the command line
                expected = ",".join(map(str, expected))
            assert param.default == expected, (name, param.name, param.default, expected)
            checked += 1
    assert checked >= 20


def test_every_preset_builds_and_its_help_names_it():
    """A preset added to a config table is a valid config and a choice the help shows."""
    import typer

    from masksynth import cli
    from masksynth.config import (
        CLASSIFIER_PRESETS,
        EXPERIMENT_PRESETS,
        GAN_PRESETS,
        classifier_config,
        experiment_config,
        gan_config,
    )

    commands = typer.main.get_command(cli.app).commands
    for command, presets, build in (
        ("train-gan", GAN_PRESETS, gan_config),
        ("train-classifier", CLASSIFIER_PRESETS, classifier_config),
        ("experiment", EXPERIMENT_PRESETS, experiment_config),
    ):
        (option,) = [p for p in commands[command].params if p.name == "preset"]
        for name in presets:
            build(name)  # a misspelt setting or an unknown GAN preset raises
            assert name in option.help, (command, name, option.help)
