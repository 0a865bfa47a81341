"""A trained U-Net copied into one of another width: wider (Net2WiderNet) or narrower (channel pruning).

Both walk the network the same way and copy, for every layer, the chosen source channels' weights, biases and
batch-norm statistics; they differ in how each target channel picks its source channel.

* :func:`widen_unet`, Chen, Goodfellow and Shlens (2016, "Net2Net"): a channel of the wider network either is
  one of the narrow network's channels or repeats one of them, chosen at random, and every weight reading a
  repeated channel is divided by how many copies it has, so each layer's sums are the narrow network's. Training
  then starts from the narrow network's accuracy instead of from scratch. Small noise on the repeated channels'
  incoming weights lets the copies drift apart (otherwise they would receive identical gradients).
* :func:`narrow_unet`, after Liu et al. (2017, "Network Slimming"): every layer keeps the channels whose output
  is largest and drops the rest, with every weight that reads them. A channel's size is its mean absolute
  activation where batch norm makes its input standard normal (``|act(gamma * z + beta)|`` averaged over z, so
  a channel that ReLU silences scores nothing however large gamma is), or without batch norm the norm of its
  filter. The narrow network computes the wide one's function less the dropped channels' contributions, which
  fine-tuning then recovers: a cheaper network for a slower CPU without training it from scratch.

Example:
    >>> narrow = UNet(3, 4, base=4, depth=3, dropout=(0.0,) * 3)
    >>> wide = widen_unet(narrow, UNet(3, 4, base=6, depth=3, dropout=(0.0,) * 3), noise=0.0)
    >>> x = torch.randn(1, 3, 32, 32)
    >>> bool(torch.allclose(narrow.eval()(x), wide.eval()(x), atol=1e-4))
    True
    >>> narrow_unet(wide, UNet(3, 4, base=5, depth=3, dropout=(0.0,) * 3)).encoder[0][0].out_channels
    5
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from .model import UNet


@dataclass(frozen=True)
class ChannelMap:
    """Which narrow channel each wide channel copies, and how many copies each narrow channel has."""

    source: torch.Tensor  # (target,) int64: the source channel each target channel copies
    copies: torch.Tensor  # (source,) float: how many target channels copy each source channel

    @staticmethod
    def identity(channels: int) -> ChannelMap:
        return ChannelMap(torch.arange(channels), torch.ones(channels))

    @staticmethod
    def random(narrow: int, wide: int, generator: torch.Generator) -> ChannelMap:
        """The first ``narrow`` wide channels are the narrow ones; the rest repeat channels drawn at random."""
        extra = torch.randint(0, narrow, (wide - narrow,), generator=generator)
        source = torch.cat([torch.arange(narrow), extra])
        return ChannelMap(source, torch.bincount(source, minlength=narrow).to(torch.float32))

    @staticmethod
    def largest(scores: torch.Tensor, kept: int) -> ChannelMap:
        """The ``kept`` channels of the highest scores, in their own order; the weights reading them are not
        rescaled (a dropped channel's contribution is lost, not shared out)."""
        source = torch.sort(torch.topk(scores, kept).indices).values
        return ChannelMap(source, torch.ones(scores.numel()))

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


def _copy_conv(source_module: nn.Module, target_module: nn.Module, inputs: ChannelMap, outputs: ChannelMap,
               noise: float = 0.0, generator: torch.Generator | None = None) -> None:
    """Copy one convolution; ``noise`` times the weights' spread goes onto the repeated channels' weights (the
    target channels past the source's count)."""
    source, target = _conv(source_module), _conv(target_module)
    # Conv2d weights are (out, in, kh, kw), ConvTranspose2d weights (in, out, kh, kw).
    weight = source.weight.detach()
    if isinstance(source, nn.ConvTranspose2d):
        weight = weight.transpose(0, 1)
    scaled = weight / inputs.copies.view(1, -1, 1, 1)
    new = scaled[outputs.source][:, inputs.source]
    kept = int(outputs.copies.numel())
    if noise > 0 and new.shape[0] > kept:
        repeated = new[kept:]
        repeated.add_(torch.randn(repeated.shape, generator=generator) * noise * float(new.std()))
    if isinstance(target, nn.ConvTranspose2d):
        new = new.transpose(0, 1)
    with torch.no_grad():
        target.weight.copy_(new)
        source_bias, target_bias = source.bias, target.bias
        if source_bias is not None and target_bias is not None:
            target_bias.copy_(source_bias.detach()[outputs.source])


def _copy_norm(source: nn.Module, target: nn.Module, outputs: ChannelMap) -> None:
    if not isinstance(source, nn.BatchNorm2d) or not isinstance(target, nn.BatchNorm2d):
        return
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(target, name).copy_(getattr(source, name).detach()[outputs.source])
        # BatchNorm2d(track_running_stats=True), as the U-Net builds it, always has this counter.
        cast(torch.Tensor, target.num_batches_tracked).copy_(cast(torch.Tensor, source.num_batches_tracked))


Chooser = Callable[[int, Conv, nn.Module | None, nn.BatchNorm2d | None, int], ChannelMap]
"""Picks a layer's target channels: (source channel count, the convolution, the activation after it or None,
its batch norm or None, target channel count) -> the map."""


def _copy_block(source: nn.Module, target: nn.Module, inputs: ChannelMap, choose: Chooser, noise: float,
                generator: torch.Generator) -> ChannelMap:
    """A DoubleConv: conv, norm, act, dropout, conv, norm, act. Returns the map of its outputs."""
    source_block, target_block = _block(source), _block(target)
    for conv, norm, activation in ((0, 1, 2), (4, 5, 6)):
        source_conv = _conv(source_block[conv])
        outputs = choose(int(source_conv.out_channels), source_conv, source_block[activation],
                         _norm(source_block[norm]), int(_conv(target_block[conv]).out_channels))
        _copy_conv(source_conv, target_block[conv], inputs, outputs, noise, generator)
        _copy_norm(source_block[norm], target_block[norm], outputs)
        inputs = outputs
    return inputs


def _norm(module: nn.Module) -> nn.BatchNorm2d | None:
    return module if isinstance(module, nn.BatchNorm2d) else None


def _widths(net: UNet) -> list[int]:
    return [int(_conv(_block(block)[0]).out_channels) for block in net.encoder]


def _check_family(source: UNet, target: UNet, name: str) -> None:
    if source.depth != target.depth or source.padding != target.padding:
        raise ValueError(f"{name} needs one depth and padding, got {source.depth}/{source.padding!r} and "
                         f"{target.depth}/{target.padding!r}")
    in_channels = int(_conv(_block(source.encoder[0])[0]).in_channels)
    if in_channels != _conv(_block(target.encoder[0])[0]).in_channels or \
            source.head.out_channels != target.head.out_channels:
        raise ValueError(f"{name} needs the same input channels and classes in both networks")
    if [type(m) for m in source.modules()] != [type(m) for m in target.modules()]:
        raise ValueError("the two networks differ in layers (batch norm, activation or dropout); build them "
                         "with the same settings")


def _copy_unet(source: UNet, target: UNet, choose: Chooser, noise: float, generator: torch.Generator) -> UNet:
    """Copy ``source`` into ``target`` layer by layer, each layer's target channels picked by ``choose``."""
    source_widths = _widths(source)
    in_channels = int(_conv(_block(source.encoder[0])[0]).in_channels)
    skips: list[ChannelMap] = []
    inputs = ChannelMap.identity(in_channels)
    for level in range(source.depth):
        inputs = _copy_block(source.encoder[level], target.encoder[level], inputs, choose, noise, generator)
        skips.append(inputs)
    for index, level in enumerate(reversed(range(source.depth - 1))):
        up_source, up_target = _conv(source.upsample[index]), _conv(target.upsample[index])
        upsampled = choose(int(up_source.out_channels), up_source, None, None, int(up_target.out_channels))
        _copy_conv(up_source, up_target, inputs, upsampled, noise, generator)
        # The decoder reads [skip, upsampled], in that order (UNet.forward).
        joined = skips[level].concat(upsampled, source_widths[level])
        inputs = _copy_block(source.decoder[index], target.decoder[index], joined, choose, noise, generator)
    _copy_conv(source.head, target.head, inputs, ChannelMap.identity(int(source.head.out_channels)))
    return target


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
    _check_family(narrow, wide, "widen_unet")
    narrow_widths, wide_widths = _widths(narrow), _widths(wide)
    if any(w < n for n, w in zip(narrow_widths, wide_widths, strict=True)):
        raise ValueError(f"the wide network must have at least the narrow one's channels per level, got "
                         f"{wide_widths} for {narrow_widths}")
    generator = torch.Generator().manual_seed(seed)

    def choose(sources: int, _conv: Conv, _activation: nn.Module | None, _norm: nn.BatchNorm2d | None,
               targets: int) -> ChannelMap:
        return ChannelMap.random(sources, targets, generator)

    return _copy_unet(narrow, wide, choose, noise, generator)


# Standard-normal quantiles at the midpoints of 64 equal-probability bins: the mean of f(z) over them is
# E[f(z)] for z ~ N(0, 1) to well under a percent for the smooth activations a U-Net uses.
_NORMAL_POINTS = torch.distributions.Normal(0.0, 1.0).icdf((torch.arange(64, dtype=torch.float64) + 0.5) / 64)


def channel_scores(conv: Conv, activation: nn.Module | None, norm: nn.BatchNorm2d | None) -> torch.Tensor:
    """How large each output channel of ``conv`` is, the measure :func:`narrow_unet` keeps the largest by.

    Args:
        conv: the convolution.
        activation: the activation after it (after its batch norm), or None (an upsampling convolution).
        norm: the batch norm after it, or None.

    Returns:
        One score per output channel: with batch norm, the mean of ``|act(gamma * z + beta)|`` over a standard
        normal z (batch norm's output is gamma times a standardised input plus beta); without, the L2 norm of the
        channel's filter.

    Example:
        >>> block = UNet(3, 2, base=4, depth=2, batch_norm=True, dropout=(0.0, 0.0)).encoder[0]
        >>> channel_scores(block[0], block[2], block[1]).shape
        torch.Size([4])
    """
    if norm is None:
        weight = conv.weight.detach()
        per_output = weight.transpose(0, 1) if isinstance(conv, nn.ConvTranspose2d) else weight
        return per_output.flatten(1).norm(dim=1)
    gamma, beta = norm.weight.detach().double(), norm.bias.detach().double()
    values = gamma[:, None] * _NORMAL_POINTS[None, :] + beta[:, None]
    if activation is not None:
        with torch.no_grad():
            values = activation(values)
    return values.abs().mean(dim=1).float()


def narrow_unet(wide: UNet, narrow: UNet) -> UNet:
    """Copy a trained U-Net into a narrower one of the same family, keeping each layer's largest channels.

    Args:
        wide: the trained network.
        narrow: a network with the same depth, padding, activation, batch norm, input channels and classes and
            at most as many channels at every level (its own weights are overwritten).

    Returns:
        ``narrow``, carrying the wide network's function less the dropped channels (see
        :func:`channel_scores`); equal to it when every dropped channel is silent.

    Raises:
        ValueError: when the two networks are not of one family or ``narrow`` is wider somewhere.

    Example:
        >>> pruned = narrow_unet(trained_base24, UNet(3, 11, base=20, batch_norm=True))  # doctest: +SKIP
    """
    _check_family(wide, narrow, "narrow_unet")
    wide_widths, narrow_widths = _widths(wide), _widths(narrow)
    if any(n > w for w, n in zip(wide_widths, narrow_widths, strict=True)):
        raise ValueError(f"the narrow network must have at most the wide one's channels per level, got "
                         f"{narrow_widths} for {wide_widths}")

    def choose(_sources: int, conv: Conv, activation: nn.Module | None, norm: nn.BatchNorm2d | None,
               targets: int) -> ChannelMap:
        return ChannelMap.largest(channel_scores(conv, activation, norm), targets)

    return _copy_unet(wide, narrow, choose, 0.0, torch.Generator())
