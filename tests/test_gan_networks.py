import pytest
import torch
from torch import nn

from masksynth.config import gan_config
from masksynth.gan.diffaugment import color, cutout, diff_augment, tone, translation
from masksynth.gan.networks import Discriminator, Generator
from masksynth.gan.networks.dcgan import LatentProjection, WholeMapConv
from masksynth.gan.networks.lowpass import OutputLowPass
from masksynth.gan.pair import build_pairs


def _layer_types(module: nn.Module) -> list[str]:
    """Layer kinds, a network's own fast forms of a layer named as that layer."""
    plain = (nn.ConvTranspose2d, nn.Conv2d)
    return [
        next((k.__name__ for k in plain if isinstance(m, k)), type(m).__name__) for m in module.net
    ]


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
    assert isinstance(D.head, WholeMapConv) and D.head.out_channels == 1
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


@pytest.mark.parametrize("norm", ["layer", "group"])
def test_a_per_image_norm_scores_each_image_whatever_its_batch(norm):
    """'layer' and 'group' normalise each image on its own: in training mode an image's
    score does not move with the other images of its batch, as it does under BatchNorm."""
    torch.manual_seed(0)
    image, others = torch.randn(1, 3, 64, 64), torch.randn(2, 2, 3, 64, 64)
    labels = torch.tensor([0, 1, 0])
    for kind in (norm, "batch"):  # BatchNorm: the control that the check tells them apart
        D = Discriminator(width=8, n_classes=2, norm=kind).train()
        scores = [D(torch.cat([image, rest]), labels)[0] for rest in others]
        same = torch.allclose(scores[0], scores[1], atol=1e-6)
        assert same == (kind != "batch"), kind


@pytest.mark.parametrize(("norm", "groups"), [("layer", [1, 1, 1]), ("group", [32, 32, 32])])
def test_the_per_image_norms_group_the_channels_as_named(norm, groups):
    D = Discriminator(width=32, norm=norm)
    norms = [m for m in D.modules() if isinstance(m, nn.GroupNorm)]
    assert [m.num_groups for m in norms] == groups
    assert not any(isinstance(m, nn.BatchNorm2d) for m in D.modules())
    with pytest.raises(ValueError, match="unknown discriminator norm"):
        Discriminator(norm="instance")


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


def _channel_spread(x: torch.Tensor) -> torch.Tensor:
    """Each image's mean spread between its largest and smallest channel: its colour."""
    return (x.amax(dim=1) - x.amin(dim=1)).mean(dim=(1, 2))


def test_tone_keeps_colour_that_color_can_take_away():
    torch.manual_seed(0)
    x = torch.rand(256, 3, 8, 8) * 2 - 1
    before = _channel_spread(x)
    # tone scales the colour with the contrast (0.5 to 1.5); color's saturation (0 to 2)
    # turns some images nearly grey, so D cannot tell a grey photo from a grey-washed fake
    assert (_channel_spread(tone(x)) / before).min() >= 0.5 - 1e-4
    assert (_channel_spread(color(x)) / before).min() < 0.1
    grey = x[:, :1].expand(-1, 3, -1, -1)
    assert _channel_spread(tone(grey)).max() < 1e-5  # and a grey image stays grey
    shifts = (tone(x) - x).mean(dim=(1, 2, 3))
    assert shifts.std() > 0.1  # brightness differs from image to image


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_matrix_product_layers_equal_the_convolutions_they_replace(memory_format):
    """G's first and D's last layer compute their convolution as a matrix product: the same
    outputs and weight gradients as the plain layer with the same weights."""
    torch.manual_seed(0)
    cases = [
        (LatentProjection(16, 8, 4, 1, 0, bias=False), nn.ConvTranspose2d, (5, 16, 1, 1)),
        (WholeMapConv(16, 3, 4, 1, 0, bias=True), nn.Conv2d, (5, 16, 4, 4)),
    ]
    for fast, plain_kind, shape in cases:
        plain = plain_kind(16, fast.out_channels, 4, 1, 0, bias=fast.bias is not None)
        plain.load_state_dict(fast.state_dict())  # same names: checkpoints load either way
        fast, plain = (m.to(memory_format=memory_format) for m in (fast, plain))
        x = torch.randn(shape).contiguous(memory_format=memory_format)
        out, expected = fast(x), plain(x)
        assert out.shape == expected.shape and torch.allclose(out, expected, atol=1e-5)
        (out * expected.detach()).sum().backward()
        (expected * expected.detach()).sum().backward()
        assert torch.allclose(fast.weight.grad, plain.weight.grad, atol=1e-4)
    # other inputs fall back to the plain convolution
    first = LatentProjection(16, 8, 4, 1, 0, bias=False)
    assert first(torch.randn(2, 16, 2, 2)).shape == (2, 8, 5, 5)


def test_color_is_brightness_then_saturation_then_contrast():
    """The one-pass colour transform equals DiffAugment's three steps on the same draws."""
    x = torch.rand(6, 3, 8, 8) * 2 - 1
    torch.manual_seed(1)
    out = color(x)
    torch.manual_seed(1)
    b, s, c = (torch.rand(6, 1, 1, 1) for _ in range(3))
    y = x + (b - 0.5)
    y = (y - y.mean(dim=1, keepdim=True)) * (s * 2) + y.mean(dim=1, keepdim=True)
    y = (y - y.mean(dim=(1, 2, 3), keepdim=True)) * (c + 0.5) + y.mean(dim=(1, 2, 3), keepdim=True)
    assert torch.allclose(out, y, atol=1e-5)


