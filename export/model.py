"""The U-Net of Ronneberger et al. (2015), in the form of the blog the project grew from.

Each level has two 3x3 convolutions with dropout between them; the encoder
halves the resolution with 2x2 max-pooling, the decoder doubles it with a 2x2
stride-2 transposed convolution and concatenates the encoder's features; a 1x1
convolution returns logits. 'same' padding keeps the size (the blog), 'valid'
padding is the paper's (572 in, 388 out, skips centre-cropped).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from unetrt.geometry import check_input_size

DEFAULT_DROPOUT = (0.1, 0.1, 0.2, 0.2, 0.3)
ACTIVATIONS = {"elu": nn.ELU, "relu": nn.ReLU}


def _he_normal(module: nn.Module) -> None:
    # Keras' he_normal draws from a truncated normal of std sqrt(2 / fan_in); the
    # kaiming-normal fan-in rule gives the same variance, which is what matters.
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class DoubleConv(nn.Sequential):
    """Two 3x3 convolutions with an activation after each and dropout between them.

    With ``batch_norm`` each convolution is followed by batch normalisation before
    the activation; export folds it into the convolution, so inference costs nothing more.
    """

    def __init__(self, in_ch: int, out_ch: int, dropout: float, activation: str, padding: str,
                 batch_norm: bool = False) -> None:
        pad = 1 if padding == "same" else 0
        act = ACTIVATIONS[activation]

        def norm() -> nn.Module:
            return nn.BatchNorm2d(out_ch) if batch_norm else nn.Identity()

        super().__init__(
            nn.Conv2d(in_ch, out_ch, 3, padding=pad),
            norm(),
            act(),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
            nn.Conv2d(out_ch, out_ch, 3, padding=pad),
            norm(),
            act(),
        )


def _center_crop(features: torch.Tensor, height: int, width: int) -> torch.Tensor:
    top = (features.shape[-2] - height) // 2
    left = (features.shape[-1] - width) // 2
    return features[..., top : top + height, left : left + width]


class UNet(nn.Module):
    """U-Net returning per-pixel logits.

    Args:
        in_channels: 3 for colour frames, 1 for grayscale.
        num_classes: output channels; 1 for a binary (sigmoid) model.
        base: channels of the first level, doubled at each level below.
        depth: resolution levels (5 in the paper and the blog).
        activation: 'elu' (blog) or 'relu' (paper).
        dropout: dropout rate per level, encoder order; the decoder mirrors it.
        padding: 'same' (blog) or 'valid' (paper).
        batch_norm: batch normalisation after every 3x3 convolution (not in the listing;
            it makes small models on small data train in far fewer steps).

    Raises:
        ValueError: on an unknown activation or padding, or a dropout list of the wrong length.

    Example:
        >>> net = UNet(3, 12, base=16)
        >>> net(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 12, 64, 64])
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        base: int = 64,
        depth: int = 5,
        activation: str = "elu",
        dropout: Sequence[float] = DEFAULT_DROPOUT,
        padding: str = "same",
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
        if len(dropout) != depth:
            raise ValueError(f"dropout needs one rate per level ({depth}), got {len(dropout)}: {tuple(dropout)}")
        if depth < 2:
            raise ValueError(f"depth must be >= 2, got {depth}")
        self.depth = depth
        self.padding = padding
        widths = [base * 2**i for i in range(depth)]
        self.encoder = nn.ModuleList()
        prev = in_channels
        for width, rate in zip(widths, dropout):
            self.encoder.append(DoubleConv(prev, width, rate, activation, padding, batch_norm))
            prev = width
        self.pool = nn.MaxPool2d(2)
        self.upsample = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for level in reversed(range(depth - 1)):
            self.upsample.append(nn.ConvTranspose2d(widths[level + 1], widths[level], 2, stride=2))
            self.decoder.append(
                DoubleConv(2 * widths[level], widths[level], dropout[level], activation, padding, batch_norm)
            )
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        self.apply(_he_normal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (N, num_classes, h, w); h = H in 'same' mode, H - 2*margin in 'valid'.

        Raises:
            ValueError: when H or W is not a legal size for this network (tracing skips the check).
        """
        if not torch.jit.is_tracing() and not torch.compiler.is_compiling():
            check_input_size(int(x.shape[-2]), int(x.shape[-1]), self.padding, self.depth)
        skips = []
        for level, block in enumerate(self.encoder):
            x = block(x)
            if level < self.depth - 1:
                skips.append(x)
                x = self.pool(x)
        for up, block in zip(self.upsample, self.decoder):
            x = up(x)
            skip = skips.pop()
            if self.padding == "valid":
                skip = _center_crop(skip, x.shape[-2], x.shape[-1])
            x = block(torch.cat([skip, x], dim=1))
        return self.head(x)
