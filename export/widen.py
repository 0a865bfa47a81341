"""A trained U-Net copied into a wider one that computes the same function (Net2WiderNet).

Chen, Goodfellow and Shlens (2016, "Net2Net"): a channel of the wider network either is one of the narrow
network's channels or repeats one of them, chosen at random; its incoming weights, bias and batch-norm
statistics are that channel's, and every weight reading a repeated channel is divided by how many copies it
has, so each layer's sums are the narrow network's. Training then starts from the narrow network's accuracy
instead of from scratch. Small noise on the repeated channels' incoming weights lets the copies drift apart
(otherwise they would receive identical gradients).

Example:
    >>> narrow = UNet(3, 4, base=4, depth=3)
    >>> wide = widen_unet(narrow, UNet(3, 4, base=6, depth=3), noise=0.0)
    >>> x = torch.randn(1, 3, 32, 32)
    >>> bool(torch.allclose(narrow.eval()(x), wide.eval()(x), atol=1e-5))
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from .model import UNet


@dataclass(frozen=True)
class ChannelMap:
    """Which narrow channel each wide channel copies, and how many copies each narrow channel has."""

    source: torch.Tensor  # (wide,) int64: the narrow channel of each wide channel
    copies: torch.Tensor  # (narrow,) float: how many wide channels copy each narrow channel

    @staticmethod
    def identity(channels: int) -> ChannelMap:
        return ChannelMap(torch.arange(channels), torch.ones(channels))

    @staticmethod
    def random(narrow: int, wide: int, generator: torch.Generator) -> ChannelMap:
        """The first ``narrow`` wide channels are the narrow ones; the rest repeat channels drawn at random."""
        extra = torch.randint(0, narrow, (wide - narrow,), generator=generator)
        source = torch.cat([torch.arange(narrow), extra])
        return ChannelMap(source, torch.bincount(source, minlength=narrow).to(torch.float32))

    def concat(self, other: ChannelMap, narrow_offset: int) -> ChannelMap:
        """The map of a concatenation [self, other]; ``narrow_offset`` is self's narrow channel count."""
        return ChannelMap(torch.cat([self.source, other.source + narrow_offset]),
                          torch.cat([self.copies, other.copies]))


Conv = nn.Conv2d | nn.ConvTranspose2d


def _conv(module: nn.Module) -> Conv:
    if not isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        raise ValueError(f"expected a convolution in the U-Net, found {type(module).__name__}")
    return module


def _block(module: nn.Module) -> nn.Sequential:
    if not isinstance(module, nn.Sequential):
        raise ValueError(f"expected a double-convolution block in the U-Net, found {type(module).__name__}")
    return module


def _widen_conv(narrow_module: nn.Module, wide_module: nn.Module, inputs: ChannelMap, outputs: ChannelMap,
                noise: float = 0.0, generator: torch.Generator | None = None) -> None:
    """Copy one convolution; ``noise`` times the weights' spread goes onto the repeated channels' weights."""
    narrow, wide = _conv(narrow_module), _conv(wide_module)
    # Conv2d weights are (out, in, kh, kw), ConvTranspose2d weights (in, out, kh, kw).
    weight = narrow.weight.detach()
    if isinstance(narrow, nn.ConvTranspose2d):
        weight = weight.transpose(0, 1)
    scaled = weight / inputs.copies.view(1, -1, 1, 1)
    new = scaled[outputs.source][:, inputs.source]
    kept = int(outputs.copies.numel())
    if noise > 0 and new.shape[0] > kept:
        repeated = new[kept:]
        repeated.add_(torch.randn(repeated.shape, generator=generator) * noise * float(new.std()))
    if isinstance(wide, nn.ConvTranspose2d):
        new = new.transpose(0, 1)
    with torch.no_grad():
        wide.weight.copy_(new)
        narrow_bias, wide_bias = narrow.bias, wide.bias
        if narrow_bias is not None and wide_bias is not None:
            wide_bias.copy_(narrow_bias.detach()[outputs.source])


