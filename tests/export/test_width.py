"""unetrt.export.width: widening keeps the narrow network's function; narrowing keeps the largest channels."""

from __future__ import annotations

from collections.abc import Callable

import pytest

torch = pytest.importorskip("torch")

from unetrt.export.model import UNet  # noqa: E402 - after the torch check
from unetrt.export.width import ChannelMap, _copy_unet, channel_scores, narrow_unet, widen_unet  # noqa: E402


def _trained_like(net: UNet, seed: int) -> UNet:
    """Random batch-norm statistics and affine terms, as training leaves them (fresh ones are 0 and 1)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.3)
                module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
    return net.eval()


@pytest.mark.parametrize(("activation", "padding", "batch_norm"),
                         [("relu", "same", True), ("elu", "same", False), ("relu", "valid", False)])
def test_without_noise_the_wide_network_computes_the_narrow_ones_logits(activation: str, padding: str,
                                                                         batch_norm: bool) -> None:
    torch.manual_seed(0)
    kwargs = dict(depth=3, activation=activation, padding=padding, batch_norm=batch_norm, dropout=(0.1, 0.2, 0.3))
    narrow = _trained_like(UNet(3, 5, base=4, **kwargs), seed=1)
    wide = widen_unet(narrow, UNet(3, 5, base=7, **kwargs), seed=3, noise=0.0).eval()
    size = 64 if padding == "same" else 92
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        want, have = narrow(x), wide(x)
    assert want.shape == have.shape
    torch.testing.assert_close(have, want, atol=1e-4, rtol=1e-4)


def test_noise_separates_the_copies_and_keeps_the_function_close() -> None:
    torch.manual_seed(0)
    narrow = _trained_like(UNet(3, 4, base=4, depth=3, batch_norm=True, dropout=(0.0,) * 3), seed=2)
    wide = widen_unet(narrow, UNet(3, 4, base=8, depth=3, batch_norm=True, dropout=(0.0,) * 3), noise=0.01).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want, have = narrow(x), wide(x)
    assert not torch.equal(want, have)
    assert float((have - want).abs().max()) < 0.05 * float(want.abs().max())
    first = wide.encoder[0][0].weight
    assert not any(torch.equal(first[copy], first[original]) for copy in range(4, 8) for original in range(4))


def test_the_kept_channels_are_the_narrow_networks_own() -> None:
    narrow = UNet(1, 2, base=4, depth=2, dropout=(0.0, 0.0))
    wide = widen_unet(narrow, UNet(1, 2, base=6, depth=2, dropout=(0.0, 0.0)), noise=0.0)
    # The first convolution reads the image, whose channels are not repeated: its first 4 filters are copied.
    torch.testing.assert_close(wide.encoder[0][0].weight[:4], narrow.encoder[0][0].weight)


def test_refuses_networks_of_another_family_or_a_narrower_target() -> None:
    narrow = UNet(3, 4, base=8, depth=3, dropout=(0.0,) * 3)
    with pytest.raises(ValueError, match="at least the narrow one's channels"):
        widen_unet(narrow, UNet(3, 4, base=4, depth=3, dropout=(0.0,) * 3))
    with pytest.raises(ValueError, match="one depth and padding"):
        widen_unet(narrow, UNet(3, 4, base=16, depth=4, dropout=(0.0,) * 4))
    with pytest.raises(ValueError, match="input channels and classes"):
        widen_unet(narrow, UNet(3, 5, base=16, depth=3, dropout=(0.0,) * 3))
    with pytest.raises(ValueError, match="differ in layers"):
        widen_unet(narrow, UNet(3, 4, base=16, depth=3, dropout=(0.0,) * 3, batch_norm=True))


def _silence(net: UNet, kept: int) -> UNet:
    """Batch-norm channels past ``kept`` eighths at every level output zero after ReLU (gamma 0, beta < 0), the
    upsampling convolutions' channels past ``kept`` zero filters and bias: removing them changes nothing."""
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                width = module.num_features
                module.weight[width * kept // 8:] = 0.0
                module.bias[width * kept // 8:] = -1.0
        for up in net.upsample:
            width = up.out_channels
            up.weight[:, width * kept // 8:] = 0.0
            up.bias[width * kept // 8:] = 0.0
    return net


def _shuffled(net: UNet, seed: int) -> UNet:
    """The same function with every layer's channels in another order: the silent ones are not simply last."""
    generator = torch.Generator().manual_seed(seed)

    def order(width: int) -> torch.Tensor:
        return torch.randperm(width, generator=generator)

    shuffled = UNet(3, 4, base=8, depth=3, activation="relu", batch_norm=True, dropout=(0.0,) * 3)

    # The copy with a permutation for every layer's map and no noise is a relabelling of the channels.
    def choose(sources: int, _conv: object, _activation: object, _norm: object, _targets: int) -> ChannelMap:
        return ChannelMap(order(sources), torch.ones(sources))

    return _copy_unet(net, shuffled, choose, 0.0, generator).eval()


def test_narrowing_away_silent_channels_keeps_the_function_exactly() -> None:
    torch.manual_seed(0)
    settings = dict(depth=3, activation="relu", batch_norm=True, dropout=(0.0,) * 3)
    wide = _shuffled(_silence(_trained_like(UNet(3, 4, base=8, **settings), seed=4), kept=5), seed=5)
    narrow = narrow_unet(wide, UNet(3, 4, base=5, **settings)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want, have = wide(x), narrow(x)
    torch.testing.assert_close(have, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("resize", [narrow_unet, widen_unet], ids=["narrow", "widen"])
def test_resizing_to_the_same_width_is_a_copy(resize: Callable[[UNet, UNet], UNet]) -> None:
    source = _trained_like(UNet(3, 4, base=4, depth=3, batch_norm=True, dropout=(0.0,) * 3), seed=6)
    same = resize(source, UNet(3, 4, base=4, depth=3, batch_norm=True, dropout=(0.0,) * 3))
    for (name, want), have in zip(source.state_dict().items(), same.state_dict().values(), strict=True):
        torch.testing.assert_close(have, want, msg=name)


def test_channel_scores_rank_by_what_the_activation_lets_through() -> None:
    block = UNet(3, 2, base=3, depth=2, activation="relu", batch_norm=True, dropout=(0.0, 0.0)).encoder[0]
    with torch.no_grad():
        block[1].weight.copy_(torch.tensor([5.0, 1.0, 0.0]))
        # the first channel's gamma is largest, but beta far below zero leaves ReLU almost nothing of it
        block[1].bias.copy_(torch.tensor([-40.0, 0.0, 0.5]))
    scores = channel_scores(block[0], block[2], block[1])
    assert scores[0] < 1e-6
    # E[relu(z)] = 1/sqrt(2 pi) for a standard normal z; a constant 0.5 passes whole
    torch.testing.assert_close(scores[1], torch.tensor(1 / (2 * torch.pi) ** 0.5), atol=0.0, rtol=0.01)
    torch.testing.assert_close(scores[2], torch.tensor(0.5))


def test_narrowing_refuses_a_wider_target_or_another_family() -> None:
    wide = UNet(3, 4, base=8, depth=3, dropout=(0.0,) * 3)
    with pytest.raises(ValueError, match="at most the wide one's channels"):
        narrow_unet(wide, UNet(3, 4, base=16, depth=3, dropout=(0.0,) * 3))
    with pytest.raises(ValueError, match="differ in layers"):
        narrow_unet(wide, UNet(3, 4, base=4, depth=3, dropout=(0.0,) * 3, batch_norm=True))


def test_noise_goes_only_onto_the_repeated_channels() -> None:
    narrow = UNet(1, 2, base=4, depth=2, dropout=(0.0, 0.0))
    wide = widen_unet(narrow, UNet(1, 2, base=6, depth=2, dropout=(0.0, 0.0)), noise=0.01)
    # The narrow network's own filters stay exact; only the copies drift apart.
    torch.testing.assert_close(wide.encoder[0][0].weight[:4], narrow.encoder[0][0].weight, atol=0.0, rtol=0.0)


def test_widening_refuses_another_padding() -> None:
    # 'valid' convolutions would take the 'same' network's weights without an error and compute another function.
    narrow = UNet(3, 4, base=4, depth=3, padding="same", dropout=(0.0,) * 3)
    with pytest.raises(ValueError, match="one depth and padding, got 3/'same' and 3/'valid'"):
        widen_unet(narrow, UNet(3, 4, base=8, depth=3, padding="valid", dropout=(0.0,) * 3))


def test_channel_scores_count_negative_elu_outputs() -> None:
    block = UNet(3, 2, base=2, depth=2, activation="elu", batch_norm=True, dropout=(0.0, 0.0)).encoder[0]
    with torch.no_grad():
        block[1].weight.copy_(torch.tensor([0.0, 0.0]))
        # a channel ELU holds at elu(-40) = -1 carries as much as one held at +1: dropping either shifts the next layer
        block[1].bias.copy_(torch.tensor([-40.0, 1.0]))
    torch.testing.assert_close(channel_scores(block[0], block[2], block[1]), torch.tensor([1.0, 1.0]))
