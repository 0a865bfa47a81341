"""scripts/setup_venv.sh and scripts/demo.sh say what they are doing, one line per step, before each step runs.

They run in a copy of the scripts next to a stand-in ``.venv/bin/python`` that records the pip calls instead of
installing, so the test takes a second and needs no network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Answers what the scripts ask .venv/bin/python: its version, whether OpenCV came from pip (no), whether unetrt is
# installed (after 'pip install -e'), whether it sees TensorRT (a venv that sees the system's) and pycuda (after
# pip installed it; that build fails where the file pycuda-fails exists), and writes every pip call into out.log,
# where the script's own lines go too (both append, so the order is kept; the script sends pip's output to its log
# file). pip.log gets each whole pip call with the CUDA_ROOT pycuda is built against. Files in the checkout change
# the answers: pip-opencv (its content: whether OpenCV is to come from pip), no-torch-wheel (the CPU torch is only on
# PyTorch's index), no-torch-anywhere, install-fails ('pip install -e' fails); .venv/no-pip makes a venv whose making
# was cut short (pip missing until 'python -m ensurepip' ran; never, where no-ensurepip exists too); offline: pip
# finds nothing to install, and says so as pip without a network does; .venv/version: the venv's 'python -V'.
FAKE_PYTHON = """#!/usr/bin/env bash
here="$(cd "$(dirname "$0")/../.." && pwd)"
case "$1" in
  -V) cat "$here/.venv/version" 2>/dev/null || echo "Python 3.11.0" ;;
  -) cat > /dev/null; cat "$here/pip-opencv" 2>/dev/null || echo no ;;
  -c) case "$2" in
        *tensorrt*) [ -f "$here/.venv/tensorrt" ] ;;
        *pycuda*) [ -f "$here/.venv/pycuda" ] ;;
        *) [ -f "$here/.venv/installed" ] ;;
      esac ;;
  -m) if [ "$2" = ensurepip ]; then
        echo "ENSUREPIP ${*:3}" >> "$here/out.log"; [ -e "$here/no-ensurepip" ] && exit 1
        rm -f "$here/.venv/no-pip"; exit 0
      fi
      [ -e "$here/.venv/no-pip" ] && { echo "$0: No module named pip" >&2; exit 1; }
      [ "$2 $3" = "pip --version" ] && exit 0
      shift 2; [ -e "$here/offline" ] && { echo "ERROR: No matching distribution found for ${*: -1}"; exit 1; }
      echo "PIP $1 ${*: -1}" >> "$here/out.log"; echo "CUDA_ROOT=${CUDA_ROOT:-} $*" >> "$here/pip.log"
      if [[ "$*" == *torch==* ]]; then
        [ -e "$here/no-torch-anywhere" ] && exit 1
        [ -e "$here/no-torch-wheel" ] && [[ "$*" != *--extra-index-url* ]] && exit 1
      fi
      [[ " $* " == *" -e "* ]] && [ -e "$here/install-fails" ] && exit 1
      if [[ "$*" == *pycuda* ]]; then [ ! -e "$here/pycuda-fails" ] && touch "$here/.venv/pycuda"; exit; fi
      [[ " $* " == *" -e "* ]] && touch "$here/.venv/installed"; exit 0 ;;
esac
"""
FAKE_UNET_STREAM = "#!/usr/bin/env bash\necho \"unet-stream $*\"\n"


@pytest.fixture()
def checkout(tmp_path: Path) -> Path:
    """A copy of what the scripts read, with the stand-in python in .venv."""
    shutil.copytree(REPO / "scripts", tmp_path / "scripts")
    for name in ("setup.py", "pyproject.toml"):
        shutil.copy(REPO / name, tmp_path / name)
    shutil.copytree(REPO / "cpp_ext", tmp_path / "cpp_ext")
    for package in ("engine", "export", "benchmarks"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name, text in (("python", FAKE_PYTHON), ("unet-stream", FAKE_UNET_STREAM)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return tmp_path


def _run(checkout: Path, *command: str, jetson: bool = False, returncode: int = 0) -> list[str]:
    """Run a script (on a Jetson, or not, whatever this machine is); its output lines with the stand-in pip's
    calls among them."""
    log = checkout / "out.log"
    log.write_text("")
    release = checkout / "nv_tegra_release"
    if jetson:
        release.write_text("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64\n")
    with log.open("a") as out:
        done = subprocess.run(["bash", *command], cwd=checkout, stdout=out, stderr=subprocess.PIPE, text=True,
                              timeout=60, env={**os.environ, "PYTHONPATH": "", "UNETRT_TEGRA_RELEASE": str(release)})
    assert done.returncode == returncode, done.stderr
    return log.read_text().splitlines()


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("sha256sum") is None, reason="needs bash")
def test_setup_prints_each_step_before_it_runs_and_once_when_up_to_date(checkout: Path) -> None:
    lines = _run(checkout, "scripts/setup_venv.sh", "export,dev")
    steps = [line for line in lines if line.startswith("[setup ")]
    assert [line[:11] for line in steps] == [f"[setup {n}/5]" for n in range(1, 6)], lines
    assert "checking the existing .venv (Python 3.11.0)" in steps[0]
    assert "CPU-only PyTorch" in steps[2] and "compiling its C++ kernels" in steps[3] and "stubs" in steps[4]
    # Every pip call comes after the line that announces it.
    order = [line for line in lines if line.startswith(("[setup ", "PIP "))]
    assert [line.split(" ")[1] if line.startswith("PIP") else line[:11] for line in order] == [
        "[setup 1/5]", "[setup 2/5]", "install", "[setup 3/5]", "install", "[setup 4/5]", "install",
        "[setup 5/5]", "install"], order
    assert "tail -f build/setup.log" in "\n".join(lines) and lines[-1].startswith(".venv is ready")
    again = _run(checkout, "scripts/setup_venv.sh", "export,dev")
    assert again == ["[setup 1/5] checking the existing .venv (Python 3.11.0)",
                     f".venv is up to date (extras: {lines[-1].split('extras: ')[1]}"]


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("sha256sum") is None, reason="needs bash")
def test_demo_says_what_it_sets_up_and_then_what_it_runs(checkout: Path) -> None:
    lines = _run(checkout, "scripts/demo.sh")
    demo = [index for index, line in enumerate(lines) if line.startswith("[demo ")]
    setup = [index for index, line in enumerate(lines) if line.startswith("[setup ")]
    assert len(demo) == 2 and demo[0] < setup[0] and setup[-1] < demo[1], lines
    assert "segmenting the bundled CamVid clip" in lines[demo[1]]
    assert lines[-1] == "unet-stream sample out/camvid_annotated.mp4 --model camvid --overwrite"


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_demo_on_a_jetson_sets_up_with_jetpacks_tensorrt(checkout: Path) -> None:
    """On a Jetson the fastest path is TensorRT: the venv must see JetPack's TensorRT (setup_jetson.sh), and the
    stream builds the engine on its first run."""
    stand_in = checkout / "scripts" / "setup_jetson.sh"
    stand_in.write_text('echo "setup_jetson $*"\n')
    lines = _run(checkout, "scripts/demo.sh", jetson=True)
    assert lines[0].startswith("[demo 1/2] a Jetson: setting up .venv with JetPack's TensorRT and OpenCV"), lines
    assert lines[1] == "setup_jetson --no-engine"
    assert not any(line.startswith(("[setup ", "PIP ")) for line in lines), lines
    assert lines[2].startswith("[demo 2/2] segmenting") and "builds its TensorRT engine" in lines[2]
    assert lines[-1] == "unet-stream sample out/camvid_annotated.mp4 --model camvid --overwrite"


# The system's python3 of a machine with TensorRT installed system-wide (an NGC container): it imports tensorrt, and
# 'python3 -m venv' records its options and makes the stand-in .venv.
FAKE_SYSTEM_PYTHON = """#!/usr/bin/env bash
here="$(pwd)"
case "$1" in
  -V) echo "Python 3.11.0" ;;
  -c) exit 0 ;;
  -m) echo "VENV ${*:3}" >> "$here/out.log"; mkdir -p "$here/.venv/bin"
      cp "$here/stand-ins/python" "$here/stand-ins/unet-stream" "$here/.venv/bin/"; touch "$here/.venv/tensorrt" ;;
