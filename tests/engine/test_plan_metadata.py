"""Plan metadata, optimisation-profile arithmetic and compatibility checks (no TensorRT needed)."""

from __future__ import annotations

import json
import shlex
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_info

from unetrt.plan_metadata import (
    GpuIdentity,
    PlanCompatibilityError,
    PlanMetadata,
    ShapeProfile,
    check_compatibility,
    default_profile,
    format_shape,
    metadata_path,
    parse_shape,
    read_plan_metadata,
    resolve_profile,
    write_plan_metadata,
)

ORIN = GpuIdentity("Orin", (8, 7), 16)
H100 = GpuIdentity("NVIDIA H100 80GB HBM3", (9, 0))


def make_metadata(**changes: Any) -> PlanMetadata:
    info = tiny_info(working_size=(64, 48))
    base = PlanMetadata(
        tensorrt_version="10.3.0", gpu=ORIN, input_name="image", output_name="logits",
        input_dtype="float32", output_dtype="float32",
        profile=ShapeProfile((1, 3, 4, 4), (1, 3, 48, 64), (4, 3, 48, 64)),
        precision="fp16", strongly_typed=False, source="models/tiny.onnx", info=info,
        build_options={"workspace_mib": 1024, "opt_level": 3},
    )
    return replace(base, **changes)


@pytest.mark.parametrize("text, shape", [("1x3x192x256", (1, 3, 192, 256)), ("4X1X64X64", (4, 1, 64, 64))])
def test_parse_shape(text: str, shape: tuple[int, ...]) -> None:
    assert parse_shape(text) == shape
    assert parse_shape(format_shape(shape)) == shape


@pytest.mark.parametrize("text", ["1x3x192", "1x3x192x256x1", "0x3x64x64", "1x3x-64x64", "ax3x64x64", ""])
def test_parse_shape_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="NxCxHxW"):
        parse_shape(text)


def test_profile_limits() -> None:
    profile = ShapeProfile((1, 3, 16, 16), (2, 3, 192, 256), (8, 3, 384, 512))
    assert profile.max_batch == 8
    assert profile.max_input_hw == (384, 512)
    assert profile.min_input_hw == (16, 16)
    assert profile.contains((8, 3, 384, 512)) and profile.contains((1, 3, 16, 16))
    assert not profile.contains((9, 3, 64, 64)) and not profile.contains((1, 3, 64))


def test_profile_rejects_inverted_and_mixed_channels() -> None:
    with pytest.raises(ValueError, match="H is 64 / 32 / 128"):
        ShapeProfile((1, 3, 64, 64), (1, 3, 32, 64), (1, 3, 128, 64))
    with pytest.raises(ValueError, match="channel count"):
        ShapeProfile((1, 1, 64, 64), (1, 3, 64, 64), (1, 3, 64, 64))
    three_dims: Any = (1, 3, 64)
    with pytest.raises(ValueError, match="4 dimensions"):
        ShapeProfile(three_dims, (1, 3, 64, 64), (1, 3, 64, 64))
    with pytest.raises(ValueError, match="non-positive"):
        ShapeProfile((0, 3, 64, 64), (1, 3, 64, 64), (1, 3, 64, 64))


def test_check_shape_explains_the_way_out() -> None:
    profile = ShapeProfile((1, 3, 16, 16), (1, 3, 192, 256), (4, 3, 192, 256))
    profile.check_shape((4, 3, 192, 256))
    with pytest.raises(ValueError) as caught:
        profile.check_shape((1, 3, 360, 480))
    message = str(caught.value)
    assert "1x3x360x480" in message and "max 4x3x192x256" in message
    assert "--max-shape 4x3x360x480" in message and "tile" in message


