"""Run by test_distributed under torchrun: trains a GAN and a classifier through the real API.

Each rank records every file it writes under OUT (an audit hook sees Python's opens,
renames and mkdirs) and, to SPY, the weights it ended with, so the test can check that
rank 0 alone wrote and that the ranks agree.
"""

import json
import os
import sys
from pathlib import Path

import torch

import masksynth.classify.train as classify_train
import masksynth.gan.loop as gan_loop
import masksynth.gan.train as gan_train
from masksynth.config import classifier_config, gan_config

prep, out, spy = (Path(a).resolve() for a in sys.argv[1:4])
rank = int(os.environ["RANK"])
writes = []
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND


def audit(event, args):
    if event == "open":
        path, mode, flags = args
        writing = any(c in mode for c in "wax+") if isinstance(mode, str) else flags & WRITE_FLAGS
        paths = [path] if writing else []
    elif event in ("os.mkdir", "os.remove", "os.rmdir"):
        paths = [args[0]]
    elif event in ("os.rename", "os.replace"):
        paths = [args[1]]
    else:
        return
    for path in paths:
        if isinstance(path, (str, os.PathLike)) and str(Path(path).resolve()).startswith(str(out)):
            writes.append(str(path))


sys.addaudithook(audit)

# Spies (not mocks): they keep a reference to the real trainer and model that run.
seen = {}
real_run, real_build = gan_loop.Trainer.run, classify_train.build_model


def run(self, *args):
    seen["trainer"] = self
    return real_run(self, *args)


def build_model(*args, **kwargs):
    seen["model"] = real_build(*args, **kwargs)
    return seen["model"]


gan_loop.Trainer.run = run
classify_train.build_model = build_model

config = gan_config(
    "paper",
    g_width=8,
    d_width=8,
    batch_size=8,
    epochs=2,
    device="cpu",
    precision="fp32",
    final_metrics=False,
    log_every_steps=1,
    checkpoint_every_steps=2,
)
gan_train.train_gan(prep, out / "gan", config)
weights = {}
for pair in seen["trainer"].pairs:
    weights.update({f"{pair.name}.G.{k}": v for k, v in pair.G.state_dict().items()})
    weights.update({f"{pair.name}.D.{k}": v for k, v in pair.D.named_parameters()})
torch.save(weights, spy / f"gan-rank{rank}.pt")

clf = classifier_config("paper", epochs=2, batch_size=8, device="cpu", precision="fp32")
classify_train.train_classifier(prep, out / "clf", clf)
torch.save(seen["model"].state_dict(), spy / f"clf-rank{rank}.pt")

(spy / f"writes-rank{rank}.json").write_text(json.dumps(writes))
