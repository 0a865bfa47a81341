from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from unetrt.export.model import UNet  # noqa: E402

# Parameter counts of the blog's Keras listing with base 64, 3 input channels and one
# sigmoid output, layer by layer: 3x3 conv = 9*in*out + out, 2x2 transposed conv =
# 4*in*out + out, 1x1 head = in*out + out.
KERAS_LISTING = [
    9 * 3 * 64 + 64, 9 * 64 * 64 + 64,                  # c1
    9 * 64 * 128 + 128, 9 * 128 * 128 + 128,            # c2
    9 * 128 * 256 + 256, 9 * 256 * 256 + 256,          # c3
    9 * 256 * 512 + 512, 9 * 512 * 512 + 512,          # c4
    9 * 512 * 1024 + 1024, 9 * 1024 * 1024 + 1024,     # c5
    4 * 1024 * 512 + 512, 9 * 1024 * 512 + 512, 9 * 512 * 512 + 512,  # u6
    4 * 512 * 256 + 256, 9 * 512 * 256 + 256, 9 * 256 * 256 + 256,    # u7
    4 * 256 * 128 + 128, 9 * 256 * 128 + 128, 9 * 128 * 128 + 128,    # u8
    4 * 128 * 64 + 64, 9 * 128 * 64 + 64, 9 * 64 * 64 + 64,           # u9
    64 * 1 + 1,                                                          # head
]


def test_blog_listing_layers_and_parameters() -> None:
    net = UNet(3, 1, base=64)
    is_conv = (torch.nn.Conv2d, torch.nn.ConvTranspose2d)
    convs = [m for block in net.encoder for m in block if isinstance(m, is_conv)]
    for up, block in zip(net.upsample, net.decoder):
        convs += [up, *(m for m in block if isinstance(m, is_conv))]
    convs.append(net.head)
    assert len([m for m in net.modules() if isinstance(m, is_conv)]) == 23
    assert len(convs) == 23 == len(KERAS_LISTING)
    assert [sum(p.numel() for p in m.parameters()) for m in convs] == KERAS_LISTING
    assert sum(p.numel() for p in net.parameters()) == sum(KERAS_LISTING) == 31_031_745
    dropouts = [m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts == [0.1, 0.1, 0.2, 0.2, 0.3, 0.2, 0.2, 0.1, 0.1]


def test_he_normal_init() -> None:
    torch.manual_seed(0)
    conv = UNet(3, 1, base=64).encoder[2][0]
    fan_in = conv.in_channels * 9
    assert conv.weight.std().item() == pytest.approx((2.0 / fan_in) ** 0.5, rel=0.05)
    assert torch.all(conv.bias == 0)


def test_same_mode_keeps_size() -> None:
    net = UNet(1, 3, base=4).eval()
    assert net(torch.zeros(2, 1, 48, 64)).shape == (2, 3, 48, 64)


def test_valid_mode_paper_geometry() -> None:
    net = UNet(1, 2, base=2, padding="valid", dropout=(0,) * 5).eval()
    with torch.inference_mode():
        assert net(torch.zeros(1, 1, 572, 572)).shape == (1, 2, 388, 388)


def test_wrong_sizes_name_nearest_legal_sizes() -> None:
    with pytest.raises(ValueError, match="nearest legal sizes: 496 or 512"):
        UNet(3, 1, base=4)(torch.zeros(1, 3, 500, 512))
    with pytest.raises(ValueError, match="nearest legal sizes: 556 or 572"):
        UNet(3, 1, base=4, padding="valid")(torch.zeros(1, 3, 570, 572))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"activation": "tanh"}, "activation must be one of"),
    ({"padding": "full"}, "padding must be"),
    ({"dropout": (0.1,)}, "one rate per level"),
])
def test_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        UNet(3, 1, **kwargs)  # type: ignore[arg-type]


def test_elu_and_relu() -> None:
    assert any(isinstance(m, torch.nn.ELU) for m in UNet(3, 1, base=4).modules())
    assert any(isinstance(m, torch.nn.ReLU) for m in UNet(3, 1, base=4, activation="relu").modules())


def test_batch_norm_option_adds_a_norm_per_conv() -> None:
    net = UNet(3, 2, base=4, batch_norm=True)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) == 18
    assert net.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 2, 32, 32)