def test_check_shape_below_the_profile_names_the_min_shape_to_rebuild_with() -> None:
    """A plan of fixed batch 4 (trtexec --shapes=image:4x3x176x224) given one frame: the line named a rebuild with
    --max-shape 4x3x176x224, the engine's own largest shape, and told the user to split the batch."""
    fixed = ShapeProfile((4, 3, 176, 224), (4, 3, 176, 224), (4, 3, 176, 224))
    with pytest.raises(ValueError) as caught:
        fixed.check_shape((1, 3, 176, 224))
    message = str(caught.value)
    assert "run batches of at least 4" in message and "--min-shape 1x3x176x224" in message
    assert "--max-shape" not in message and "split the batch" not in message
    ranged = ShapeProfile((1, 3, 64, 64), (1, 3, 128, 128), (2, 3, 128, 128))
    with pytest.raises(ValueError) as caught:
        ranged.check_shape((4, 3, 32, 256))
    message = str(caught.value)
    assert "--min-shape 1x3x32x64" in message and "--max-shape 4x3x128x256" in message
    assert "split the batch" in message and "at least 64x64" in message and "tile" in message


def test_check_model_names_legal_sides() -> None:
    info = tiny_info(depth=3)  # sides must be multiples of 4
    ShapeProfile((1, 3, 4, 4), (1, 3, 64, 64), (2, 3, 128, 128)).check_model(info)
    with pytest.raises(ValueError, match=r"max shape 2x3x130x128: height 130 .* 128 and 132"):
        ShapeProfile((1, 3, 4, 4), (1, 3, 64, 64), (2, 3, 130, 128)).check_model(info)
    with pytest.raises(ValueError, match="model takes 3"):
        ShapeProfile((1, 1, 4, 4), (1, 1, 64, 64), (2, 1, 128, 128)).check_model(info)


def test_default_profile_is_fixed_at_the_working_size() -> None:
    # Finding 8: every frame reaches the network at the working size, so min = opt = max there (batch 1..4).
    info = tiny_info(depth=3, working_size=(50, 30))  # legal network input: 52 x 32
    profile = default_profile(info)
    assert profile.min == (1, 3, 32, 52)
    assert profile.opt == (1, 3, 32, 52)
    assert profile.max == (4, 3, 32, 52)
    profile.check_model(info)


def test_default_profile_without_working_size() -> None:
    profile = default_profile(tiny_info(depth=3), max_batch=2)
    assert (profile.opt, profile.max) == ((1, 3, 512, 512), (2, 3, 1024, 1024))


def test_default_profile_of_valid_padding_uses_legal_sides() -> None:
    info = tiny_info(depth=3, padding="valid")
    profile = default_profile(info)
    profile.check_model(info)
    assert profile.min[2] > 1 and profile.max[2] >= 1024


def test_resolve_profile_completes_partial_shapes() -> None:
    info = tiny_info(depth=3, working_size=(64, 48))
    assert resolve_profile(info) == default_profile(info)
    wider = resolve_profile(info, max_shape=(8, 3, 96, 128))
    assert wider.max == (8, 3, 96, 128) and wider.opt == (1, 3, 48, 64) and wider.min == (1, 3, 48, 64)
    big_opt = resolve_profile(info, opt_shape=(2, 3, 96, 96))
    assert big_opt.max == (4, 3, 96, 96) and big_opt.min == (1, 3, 48, 64)
    asked_min = resolve_profile(info, min_shape=(1, 3, 8, 8))
    assert (asked_min.min, asked_min.opt, asked_min.max) == ((1, 3, 8, 8), (1, 3, 48, 64), (4, 3, 48, 64))
    tight = resolve_profile(info, min_shape=(1, 3, 8, 8), max_shape=(1, 3, 32, 32))
    assert tight.opt == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="not a legal input side"):
        resolve_profile(info, max_shape=(1, 3, 50, 64))


