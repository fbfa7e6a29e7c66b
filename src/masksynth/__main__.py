"""`python -m masksynth ...`, the form torchrun takes: `torchrun ... -m masksynth train-gan`."""

import sys

from masksynth.cli import main

sys.exit(main())
