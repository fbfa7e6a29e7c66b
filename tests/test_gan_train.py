import json
import signal

import pytest
import torch
from conftest import interrupted
from PIL import Image

from masksynth.config import gan_config
from masksynth.distributed import Ranks
from masksynth.errors import MasksynthError
from masksynth.fileio import file_sha256
from masksynth.gan.checkpoint import checkpoint_path, load_checkpoint
from masksynth.gan.load import load_generators
from masksynth.gan.loop import Trainer
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
    # killed right after the second checkpoint (every 3 steps), in the middle of epoch 1
    result = interrupted("masksynth.gan.loop:save_checkpoint", 2, "SIGKILL", args)
    assert result.returncode == -signal.SIGKILL, result.stderr
    ckpt = checkpoint_path(killed)
    state = load_checkpoint(ckpt)
    assert state["epoch"] == 0 and state["next_step"] == 6  # cut short mid-epoch

    train_gan(tiny_prep, killed, config, resume=True)
    a, b = load_checkpoint(checkpoint_path(straight)), load_checkpoint(ckpt)
    for unit in a["units"]:
        for part in ("G", "D", "G_ema"):
            for key, value in a["units"][unit][part].items():
                assert torch.equal(value, b["units"][unit][part][key]), (unit, part, key)
    assert a["global_step"] == b["global_step"]