@pytest.mark.parametrize("given", ["min_shape", "opt_shape", "max_shape"])
def test_resolve_profile_names_the_models_channels_for_one_shape_of_others(given: str) -> None:
    """``unet-build --opt-shape 1x1x48x64`` for an RGB model: the defaults completing the profile kept 3 channels,
    and the line said only that the count differed among min, opt and max."""
    info = tiny_info(depth=3, working_size=(64, 48))
    with pytest.raises(ValueError) as refused:
        resolve_profile(info, **{given: (1, 1, 48, 64)})
    assert str(refused.value) == (f"{given[:3]} shape 1x1x48x64 has 1 channels but the model takes 3; use shapes "
                                  "like 1x3xHxW")


def test_metadata_round_trip(tmp_path: Path) -> None:
    metadata = make_metadata()
    plan = tmp_path / "unet.plan"
    written = write_plan_metadata(plan, metadata)
    assert written == metadata_path(plan) == tmp_path / "unet.plan.json"
    assert read_plan_metadata(plan) == metadata
    data = json.loads(written.read_text())
    assert data["gpu"] == {"name": "Orin", "compute_capability": [8, 7], "multiprocessors": 16}
    del data["gpu"]["multiprocessors"]  # metadata written before the count was recorded
    written.write_text(json.dumps(data))
    assert read_plan_metadata(plan).gpu == GpuIdentity("Orin", (8, 7), None)
    assert data["profile"]["max"] == [4, 3, 48, 64]
    assert data["model"]["class_names"] == ["class0", "class1", "class2"]
    assert data["inputs"] == [{"name": "image", "dtype": "float32"}]


def test_read_metadata_errors(tmp_path: Path) -> None:
    plan = tmp_path / "unet.plan"
    with pytest.raises(FileNotFoundError, match="unet-build"):
        read_plan_metadata(plan)
    metadata_path(plan).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_plan_metadata(plan)
    # Deep nesting was a RecursionError, Latin-1 text a UnicodeDecodeError that named no file.
    metadata_path(plan).write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match=r"plan metadata '.*unet.plan.json' nests its JSON deeper.*rebuild"):
        read_plan_metadata(plan)
    metadata_path(plan).write_bytes(b'{"gpu": "\xe9"}')
    with pytest.raises(ValueError, match=r"plan metadata '.*unet.plan.json' is not UTF-8 text.*unet-build"):
        read_plan_metadata(plan)
    data = make_metadata().to_dict()
    data["format_version"] = 99
    metadata_path(plan).write_text(json.dumps(data))
    with pytest.raises(ValueError, match="upgrade unetrt"):
        read_plan_metadata(plan)
    data = make_metadata().to_dict()
    data["outputs"].append({"name": "extra", "dtype": "float32"})
    metadata_path(plan).write_text(json.dumps(data))
    with pytest.raises(ValueError, match="exactly one input and one output"):
        read_plan_metadata(plan)
    del data["gpu"]
    metadata_path(plan).write_text(json.dumps(data))
    with pytest.raises(ValueError, match="incomplete"):
        read_plan_metadata(plan)


def test_rebuild_command() -> None:
    command = make_metadata().rebuild_command("out/unet.plan")
    assert command == ("unet-build models/tiny.onnx -o out/unet.plan --min-shape 1x3x4x4 --opt-shape 1x3x48x64 "
                       "--max-shape 4x3x48x64 --precision fp16 --workspace 1024 --opt-level 3")


def test_compatible_plan_passes_silently() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_compatibility(make_metadata(), "10.3.0", ORIN, "unet.plan")


def test_other_tensorrt_version_is_refused() -> None:
    with pytest.raises(PlanCompatibilityError) as caught:
        check_compatibility(make_metadata(), "10.13.0.35", ORIN, "unet.plan")
    message = str(caught.value)
    assert "TensorRT 10.3.0 built it" in message and "TensorRT 10.13.0.35" in message
    assert "unet-build models/tiny.onnx -o unet.plan" in message and "--precision fp16" in message


def test_other_architecture_is_refused() -> None:
    with pytest.raises(PlanCompatibilityError, match=r"built for Orin \(sm_87, 16 SMs\), this GPU is .*\(sm_90\)"):
        check_compatibility(make_metadata(), "10.3.0", H100, "unet.plan")


