"""``python -m unetrt.doctor``: the report ends with what a stream runs, opened as the stream opens it."""

from __future__ import annotations

import pytest

from unetrt.doctor import main


def test_report_names_backend_and_device(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--device", "cpu", "--backend", "onnxruntime", "--precision", "fp32"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "unet-stream --model camvid runs on: onnxruntime fp32 cpu"
    assert any(line.startswith("engine cache: ") for line in lines)


def test_unknown_model_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--model", "nosuch"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_without_a_driver_the_report_says_so(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    def no_driver() -> None:
        raise OSError("libcuda.so.1: cannot open shared object file")

    monkeypatch.setattr("unetrt.cuda.driver_library", no_driver)
    assert main(["--device", "cpu", "--backend", "onnxruntime", "--precision", "fp32"]) == 0
    assert "CUDA driver: none (no libcuda.so.1)" in capsys.readouterr().out.splitlines()


@pytest.mark.parametrize("argv", [["--working-size", "12x"], ["--foo"]])
def test_a_bad_argument_is_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    # argparse's own parser printed its usage block above the error.
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and err.count("\n") == 1 and err.startswith("python -m unetrt.doctor: error: ")


@pytest.mark.parametrize("spelling", ["--size", "--working-size"])
def test_the_working_size_is_spelled_as_in_every_command(spelling: str) -> None:
    # The README: --size is spelled the same in every command; the doctor took only --working-size.
    from unetrt.doctor import build_parser

    assert build_parser().parse_args([spelling, "320x240"]).working_size == (320, 240)


def test_the_opencv_line_says_whether_opencv_has_gstreamer(monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    # csi:// needs GStreamer: the doctor is where a Jetson user learns that pip's opencv-python lacks it.
    import cv2

    build = ("General configuration for OpenCV 4.8.0\n  Video I/O:\n    FFMPEG:      YES\n"
             "    GStreamer:   YES (1.20.3)\n")
    monkeypatch.setattr(cv2, "getBuildInformation", lambda: build)
    assert main(["--device", "cpu", "--backend", "onnxruntime", "--precision", "fp32"]) == 0
    assert "(GStreamer: YES; csi:// needs YES)" in capsys.readouterr().out


def test_device_gpu_gets_the_answer_the_other_commands_give(capsys: pytest.CaptureFixture[str]) -> None:
    # It said only "unknown device 'gpu'", after importing the backends; unet-stream explains 'cuda'.
    with pytest.raises(SystemExit) as exited:
        main(["--device", "gpu"])
    assert exited.value.code == 2
    assert "'gpu' is not a unetrt device: NVIDIA GPUs are 'cuda'" in capsys.readouterr().err
