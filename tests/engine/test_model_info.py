from __future__ import annotations

import json

import pytest

from unetrt.model_info import ModelInfo


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