esac
"""


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("sha256sum") is None, reason="needs bash")
def _with_system_tensorrt(checkout: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No .venv yet, and a system python3 that imports TensorRT (an NGC container); a CUDA toolkit in CUDA_HOME."""
    (checkout / ".venv" / "bin").rename(checkout / "stand-ins")  # the demo makes .venv
    (checkout / ".venv").rmdir()
    system = checkout / "system-bin"
    system.mkdir()
    (system / "python3").write_text(FAKE_SYSTEM_PYTHON)
    (system / "python3").chmod(0o755)
    monkeypatch.setenv("PATH", f"{system}{os.pathsep}{os.environ['PATH']}")
    toolkit = checkout / "cuda" / "bin"
    toolkit.mkdir(parents=True)
    (toolkit / "nvcc").write_text("#!/bin/sh\n")
    (toolkit / "nvcc").chmod(0o755)
    monkeypatch.setenv("CUDA_HOME", str(checkout / "cuda"))


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("sha256sum") is None, reason="needs bash")
def test_demo_keeps_a_system_tensorrt_visible_and_builds_pycuda_for_it_once(checkout: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the system's Python has TensorRT (an NGC container), a venv made without its site packages would hide
    it and the stream would run on the CPU; without pycuda, TensorRT's GPU path cannot run either."""
    _with_system_tensorrt(checkout, monkeypatch)
    lines = _run(checkout, "scripts/demo.sh")
    assert lines[0].startswith("[demo 1/2] setting up .venv that sees this machine's TensorRT"), lines
    assert lines[1] == "VENV --system-site-packages .venv"
    assert lines[2].startswith("[setup 1/5] checking the existing .venv")
    building = lines.index(f"[demo 1/2] building pycuda against {checkout / 'cuda'} for TensorRT's GPU path (a few "
                           "minutes, once; log in out/pycuda-build.log)")
    assert lines[building + 1] == "PIP install pycuda>=2024.1"
    assert lines[building + 2].startswith("[demo 2/2] segmenting"), lines
    again = _run(checkout, "scripts/demo.sh")
    assert not any("pycuda" in line for line in again), again


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("sha256sum") is None, reason="needs bash")
def test_a_pycuda_that_does_not_build_is_said_once_and_the_demo_goes_on(checkout: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    _with_system_tensorrt(checkout, monkeypatch)
    (checkout / "pycuda-fails").touch()
    lines = _run(checkout, "scripts/demo.sh")
    failed = [line for line in lines if line.startswith("[demo 1/2] pycuda did not build")]
    assert failed == ["[demo 1/2] pycuda did not build (out/pycuda-build.log; it needs python3-dev): the stream "
                      "runs without TensorRT; fix that and delete .venv/unetrt-pycuda.failed to try again"], lines
    assert lines[-1] == "unet-stream sample out/camvid_annotated.mp4 --model camvid --overwrite"
    again = _run(checkout, "scripts/demo.sh")
    assert not any("pycuda" in line for line in again), again


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("sha256sum") is None, reason="needs bash")
def test_without_a_cuda_toolkit_the_demo_says_why_tensorrt_will_not_run(checkout: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    _with_system_tensorrt(checkout, monkeypatch)
    monkeypatch.setenv("CUDA_HOME", str(checkout / "no-toolkit"))
    lines = _run(checkout, "scripts/demo.sh")
    assert ("[demo 1/2] TensorRT is here but pycuda is not, and there is no CUDA toolkit (nvcc) to build it: the "
            "stream runs without TensorRT (install the toolkit, or set CUDA_HOME to it, and run again)") in lines
    assert not any(line.startswith("PIP install pycuda") for line in lines), lines
    assert lines[-1] == "unet-stream sample out/camvid_annotated.mp4 --model camvid --overwrite"


def test_the_demo_does_not_take_tensorrts_type_stubs_for_tensorrt(tmp_path: Path) -> None:
    """tensorrt-stubs (the dev extra's type checking) is an importable namespace package: the demo took it for
    TensorRT and tried to build pycuda on a machine without a GPU."""
    (tmp_path / "tensorrt").mkdir()
    (tmp_path / "tensorrt" / "__init__.pyi").write_text("class Builder: ...\n")
    check = next(line.split("=", 1)[1].strip("'") for line in (REPO / "scripts" / "demo.sh").read_text().splitlines()
                 if line.startswith("has_tensorrt="))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    assert subprocess.run([sys.executable, "-c", "import tensorrt"], env=env).returncode == 0  # the stubs import
    assert subprocess.run([sys.executable, "-c", check], env=env, capture_output=True).returncode != 0


# JetPack's Python for scripts/setup_jetson.sh: it has TensorRT (the version in the file trt-version) and OpenCV (not
# where the file no-cv2 exists), and 'python3 -m venv' makes a venv that sees them, whose python records each pip call
# with the kernels' compute capabilities, UNETRT_CUDA and the CUDA_ROOT pycuda is built against, and pretends pycuda
# imports once pip built it. The install counts as still there (the stamp's check) once 'pip install -e .' ran, and
# unless the file kernels-gone exists (a later pip install without UNETRT_CUDA dropped the CUDA kernels); the
# OpenCV-wheel and NumPy check fails where opencv-wheel exists, pip is missing where no-pip exists, and the venv
# is left half made where no-venv exists (python3-venv missing).
FAKE_JETPACK_PYTHON = """#!/usr/bin/env bash
here="$(pwd)"
case "$1" in
  -V) echo "Python 3.12.3" ;;
  -c) case "$2" in
        *tensorrt*) cat "$here/trt-version" ;;
        *cv2*) [ ! -e "$here/no-cv2" ] ;;
      esac ;;
  -m) echo "VENV ${*:3}" >> "$here/out.log"
      venv="$4"; mkdir -p "$venv/bin"; [ -e "$here/no-venv" ] && exit 1
      echo "include-system-site-packages = true" > "$venv/pyvenv.cfg"
      cp "$here/stand-ins/venv-python" "$venv/bin/python" ;;
esac
"""
FAKE_JETSON_VENV_PYTHON = """#!/usr/bin/env bash
here="$(pwd)"
case "$1" in
  -c) case "$2" in
        *cuda_built*) [ -f "$here/installed" ] && [ ! -e "$here/kernels-gone" ] ;;
        *pycuda*) [ -f "$here/pycuda-built" ] ;;
        *) exit 1 ;;
      esac ;;
  -) cat > /dev/null; echo "$2" > "$here/check-python"; [ ! -e "$here/opencv-wheel" ] ;;
  -m) case "$2" in
        pip) [ "$3" = --version ] && [ ! -e "$here/no-pip" ] && exit 0
             [ "$3" = --version ] && exit 1
             [[ "$*" == *pycuda* ]] && touch "$here/pycuda-built"
             [[ "$*" == *" -e ."* ]] && touch "$here/installed" && rm -f "$here/kernels-gone"
             echo "PIP archs=${UNETRT_CUDA_ARCHS:-} cuda=${UNETRT_CUDA:-} root=${CUDA_ROOT:-} ${*:5}" \
               >> "$here/out.log" ;;
        *) echo "RUN ${*:2}" >> "$here/out.log" ;;
      esac ;;
esac
"""
THOR = ("# R38 (release), REVISION: 2.1, GCID: 41844464, BOARD: generic, EABI: aarch64", "nvidia,tegra264", "10.13.3")
ORIN_JETPACK_6 = ("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64", "nvidia,tegra234",
                  "10.3.0")
ORIN_JETPACK_7 = ("# R39 (release), REVISION: 2.0, GCID: 43121010, BOARD: generic, EABI: aarch64", "nvidia,tegra234",
                  "11.4.1")


def _setup_jetson(checkout: Path, release: str, compatible: str, trt_version: str,
                  archs: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run scripts/setup_jetson.sh --no-engine on a stand-in Jetson: its release file, device tree, JetPack Python
    with that TensorRT, and nvcc on PATH."""
    _make_jetson(checkout, release, compatible, trt_version)
    return _run_setup_jetson(checkout, "--no-engine", archs=archs)


def _make_jetson(checkout: Path, release: str, compatible: str, trt_version: str) -> None:
    """A stand-in Jetson in the checkout: its release file, device tree, JetPack Python with that TensorRT, nvcc."""
    stand_ins = checkout / "stand-ins"
    stand_ins.mkdir()
    for name, text in (("python3", FAKE_JETPACK_PYTHON), ("venv-python", FAKE_JETSON_VENV_PYTHON),
                       ("nvcc", "#!/bin/sh\n")):
        (stand_ins / name).write_text(text)
        (stand_ins / name).chmod(0o755)
    shutil.rmtree(checkout / ".venv")
    (checkout / "trt-version").write_text(trt_version + "\n")
    (checkout / "nv_tegra_release").write_text(release + "\n")
    (checkout / "compatible").write_bytes(b"nvidia,board\0" + compatible.encode() + b"\0")


def _run_setup_jetson(checkout: Path, *options: str, archs: str | None = None,
                      venv: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run scripts/setup_jetson.sh on the stand-in Jetson _make_jetson made; out.log starts empty."""
    stand_ins = checkout / "stand-ins"
    (checkout / "out.log").write_text("")
    env = {**os.environ, "PYTHONPATH": "", "PYTHON": str(stand_ins / "python3"),
           "PATH": f"{stand_ins}{os.pathsep}{os.environ['PATH']}", "CUDA_HOME": str(checkout / "cuda"),
           "UNETRT_TEGRA_RELEASE": str(checkout / "nv_tegra_release"),
           "UNETRT_DEVICE_TREE": str(checkout / "compatible")}
    env.pop("UNETRT_CUDA_ARCHS", None)
    env.pop("VENV", None)
    if archs is not None:
        env["UNETRT_CUDA_ARCHS"] = archs
    if venv is not None:
        env["VENV"] = venv
    return subprocess.run(["bash", "scripts/setup_jetson.sh", *options], cwd=checkout, capture_output=True,
                          text=True, timeout=60, env=env)


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("sha256sum") is None, reason="needs bash")
@pytest.mark.parametrize(("jetson", "sm"), [(THOR, "110"), (ORIN_JETPACK_6, "87"), (ORIN_JETPACK_7, "87")],
                         ids=["thor-jetpack-7", "orin-jetpack-6", "orin-jetpack-7"])
def test_setup_jetson_takes_jetpack_6_and_7_and_builds_the_kernels_for_this_gpu(
        checkout: Path, jetson: tuple[str, str, str], sm: str) -> None:
    """JetPack 7 (L4T R38 on Thor, R39 on Orin too) was refused as 'no JetPack 6 found'; the kernels were built for
    Orin's sm_87 alone, which a Thor (compute capability 11.0) runs only through a JIT of their PTX."""
    done = _setup_jetson(checkout, *jetson)
    assert done.returncode == 0, done.stderr
    l4t = jetson[0].split()[1]
    assert f"setup_jetson: L4T {l4t}, TensorRT {jetson[2]}, CUDA kernels for sm_{sm}" in done.stdout.splitlines()
    pip = _jetson_pip(checkout)
    assert any("onnxconverter-common" in line for line in pip), pip  # TensorRT 11 builds FP16 from an FP16 graph
    assert any(line.startswith(f"PIP archs={sm} ") and line.endswith(" -e .") for line in pip), pip
    assert (checkout / "out.log").read_text().splitlines()[-1] == "RUN unetrt.doctor"


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("sha256sum") is None, reason="needs bash")
def test_setup_jetson_keeps_the_compute_capability_asked_for(checkout: Path) -> None:
    done = _setup_jetson(checkout, *THOR, archs="87;110")
    assert done.returncode == 0, done.stderr
    assert "setup_jetson: L4T R38, TensorRT 10.13.3, CUDA kernels for sm_87;110" in done.stdout
    assert "PIP archs=87;110 " in (checkout / "out.log").read_text()


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("sha256sum") is None, reason="needs bash")
@pytest.mark.parametrize(("release", "trt_version", "message"), [
    ("# R35 (release), REVISION: 5.0, GCID: 35550185, BOARD: t186ref, EABI: aarch64", "8.5.2",
     "this is JetPack 5 or older"),
    ("# R36 (release), REVISION: 3.0, GCID: 36923193, BOARD: generic, EABI: aarch64", "8.6.2",
     "TensorRT 8.6.2 found: unetrt needs TensorRT 10"),
    ("", "10.3.0", "no JetPack found"),
], ids=["jetpack-5", "jetpack-6.0", "not-a-jetson"])
def test_setup_jetson_refuses_what_cannot_run_in_one_line(checkout: Path, release: str, trt_version: str,
                                                          message: str) -> None:
    done = _setup_jetson(checkout, release, "nvidia,tegra234", trt_version)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(f"error: {message}"), done.stderr
    assert not (checkout / ".venv").exists()