def _widen_norm(narrow: nn.Module, wide: nn.Module, outputs: ChannelMap) -> None:
    if not isinstance(narrow, nn.BatchNorm2d) or not isinstance(wide, nn.BatchNorm2d):
        return
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(wide, name).copy_(getattr(narrow, name).detach()[outputs.source])
        # BatchNorm2d(track_running_stats=True), as the U-Net builds it, always has this counter.
        cast(torch.Tensor, wide.num_batches_tracked).copy_(cast(torch.Tensor, narrow.num_batches_tracked))


def _widen_block(narrow_module: nn.Module, wide_module: nn.Module, inputs: ChannelMap, middle: ChannelMap,
                 outputs: ChannelMap, noise: float, generator: torch.Generator) -> None:
    """A DoubleConv: conv, norm, act, dropout, conv, norm, act."""
    narrow, wide = _block(narrow_module), _block(wide_module)
    _widen_conv(narrow[0], wide[0], inputs, middle, noise, generator)
    _widen_norm(narrow[1], wide[1], middle)
    _widen_conv(narrow[4], wide[4], middle, outputs, noise, generator)
    _widen_norm(narrow[5], wide[5], outputs)


def widen_unet(narrow: UNet, wide: UNet, seed: int = 0, noise: float = 0.01) -> UNet:
    """Copy a trained U-Net into a wider one of the same family (Net2WiderNet), in place.

    Args:
        narrow: the trained network.
        wide: a network with the same depth, padding, activation, batch norm, input channels and classes and
            at least as many channels at every level (its own weights are overwritten).
        seed: seed of the random choice of repeated channels and of the noise.
        noise: noise on the repeated channels' incoming weights, as a fraction of each layer's weight spread
            (0: the wide network computes exactly the narrow one's logits, up to rounding).

    Returns:
        ``wide``, now carrying the narrow network's function.

    Raises:
        ValueError: when the two networks are not of one family or ``wide`` is narrower somewhere.
    """
    if narrow.depth != wide.depth or narrow.padding != wide.padding:
        raise ValueError(f"widen_unet needs one depth and padding, got {narrow.depth}/{narrow.padding!r} and "
                         f"{wide.depth}/{wide.padding!r}")
    narrow_widths = [int(_conv(_block(block)[0]).out_channels) for block in narrow.encoder]
    wide_widths = [int(_conv(_block(block)[0]).out_channels) for block in wide.encoder]
    if any(w < n for n, w in zip(narrow_widths, wide_widths, strict=True)):
        raise ValueError(f"the wide network must have at least the narrow one's channels per level, got "
                         f"{wide_widths} for {narrow_widths}")
    in_channels = int(_conv(_block(narrow.encoder[0])[0]).in_channels)
    if in_channels != _conv(_block(wide.encoder[0])[0]).in_channels or \
            narrow.head.out_channels != wide.head.out_channels:
        raise ValueError("widen_unet needs the same input channels and classes in both networks")
    if [type(m) for m in narrow.modules()] != [type(m) for m in wide.modules()]:
        raise ValueError("the two networks differ in layers (batch norm, activation or dropout); build them "
                         "with the same settings")
    generator = torch.Generator().manual_seed(seed)
    depth = narrow.depth
    image = ChannelMap.identity(in_channels)

    def level_map(level: int) -> ChannelMap:
        return ChannelMap.random(narrow_widths[level], wide_widths[level], generator)

    skips: list[ChannelMap] = []
    inputs = image
    for level in range(depth):
        middle, outputs = level_map(level), level_map(level)
        _widen_block(narrow.encoder[level], wide.encoder[level], inputs, middle, outputs, noise, generator)
        skips.append(outputs)
        inputs = outputs
    for index, level in enumerate(reversed(range(depth - 1))):
        upsampled = level_map(level)
        _widen_conv(narrow.upsample[index], wide.upsample[index], inputs, upsampled, noise, generator)
        joined = skips[level].concat(upsampled, narrow_widths[level])
        middle, outputs = level_map(level), level_map(level)
        _widen_block(narrow.decoder[index], wide.decoder[index], joined, middle, outputs, noise, generator)
        inputs = outputs
    _widen_conv(narrow.head, wide.head, inputs, ChannelMap.identity(int(narrow.head.out_channels)))
    return wide
