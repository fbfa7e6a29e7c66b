import json
import signal
import subprocess
import sys
import time

import pytest
import torch
from PIL import Image

from masksynth.config import gan_config
from masksynth.errors import MasksynthError
from masksynth.gan.checkpoint import checkpoint_path, file_sha256, load_checkpoint
from masksynth.gan.sample import load_generators
from masksynth.gan.train import train_gan

TINY = dict(
    g_width=8,
    d_width=8,
    batch_size=4,
    lr_g=2e-3,
    lr_d=2e-3,
    device="cpu",
    precision="fp32",
    final_metrics=False,
    log_every_steps=2,
)


def _tiny(**kw):
    return gan_config("paper", **{**TINY, **kw})


@pytest.fixture(scope="module")
def tiny_run(tiny_prep, tmp_path_factory):
    run = tmp_path_factory.mktemp("gan") / "run"
    summary = train_gan(tiny_prep, run, _tiny(epochs=3, ema_decay=0.9, diffaugment="color"))
    return run, summary


def test_tiny_training_moves_the_losses_and_writes_a_complete_run(tiny_run):
    run, summary = tiny_run
    assert summary["stopped"] == "done" and summary["epochs_done"] == 3
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for unit in ("with_mask", "without_mask"):
        losses = [r["loss_d"] for r in records if r.get("unit") == unit]
        assert len(losses) >= 5 and max(losses) - min(losses) > 0.05, losses
        assert all(0 <= r["d_real"] <= 1 for r in records if r.get("unit") == unit)
    for name in ("with_mask", "without_mask"):
        assert (run / "grids" / name / "epoch_0003.png").is_file()
        assert Image.open(run / "grids" / f"{name}.png").size[0] > 64
    state = load_checkpoint(checkpoint_path(run))
    assert state["epoch"] == 3 and set(state["units"]) == {"with_mask", "without_mask"}
    assert {"G", "D", "G_ema", "opt_g", "opt_d"} <= set(state["units"]["with_mask"])
    meta = json.loads((run / "gan.json").read_text())
    assert meta["config"]["g_width"] == 8 and meta["versions"]["torch"] and meta["command"]
    assert list(run.glob("tensorboard/events.*"))


def test_existing_run_needs_resume(tiny_run, tiny_prep):
    run, _ = tiny_run
    with pytest.raises(MasksynthError, match="--resume"):
        train_gan(tiny_prep, run, _tiny(epochs=1))


def test_conditional_mode_trains_one_pair(tiny_prep, tmp_path):
    summary = train_gan(tiny_prep, tmp_path / "c", _tiny(epochs=1, mode="conditional"))
    state = load_checkpoint(checkpoint_path(tmp_path / "c"))
    assert summary["stopped"] == "done" and list(state["units"]) == ["all"]
    _, generators = load_generators(tmp_path / "c", torch.device("cpu"))
    assert generators[0][0] is generators[1][0] and generators[0][1] is True


def test_nan_stops_with_a_clear_message_and_keeps_the_checkpoint(tiny_prep, tmp_path):
    from masksynth.gan.checkpoint import save_checkpoint

    run = tmp_path / "nan"
    train_gan(tiny_prep, run, _tiny(epochs=1))
    # Sabotage the saved optimiser: an infinite learning rate makes D's weights non-finite.
    state = load_checkpoint(checkpoint_path(run))
    for unit in state["units"].values():
        for group in unit["opt_d"]["param_groups"]:
            group["lr"] = float("inf")
    state.pop("format")
    save_checkpoint(checkpoint_path(run), state)
    before = file_sha256(checkpoint_path(run))
    with pytest.raises(MasksynthError, match="diverged .* last good checkpoint"):
        train_gan(tiny_prep, run, _tiny(epochs=2), resume=True)
    assert file_sha256(checkpoint_path(run)) == before


def test_killed_run_resumes_to_the_same_weights(tiny_prep, tmp_path):
    config = _tiny(
        epochs=4,
        deterministic=True,
        ema_decay=0.9,
        diffaugment="translation,cutout",
        xflip=True,
        batch_size=2,
    )
    straight = tmp_path / "straight"
    train_gan(tiny_prep, straight, config)

    killed = tmp_path / "killed"
    args = [
        sys.executable,
        "-m",
        "masksynth.cli",
        "train-gan",
        str(tiny_prep),
        "--out",
        str(killed),
        "--preset",
        "paper",
        "--epochs",
        "4",
        "--deterministic",
        "--checkpoint-every-steps",
        "3",
        "--g-width",
        "8",
        "--d-width",
        "8",
        "--batch-size",
        "2",
        "--lr-g",
        "2e-3",
        "--lr-d",
        "2e-3",
        "--device",
        "cpu",
        "--precision",
        "fp32",
        "--no-final-metrics",
        "--ema-decay",
        "0.9",
        "--diffaugment",
        "translation,cutout",
        "--xflip",
    ]
    log = open(tmp_path / "killed.log", "w")  # noqa: SIM115 - the child writes to it
    process = subprocess.Popen(args, stderr=log, stdout=log)
    ckpt = checkpoint_path(killed)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if ckpt.is_file():
            state = load_checkpoint(ckpt)
            if state["epoch"] == 1 and state["next_step"] > 0:
                process.send_signal(signal.SIGKILL)
                break
        time.sleep(0.01)
    process.wait(timeout=60)
    log.close()
    assert process.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()
    state = load_checkpoint(ckpt)
    assert state["epoch"] < 4  # it really was cut short

    train_gan(tiny_prep, killed, config, resume=True)
    a, b = load_checkpoint(checkpoint_path(straight)), load_checkpoint(ckpt)
    for unit in a["units"]:
        for part in ("G", "D", "G_ema"):
            for key, value in a["units"][unit][part].items():
                assert torch.equal(value, b["units"][unit][part][key]), (unit, part, key)
    assert a["global_step"] == b["global_step"]


def test_ctrl_c_saves_a_consistent_checkpoint_and_exits_cleanly(tiny_prep, tmp_path):
    run = tmp_path / "interrupted"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "masksynth.cli",
            "train-gan",
            str(tiny_prep),
            "--out",
            str(run),
            "--preset",
            "paper",
            "--epochs",
            "50",
            "--g-width",
            "8",
            "--d-width",
            "8",
            "--batch-size",
            "2",
            "--device",
            "cpu",
            "--no-final-metrics",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not checkpoint_path(run).is_file() and time.time() < deadline:
        time.sleep(0.05)  # the first checkpoint comes at the end of epoch 1
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "interrupted; run the same command again to resume" in stderr
    assert "Traceback" not in stderr
    state = load_checkpoint(checkpoint_path(run))
    assert 1 <= state["epoch"] < 50
    summary = train_gan(tiny_prep, run, _tiny(epochs=state["epoch"] + 1), resume=True)
    assert summary["stopped"] == "done" and summary["epochs_done"] == state["epoch"] + 1