def _jetson_pip(checkout: Path) -> list[str]:
    """The pip calls of the last setup_jetson.sh run: 'PIP archs=... cuda=... root=... <its arguments>'."""
    return [line for line in (checkout / "out.log").read_text().splitlines() if line.startswith("PIP ")]


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("sha256sum") is None, reason="needs bash")
def test_setup_jetson_builds_pycuda_and_the_kernels_against_jetpacks_cuda_and_never_an_opencv_wheel(
        checkout: Path) -> None:
    """pycuda built against another CUDA than JetPack's, kernels left out, or an OpenCV wheel or NumPy 2 pulled in by
    one of the installs would each show only when a stream runs: on the CPU, or with a cv2 that has no GStreamer."""
    _make_jetson(checkout, *ORIN_JETPACK_6)
    done = _run_setup_jetson(checkout, "--no-engine")
    assert done.returncode == 0, done.stderr
    cuda = checkout / "cuda"  # the CUDA_HOME the run is given
    assert f"setup_jetson: pycuda: building against {cuda} (a few minutes)" in done.stdout.splitlines()
    assert "setup_jetson: unetrt (UNETRT_CUDA=1)" in done.stdout.splitlines()
    assert (checkout / "out.log").read_text().splitlines()[0] == "VENV --system-site-packages .venv"
    pip = _jetson_pip(checkout)
    assert [line for line in pip if "pycuda" in line] == [
        f"PIP archs= cuda= root={cuda} -c build/setup_jetson.constraints pycuda>=2024.1"], pip
    assert [line for line in pip if line.endswith(" -e .")] == [
        "PIP archs=87 cuda=1 root= -c build/setup_jetson.constraints --no-build-isolation -e ."], pip
    # Every install but pip's own build tools is held by the constraints.
    assert all(" -c build/setup_jetson.constraints " in line for line in pip if " --upgrade pip " not in line), pip
    assert len(pip) == 4, pip
    constraints = (checkout / "build" / "setup_jetson.constraints").read_text().splitlines()
    assert set(constraints) >= {"numpy<2", "opencv-python<0", "opencv-python-headless<0", "opencv-contrib-python<0"}


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("sha256sum") is None, reason="needs bash")
def test_setup_jetson_runs_pip_again_only_when_an_input_changed(checkout: Path) -> None:
    """demo.sh runs the setup every time: nothing changed skips pip; a changed input (the kernels' compute capability,
    JetPack's TensorRT, the installer, the packaging, the C++ sources, a bundled model) or CUDA kernels lost since
    must install again, or the stream runs what the last install left."""
    _make_jetson(checkout, *ORIN_JETPACK_6)

    def reinstalls(archs: str | None = "87;110") -> bool:
        done = _run_setup_jetson(checkout, "--no-engine", archs=archs)
        assert done.returncode == 0, done.stderr
        return any(line.endswith(" -e .") for line in _jetson_pip(checkout))

    # Each step changes one input alone: the runs between keep the compute capability asked for.
    assert reinstalls(archs=None)
    assert not reinstalls(archs=None)
    assert "setup_jetson: .venv is up to date" in _run_setup_jetson(checkout, "--no-engine").stdout
    assert reinstalls()
    assert not reinstalls()
    (checkout / "trt-version").write_text("10.7.0\n")
    assert reinstalls()
    (checkout / "kernels-gone").touch()
    assert reinstalls()
    for changed in ("scripts/setup_jetson.sh", "pyproject.toml", "cpp_ext/tiling.h"):
        with (checkout / changed).open("a") as file:
            file.write("\n")
        assert reinstalls(), changed
    (checkout / "engine" / "models").mkdir()
    (checkout / "engine" / "models" / "new.onnx").write_bytes(b"")
    assert reinstalls()
    assert not reinstalls()


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("sha256sum") is None, reason="needs bash")
@pytest.mark.parametrize(("missing", "message"), [
    ("no-cv2", "error: the system OpenCV is missing"),
    ("no-nvcc", "error: nvcc not found"),
    ("venv-without-system-site-packages", "error: .venv exists but was not made with --system-site-packages"),
    ("no-pip", "error: .venv has no pip"),
    ("opencv-wheel", ""),
    ("no-venv", "error: could not make the venv .venv"),
])
def test_setup_jetson_stops_where_a_stream_could_not_use_jetpack(checkout: Path, missing: str,
                                                                 message: str) -> None:
    _make_jetson(checkout, *ORIN_JETPACK_6)
    if missing == "no-nvcc":
        (checkout / "stand-ins" / "nvcc").unlink()
        if shutil.which("nvcc") or Path("/usr/local/cuda/bin/nvcc").exists():
            pytest.skip("this machine has nvcc")
    elif missing in ("venv-without-system-site-packages", "no-pip"):
        # A venv made by setup_venv.sh (test.sh) sees neither JetPack's TensorRT nor its OpenCV.
        (checkout / ".venv" / "bin").mkdir(parents=True)
        shutil.copy(checkout / "stand-ins" / "venv-python", checkout / ".venv" / "bin" / "python")
        site = "false" if missing == "venv-without-system-site-packages" else "true"
        (checkout / ".venv" / "pyvenv.cfg").write_text(f"include-system-site-packages = {site}\n")
        if missing == "no-pip":
            (checkout / "no-pip").touch()
    else:
        (checkout / missing).touch()
    done = _run_setup_jetson(checkout, "--no-engine")
    assert done.returncode == 1, done.stdout
    assert done.stderr.startswith(message), done.stderr
    assert not (checkout / ".venv" / "unetrt-jetson-setup.stamp").exists()
    if missing == "no-venv":
        assert not (checkout / ".venv").exists()  # a half-made venv would be taken as one without pip next time


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("sha256sum") is None, reason="needs bash")
def test_setup_jetson_builds_the_engine_unless_told_not_to_and_cpu_only_builds_no_cuda(checkout: Path) -> None:
    _make_jetson(checkout, *ORIN_JETPACK_6)
    done = _run_setup_jetson(checkout)
    assert done.returncode == 0, done.stderr
    assert (checkout / "out.log").read_text().splitlines()[-1] == "RUN unetrt.doctor --build"
    # CI's --cpu-only, in its own venv: no pycuda, kernels without CUDA, no engine (no GPU to build it on).
    done = _run_setup_jetson(checkout, "--cpu-only", venv="cpu-venv")
    assert done.returncode == 0, done.stderr
    log = (checkout / "out.log").read_text().splitlines()
    assert log[0] == "VENV --system-site-packages cpu-venv" and log[-1] == "RUN unetrt.doctor", log
    assert [line for line in log if line.endswith(" -e .")] == [
        "PIP archs= cuda=0 root= -c build/setup_jetson.constraints --no-build-isolation -e ."], log
    assert not any("pycuda" in line for line in log), log
    assert (checkout / "cpu-venv" / "unetrt-jetson-setup.stamp").is_file()


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_setup_jetson_refuses_an_unknown_option(checkout: Path) -> None:
    # A typo of --no-engine must not pass as a full setup (which builds an engine for minutes) nor as success.
    _make_jetson(checkout, *ORIN_JETPACK_6)
    done = _run_setup_jetson(checkout, "--no-engin")
    assert (done.returncode, done.stderr) == (2, "error: unknown option --no-engin (see --help)\n")
    assert not (checkout / ".venv").exists()


