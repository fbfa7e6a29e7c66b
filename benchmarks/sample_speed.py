"""`masksynth sample` speed against a plain generate-and-save loop, same checkpoint.

masksynth's sample draws per-class latent blocks, generates in fp32 eval mode and writes
each PNG atomically with a manifest. The baseline loads the same generator weights from
the checkpoint by hand, generates in batches and saves each image with
torchvision.utils.save_image, one by one. With no --run, a GAN is trained first for one
epoch of the 'quick' preset into a temporary folder (a minute or two; not timed).
Prints one JSON line; medians over --repeats.

    python benchmarks/sample_speed.py --run runs/exp-audit/gan --n-per-class 500
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from common import result
from torchvision.utils import save_image

from masksynth.config import GanConfig, gan_config
from masksynth.device import pick_device
from masksynth.gan.networks import build_generator
from masksynth.gan.sample import sample
from masksynth.gan.train import train_gan


def plain_sample(run_dir: Path, out: Path, n_per_class: int, device: torch.device) -> None:
    """Load G from checkpoint.pt, generate n_per_class per class, save_image each one."""
    state = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
    config, classes = state["config"], state["classes"]
    for name, class_index in state["unit_classes"].items():
        weights = state["units"][name]
        conditional = class_index is None
        G = build_generator(GanConfig.from_dict(config), len(classes))  # any family or option
        G.load_state_dict(weights["G_ema"] if "G_ema" in weights else weights["G"])
        G.to(device).eval()
        for k in range(len(classes)) if conditional else [class_index]:
            (out / classes[k]).mkdir(parents=True, exist_ok=True)
            for start in range(0, n_per_class, 256):
                count = min(256, n_per_class - start)
                labels = torch.full((count,), k, device=device) if conditional else None
                with torch.no_grad():
                    images = G(torch.randn(count, config["z_dim"], 1, 1, device=device), labels)
                for j, image in enumerate(images):
                    save_image(image * 0.5 + 0.5, out / classes[k] / f"{start + j:05d}.png")


def timed(fn) -> float:
    with tempfile.TemporaryDirectory(prefix="bench-sample-") as out:
        started = time.perf_counter()
        fn(Path(out))
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a train-gan run folder with checkpoint.pt")
    parser.add_argument("--prep", type=Path, default=Path("runs/prep"), help="to train one")
    parser.add_argument("--n-per-class", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = pick_device(args.device)
    with tempfile.TemporaryDirectory(prefix="bench-gan-") as scratch:
        run_dir, trained = args.run, False
        if run_dir is None or not (run_dir / "checkpoint.pt").is_file():
            run_dir, trained = Path(scratch), True
            config = gan_config("quick", epochs=1, device=str(device), final_metrics=False)
            train_gan(args.prep, run_dir, config)
        n_classes = len(torch.load(run_dir / "checkpoint.pt", weights_only=True)["classes"])
        n = args.n_per_class * n_classes

        def ours_run(out: Path) -> None:
            sample(run_dir, out, args.n_per_class, device=str(device))

        def plain_run(out: Path) -> None:
            plain_sample(run_dir, out, args.n_per_class, device)

        ours, plain = [], []
        for _ in range(args.repeats):
            plain.append(n / timed(plain_run))
            ours.append(n / timed(ours_run))
    print(json.dumps(result("sample", "img/s", ours, plain, images=n, trained_here=trained)))


if __name__ == "__main__":
    main()
