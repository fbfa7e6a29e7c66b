import pytest
import torch
from torch import nn

from masksynth.gan.diffaugment import color, cutout, diff_augment, translation
from masksynth.gan.networks import Discriminator, Generator


def _layer_types(module: nn.Module) -> list[str]:
    return [type(m).__name__ for m in module.net] if hasattr(module, "net") else []


def test_paper_generator_layers_and_shapes():
    G = Generator()
    assert _layer_types(G) == ["ConvTranspose2d", "BatchNorm2d", "ReLU"] * 4 + [
        "ConvTranspose2d",
        "Tanh",
    ]
    convs = [m for m in G.net if isinstance(m, nn.ConvTranspose2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [
        (128, 512),
        (512, 256),
        (256, 128),
        (128, 64),
        (64, 3),
    ]
    assert all(c.kernel_size == (4, 4) for c in convs)
    out = G(torch.randn(5, 128, 1, 1))
    assert out.shape == (5, 3, 64, 64)
    assert not torch.allclose(out[0], out[1])  # the latent decides the image


def test_paper_discriminator_layers_and_shapes():
    D = Discriminator()
    types = [type(m).__name__ for m in D.features]
    assert types == ["Conv2d", "LeakyReLU"] + ["Conv2d", "BatchNorm2d", "LeakyReLU"] * 3
    assert all(m.negative_slope == 0.2 for m in D.features if isinstance(m, nn.LeakyReLU))
    assert isinstance(D.head, nn.Conv2d) and D.head.out_channels == 1
    logits = D(torch.randn(6, 3, 64, 64))
    assert logits.shape == (6,)  # logits: the sigmoid is inside BCE-with-logits


def test_conditional_and_spectral_variants():
    G = Generator(n_classes=2)
    labels = torch.tensor([0, 1, 1])
    assert G(torch.randn(3, 128, 1, 1), labels).shape == (3, 3, 64, 64)
    with pytest.raises(ValueError, match="needs labels"):
        G(torch.randn(3, 128, 1, 1))
    D = Discriminator(n_classes=2, norm="spectral")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in D.modules())
    x = torch.randn(3, 3, 64, 64)
    # the projection term makes the class matter
    assert not torch.allclose(D(x, labels), D(x, 1 - labels))


def test_class_norm_generator_scales_every_layer_by_class():
    from masksynth.gan.networks.dcgan import ClassBatchNorm2d

    torch.manual_seed(0)
    G = Generator(width=8, n_classes=2, class_norm=True)
    norms = [m for m in G.net if isinstance(m, ClassBatchNorm2d)]
    assert len(norms) == 4 and not any(type(m) is nn.BatchNorm2d for m in G.net)
    # initialised as the DCGAN's BN gamma / beta, per class (not as N(0, 0.02) embeddings)
    scale = torch.cat([m.scale.weight.flatten() for m in norms])
    assert (scale - 1).abs().max() < 0.2 and all((m.shift.weight == 0).all() for m in norms)
    z, labels = torch.randn(4, 128, 1, 1), torch.tensor([0, 1, 0, 1])
    out = G(z, labels)
    assert out.shape == (4, 3, 64, 64)
    out.mean().backward()
    # the class reaches every layer: each class's scale of every norm gets a gradient
    assert all((m.scale.weight.grad.abs().sum(dim=1) > 0).all() for m in norms)
    G.eval()
    with torch.no_grad():  # eval mode: image i depends on (z_i, class_i) alone
        alone = G(z[:1], labels[:1])
        assert torch.allclose(G(z, labels)[:1], alone, atol=1e-6)
        assert not torch.allclose(G(z[:1], 1 - labels[:1]), alone)
    with pytest.raises(ValueError, match="needs classes"):
        Generator(class_norm=True)


def test_diffaugment_keeps_shape_and_gradients():
    x = torch.rand(8, 3, 64, 64, requires_grad=True)
    y = diff_augment(x * 2 - 1, "color,translation,cutout")
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="unknown DiffAugment"):
        diff_augment(x, "rotate")


def test_cutout_zeroes_one_square_of_half_the_side():
    torch.manual_seed(0)
    out = cutout(torch.ones(16, 3, 64, 64))
    zeros = (out == 0).all(dim=1).flatten(1).sum(dim=1)
    assert (zeros == 32 * 32).all()


def test_translation_moves_content_within_an_eighth():
    torch.manual_seed(0)
    x = torch.zeros(64, 1, 64, 64)
    x[:, :, 32, 32] = 1.0
    moved = translation(x)
    positions = moved[:, 0].flatten(1).argmax(dim=1)
    dy, dx = positions // 64 - 32, positions % 64 - 32
    assert dy.abs().max() <= 8 and dx.abs().max() <= 8
    assert (dy != 0).any() and (dx != 0).any()


def test_color_changes_images_differently():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 8, 8) * 2 - 1
    y = color(x)
    assert not torch.allclose(x, y)
    assert len({round(float(v), 4) for v in (y - x).mean(dim=(1, 2, 3))}) == 4