def _run_as_root(checkout: Path) -> None:
    """The script's `id -u` answers 0, as under sudo or in a container's root shell."""
    stand_in_id = checkout / "stand-ins" / "id"
    stand_in_id.write_text('#!/bin/sh\n[ "$1" = -u ] && echo 0\n')
    stand_in_id.chmod(0o755)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_setup_jetson_run_with_sudo_is_one_line_and_makes_nothing(checkout: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """'sudo bash scripts/setup_jetson.sh' (Jetson guides run installs with sudo) made a root-owned .venv and build/
    in the user's checkout and built root's engine cache: the user's streams then built their own engine (minutes)
    and the user's next run of the script failed on 'build/setup_jetson.log: Permission denied'. A root shell of
    its own (a container) is not refused: no SUDO_USER there."""
    _make_jetson(checkout, *ORIN_JETPACK_6)
    _run_as_root(checkout)
    monkeypatch.setenv("SUDO_USER", "me")
    done = _run_setup_jetson(checkout, "--no-engine")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == ("error: run it as me, without sudo (bash scripts/setup_jetson.sh): it makes .venv and "
                           "the engine cache for the user who runs the streams, where sudo leaves root's files in "
                           "this checkout and builds root's engine cache\n"), done.stderr
    assert not (checkout / ".venv").exists() and not (checkout / "build").exists()
    monkeypatch.delenv("SUDO_USER")
    done = _run_setup_jetson(checkout, "--no-engine")  # root in a container: no SUDO_USER
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_setup_jetson_from_a_root_shell_under_sudo_goes_on(checkout: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """sudo in a root shell (SUDO_USER=root): the venv and the engine cache are root's, who runs the streams there,
    so the script goes on as a container's root shell does."""
    _make_jetson(checkout, *ORIN_JETPACK_6)
    _run_as_root(checkout)
    monkeypatch.setenv("SUDO_USER", "root")
    done = _run_setup_jetson(checkout, "--no-engine")
    assert done.returncode == 0, done.stderr
    assert (checkout / ".venv").exists()


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("sha256sum") is None, reason="needs bash")
def test_setup_jetson_tells_the_package_check_which_python_is_the_systems(checkout: Path) -> None:
    """The check names the system Python's pip for an OpenCV wheel outside the venv: it is given PYTHON (JetPack's
    /usr/bin/python3 by default), whose pip removes it, not the venv's, which answers 'outside environment'."""
    done = _setup_jetson(checkout, *ORIN_JETPACK_6)
    assert done.returncode == 0, done.stderr
    assert (checkout / "check-python").read_text() == f"{checkout / 'stand-ins' / 'python3'}\n"


def _pip_calls(checkout: Path) -> list[str]:
    """Every pip call the stand-in python saw since the checkout was made: 'CUDA_ROOT=... <pip's arguments>'."""
    log = checkout / "pip.log"
    return log.read_text().splitlines() if log.exists() else []


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("sha256sum") is None, reason="needs bash")
def test_setup_venv_pins_the_cpu_torch_and_adds_opencv_only_where_no_cv2_imports(checkout: Path) -> None:
    """PyPI's plain torch (or one the stubs' dependencies ask for) is a CUDA build of GBs; an OpenCV wheel would
    shadow a system cv2 built with GStreamer (JetPack's)."""
    _run(checkout, "scripts/setup_venv.sh", "export,dev")
    assert _pip_calls(checkout) == [
        "CUDA_ROOT= install -q --upgrade pip setuptools>=64 wheel",
        "CUDA_ROOT= install -q torch==2.13.0+cpu",
        "CUDA_ROOT= install -q -e .[dev,export] --config-settings editable_mode=strict",
        "CUDA_ROOT= install -q --no-deps tensorrt-stubs==10.13.0.35.1"]
    # No cv2 at all: the opencv extra brings one; no extras named: export.
    (checkout / ".venv" / "unetrt-setup.stamp").unlink()
    (checkout / "pip-opencv").write_text("yes\n")
    (checkout / "pip.log").unlink()
    lines = _run(checkout, "scripts/setup_venv.sh")
    assert lines[-1] == ".venv is ready (extras: export,opencv)"
    assert "CUDA_ROOT= install -q -e .[export,opencv] --config-settings editable_mode=strict" in _pip_calls(checkout)


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("sha256sum") is None, reason="needs bash")
def test_setup_venv_keeps_the_extras_it_installed_and_installs_again_when_one_is_new(
        checkout: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """demo.sh (export,openvino) after test.sh (export,dev,...) must neither reinstall nor drop dev; an extra asked
    for the first time, another UNETRT_CUDA, or unetrt gone from the venv must install again."""

    def installs(extras: str) -> str | None:
        lines = _run(checkout, "scripts/setup_venv.sh", extras)
        return lines[-1].removeprefix(".venv is ready (extras: ") if lines[-1].startswith(".venv is ready") else None

    assert installs("export,dev") == "dev,export)"
    assert installs("export") is None
    assert installs("export,ros") == "dev,export,ros)"
    monkeypatch.setenv("UNETRT_CUDA", "1")
    assert installs("export") == "dev,export,ros)"
    assert installs("export") is None
    (checkout / ".venv" / "installed").unlink()
    assert installs("export") == "dev,export,ros)"


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("sha256sum") is None, reason="needs bash")
def test_setup_venv_falls_back_to_pytorchs_cpu_index_and_fails_when_an_install_fails(checkout: Path) -> None:
    (checkout / "no-torch-wheel").touch()
    lines = _run(checkout, "scripts/setup_venv.sh", "export")
    assert "  (no torch==2.13.0+cpu wheel where pip looks: trying PyTorch's CPU index, " \
           "https://download.pytorch.org/whl/cpu)" in lines
    assert ("CUDA_ROOT= install -q --retries 1 torch==2.13.0+cpu --extra-index-url "
            "https://download.pytorch.org/whl/cpu") in _pip_calls(checkout)
    # A failed install must fail the setup (test.sh and demo.sh stop there) and leave no stamp that skips it later.
    (checkout / ".venv" / "unetrt-setup.stamp").unlink()
    (checkout / "no-torch-anywhere").touch()
    lines = _run(checkout, "scripts/setup_venv.sh", "export", returncode=1)
    assert not any(line.startswith("[setup 4/5]") for line in lines), lines
    (checkout / "no-torch-anywhere").unlink()
    (checkout / "install-fails").touch()
    _run(checkout, "scripts/setup_venv.sh", "export", returncode=1)
    assert not (checkout / ".venv" / "unetrt-setup.stamp").exists()


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("sha256sum") is None, reason="needs bash")
def test_demo_builds_pycuda_against_the_toolkit_a_linked_nvcc_belongs_to(checkout: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Without CUDA_HOME, nvcc is often a link in /usr/local/bin: pycuda must be built against the toolkit it points
    into, not /usr/local."""
    _with_system_tensorrt(checkout, monkeypatch)
    monkeypatch.delenv("CUDA_HOME")
    links = checkout / "links" / "bin"
    links.mkdir(parents=True)
    (links / "nvcc").symlink_to(checkout / "cuda" / "bin" / "nvcc")
    monkeypatch.setenv("PATH", f"{links}{os.pathsep}{os.environ['PATH']}")
    lines = _run(checkout, "scripts/demo.sh", "--max-frames", "5")
    assert any(line.startswith(f"[demo 1/2] building pycuda against {checkout / 'cuda'} for") for line in lines), lines
    assert f"CUDA_ROOT={checkout / 'cuda'} install pycuda>=2024.1" in _pip_calls(checkout)
    # OpenVINO is the CPU path's fastest engine; the demo's own options reach the stream.
    assert any(call.startswith("CUDA_ROOT= install -q -e .[export,openvino] ") for call in _pip_calls(checkout))
    assert lines[-1] == "unet-stream sample out/camvid_annotated.mp4 --model camvid --overwrite --max-frames 5"


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("sha256sum") is None, reason="needs bash")
def test_test_sh_sets_up_every_extra_passes_its_arguments_and_stops_at_a_lint_failure(checkout: Path) -> None:
    ruff = checkout / ".venv" / "bin" / "ruff"
    ruff.write_text('#!/usr/bin/env bash\n[ ! -e "$(dirname "$0")/../../lint-fails" ]\n')
    ruff.chmod(0o755)
    (checkout / "scripts" / "typecheck.sh").write_text("echo typecheck\n")
    _run(checkout, "scripts/test.sh", "tests/engine", "-k", "tiling")
    assert any(call.startswith("CUDA_ROOT= install -q -e .[dev,export,openvino,ray,ros] ")
               for call in _pip_calls(checkout)), _pip_calls(checkout)
    assert _pip_calls(checkout)[-1] == "CUDA_ROOT= tests/engine -k tiling"
    (checkout / "lint-fails").touch()
    _run(checkout, "scripts/test.sh", "tests/engine", returncode=1)
    assert _pip_calls(checkout)[-1] == "CUDA_ROOT= tests/engine -k tiling"


# The CI checks (scripts/check_cuda_build.sh, sanitize_native.sh, check_python.sh, check_runtime_without_torch.sh)
# with stand-ins for the compilers and Pythons they drive: what they pass and what they refuse.

# nvcc from CUDA_HOME: writes ptxas's report of one kernel for the arch it compiles (unless FAKE_NO_KERNELS), with
# shared memory for the arch FAKE_SMEM_ARCH, and fails (after the report, as a warning made an error does) for the
# arch FAKE_FAIL_ARCH.
FAKE_NVCC = """#!/usr/bin/env bash
[ "$1" = --version ] && { echo "Cuda compilation tools, release 0.0 (stand-in)"; exit 0; }
arch=$(echo "$*" | sed -n 's/.*code=sm_\\([0-9]*\\).*/\\1/p')
if [ -z "${FAKE_NO_KERNELS:-}" ]; then
  smem=; [ "${FAKE_SMEM_ARCH:-}" = "$arch" ] && smem=", 64 bytes smem"
  echo "ptxas info    : Compiling entry function '_Z4tilePf' for 'sm_$arch'" >&2
  echo "ptxas info    : Used 24 registers, used 0 barriers$smem, 380 bytes cmem[0]" >&2
fi
[ "${FAKE_FAIL_ARCH:-}" = "$arch" ] && { echo "tiling_cuda.cu(1): error: a warning treated as an error" >&2; exit 1; }
exit 0
"""
# g++: names the stand-in sanitizer runtimes beside it, compiles anything.
FAKE_GXX = """#!/usr/bin/env bash
case "$1" in -print-file-name=*) echo "$(dirname "$0")/${1#-print-file-name=}" ;; esac
exit 0
"""
# The venv's python for sanitize_native.sh: the build succeeds; pytest records its arguments and sanitizer
# settings in pytest.log and exits with FAKE_PYTEST_STATUS.
FAKE_SANITIZE_PYTHON = """#!/usr/bin/env bash
here="$(cd "$(dirname "$0")/../.." && pwd)"
[ "$1" = setup.py ] && exit 0
shift 2
echo "$* | LD_PRELOAD=$LD_PRELOAD" >> "$here/pytest.log"
exit "${FAKE_PYTEST_STATUS:-0}"
"""


def _run_check(checkout: Path, *command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a check script in the checkout with the stand-in compilers first on PATH and nvcc in CUDA_HOME."""
    stand_ins = checkout / "stand-ins"
    cuda = checkout / "cuda"
    if not stand_ins.exists():
        (cuda / "bin").mkdir(parents=True)
        (cuda / "include").mkdir()
        (cuda / "include" / "cuda_runtime_api.h").write_text("")
        stand_ins.mkdir()
        for path, text in ((cuda / "bin" / "nvcc", FAKE_NVCC), (stand_ins / "g++", FAKE_GXX),
                           (stand_ins / "libasan.so", ""), (stand_ins / "libstdc++.so", "")):
            path.write_text(text)
            path.chmod(0o755)
        # What check_cuda_build.sh asks the venv's python (pybind11's include folder) answers once unetrt is in.
        (checkout / ".venv" / "installed").touch()
    return subprocess.run(["bash", *command], cwd=checkout, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": "", "CUDA_HOME": str(cuda),
                               "PATH": f"{stand_ins}{os.pathsep}{os.environ['PATH']}", **(env or {})})


