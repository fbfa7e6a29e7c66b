"""Class-wise BatchNorm in conditional generators (--g-class-norm), and reading back the
recipes of runs recorded before the setting existed."""

import pytest
import torch

from masksynth.config import gan_config
from masksynth.gan.networks import build_generator
from masksynth.gan.networks.dcgan import ClassBatchNorm2d
from masksynth.gan.resume import gan_inputs, recorded_gan_inputs
from masksynth.provenance import changes


def _class_norms(G: torch.nn.Module) -> list[ClassBatchNorm2d]:
    return [m for m in G.modules() if isinstance(m, ClassBatchNorm2d)]


@pytest.mark.parametrize("family", ["dcgan", "fastgan"])
def test_the_config_reaches_every_norm_and_each_class_uses_its_own_row(family):
    config = gan_config("quick", family=family, g_width=4, g_class_norm=True)
    torch.manual_seed(0)
    G = build_generator(config, 2)
    norms = _class_norms(G)
    plain = [m for m in G.modules() if type(m) is torch.nn.BatchNorm2d and m.affine]
    assert len(norms) >= 4 and plain == []  # every G norm is class-wise
    per_class = gan_config("quick", family=family, g_width=4, g_class_norm=True, mode="per-class")
    assert _class_norms(build_generator(per_class, 2)) == []  # one class per pair: plain BN
    assert _class_norms(build_generator(gan_config("quick", family=family, g_width=4), 2)) == []

    z = torch.randn(4, config.z_dim, 1, 1)
    zeros, ones = torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)
    with torch.no_grad():
        before0, before1 = G(z, zeros), G(z, ones)
        for m in norms:  # class 1's scale and shift only
            m.scale.weight[1].mul_(3.0)
            m.shift.weight[1].add_(0.5)
        assert torch.equal(G(z, zeros), before0)  # class 0 reads its own row
        assert not torch.allclose(G(z, ones), before1)  # class 1 reads the changed one


def test_a_recipe_recorded_before_a_new_setting_is_still_the_same_recipe():
    current = gan_inputs("prep1", gan_config("quick"))
    old = {**current, "recipe": {k: v for k, v in current["recipe"].items() if k != "g_class_norm"}}
    assert changes(old, current)  # compared as written, the missing key looks like a change
    assert changes(recorded_gan_inputs(old), current) == []
    other = gan_inputs("prep1", gan_config("quick", g_class_norm=True))
    assert any("recipe" in line for line in changes(recorded_gan_inputs(old), other))
    future = {**current, "recipe": {**current["recipe"], "from_a_newer_version": 1}}
    assert recorded_gan_inputs(future) == future and changes(recorded_gan_inputs(future), current)
    assert recorded_gan_inputs(None) is None
