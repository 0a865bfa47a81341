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


@pytest.mark.parametrize(("padding", "pad"), [("same", (1, 1)), ("valid", (0, 0))])
def test_each_level_is_conv_norm_act_dropout_conv_norm_act(padding: str, pad: tuple[int, int]) -> None:
    # The blog's level: Conv2D, Dropout, Conv2D (the activation inside each Conv2D); batch norm, when asked for,
    # sits between each convolution and its activation.
    net = UNet(3, 2, base=4, depth=3, dropout=(0.1, 0.2, 0.3), padding=padding, batch_norm=True)
    for block in [*net.encoder, *net.decoder]:
        assert [type(m) for m in block] == [torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.ELU, torch.nn.Dropout,
                                            torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.ELU]
        assert [m.padding for m in block if isinstance(m, torch.nn.Conv2d)] == [pad, pad]
    assert isinstance(net.pool, torch.nn.MaxPool2d) and (net.pool.kernel_size, net.pool.stride) == (2, 2)


def test_transposed_convolutions_are_he_normal_too() -> None:
    # Keras' he_normal of a Conv2DTranspose counts kernel area times its output channels as fan-in: 2*2*128 for
    # the deepest upsampling of a base-16 network (256 -> 128), so std sqrt(2 / 512) = 0.0625.
    torch.manual_seed(0)
    up = UNet(3, 1, base=16).upsample[0]
    assert (up.in_channels, up.out_channels) == (256, 128)
    assert up.weight.std().item() == pytest.approx((2.0 / (4 * 128)) ** 0.5, rel=0.05)
    assert torch.all(up.bias == 0)


def test_the_decoder_reads_the_skip_first_then_the_upsampled_features() -> None:
    # Checkpoints hold decoder weights for [skip, upsampled]. With every upsampling silenced and the weights on
    # the upsampled half zeroed, only the skips reach the head: the output still depends on the input. Read the
    # other way round, the live weights would see the silenced half and the output would be constant.
    torch.manual_seed(0)
    net = UNet(1, 1, base=4, depth=3, dropout=(0.0,) * 3).eval()
    with torch.no_grad():
        for up, block in zip(net.upsample, net.decoder):
            up.weight.zero_()
            up.bias.zero_()
            block[0].weight[:, up.out_channels:].zero_()
        x = torch.randn(2, 1, 16, 16)
        out = net(x)
    assert not torch.allclose(out[0], out[1])


def test_valid_mode_crops_the_skips_about_their_centre() -> None:
    from unetrt.export.model import _center_crop

    # A 6x5 map cropped to 2x3: 2 rows off the top (of the 4 spare) and 1 column off the left (of the 2 spare).
    features = torch.arange(30).view(1, 1, 6, 5)
    assert _center_crop(features, 2, 3).tolist() == [[[[11, 12, 13], [16, 17, 18]]]]