def test_translation_moves_every_channel_together_and_fills_grey():
    torch.manual_seed(0)
    x = (torch.rand(16, 3, 64, 64) + 1).contiguous(memory_format=torch.channels_last)
    moved = translation(x)
    assert moved.shape == x.shape
    filled = moved == 0  # the border the shift uncovers (x itself is never 0)
    assert (filled.all(dim=1) == filled.any(dim=1)).all()
    # what is not filled is the image itself, shifted: every pixel of it comes from x
    kept = moved[~filled]
    assert torch.isin(kept, x).all() and filled.any()


def test_the_class_heads_give_class_logits_only_where_built():
    D = Discriminator(width=8, n_classes=3, norm="layer", class_heads=2)
    x, labels = torch.randn(5, 3, 64, 64), torch.tensor([0, 1, 2, 0, 1])
    logit, heads = D(x, labels, with_classes=True)
    assert logit.shape == (5,) and heads.shape == (5, 2, 3)
    assert torch.equal(logit, D(x, labels))  # the heads add outputs, not a change of score
    assert not torch.allclose(heads[:, 0], heads[:, 1])  # two heads, not one twice
    # they see the features averaged over positions: a mirrored image gets the same classes
    # only if the features were mirror-invariant, which random weights are not
    assert not torch.allclose(heads, D(x.flip(3), labels, with_classes=True)[1])
    plain = Discriminator(width=8, n_classes=3)
    assert plain.classify is None and "classify.weight" not in plain.state_dict()
    with pytest.raises(ValueError, match="no class head"):
        plain(x, labels, with_classes=True)
    with pytest.raises(ValueError, match="needs classes"):
        Discriminator(width=8, class_heads=1)


def test_the_output_low_pass_removes_the_checkerboard_and_keeps_flat_and_smooth_images():
    low_pass = OutputLowPass(3)
    rows, cols = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    checkerboard = ((-1.0) ** (rows + cols)).expand(2, 3, 64, 64)
    assert low_pass(checkerboard).abs().max() < 1e-6  # borders too: reflect padding
    flat = torch.full((2, 3, 64, 64), 0.3)
    assert torch.allclose(low_pass(flat), flat)
    ramp = (cols / 63.0).expand(2, 3, 64, 64)  # linear: unchanged away from the borders
    assert torch.allclose(low_pass(ramp)[..., 1:-1, 1:-1], ramp[..., 1:-1, 1:-1], atol=1e-6)
    channels = torch.randn(1, 3, 64, 64)
    separately = torch.cat(
        [low_pass(channels[:, [c]].expand(1, 3, 64, 64))[:, :1] for c in range(3)], 1
    )
    assert torch.allclose(low_pass(channels), separately, atol=1e-6)  # each channel on its own
    assert not list(low_pass.parameters()) and not low_pass.state_dict()


@pytest.mark.parametrize("family", ["dcgan", "fastgan"])
def test_a_low_pass_generator_filters_the_last_map_with_the_same_weights(family):
    """The filter adds no weight and draws no number: the same seed builds the same weights,
    and the filtered G's image is tanh(low-pass(the plain G's last map))."""
    from masksynth.config import gan_config
    from masksynth.gan.networks import build_generator

    nets = []
    for low_pass in (False, True):
        torch.manual_seed(0)
        config = gan_config("quick", family=family, g_width=8, g_low_pass=low_pass)
        nets.append(build_generator(config, 2))  # train mode: BatchNorm gives the maps scale
    plain, filtered = nets
    assert plain.state_dict().keys() == filtered.state_dict().keys()
    assert all(
        torch.equal(a, b)
        for a, b in zip(plain.state_dict().values(), filtered.state_dict().values(), strict=True)
    )
    last_conv = [m for m in plain.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))][-1]
    maps = []
    last_conv.register_forward_hook(lambda module, args, out: maps.append(out))
    z, labels = torch.randn(4, 128, 1, 1), torch.tensor([0, 1, 0, 1])
    with torch.no_grad():
        plain(z, labels)
        expected = torch.tanh(OutputLowPass(3)(maps[0]))
        assert torch.allclose(filtered(z, labels), expected, atol=1e-6)
        assert not torch.allclose(plain(z, labels), expected, atol=1e-3)


def test_the_pairs_step_with_fused_adam_as_plain_adam_would():
    """build_pairs takes the fused kernel on the CPU: the same update up to rounding."""
    torch.manual_seed(0)
    config = gan_config("quick")
    pair = build_pairs(config, ["a", "b"], torch.tensor([0, 1]), torch.device("cpu"))[0]
    assert pair.opt_g.defaults["fused"] and pair.opt_d.defaults["fused"]
    weights = list(pair.D.parameters())
    start = [w.detach().clone() for w in weights]
    plain_copy = [w.detach().clone().requires_grad_() for w in weights]
    plain = torch.optim.Adam(plain_copy, lr=config.lr_d, betas=config.betas, foreach=False)
    for _ in range(3):
        for w, c in zip(weights, plain_copy, strict=True):
            w.grad = torch.randn_like(w)
            c.grad = w.grad.clone()
        pair.opt_d.step()
        plain.step()
    apart = max((w - c).abs().max().item() for w, c in zip(weights, plain_copy, strict=True))
    moved = min((w - s).abs().max().item() for w, s in zip(weights, start, strict=True))
    assert moved > 1e-4 and apart < 1e-6  # three steps of lr 4e-4 each, the same ones
