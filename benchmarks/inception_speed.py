"""Inception-v3 feature extraction (FID/KID, the privacy audit) images/s: masksynth's
onnxruntime path on CPUs against the plain way, the same TorchScript network in eager torch.

Both take the same uint8 64x64 faces through the same resize to 299 px, in batches of 16,
and must give the same features (the largest difference is printed). Prints one JSON line;
medians over --repeats, the first batch of each (warm-up) left out.

    python benchmarks/inception_speed.py --images 96 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from common import result

from masksynth.device import cpu_has_native_bf16
from masksynth.metrics.inception import extract_features


def images_per_s(images: torch.Tensor, backend: str) -> float:
    extract_features(images[:16], backend=backend)  # warm-up (and the one-off export)
    start = time.perf_counter()
    extract_features(images, backend=backend)
    return len(images) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    images = torch.randint(
        0,
        256,
        (args.images, 3, 64, 64),
        dtype=torch.uint8,
        generator=torch.Generator().manual_seed(0),
    )
    ours, plain = [], []
    for _ in range(args.repeats):
        ours.append(images_per_s(images, "onnxruntime"))
        plain.append(images_per_s(images, "torch"))
    difference = (
        (
            extract_features(images[:16], backend="onnxruntime")
            - extract_features(images[:16], backend="torch")
        )
        .abs()
        .max()
        .item()
    )
    print(
        json.dumps(
            result(
                "inception_features_cpu",
                "img/s",
                ours,
                plain,
                max_feature_difference=difference,
                threads=torch.get_num_threads(),
                cpu_native_bf16=cpu_has_native_bf16(),
            )
        )
    )


if __name__ == "__main__":
    main()