def test_cuda_build_check_passes_clean_kernels_of_both_archs(checkout: Path) -> None:
    done = _run_check(checkout, "scripts/check_cuda_build.sh")
    assert done.returncode == 0, done.stderr
    assert "CUDA build check passed: 2 kernel builds" in done.stdout
    assert "sm_87    24        0    0 tile(float*)" in done.stdout


@pytest.mark.parametrize(("env", "message"), [
    ({"FAKE_SMEM_ARCH": "90"}, "error: a kernel uses barriers or shared memory"),
    ({"FAKE_NO_KERNELS": "1"}, "error: ptxas reported no kernels"),
    ({"FAKE_FAIL_ARCH": "90"}, "error: a warning treated as an error"),
])
def test_cuda_build_check_fails_on_shared_memory_no_kernels_or_a_compile_error(checkout: Path, env: dict[str, str],
                                                                               message: str) -> None:
    done = _run_check(checkout, "scripts/check_cuda_build.sh", env=env)
    assert done.returncode == 1 and message in done.stderr
    assert "passed" not in done.stdout


def test_sanitizer_run_passes_pytest_its_arguments_with_the_runtimes_preloaded(checkout: Path) -> None:
    (checkout / ".venv" / "bin" / "python").write_text(FAKE_SANITIZE_PYTHON)
    done = _run_check(checkout, "scripts/sanitize_native.sh", "-k", "emulated")
    assert done.returncode == 0, done.stderr
    stand_ins = checkout / "stand-ins"
    assert (checkout / "pytest.log").read_text().splitlines() == [
        "-p sanitized_modules tests/cpp_ext -q -p no:cacheprovider --capture=sys -k emulated | "
        f"LD_PRELOAD={stand_ins / 'libasan.so'} {stand_ins / 'libstdc++.so'}"]


