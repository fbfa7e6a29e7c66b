"""Two processes on CPU through torchrun (gloo): DDP training, rank-0-only writes, equal weights."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from masksynth.gan.checkpoint import checkpoint_path, load_checkpoint

WORKER = Path(__file__).with_name("ddp_worker.py")


def _torchrun(*args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
    ]
    return subprocess.run(
        [*command, *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd, timeout=600
    )


def test_two_processes_train_in_step_and_only_rank_0_writes(tiny_prep, tmp_path):
    out, spy = tmp_path / "out", tmp_path / "spy"
    spy.mkdir()
    done = _torchrun(WORKER, tiny_prep, out, spy, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]

    writes = {r: json.loads((spy / f"writes-rank{r}.json").read_text()) for r in (0, 1)}
    assert writes[1] == []
    assert any(w.endswith("metrics.jsonl") for w in writes[0])
    assert any("checkpoint" in w for w in writes[0]) and any("classifier" in w for w in writes[0])

    for name in ("gan", "clf"):
        rank0, rank1 = (torch.load(spy / f"{name}-rank{r}.pt") for r in (0, 1))
        assert rank0.keys() == rank1.keys()
        differ = [k for k in rank0 if not torch.equal(rank0[k], rank1[k])]
        assert not differ, f"{name}: ranks differ in {differ[:5]}"

    # The checkpoint is rank 0's state, with both ranks' noise generators for resuming.
    state = load_checkpoint(checkpoint_path(out / "gan"))
    gan = torch.load(spy / "gan-rank0.pt")
    for unit, saved in state["units"].items():
        assert torch.equal(saved["D"]["features.0.weight"], gan[f"{unit}.D.features.0.weight"])
    assert len(state["rng_ranks"]) == 2
    assert not torch.equal(state["rng_ranks"][0]["torch"], state["rng_ranks"][1]["torch"])
    meta = json.loads((out / "gan" / "gan.json").read_text())
    assert meta["processes"] == 2 and meta["stopped"] == "done"
    # 2 classes x 24 training images, global batch 8: 3 steps per epoch, as in one process
    assert meta["steps"] == 6
    logged = [json.loads(line) for line in (out / "gan" / "metrics.jsonl").read_text().splitlines()]
    assert {r["step"] for r in logged} == set(range(1, 7))
    clf = json.loads((out / "clf" / "train.json").read_text())
    assert clf["processes"] == 2


def test_resume_under_torchrun_continues_the_run(tiny_prep, tmp_path):
    command = ["-m", "masksynth", "train-gan", tiny_prep, "--out", tmp_path / "run"]
    command += ["--device", "cpu"]
    tiny = ["--g-width", "8", "--d-width", "8", "--batch-size", "8", "--no-final-metrics"]
    first = _torchrun(*command, "--epochs", "1", *tiny, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    more = _torchrun(*command, "--epochs", "2", "--resume", cwd=tmp_path)
    assert more.returncode == 0, more.stderr[-3000:]
    state = load_checkpoint(checkpoint_path(tmp_path / "run"))
    assert state["epoch"] == 2 and state["global_step"] == 6


def test_a_time_budget_under_torchrun_is_one_plan_for_both_ranks(tiny_prep, tmp_path):
    """Each rank times its own epochs; they train the same planned epochs (the shortest
    plan) instead of one waiting forever in a collective the other never reaches."""
    command = ["-m", "masksynth", "train-gan", tiny_prep, "--out", tmp_path / "run"]
    command += ["--device", "cpu", "--g-width", "8", "--d-width", "8", "--batch-size", "8"]
    command += ["--no-final-metrics", "--minutes", "0.15", "--epochs", "500"]
    done = _torchrun(*command, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    meta = json.loads((tmp_path / "run" / "gan.json").read_text())
    assert meta["processes"] == 2 and meta["stopped"] == "done"
    assert 2 <= meta["epochs_done"] == meta["planned_epochs"] < 500