def test_same_architecture_other_model_warns() -> None:
    with pytest.warns(RuntimeWarning, match="same architecture"):
        check_compatibility(make_metadata(), "10.3.0", GpuIdentity("Jetson AGX Orin", (8, 7)), "unet.plan")


def test_another_orin_module_warns_an_unknown_count_does_not(recwarn: pytest.WarningsRecorder) -> None:
    # Every Orin module reports "Orin", sm_87: an AGX Orin's engine on an Orin NX runs with tactics timed on 16 SMs.
    with pytest.warns(RuntimeWarning, match=r"built on Orin \(sm_87, 16 SMs\) and runs on Orin \(sm_87, 8 SMs\)"):
        check_compatibility(make_metadata(), "10.3.0", GpuIdentity("Orin", (8, 7), 8), "unet.plan")
    check_compatibility(make_metadata(gpu=GpuIdentity("Orin", (8, 7))), "10.3.0", ORIN, "unet.plan")
    check_compatibility(make_metadata(), "10.3.0", ORIN, "unet.plan")
    assert not recwarn.list


def test_metadata_rejects_unknown_precision() -> None:
    with pytest.raises(ValueError, match="precision"):
        make_metadata(precision="int4")


def test_check_shape_names_the_smallest_frame_width_by_height_and_refuses_another_rank() -> None:
    # --size and the documents write WxH; the profile's shapes are NxCxHxW.
    profile = ShapeProfile((1, 3, 64, 96), (1, 3, 128, 128), (1, 3, 128, 128))
    with pytest.raises(ValueError, match=r"resize the frames to at least 96x64, or rebuild"):
        profile.check_shape((1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"input shape 1x3x128x128x1 is not N x 3 x H x W"):
        profile.check_shape((1, 3, 128, 128, 1))


def test_check_shape_of_a_frame_too_wide_names_only_what_it_passes() -> None:
    # One frame, at the profile's batch, too wide only: the batch needs no change and --min-shape would be the
    # engine's own smallest shape, a rebuild that changes nothing.
    profile = ShapeProfile((1, 3, 64, 64), (1, 3, 128, 128), (1, 3, 128, 128))
    with pytest.raises(ValueError) as caught:
        profile.check_shape((1, 3, 100, 256))
    message = str(caught.value)
    assert message.endswith("; resize or tile the frames (Segmenter tiles frames larger than the profile), or "
                            "rebuild the engine with unet-build ... --max-shape 1x3x128x256"), message


@pytest.mark.parametrize("source", [r"C:\Users\me\runs\mine.onnx", "/home/me/runs/mine.onnx"],
                         ids=["windows-desktop", "linux-desktop"])
def test_the_rebuild_of_a_copied_plan_names_the_model_beside_it_from_any_folder(
        source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plan built on a desktop (Windows or Linux) and copied with its model into `jetson/`, the command run from
    the folder above: the rebuild names `jetson/mine.onnx`, the copy beside the plan, not the desktop's path nor a
    file of the working folder."""
    (tmp_path / "jetson").mkdir()
    (tmp_path / "jetson" / "mine.onnx").write_bytes(b"model")
    (tmp_path / "mine.onnx").write_bytes(b"another model")  # of the working folder: not the plan's
    monkeypatch.chdir(tmp_path)
    command = make_metadata(source=source).rebuild_command(Path("jetson") / "mine.plan")
    assert command.startswith("unet-build jetson/mine.onnx -o jetson/mine.plan "), command


def test_a_missing_metadata_file_names_the_model_beside_the_plan_by_a_path_the_shell_takes(tmp_path: Path) -> None:
    """The line for a plan without its .plan.json, in a folder whose name has a space: the rebuild names the model
    beside the plan by its path, quoted, and the plan quoted too, so the command runs as printed."""
    folder = tmp_path / "my runs"
    folder.mkdir()
    (folder / "mine.onnx").write_bytes(b"model")
    with pytest.raises(FileNotFoundError) as missing:
        read_plan_metadata(folder / "mine.plan")
    command = str(missing.value).split("rebuild with: ")[1]
    assert shlex.split(command) == ["unet-build", str(folder / "mine.onnx"), "-o", str(folder / "mine.plan")]


def test_a_plan_without_a_recorded_digest_is_not_taken_for_a_changed_model(tmp_path: Path) -> None:
    """A plan whose metadata records no model digest (written before unetrt recorded it) with its model beside it:
    nothing can tell whether the model changed, so nothing is said."""
    from unetrt.plan_metadata import warn_if_model_changed

    (tmp_path / "mine.onnx").write_bytes(b"model")
    metadata = make_metadata(source=str(tmp_path / "mine.onnx"))
    assert metadata.source_sha256 is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_model_changed(metadata, tmp_path / "mine.plan")


def test_a_copied_plans_changed_model_is_named_as_it_is_here(tmp_path: Path) -> None:
    """A desktop's plan copied with its model, which was retrained since: the warning names the model beside the
    plan, the file that changed, not the desktop's path the metadata recorded."""
    from unetrt.plan_metadata import warn_if_model_changed

    (tmp_path / "mine.onnx").write_bytes(b"retrained")
    metadata = make_metadata(source="/home/me/runs/mine.onnx", source_sha256="0" * 64)
    with pytest.warns(RuntimeWarning) as caught:
        warn_if_model_changed(metadata, tmp_path / "mine.plan")
    (line,) = [str(warning.message) for warning in caught]
    assert line.startswith(f"{str(tmp_path / 'mine.plan')!r} runs the network mine.onnx held when the plan was "
                           f"built; {str(tmp_path / 'mine.onnx')!r} has changed since"), line
    assert "/home/me" not in line


def test_a_relative_recorded_model_is_not_looked_up_in_the_working_folder(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A plan of before 2026-12-07 records its model as typed (`models/mine.onnx`, of the folder its build ran in).
    Opened from another folder that has a `models/mine.onnx` of its own (robot b's), that file is not the plan's
    model: taking it warned that the plan's model had changed and named robot b's model in the rebuild."""
    from unetrt.plan_metadata import warn_if_model_changed

    (tmp_path / "robot_a").mkdir()
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "mine.onnx").write_bytes(b"robot b's model")
    monkeypatch.chdir(tmp_path)
    metadata = make_metadata(source="models/mine.onnx", source_sha256="0" * 64)
    plan = Path("robot_a") / "mine.plan"
    assert metadata.source_file(plan) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_model_changed(metadata, plan)
    assert metadata.rebuild_command(plan).startswith("unet-build models/mine.onnx -o robot_a/mine.plan ")
    (tmp_path / "robot_a" / "mine.onnx").write_bytes(b"robot a's model")  # copied with its plan: found beside it
    assert metadata.source_file(plan) == Path("robot_a") / "mine.onnx"


def test_the_recorded_model_is_taken_over_another_file_of_its_name_beside_the_plan(tmp_path: Path) -> None:
    """A plan built from `runs/exp2/mine.onnx` into a folder holding an older `mine.onnx` of its own: the recorded
    file is still there, so it is the plan's model (the one beside the plan is named only where it is that file)."""
    (tmp_path / "runs").mkdir()
    (tmp_path / "deploy").mkdir()
    recorded = tmp_path / "runs" / "mine.onnx"
    recorded.write_bytes(b"the model the plan was built from")
    (tmp_path / "deploy" / "mine.onnx").write_bytes(b"an older model")
    metadata = make_metadata(source=str(recorded))
    plan = tmp_path / "deploy" / "mine.plan"
    assert metadata.source_file(plan) == recorded
    (tmp_path / "deploy" / "mine.onnx").unlink()
    (tmp_path / "deploy" / "mine.onnx").symlink_to(recorded)  # the same file: named as the plan is
    assert metadata.source_file(plan) == tmp_path / "deploy" / "mine.onnx"