def test_sanitizer_run_fails_when_its_tests_fail(checkout: Path) -> None:
    (checkout / ".venv" / "bin" / "python").write_text(FAKE_SANITIZE_PYTHON)
    done = _run_check(checkout, "scripts/sanitize_native.sh", env={"FAKE_PYTEST_STATUS": "1"})
    assert done.returncode == 1 and "sanitizer run: exit 1" in done.stdout


def test_python_check_refuses_a_version_no_jetpack_has(checkout: Path) -> None:
    # No Python of any version on PATH or in pyenv: only the version check can answer.
    done = _run_check(checkout, "scripts/check_python.sh", "3.9",
                      env={"PATH": f"{checkout / 'stand-ins'}{os.pathsep}/usr/bin{os.pathsep}/bin",
                           "PYENV_ROOT": str(checkout / "no-pyenv")})
    assert done.returncode == 2 and done.stderr == "usage: scripts/check_python.sh 3.10|3.12 [--backends]\n"


def test_runtime_check_fails_where_the_runtime_venv_has_torch(checkout: Path) -> None:
    pytest.importorskip("torch")
    # python3 -m venv makes a venv whose pip installs nothing (recording UNETRT_CUDA) and whose python is this test's
    # own, which has torch: the check must refuse it.
    venv_python = (f"#!/usr/bin/env bash\nif [ \"$1\" = - ]; then exec {sys.executable} \"$@\"; fi\n"
                   f"echo \"UNETRT_CUDA=${{UNETRT_CUDA:-}} $*\" >> {checkout / 'pip.log'}\n")
    python3 = ("#!/usr/bin/env bash\nmkdir -p \"$3/bin\"\ncat > \"$3/bin/python\" <<'EOF'\n" + venv_python
               + "EOF\nchmod +x \"$3/bin/python\"\n")
    (checkout / "stand-ins").mkdir()
    (checkout / "stand-ins" / "python3").write_text(python3)
    (checkout / "stand-ins" / "python3").chmod(0o755)
    subprocess.run(["git", "init", "-q"], cwd=checkout, check=True)  # copy_checkout.sh lists the files with git
    done = _run_check(checkout, "scripts/check_runtime_without_torch.sh")
    assert done.returncode == 1 and "torch must not be installed by the runtime" in done.stderr
    assert "UNETRT_CUDA=0 -m pip install -q --no-build-isolation -e .[opencv]" in (checkout / "pip.log").read_text()


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("sha256sum") is None, reason="needs bash")
def test_setup_venv_finishes_a_venv_whose_making_was_cut_short(checkout: Path) -> None:
    """Ctrl-C while 'python3 -m venv' ran ensurepip (or python3-venv missing) leaves .venv/bin/python without pip:
    every later run failed at once on 'No module named pip' without saying what to do."""
    (checkout / ".venv" / "no-pip").touch()
    lines = _run(checkout, "scripts/setup_venv.sh", "export")
    assert "ENSUREPIP --upgrade" in lines and lines[-1] == ".venv is ready (extras: export)", lines
    # Where ensurepip cannot help either, one line says how to start over.
    (checkout / ".venv" / "unetrt-setup.stamp").unlink()
    (checkout / ".venv" / "no-pip").touch()
    (checkout / "no-ensurepip").touch()
    done = subprocess.run(["bash", "scripts/setup_venv.sh", "export"], cwd=checkout, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": ""})
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "rm -rf .venv" in done.stderr, done.stderr
    assert (checkout / ".venv" / "bin" / "python").exists()  # never removed for the user


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("sha256sum") is None, reason="needs bash")
@pytest.mark.parametrize(("arguments", "message"), [
    (["exprot"], "error: unknown extra 'exprot' (scripts/setup_venv.sh takes a comma-separated list of: opencv, "
                 "export, tensorrt, openvino, ros, ray, dev)\n"),
    (["export", "dev"], "error: scripts/setup_venv.sh takes one comma-separated list of extras "
                        "(scripts/setup_venv.sh export,dev), not 2 arguments\n"),
], ids=["misspelt", "two-arguments"])
def test_setup_venv_refuses_extras_pyproject_does_not_have(checkout: Path, arguments: list[str],
                                                           message: str) -> None:
    """pip only warns (into build/setup.log) about an extra a package lacks: 'exprot' ended in '.venv is ready'
    without torch's export packages, and a stamp that skipped the set-up from then on."""
    done = subprocess.run(["bash", "scripts/setup_venv.sh", *arguments], cwd=checkout, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": ""})
    assert (done.returncode, done.stderr) == (2, message)
    assert not (checkout / "pip.log").exists() and not (checkout / ".venv" / "unetrt-setup.stamp").exists()


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("sha256sum") is None, reason="needs bash")
def test_setup_venv_refuses_a_venv_an_older_python_made(checkout: Path) -> None:
    """python3 was checked, the venv's own python not: a .venv from python3.9 failed in pip, naming no fix."""
    (checkout / ".venv" / "version").write_text("Python 3.9.18\n")
    done = subprocess.run(["bash", "scripts/setup_venv.sh"], cwd=checkout, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": ""})
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: .venv was made with Python 3.9.18, and unetrt needs Python 3.10 or newer: "
                                  "remove it (rm -rf .venv)"), done.stderr
    assert not (checkout / "pip.log").exists()
    # 3.10 and later (two digits) pass.
    (checkout / ".venv" / "version").write_text("Python 3.13.1\n")
    assert _run(checkout, "scripts/setup_venv.sh")[-1] == ".venv is ready (extras: export)"


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("sha256sum") is None, reason="needs bash")
def test_setup_venv_names_the_fix_for_a_venv_whose_python_is_gone(checkout: Path) -> None:
    """'python3 -m venv' over a venv whose python link points nowhere stops on '[Errno 2] No such file or
    directory: .venv/bin/python3', and so did every run after."""
    python = checkout / ".venv" / "bin" / "python"
    python.unlink()
    python.symlink_to(checkout / "removed-python3.10")
    done = subprocess.run(["bash", "scripts/setup_venv.sh"], cwd=checkout, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": ""})
    assert (done.returncode, done.stderr) == (2, f"error: .venv/bin/python does not run (its Python, {checkout}/"
                                                 "removed-python3.10, is gone?): remove .venv (rm -rf .venv) and run "
                                                 "this again\n")
    assert python.is_symlink()


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("sha256sum") is None, reason="needs bash")
def test_setup_venv_refuses_a_venv_path_that_is_a_file(checkout: Path) -> None:
    shutil.rmtree(checkout / ".venv")
    (checkout / ".venv").write_text("notes\n")
    done = subprocess.run(["bash", "scripts/setup_venv.sh"], cwd=checkout, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": ""})
    assert (done.returncode, done.stderr) == (
        2, "error: .venv is a file, not a virtual environment: move it away (or rm .venv) and run this again\n")
    assert (checkout / ".venv").read_text() == "notes\n"


@pytest.mark.skipif(shutil.which("dash") is None, reason="needs dash, the sh of Debian and Ubuntu")
@pytest.mark.parametrize("script", ["setup_venv.sh", "setup_jetson.sh", "demo.sh", "test.sh", "install_state.sh"])
def test_the_scripts_run_with_sh_say_to_run_them_with_bash(checkout: Path, script: str) -> None:
    """'sh scripts/demo.sh' stopped on 'set: Illegal option -o pipefail', which does not say that bash runs it."""
    done = subprocess.run(["dash", f"scripts/{script}"], cwd=checkout, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert (done.returncode, done.stderr) == (2, f"error: scripts/{script} is a bash script: run it with "
                                                 f"bash scripts/{script}\n")


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("sha256sum") is None, reason="needs bash")
def test_setup_jetson_never_removes_a_venv_folder_it_did_not_make(checkout: Path) -> None:
    """A failed 'python3 -m venv' removed the venv folder: right for the half-made one it had just started, but an
    existing folder (a venv whose python is gone, with the user's packages; VENV set to a wrong folder) went too."""
    _make_jetson(checkout, *ORIN_JETPACK_6)
    (checkout / "my-venv").mkdir()
    (checkout / "my-venv" / "mine.txt").write_text("kept\n")
    (checkout / "no-venv").touch()
    done = _run_setup_jetson(checkout, "--no-engine", venv="my-venv")
    assert done.returncode == 1
    assert done.stderr.startswith("error: could not make the venv my-venv") and "rm -rf my-venv" in done.stderr, \
        done.stderr
    assert (checkout / "my-venv" / "mine.txt").read_text() == "kept\n"


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("sha256sum") is None, reason="needs bash")
def test_setup_venv_without_a_network_says_how_to_give_pip_its_packages(checkout: Path) -> None:
    """Offline, the set-up ended on pip's 'No matching distribution found for wheel', which names no way out."""
    (checkout / "offline").touch()
    done = subprocess.run(["bash", "scripts/setup_venv.sh"], cwd=checkout, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": ""})
    assert done.returncode == 1
    last = done.stderr.splitlines()[-1]
    assert last.startswith("error: pip install -q --upgrade pip setuptools>=64 wheel failed: pip finds no packages "
                           "where it looks (no network?)") and "PIP_FIND_LINKS" in last, done.stderr
    (checkout / "offline").unlink()
    assert _run(checkout, "scripts/setup_venv.sh")[-1] == ".venv is ready (extras: export)"


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("sha256sum") is None, reason="needs bash")
@pytest.mark.parametrize("script", ["demo.sh", "test.sh"])
def test_demo_and_test_sh_run_the_setup_without_its_executable_bit(checkout: Path, script: str) -> None:
    """'bash scripts/demo.sh', as the README says, from a checkout copied without file modes (a zip, a FAT stick)
    stopped on 'scripts/setup_venv.sh: Permission denied' (exit 126)."""
    (checkout / "scripts" / "setup_venv.sh").chmod(0o644)
    (checkout / ".venv" / "bin" / "ruff").write_text("#!/bin/sh\n")
    (checkout / ".venv" / "bin" / "ruff").chmod(0o755)
    (checkout / "scripts" / "typecheck.sh").write_text("echo typecheck\n")
    assert any(line.startswith(".venv is ready") for line in _run(checkout, f"scripts/{script}"))


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_setup_help_is_the_scripts_header_comment_alone(checkout: Path) -> None:
    """The help printed a fixed line range, which ended on the script's first command ('set -euo pipefail'), and
    read "$0" after the script's cd to the checkout: run from another folder by a relative path, it printed nothing."""
    done = subprocess.run(["bash", f"{checkout.name}/scripts/setup_jetson.sh", "--help"], cwd=checkout.parent,
                          capture_output=True, text=True, timeout=60)
    lines = done.stdout.splitlines()
    assert done.returncode == 0 and lines[0].startswith("unetrt on a Jetson with JetPack 6.1"), done.stdout
    assert lines[-1] == "see docs/jetson.md.", done.stdout
    # setup_venv.sh took '--help' for an extra's name.
    done = subprocess.run(["bash", f"{checkout.name}/scripts/setup_venv.sh", "--help"], cwd=checkout.parent,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "Usage: scripts/setup_venv.sh [extras]" in done.stdout, done.stdout + done.stderr
    assert not (checkout / "pip.log").exists()


def _setup_jetson_package_check() -> str:
    """The Python check setup_jetson.sh runs in the venv after the install (OpenCV wheels, NumPy 2)."""
    script = (REPO / "scripts" / "setup_jetson.sh").read_text()
    return script.split("<<'PY' || exit 1\n", 1)[1].split("\nPY\n", 1)[0]


@pytest.mark.parametrize("own_folder", [True, False], ids=["user-site", "system-wide"])
def test_setup_jetson_names_the_uninstall_that_removes_an_opencv_wheel_outside_the_venv(tmp_path: Path,
                                                                                        own_folder: bool) -> None:
    """A Jetson tutorial's 'pip3 install opencv-python' puts the wheel in ~/.local (or /usr/local with sudo), which a
    venv made with --system-site-packages sees before JetPack's cv2. The check said 'pip uninstall opencv-python',
    which in the venv answers 'Not uninstalling opencv-python at ..., outside environment' and exits 0 (pypa/pip
    issues 3352 and 5176): rerun after rerun stopped on the same line. It names where the wheel is and the system
    Python's pip that removes it, with sudo where the folder is another user's."""
    site = tmp_path / "site-packages"
    info = site / "opencv_python-4.10.0.84.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: opencv-python\nVersion: 4.10.0.84\n")
    # JetPack's NumPy 1.x; -S below keeps this Python's own packages (its OpenCV wheel among them) out of sight.
    (site / "numpy").mkdir()
    (site / "numpy" / "__init__.py").write_text("__version__ = '1.26.4'\n")
    if not own_folder:
        # /usr/local/lib/python3.10/dist-packages: another user's (root's) folder.
        if os.geteuid() != 0:
            pytest.skip("making a folder another user's needs root")
        os.chown(site, 65534, 65534)
    done = subprocess.run([sys.executable, "-S", "-", "/usr/bin/python3"], input=_setup_jetson_package_check(),
                          capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(site)})
    assert done.returncode == 1
    sudo = "" if own_folder else "sudo "
    assert done.stderr == (f"error: OpenCV wheels shadow JetPack's OpenCV (built with GStreamer) in this venv: "
                           f"opencv-python 4.10.0.84 in {site} (remove it: {sudo}/usr/bin/python3 -m pip uninstall "
                           "opencv-python)\n"), done.stderr