def test_ctrl_c_saves_a_consistent_checkpoint_and_exits_cleanly(tiny_prep, tmp_path):
    run = tmp_path / "interrupted"
    # Ctrl-C right after the first checkpoint (the end of epoch 1)
    result = interrupted(
        "masksynth.gan.loop:save_checkpoint",
        1,
        "SIGINT",
        [
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
    )
    stderr = result.stderr
    assert result.returncode == 130, stderr
    assert "interrupted; run the same command again to resume" in stderr
    assert "Traceback" not in stderr
    state = load_checkpoint(checkpoint_path(run))
    assert 1 <= state["epoch"] < 50
    # resumed with the run's own settings (resume refuses others)
    config = gan_config(
        "paper",
        epochs=state["epoch"] + 1,
        g_width=8,
        d_width=8,
        batch_size=2,
        device="cpu",
        final_metrics=False,
    )
    summary = train_gan(tiny_prep, run, config, resume=True)
    assert summary["stopped"] == "done" and summary["epochs_done"] == state["epoch"] + 1


def test_ema_generator_has_batchnorm_statistics_of_its_own_weights(tiny_run):
    """Copying the live G's running statistics into the EMA generator would pair them with
    weights they were never computed for; they are recomputed for the EMA weights."""
    from masksynth.config import GanConfig
    from masksynth.gan.ema import refresh_batchnorm
    from masksynth.gan.networks import build_generator
    from masksynth.seeds import BATCHNORM, derive_seed

    run, _ = tiny_run
    state = load_checkpoint(checkpoint_path(run))
    config = GanConfig.from_dict(state["config"])
    for unit in state["units"].values():
        live, ema = unit["G"], unit["G_ema"]
        means = [k for k in ema if k.endswith("running_mean")]
        assert means and all(not torch.allclose(live[k], ema[k]) for k in means)
        G = build_generator(config, len(state["classes"]))
        G.load_state_dict(ema)
        for k in means:
            G.state_dict()[k].fill_(123.0)  # forget them, then recompute from the EMA weights
        refresh_batchnorm(G, derive_seed(config.seed, BATCHNORM, state["global_step"]))
        for k, v in G.state_dict().items():
            if k.endswith(("running_mean", "running_var")):
                assert torch.allclose(v, ema[k], atol=1e-5), k


def test_resume_refuses_other_settings_or_other_data_in_one_line(tiny_prep, tmp_path):
    from conftest import run_cli

    from masksynth.config import PrepareConfig
    from masksynth.data.prepare import prepare

    run = tmp_path / "run"
    train_gan(tiny_prep, run, _tiny(epochs=1))
    before = file_sha256(checkpoint_path(run))
    # another network under the same run: refused, naming the conflict
    with pytest.raises(MasksynthError, match=r"cannot resume .*g_width: was 8, now 16"):
        train_gan(tiny_prep, run, _tiny(epochs=2, g_width=16), resume=True)
    result = run_cli(
        "train-gan", str(tiny_prep), "--out", str(run), "--resume", "--preset", "quick"
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "cannot resume" in lines[0] and "preset" in lines[0]
    # the same data split anew: the run's training photos are no longer its train split
    resplit = tmp_path / "prep2"
    prepare(
        tiny_prep.parent / "raw",
        resplit,
        PrepareConfig(sizes=(64,), face_crop=False, split=(0.6, 0.2, 0.2), seed=1, workers=1),
    )
    with pytest.raises(MasksynthError, match="cannot resume .* prepared data"):
        train_gan(resplit, run, _tiny(epochs=2), resume=True)
    assert file_sha256(checkpoint_path(run)) == before  # nothing was continued
    # left out, the options keep the run's own values: the paper preset continues
    result = run_cli(
        "train-gan",
        str(tiny_prep),
        "--out",
        str(run),
        "--resume",
        "--epochs",
        "2",
        "--device",
        "cpu",
    )
    assert result.returncode == 0, result.stderr
    meta = json.loads((run / "gan.json").read_text())
    assert meta["config"]["preset"] == "paper" and meta["config"]["g_width"] == 8
    assert load_checkpoint(checkpoint_path(run))["epoch"] == 2


def test_an_unknown_d_norm_is_a_one_line_error(tiny_prep, tmp_path, capsys):
    from masksynth.cli import main
    from masksynth.gan.networks import D_NORMS

    assert main(["train-gan", str(tiny_prep), "--out", str(tmp_path / "x"), "--d-norm", "x"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"masksynth: error: --d-norm must be one of {', '.join(D_NORMS)}"]
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--metrics-samples", "1"], "--metrics-samples must be >= 2"),
        (
            ["--metrics-samples", "0", "--metrics-every", "1", "--no-final-metrics"],
            "--metrics-samples must be >= 2",
        ),
        (["--metrics-every", "-1"], "--metrics-every and --checkpoint-every-steps must be >= 0"),
        (["--checkpoint-every-steps", "-1"], "must be >= 0 (0: off)"),
    ],
)
def test_metrics_it_cannot_measure_are_refused_before_training(
    tiny_prep, tmp_path, capsys, args, says
):
    """Before, --metrics-samples 0 trained the whole budget, then crashed in a traceback."""
    from masksynth.cli import main

    assert main(["train-gan", str(tiny_prep), "--out", str(tmp_path / "x"), *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("masksynth: error: ") and says in lines[0]
    assert not (tmp_path / "x").exists()


def test_a_run_measuring_nothing_needs_no_fakes_and_gan_metrics_then_asks_for_them(
    tiny_prep, tmp_path, capsys
):
    from masksynth.cli import main

    run, tiny = tmp_path / "run", ["--g-width", "8", "--d-width", "8", "--batch-size", "8"]
    none = ["--no-final-metrics", "--metrics-samples", "0"]
    assert (
        main(["train-gan", str(tiny_prep), "--out", str(run), "--epochs", "1", *tiny, *none]) == 0
    )
    capsys.readouterr()
    assert main(["gan-metrics", str(run), "--real", str(tiny_prep)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--metrics-samples 0: give --fakes N" in lines[0]


def test_a_run_stopped_by_its_time_limit_shows_the_weights_it_kept(tiny_prep, tmp_path):
    run = tmp_path / "run"
    summary = train_gan(tiny_prep, run, _tiny(epochs=3, max_minutes=1e-9))  # after one step
    assert summary["stopped"] == "time limit" and summary["epochs_done"] == 0
    for name in ("with_mask", "without_mask"):
        assert (run / "grids" / f"{name}.png").is_file()  # no epoch ended: no epoch grid
        assert not list((run / "grids" / name).glob("epoch_*.png"))


def test_epoch_grids_thin_out_after_the_first_epochs_and_keep_the_last(
    tiny_prep, tmp_path, monkeypatch
):
    from masksynth.gan import monitor

    monkeypatch.setattr(monitor, "GRID_EPOCHS", 2)  # every epoch to 2, then every 2nd and the last
    run = tmp_path / "run"
    train_gan(tiny_prep, run, _tiny(epochs=5))
    for name in ("with_mask", "without_mask"):
        grids = sorted(p.name for p in (run / "grids" / name).glob("epoch_*.png"))
        assert grids == [f"epoch_000{e}.png" for e in (1, 2, 4, 5)]
        latest = (run / "grids" / f"{name}.png").read_bytes()
        assert latest == (run / "grids" / name / "epoch_0005.png").read_bytes()


def test_a_log_file_gets_one_line_per_epoch_not_progress_bar_redraws(tiny_prep, tmp_path):
    from conftest import run_cli

    result = run_cli(
        "train-gan", str(tiny_prep), "--out", str(tmp_path / "run"), "--epochs", "2",
        "--g-width", "8", "--d-width", "8", "--batch-size", "8", "--device", "cpu",
        "--no-final-metrics",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr  # stderr is a pipe here, as in a log file
    lines = result.stderr.splitlines()
    for epoch in (1, 2):
        ends = [line for line in lines if line.startswith(f"masksynth: epoch {epoch}/2: ")]
        assert len(ends) == 1 and " step in " in ends[0], lines


def test_a_budget_in_minutes_plans_the_epochs_that_fit(tiny_prep, tmp_path):
    """--minutes: after the first epoch the run plans as many epochs as fit the budget (at
    most --epochs), records them, and finishes as 'done'; a resume keeps the plan."""
    short = train_gan(tiny_prep, tmp_path / "short", _tiny(epochs=5, minutes=1e-4))
    assert short["stopped"] == "done" and short["epochs_done"] == short["planned_epochs"] == 1
    long = train_gan(tiny_prep, tmp_path / "long", _tiny(epochs=3, minutes=60.0))
    assert long["epochs_done"] == long["planned_epochs"] == 3  # the cap
    state = load_checkpoint(checkpoint_path(tmp_path / "short"))
    assert state["planned_epochs"] == 1
    again = train_gan(tiny_prep, tmp_path / "short", _tiny(epochs=5, minutes=1e-4), resume=True)
    assert again["epochs_done"] == 1  # the plan holds: nothing more to train
    # a budget below the training time already spent is refused, not recorded as met
    before = file_sha256(checkpoint_path(tmp_path / "long"))
    with pytest.raises(MasksynthError, match=r"already trained .* --minutes must be at least"):
        train_gan(tiny_prep, tmp_path / "long", _tiny(epochs=3, minutes=1e-4), resume=True)
    assert file_sha256(checkpoint_path(tmp_path / "long")) == before


def test_a_budget_is_replanned_each_epoch_without_the_slow_first_one():
    """The first epoch pays for kernel warm-up: planning from it alone left a fifth to a
    third of the budget unused. Later epochs are timed without it."""
    trainer = object.__new__(Trainer)  # only the planning state; no networks needed
    trainer.config = _tiny(epochs=1000, minutes=5.0)  # 300 s
    trainer.planned_epochs, trainer.planned, trainer.first_epoch_s = 1000, False, 0.0
    trainer.ranks, trainer.device = Ranks(), torch.device("cpu")  # one process
    trainer.epoch, trainer.elapsed = 1, 20.0  # a 20 s first epoch
    trainer._plan()
    assert trainer.planned_epochs == 1 + 280 // 20
    trainer.epoch, trainer.elapsed = 2, 30.0  # then 10 s per epoch
    trainer._plan()
    assert trainer.planned_epochs == 2 + 270 // 10
    trainer.epoch, trainer.elapsed = 29, 310.0  # overspent: never fewer than done
    trainer._plan()
    assert trainer.planned_epochs == 29
    trainer.config = _tiny(epochs=20, minutes=5.0)
    trainer.epoch, trainer.elapsed = 2, 30.0  # --epochs caps what the budget would allow
    trainer._plan()
    assert trainer.planned_epochs == 20


@pytest.mark.parametrize(("ramp", "step", "cap"), [(10.0, 90.0, 0.999), (4.0, 96.0, 0.999)])
def test_ema_moves_by_its_warm_up_decay(ramp, step, cap):
    """After s steps the EMA moves 1 - min(cap, (1 + s) / (ramp + s)) of the way to G: a
    smaller ramp keeps more of the past (the longer average `best` samples with)."""
    from masksynth.gan.ema import ema_update
    from masksynth.gan.networks.dcgan import Generator

    torch.manual_seed(0)
    G, ema = Generator(width=8), Generator(width=8)
    before = [p.detach().clone() for p in ema.parameters()]
    ema_update(ema, G, cap, step, ramp)
    moved = 1.0 - min(cap, (1.0 + step) / (ramp + step))
    for p_ema, p_before, p in zip(ema.parameters(), before, G.parameters(), strict=True):
        assert torch.allclose(p_ema, p_before + moved * (p.detach() - p_before), atol=1e-6)
    assert moved == pytest.approx(0.09 if ramp == 10.0 else 0.03)
