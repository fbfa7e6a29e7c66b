"""Seeds for the separate streams of randomness of a run, from its one seed.

Every stream (a class's latents, an epoch's data order, a process's noise...) gets its own
seed from `derive_seed(seed, STREAM, *indices)`: numpy's SeedSequence mixes the numbers, so
streams never overlap by an accident of arithmetic (seed 1's epoch 3 is not seed 0's epoch
103), and a run that resumes derives exactly the seeds it would have used.
"""

from __future__ import annotations

import numpy as np

# One number per stream: the first index after the run's seed.
LATENTS = 1  # per class: the latent block of `sample` and the training grids
GAN_ORDER = 2  # per epoch and G/D pair: the shuffle of the training images
PROCESS = 3  # per torchrun process: its own noise and augmentations
BATCHNORM = 4  # per step: the latents that recompute the EMA generator's BatchNorm statistics
RESUMED_PROCESS = 5  # per step and process: noise after resuming with another process count
CLASSIFIER_ORDER = 6  # per epoch: the classifier's shuffle of its training images
CLASSIFIER_DEGRADE = 8  # per epoch and process: the classifier's camera degradations
ROBUSTNESS_DRAWS = 7  # per degradation: the random parts of the robustness report's images


def derive_seed(seed: int, stream: int, *indices: int) -> int:
    """A 63-bit seed for one stream (and its indices) of the run seeded with `seed`."""
    # SeedSequence reads missing words as zeros, so [0, 1] and [0, 1, 0] would mix alike: the
    # count of indices comes first and the seed (of any size) last, which keeps them apart
    entropy = [stream, len(indices), *indices, seed]
    words = np.random.SeedSequence(entropy).generate_state(2, np.uint32)
    return int(words[0]) << 31 | int(words[1]) >> 1
