from __future__ import annotations

import json

import pytest

from unetrt.model_info import ModelInfo, check_network_layout


def make(**kwargs: object) -> ModelInfo:
    base = {"class_names": ("a", "b"), "colors": ((1, 2, 3), (4, 5, 6))}
    base.update(kwargs)
    return ModelInfo(**base)  # type: ignore[arg-type]


def test_round_trip_keeps_everything() -> None:
    info = make(working_size=(256, 192), ignore_index=11, extra={"dropout": [0.1] * 5})
    back = ModelInfo.from_json(info.to_json())
    assert back == info
    assert back.working_size == (256, 192)
    assert back.extra["dropout"] == [0.1] * 5
    data = json.loads(info.to_json())
    assert data["num_classes"] == 2 and data["size_multiple"] == 16


def test_binary_and_multiclass() -> None:
    assert make(class_names=("fg",), colors=((1, 1, 1),)).binary
    assert not make().binary


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"colors": ((1, 2, 3),)}, "one RGB colour per class"),
        ({"in_channels": 2}, "in_channels must be 1 or 3"),
        ({"mean": (0.5,)}, "mean and std need 3 values"),
        ({"std": (0.1, 0.0, 0.1)}, "std values must be positive"),
        ({"padding": "full"}, "padding must be one of"),
        ({"working_size": (0, 10)}, "working_size"),
    ],
)
def test_bad_values_are_named(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(**kwargs)


def test_bad_json() -> None:
    with pytest.raises(ValueError, match="not valid JSON"):
        ModelInfo.from_json("{")
    with pytest.raises(ValueError, match="lacks"):
        ModelInfo.from_json("{}")
    with pytest.raises(ValueError, match="newer"):
        ModelInfo.from_json(json.dumps({"format_version": 99, "class_names": ["a"], "colors": [[0, 0, 0]]}))


def camvid_like() -> dict[str, object]:
    """A model file's metadata document, as unet-export writes it."""
    return json.loads(make(working_size=(256, 192), depth=5).to_json())


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"depth": 40}, "depth must be an integer from 1 to 8, got 40"),
        ({"depth": 16}, "depth must be an integer from 1 to 8"),
        ({"depth": 25}, "depth must be an integer from 1 to 8"),
        ({"depth": "5"}, "depth must be an integer"),
        ({"depth": 5.5}, "depth must be an integer"),
        ({"base": 10**9}, "base must be an integer from 1 to 1024"),
        ({"class_names": [f"c{i}" for i in range(300)], "colors": [[0, 0, 0]] * 300}, "1 to 256 classes, got 300"),
        ({"class_names": [], "colors": []}, "1 to 256 classes, got 0"),
        ({"class_names": "ab", "colors": [[0, 0, 0]] * 2}, "class_names must be a list"),
        ({"class_names": [1, 2]}, "class_names must be a string"),
        ({"colors": [[999, 0, 0], [0, 0, 0]]}, "colors must be an integer from 0 to 255, got 999"),
        ({"colors": [[1e300, 0, 0], [0, 0, 0]]}, "colors must be an integer"),
        ({"colors": [[1, 2], [0, 0, 0]]}, "colors must have 3 entries"),
        ({"colors": [5, 6]}, "colors must be a list"),
        ({"format_version": "1"}, "format_version must be a positive integer"),
        ({"format_version": 0}, "format_version must be a positive integer"),
        ({"in_channels": 3.0}, "in_channels must be 1 or 3"),
        ({"in_channels": "3"}, "in_channels must be 1 or 3"),
        ({"mean": ["x", 0.5, 0.5]}, "mean must hold finite numbers"),
        ({"std": [float("nan"), 0.5, 0.5]}, "std must hold finite numbers"),
        ({"padding": ["same"]}, "padding must be one of"),
        ({"working_size": [60000, 45000]}, "working_size 60000x45000 is too large"),
        ({"working_size": [8000, 8000]}, "working_size 8000x8000 is too large"),
        ({"working_size": "256x192"}, "working_size must be"),
        ({"ignore_index": -5}, "ignore_index must be an integer from 0 to 255"),
        ({"name": 5}, "name must be a string"),
        ({"activation": None}, "activation must be a string"),
        ({"extra": []}, "extra must be an object"),
    ],
)
def test_metadata_out_of_bounds_is_one_value_error(changes: dict[str, object], message: str) -> None:
    data = {**camvid_like(), **changes}
    with pytest.raises(ValueError, match=message) as caught:
        ModelInfo.from_json(json.dumps(data))
    assert "\n" not in str(caught.value)


def test_metadata_at_the_bounds_is_accepted() -> None:
    data = {**camvid_like(), "depth": 8, "base": 1024, "working_size": [8192, 4096], "ignore_index": 255,
            "class_names": [f"c{i}" for i in range(256)], "colors": [[255, 0, 0]] * 256}
    info = ModelInfo.from_json(json.dumps(data))
    assert (info.depth, info.num_classes, info.working_size) == (8, 256, (8192, 4096))
    assert info.mean == (0.485, 0.456, 0.406) and all(isinstance(v, float) for v in info.mean)


def test_a_long_bad_value_is_cut_short_in_the_message() -> None:
    with pytest.raises(ValueError, match=r"\.\.\.$") as caught:
        ModelInfo.from_json(json.dumps({**camvid_like(), "name": list(range(10000))}))
    assert len(str(caught.value)) < 200


@pytest.mark.parametrize("shape", [["n", 3, "h"], ["n", 3, "d", "h", "w"]])
def test_a_network_input_of_another_rank_is_refused(shape: list[object]) -> None:
    # Every backend feeds N x C x H x W: a 5-D input (a volume network) would fail at the first frame instead.
    with pytest.raises(ValueError, match=f"takes a {len(shape)}-D input; unetrt feeds its network N x C x H x W"):
        check_network_layout(make(), shape, "m.onnx")


def test_an_input_whose_width_equals_the_channel_count_is_channels_first() -> None:
    # 1 x 3 x 16 x 3 is N x C x H x W with W = 3: its channels are where unetrt feeds them.
    check_network_layout(make(), [1, 3, 16, 3], "m.onnx")
    with pytest.raises(ValueError, match="takes its channels last"):
        check_network_layout(make(), [1, 16, 16, 3], "m.onnx")