def test_setup_jetson_names_the_venvs_own_pip_for_an_opencv_wheel_inside_the_venv(tmp_path: Path) -> None:
    """An OpenCV wheel a 'pip install' put into the venv itself (in a checkout reached through a symbolic link, as a
    home moved to an NVMe drive is): the venv's own pip removes it, and the line says so, not the system Python's."""
    (tmp_path / "nvme").mkdir()
    (tmp_path / "home").symlink_to(tmp_path / "nvme")
    venv = tmp_path / "home" / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    info = site / "opencv_python-4.10.0.84.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: opencv-python\nVersion: 4.10.0.84\n")
    (site / "numpy").mkdir()
    (site / "numpy" / "__init__.py").write_text("__version__ = '1.26.4'\n")
    # Without -S: site.py makes sys.prefix the venv, as in the script (the fresh venv sees nothing outside it).
    done = subprocess.run([str(venv / "bin" / "python"), "-", "/usr/bin/python3"], input=_setup_jetson_package_check(),
                          capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": ""})
    assert done.returncode == 1
    assert done.stderr == (f"error: OpenCV wheels shadow JetPack's OpenCV (built with GStreamer) in this venv: "
                           f"opencv-python 4.10.0.84 in {site.resolve()} (remove it: {venv / 'bin' / 'python'} -m pip "
                           "uninstall opencv-python)\n"), done.stderr
