"""A desktop GPU user's first day, on the CPU: an x86 workstation or laptop with an NVIDIA GPU and TensorRT 11 from
NVIDIA's pip wheels (tensorrt-cu13), through the fake TensorRT, pycuda and CUDA driver (tests/fakes).

The user follows README.md and docs/export-tensorrt.md: ``pip install``, then ``unet-stream 0``, ``from unetrt
import Segmenter``, ``unet-build`` and ``unet-bench``; what the machine lacks (a GPU switched off, a driver older
than the wheel's CUDA, a wheel whose libraries did not install) ends in one line naming the fix, or in the CPU path
after one line saying why: never a traceback, never a silent CPU run where TensorRT was asked for or installed.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from fakes.cuda import CUDA_ERROR_NO_DEVICE, FakeGpu
from plan_fixtures import builds, install_fake_tensorrt_gpu, route_cuda_kernels_to

from unetrt.bundled import MODELS_DIR
from unetrt.plan_cache import plan_key
from unetrt.segmenter import Segmenter

pytestmark = pytest.mark.gpu_contract
TENSORRT_11 = "11.0.0"


@pytest.fixture
def gpu() -> FakeGpu:
    """A laptop's discrete GPU whose driver supports CUDA 13.0 (r580)."""
    return FakeGpu(name="NVIDIA GeForce RTX 4070 Laptop GPU", compute_capability=(8, 9), multiprocessors=36,
                   integrated=False, driver_version=13000)


@pytest.fixture
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, gpu: FakeGpu) -> Path:
    """The desktop with TensorRT 11 and pycuda (fakes), no ONNX Runtime CUDA provider and no UNETRT_ENGINE_CACHE:
    engines go where the documents say, under the user's home folder. Returns that home folder."""
    from unetrt import _tiling  # type: ignore[attr-defined]

    install_fake_tensorrt_gpu(monkeypatch, gpu, version=TENSORRT_11)
    route_cuda_kernels_to(monkeypatch, gpu, _tiling)
    monkeypatch.setattr("unetrt.backends.onnxruntime_gpu_available", lambda: False)
    monkeypatch.delenv("UNETRT_ENGINE_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_the_default_path_ends_on_tensorrt_cached_in_the_users_cache_folder(
        home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """README: the first Segmenter("camvid") builds an engine, with a progress line, and caches it in
    ~/.cache/unetrt/engines; the next start loads it."""
    with Segmenter("camvid", warm_up=False) as segmenter:
        assert (segmenter.backend.name, segmenter.backend.precision) == ("tensorrt", "fp16")
        plan = Path(segmenter.backend.path)  # type: ignore[attr-defined]
    assert plan.parent == home / ".cache" / "unetrt" / "engines"
    assert "unetrt: building a TensorRT engine for camvid FP16" in capsys.readouterr().err
    with Segmenter("camvid", warm_up=False, build=False) as segmenter:
        assert segmenter.backend.name == "tensorrt"
    assert builds() == 1


def test_a_gpu_switched_off_is_named_in_one_line_on_every_path(home: Path, gpu: FakeGpu, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A laptop with hybrid graphics set to the integrated GPU only: the driver is installed, cuInit fails
    ([INIT-FAILS]). The automatic choice ran OpenVINO on the CPU without a word, and a plan or backend 'tensorrt'
    ended in pycuda's own error (a traceback in every command)."""
    from unetrt.doctor import main as doctor
    from unetrt.stream.cli import main as stream

    with Segmenter("camvid", warm_up=False) as segmenter:
        plan = Path(segmenter.backend.path)  # type: ignore[attr-defined]
    capsys.readouterr()
    gpu.init_error = CUDA_ERROR_NO_DEVICE
    with Segmenter("camvid", warm_up=False) as segmenter:
        assert segmenter.backend.name in ("openvino", "onnxruntime")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no TensorRT engine (CUDA did not start (cuInit failed: no CUDA-capable " \
                                   "device is detected)" in err and "nvidia-smi" in err
    for asked in ({"backend": "tensorrt"}, {"model": plan}):
        with pytest.raises(ValueError, match=r"^CUDA did not start \(cuInit failed"):
            Segmenter(**{"model": "camvid", **asked}, warm_up=False)  # type: ignore[arg-type]
    assert stream(["sample", str(tmp_path / "out.mp4"), "--model", str(plan), "--headless"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "CUDA did not start" in err
    monkeypatch.setattr("unetrt.doctor._version", lambda name: "2025.1")  # the fake pycuda has no distribution
    assert doctor([]) == 0
    out = capsys.readouterr().out
    assert f"TensorRT {TENSORRT_11}, pycuda 2025.1: CUDA did not start" in out
    assert builds() == 1


def _site_packages(folder: Path, monkeypatch: pytest.MonkeyPatch, modules: dict[str, str],
                   distributions: dict[str, str]) -> None:
    """A folder on sys.path holding ``modules`` (dotted name: source) and the dist-info of ``distributions`` (name:
    version), as pip leaves them; the fakes of those modules leave sys.modules."""
    for name, source in modules.items():
        package = folder.joinpath(*name.split("."))
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").write_text(source)
        monkeypatch.delitem(sys.modules, name, raising=False)
    for name, version in distributions.items():
        info = folder / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    monkeypatch.syspath_prepend(str(folder))


def test_tensorrt_bindings_without_their_libraries_say_so_and_name_the_reinstall(
        home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`pip install tensorrt-cu13-bindings` alone (or a tensorrt-cu13-libs removed since): the bindings' import fails
    on libnvinfer. The automatic choice ran on the CPU without a word, and backend 'tensorrt' and the doctor said
    "not installed", sending the user to a pip that answers "Requirement already satisfied"."""
    from unetrt.doctor import main as doctor

    missing = "libnvinfer.so.11: cannot open shared object file: No such file or directory"
    _site_packages(tmp_path / "site", monkeypatch, {"tensorrt": f"raise ImportError({missing!r})\n"},
                   {"tensorrt-cu13-bindings": TENSORRT_11})
    reinstall = "pip install --force-reinstall tensorrt-cu13==11.0.0"
    with Segmenter("camvid", warm_up=False) as segmenter:
        assert segmenter.backend.name in ("openvino", "onnxruntime")
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert (f"no TensorRT engine (TensorRT is installed (tensorrt-cu13-bindings 11.0.0) but does not import "
            f"({missing}): its libraries are missing or of another version; reinstall them together: {reinstall})"
            in err)
    with pytest.raises(ImportError, match=r"TensorRT is installed .* but does not import") as refused:
        Segmenter("camvid", backend="tensorrt", warm_up=False)
    assert reinstall in str(refused.value)
    assert doctor([]) == 0
    out = capsys.readouterr().out
    assert f"TensorRT: TensorRT is installed (tensorrt-cu13-bindings 11.0.0) but does not import ({missing})" in out
    assert builds() == 0


def test_the_reinstall_of_bindings_that_do_not_import_names_their_cuda_not_a_lean_runtimes(
        home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA 12 wheels of TensorRT 11 (tensorrt-cu12-bindings, its libraries gone) beside the CUDA 13 lean runtime
    (tensorrt-lean-cu13, for prebuilt engines): the reinstall line counted the lean runtime's CUDA with the full
    wheels', found two and named the bare `tensorrt==11.0.0`, which installs the CUDA 13 wheels (TensorRT installation
    guide, "Python Package Index"): on this user's CUDA 12 driver those fail to start. The start check of the driver
    read the full wheels alone; both now read the CUDA of the wheels `import tensorrt` loads."""
    missing = "libnvinfer.so.11: cannot open shared object file: No such file or directory"
    _site_packages(tmp_path / "site", monkeypatch, {"tensorrt": f"raise ImportError({missing!r})\n"},
                   {"tensorrt-cu12-bindings": TENSORRT_11, "tensorrt-lean-cu13": TENSORRT_11,
                    "tensorrt-lean-cu13-libs": TENSORRT_11})
    with pytest.raises(ImportError) as refused:
        Segmenter("camvid", backend="tensorrt", warm_up=False)
    assert str(refused.value).endswith("reinstall them together: pip install --force-reinstall tensorrt-cu12==11.0.0")


def test_the_lean_runtime_alone_says_it_builds_no_engine_and_names_the_full_package(
        home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`pip install tensorrt-lean` ("Install only the lean runtime for running pre-built engines", TensorRT's pip
    install guide) gives the module tensorrt_lean, no tensorrt: the automatic choice ran on the CPU without a word,
    and backend 'tensorrt' said TensorRT is not installed."""
    _site_packages(tmp_path / "site", monkeypatch, {"tensorrt_lean": "__version__ = '11.0.0'\n"},
                   {name: TENSORRT_11 for name in ("tensorrt-lean", "tensorrt-lean-cu13", "tensorrt-lean-cu13-libs",
                                                   "tensorrt-lean-cu13-bindings")})
    monkeypatch.delitem(sys.modules, "tensorrt")
    lean = ("TensorRT's full package is not installed, only its runtime for prebuilt engines (tensorrt-lean 11.0.0, "
            "tensorrt-lean-cu13 11.0.0, tensorrt-lean-cu13-bindings 11.0.0, tensorrt-lean-cu13-libs 11.0.0), which "
            "builds no engine and loads only version-compatible ones; install the full one: pip install tensorrt-cu13")
    with Segmenter("camvid", warm_up=False) as segmenter:
        fallback = segmenter.backend.name
    assert capsys.readouterr().err == f"unetrt: no TensorRT engine ({lean}); running {fallback} instead\n"
    with pytest.raises(ImportError) as refused:
        Segmenter("camvid", backend="tensorrt", warm_up=False)
    assert str(refused.value) == lean


def test_a_pycuda_built_against_a_newer_cuda_says_it_is_installed_and_how_to_rebuild_it(
        home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """pycuda compiled against a CUDA 13 toolkit on a machine whose driver is older fails on an undefined driver
    symbol: the fallback said "pycuda is not installed: run `pip install pycuda`", which pip answers with
    "Requirement already satisfied"."""
    undefined = "_driver.cpython-312-x86_64-linux-gnu.so: undefined symbol: cuCtxCreate_v4"
    _site_packages(tmp_path / "site", monkeypatch,
                   {"pycuda": "", "pycuda.driver": f"raise ImportError({undefined!r})\n"}, {"pycuda": "2025.1.2"})
    with Segmenter("camvid", warm_up=False) as segmenter:
        assert segmenter.backend.name in ("openvino", "onnxruntime")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and (
        f"no TensorRT engine (pycuda 2025.1.2 is installed but does not import ({undefined}); rebuild it here: "
        "pip install --force-reinstall --no-binary pycuda pycuda)") in err
    assert builds() == 0


@pytest.fixture
def cuda_13_wheels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`pip install tensorrt` from NVIDIA's index: the CUDA 13 variant (TensorRT installation guide, "Python Package
    Index": the bare package installs tensorrt-cu13-libs and tensorrt-cu13-bindings)."""
    import tensorrt as trt

    trt.built_for_cuda = 13  # [DRIVER]
    _site_packages(tmp_path / "wheels", monkeypatch, {}, {name: TENSORRT_11 for name in (
        "tensorrt", "tensorrt-cu13", "tensorrt-cu13-bindings", "tensorrt-cu13-libs")})


@pytest.mark.parametrize("driver", [12080, 13000], ids=["r570-cuda-12.8", "r580-cuda-13.0"])
def test_a_driver_older_than_the_wheels_cuda_names_the_driver_and_the_other_wheels(
        driver: int, home: Path, gpu: FakeGpu, cuda_13_wheels: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Ubuntu 24.04 with the r570 driver (CUDA 12.8) and TensorRT 11 for CUDA 13: TensorRT fails with error 35
    ([DRIVER]). The fallback's line said only that CUDA failed to initialise under it, naming the doctor, whose
    report names no CUDA TensorRT needs; it now names the driver to install and the wheels that run on this one."""
    from unetrt.doctor import main as doctor
    from unetrt.export.tensorrt import main as build

    gpu.driver_version = driver
    with Segmenter("camvid", warm_up=False) as segmenter:
        ran = segmenter.backend.name
    err = capsys.readouterr().err
    if driver >= 13000:
        assert ran == "tensorrt" and builds() == 1
        return
    older = ("TensorRT 11.0.0 could not start: its wheels (tensorrt-cu13) are built for CUDA 13 and this NVIDIA driver "
             "supports CUDA 12.8; update the NVIDIA driver to r580 or newer, or put TensorRT's wheels for CUDA 12 in "
             "their place (uninstall tensorrt-cu13, tensorrt-cu13-bindings and tensorrt-cu13-libs, then pip install "
             "tensorrt-cu12)")
    assert ran in ("openvino", "onnxruntime")
    assert err.splitlines()[-1] == f"unetrt: no TensorRT engine ({older}); running {ran} instead"
    onnx = MODELS_DIR / "camvid.onnx"
    assert build([str(onnx), "-o", str(tmp_path / "camvid.plan"), "--fp16"]) == 2
    assert capsys.readouterr().err.strip().endswith(older)
    # The doctor said a stream "runs on: tensorrt fp16 once its engine is built", which no start could build.
    monkeypatch.setattr("unetrt.doctor._version", lambda name: "2025.1")
    assert doctor([]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[-1] == f"unet-stream --model camvid runs on: {ran} int8 cpu"
    assert f"; TensorRT does not start: {older}\n" in captured.out
    assert builds() == 0


def test_tensorrt_failing_on_a_driver_new_enough_for_its_wheels_does_not_blame_the_driver(
        home: Path, gpu: FakeGpu, cuda_13_wheels: None) -> None:
    """The r580 driver (CUDA 13.0) runs the CUDA 13 wheels: TensorRT failing to start there (no memory left for its
    context) is not the driver's version, and the line does not send the user to a driver update."""
    from unetrt.backends.tensorrt import start_tensorrt

    gpu.driver_version = 13000

    def null(logger: object) -> object:
        raise TypeError("pybind11::init(): factory function returned nullptr")

    with pytest.raises(ValueError, match=r"^TensorRT could not start on this GPU \(.*nullptr\): CUDA failed to "
                                         r"initialise under it; "):
        start_tensorrt(null)


def test_a_lean_runtime_of_another_cuda_does_not_hide_the_drivers_line(home: Path, gpu: FakeGpu,
                                                                        cuda_13_wheels: None, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA 12 lean runtime (pip install tensorrt-lean-cu12, for prebuilt engines) beside the full CUDA 13 wheels
    on the r570 driver: the full wheels are what fails to start, and the line still names their CUDA and the
    driver."""
    import tensorrt as trt

    from unetrt.backends.tensorrt import start_tensorrt

    gpu.driver_version = 12080
    _site_packages(tmp_path / "lean", monkeypatch, {}, {"tensorrt-lean-cu12": "10.13.0"})
    with pytest.raises(ValueError, match=r"^TensorRT 11\.0\.0 could not start: its wheels \(tensorrt-cu13\) are "
                                         r"built for CUDA 13 and this NVIDIA driver supports CUDA 12\.8; "):
        start_tensorrt(trt.Runtime)


def test_an_nfs_home_without_a_lock_service_still_caches_the_engine(home: Path, gpu: FakeGpu, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A lab's workstations share their home folders over NFS v3, whose locks need the server's lock manager: where
    it does not answer, flock fails with ENOLCK ("No locks available"). The first Segmenter("camvid") and every
    unet-stream ended in that OSError's traceback; the engine is now built and cached after one line saying the
    cache cannot be locked, and TensorRT 10 on one workstation and 11 on another each keep their own engine."""
    import errno
    import fcntl

    from unetrt.stream.cli import main as stream

    real = fcntl.flock

    def no_lock_service(descriptor: int, operation: int) -> None:
        if Path(f"/proc/self/fd/{descriptor}").resolve().is_relative_to(home):
            raise OSError(errno.ENOLCK, "No locks available")
        real(descriptor, operation)

    monkeypatch.setattr(fcntl, "flock", no_lock_service)
    # Another workstation's build of the same engine, writing its plan now: unlocked, it is not a killed build's.
    stem = plan_key(MODELS_DIR / "camvid.onnx", "fp16").stem
    cache = home / ".cache" / "unetrt" / "engines"
    cache.mkdir(parents=True)
    writing = cache / f".{stem}.plan.4242.1.tmp"
    writing.write_bytes(b"half a plan")
    with Segmenter("camvid", warm_up=False) as segmenter:
        assert segmenter.backend.name == "tensorrt"
        assert Path(segmenter.backend.path).name == f"{stem}.plan"  # type: ignore[attr-defined]
    assert writing.read_bytes() == b"half a plan"
    err = capsys.readouterr().err
    assert "cannot lock files in the engine cache" in err and "(No locks available: " in err
    assert stream(["sample", str(tmp_path / "out.mp4"), "--max-frames", "2", "--headless"]) == 0
    assert builds() == 1
    # The other workstation: TensorRT 10 on another GPU, the same home folder.
    other = FakeGpu(name="NVIDIA GeForce RTX 3080", compute_capability=(8, 6), multiprocessors=68, integrated=False,
                    driver_version=12080)
    install_fake_tensorrt_gpu(monkeypatch, other, version="10.13.0")
    for _ in range(2):
        with Segmenter("camvid", warm_up=False) as segmenter:
            assert segmenter.backend.name == "tensorrt"
    assert builds() == 1
    install_fake_tensorrt_gpu(monkeypatch, gpu, version=TENSORRT_11)
    with Segmenter("camvid", warm_up=False, build=False) as segmenter:
        assert segmenter.backend.name == "tensorrt"
    assert len(list(cache.glob("*.plan"))) == 2


def test_onnxruntime_gpu_without_its_cuda_libraries_is_named_not_run_on_the_cpu_silently(
        gpu: FakeGpu, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No TensorRT; `pip install onnxruntime-gpu` without CUDA's and cuDNN's libraries: ORT makes every session on the
    CPU after its warning ([PROVIDER-LIBS]). device='cuda' ran on the CPU, and the automatic choice ran ONNX
    Runtime FP32 on the CPU (the GPU's precision) where the CPU's fastest path is OpenVINO INT8, neither saying so
    in a line of unetrt's."""
    from fakes.cuda import install_fake_gpu
    from fakes.onnxruntime_cuda import install_fake_onnxruntime_cuda

    from unetrt.stream.cli import main as stream

    install_fake_gpu(monkeypatch, gpu)
    install_fake_onnxruntime_cuda(monkeypatch, gpu).libraries = False
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    fix = "pip install 'onnxruntime-gpu[cuda,cudnn]'"
    with pytest.raises(ValueError, match=r"^device 'cuda' asked, but ONNX Runtime's CUDA provider did not load") as no:
        Segmenter("camvid", device="cuda", warm_up=False)
    assert fix in str(no.value) and "\n" not in str(no.value)
    with pytest.warns(RuntimeWarning, match=r"ONNX Runtime's CUDA provider did not load") as warned:
        segmenter = Segmenter("camvid", warm_up=False)
    with segmenter:
        assert (segmenter.backend.name, segmenter.backend.device) == ("onnxruntime", "cpu")
    assert len(warned) == 1 and fix in str(warned[0].message) and "device='cpu'" in str(warned[0].message)
    assert stream(["sample", str(tmp_path / "out.mp4"), "--device", "cuda", "--max-frames", "2", "--headless"]) == 2
    assert "ONNX Runtime's CUDA provider did not load" in capsys.readouterr().err.splitlines()[-1]


def test_onnxruntime_gpu_asked_for_a_gpu_the_desktop_lacks_names_it_in_one_line(
        gpu: FakeGpu, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No TensorRT, onnxruntime-gpu with its libraries, one GPU: `--device cuda:1` made ORT print its "EP Error"
    banner on stdout and fall back to the CPU ([DEVICE-ID], [FALLBACK]), and the command then blamed CUDA's
    libraries. It stops with exit code 2 on the line naming the device, and ORT is not asked."""
    from fakes.cuda import install_fake_gpu
    from fakes.onnxruntime_cuda import install_fake_onnxruntime_cuda

    from unetrt.stream.cli import main as stream

    install_fake_gpu(monkeypatch, gpu)
    provider = install_fake_onnxruntime_cuda(monkeypatch, gpu)
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert stream(["sample", str(tmp_path / "out.mp4"), "--device", "cuda:1", "--max-frames", "2", "--headless"]) == 2
    captured = capsys.readouterr()
    assert "CUDA device 1 does not exist; this machine has 1 CUDA device(s)" in captured.err.splitlines()[-1]
    assert "EP Error" not in captured.out and "libraries" not in captured.err and not provider.refused


def test_onnxruntime_gpu_without_its_cuda_libraries_stops_a_numbered_device_too(
        gpu: FakeGpu, monkeypatch: pytest.MonkeyPatch) -> None:
    """device='cuda:0' (a desktop user naming the GPU) asks for the GPU as device='cuda' does: it stops with the line
    naming the libraries, not a warning and a run on the CPU."""
    from fakes.cuda import install_fake_gpu
    from fakes.onnxruntime_cuda import install_fake_onnxruntime_cuda

    install_fake_gpu(monkeypatch, gpu)
    install_fake_onnxruntime_cuda(monkeypatch, gpu).libraries = False
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(ValueError, match=r"^device 'cuda:0' asked, but ONNX Runtime's CUDA provider did not load"):
        Segmenter("camvid", device="cuda:0", warm_up=False)


def _provider_failing(how: str, version: tuple[int, int], gpu: FakeGpu, monkeypatch: pytest.MonkeyPatch) -> None:
    """No TensorRT; onnxruntime ``version`` (major, minor) from onnxruntime-gpu, whose CUDA provider fails for a
    reason of its own: ``driver``, an NVIDIA driver older than its CUDA 12 (r520, CUDA 11.8: [DRIVER]);
    ``cuda-path``, CUDA_PATH set without CUDA's and cuDNN's libraries ([PROVIDER-LIBS], an error before 1.19)."""
    from fakes.cuda import install_fake_gpu
    from fakes.onnxruntime_cuda import install_fake_onnxruntime_cuda

    install_fake_gpu(monkeypatch, gpu)
    provider = install_fake_onnxruntime_cuda(monkeypatch, gpu)
    provider.version = version
    if how == "driver":
        gpu.driver_version = 11080
    else:
        provider.libraries = False
        monkeypatch.setenv("CUDA_PATH", "/usr/local/cuda-12.4")
    monkeypatch.setitem(sys.modules, "tensorrt", None)


PROVIDER_FAILURES = [("driver", (1, 32)), ("driver", (1, 22)), ("driver", (1, 18)), ("cuda-path", (1, 18)),
                     ("cuda-path", (1, 17))]
FAILURE_IDS = [f"{how}-{major}.{minor}" for how, (major, minor) in PROVIDER_FAILURES]
# What unetrt's line names for each failure.
NAMED = {"driver": r"CUDA failure 35: CUDA driver version is insufficient for CUDA runtime version\): the NVIDIA "
                   r"driver \(it supports CUDA 11\.8\) is older than the CUDA onnxruntime-gpu was built for; update "
                   "the NVIDIA driver",
         "cuda-path": r"CUDA_PATH is set but CUDA wasnt able to be loaded\): CUDA_PATH='/usr/local/cuda-12\.4' does "
                      "not hold the CUDA and cuDNN onnxruntime-gpu was built for"}


@pytest.mark.parametrize(("how", "version"), PROVIDER_FAILURES, ids=FAILURE_IDS)
def test_a_cuda_provider_failing_for_its_own_reason_leaves_the_json_on_stdout_alone(
        how: str, version: tuple[int, int], gpu: FakeGpu, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`unet-stream sample out.mp4 --stats` writes its JSON summary on stdout (docs/streaming.md) for a script to
    read. With the provider failing, ORT's Python printed its "EP Error" banner there before the JSON (1.19 and
    later, where it then makes the session on the CPU), or printed it and raised (1.17, 1.18: the retry asks for
    CUDA again), a traceback after the banner. stdout is the JSON alone, and the CPU run is said in unetrt's one
    warning, naming the failure."""
    from unetrt.stream.cli import main as stream

    _provider_failing(how, version, gpu, monkeypatch)
    with pytest.warns(RuntimeWarning, match=r"^running ONNX Runtime on the CPU: ONNX Runtime's CUDA provider did not "
                                            rf"(start|load) \({NAMED[how]}") as warned:
        code = stream(["sample", str(tmp_path / "out.mp4"), "--max-frames", "2", "--headless", "--stats"])
    captured = capsys.readouterr()
    assert code == 0 and "EP Error" not in captured.out + captured.err and "Traceback" not in captured.err
    assert json.loads(captured.out)["runtime"]["device"] == "cpu"  # stdout is the JSON and nothing else
    # One warning, given by each worker's backend at one place: Python shows it once.
    assert len({(str(w.message), w.filename, w.lineno) for w in warned}) == 1


@pytest.mark.parametrize(("how", "version"), PROVIDER_FAILURES, ids=FAILURE_IDS)
def test_a_cuda_provider_failing_for_its_own_reason_stops_a_gpu_request_in_one_line_naming_it(
        how: str, version: tuple[int, int], gpu: FakeGpu, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`--device cuda` where the provider fails for a reason of its own: the banner on stdout, then the line that
    blamed CUDA's libraries for an old driver (1.19 and later), or the banner and a traceback (1.17, 1.18). Exit
    code 2, one line naming ORT's reason and the fix, nothing on stdout."""
    from unetrt.stream.cli import main as stream

    _provider_failing(how, version, gpu, monkeypatch)
    code = stream(["sample", str(tmp_path / "out.mp4"), "--device", "cuda", "--max-frames", "2", "--headless"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == "" and "Traceback" not in captured.err
    (line,) = captured.err.splitlines()[-1:]
    assert line.startswith("error: device 'cuda' asked, but ONNX Runtime's CUDA provider did not ")
    assert re.search(NAMED[how], line) and line.endswith(", or use device 'cpu'"), line
    if how == "driver":
        assert "libraries" not in line


# A workstation with two kinds of GPU: device 0 sm_89, device 1 sm_86, on the r580 driver (CUDA 13.0).
TWO_GPUS = {"name": "NVIDIA GeForce RTX 4090", "compute_capability": (8, 9), "multiprocessors": 128,
            "integrated": False, "count": 2, "kinds": {1: ("NVIDIA RTX A4000", (8, 6), 48)}, "driver_version": 13000}


def _two_gpu_desktop(setup: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeGpu:
    """The two-GPU desktop as ``setup`` leaves it (engines cached in ``tmp_path``); returns its fake GPU.

    * ``pycuda``: TensorRT 11 and pycuda, ONNX Runtime for the CPU;
    * ``hidden``: the same with ``CUDA_VISIBLE_DEVICES=1``: the driver shows the sm_86 GPU alone, as device 0;
    * ``no-pycuda``: TensorRT 11 without pycuda, ONNX Runtime for the CPU;
    * ``no-pycuda-ort-gpu``: TensorRT 11 without pycuda, onnxruntime-gpu;
    * ``no-pycuda-ort-gpu-no-libs``: TensorRT 11 without pycuda, onnxruntime-gpu without CUDA's and cuDNN's libraries;
    * ``lean-only``: tensorrt-lean-cu13 alone (no ``tensorrt`` module), pycuda, ONNX Runtime for the CPU;
    * ``ort-gpu-only``: onnxruntime-gpu and pycuda, no TensorRT;
    * ``ort-gpu-only-old-driver``: the same on onnxruntime 1.18 and an r520 driver (CUDA 11.8), older than its CUDA 12
      ([DRIVER]: its provider fails; 1.18 retries it on CUDA and raises, [VERSIONS]);
    * ``no-driver``: TensorRT 11's wheels, no NVIDIA driver (no libcuda.so.1, so pycuda does not import either).
    """
    from fakes.onnxruntime_cuda import install_fake_onnxruntime_cuda

    from unetrt import _tiling  # type: ignore[attr-defined]

    hidden = setup == "hidden"
    gpu = FakeGpu(**{**TWO_GPUS, "count": 1, "name": "NVIDIA RTX A4000", "compute_capability": (8, 6),
                     "multiprocessors": 48, "kinds": {}} if hidden else TWO_GPUS)  # type: ignore[arg-type]
    install_fake_tensorrt_gpu(monkeypatch, gpu, version=TENSORRT_11)
    if hidden:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    route_cuda_kernels_to(monkeypatch, gpu, _tiling)
    monkeypatch.setenv("UNETRT_ENGINE_CACHE", str(tmp_path / "engines"))
    if setup.startswith("no-pycuda") or setup == "no-driver":
        monkeypatch.setitem(sys.modules, "pycuda", None)
        monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    if "ort-gpu" in setup:
        provider = install_fake_onnxruntime_cuda(monkeypatch, gpu)
        provider.libraries = not setup.endswith("no-libs")
        if setup.endswith("old-driver"):
            provider.version, gpu.driver_version = (1, 18), 11080
    if setup.startswith("ort-gpu-only"):
        monkeypatch.setitem(sys.modules, "tensorrt", None)
    if setup == "lean-only":
        _site_packages(tmp_path / "site", monkeypatch, {"tensorrt_lean": f"__version__ = '{TENSORRT_11}'\n"},
                       {"tensorrt-lean-cu13": TENSORRT_11, "tensorrt-lean-cu13-libs": TENSORRT_11})
        monkeypatch.delitem(sys.modules, "tensorrt")
    if setup == "no-driver":
        def no_driver() -> None:
            raise OSError("libcuda.so.1: cannot open shared object file: No such file or directory")

        monkeypatch.setattr("unetrt.cuda.driver_library", no_driver)
    return gpu


DESKTOP_CASES = [("pycuda", "cuda:1"), ("pycuda", "auto"), ("hidden", "cuda:1"), ("hidden", "cuda"),
                 ("no-pycuda", "cuda:1"), ("no-pycuda", "auto"), ("no-pycuda-ort-gpu", "cuda:1"),
                 ("no-pycuda-ort-gpu-no-libs", "cuda:1"), ("lean-only", "cuda:1"), ("lean-only", "auto"),
                 ("ort-gpu-only", "cuda:1"), ("ort-gpu-only", "auto"), ("ort-gpu-only-old-driver", "cuda:1"),
                 ("ort-gpu-only-old-driver", "auto"), ("no-driver", "cuda:1"), ("no-driver", "auto")]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the host path without pycuda, ORT's CPU session: as asked
@pytest.mark.parametrize(("setup", "device"), DESKTOP_CASES, ids=[f"{s}-{d}" for s, d in DESKTOP_CASES])
def test_the_doctors_last_line_is_what_a_stream_on_that_device_does(
        setup: str, device: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The two-GPU desktop in every state a user leaves it in: `python -m unetrt.doctor --device D` ends with what
    `unet-stream --device D` then does (the backend, precision and device it runs on, the engine it builds first),
    or stops with the line the stream stops with."""
    from unetrt.doctor import main as doctor
    from unetrt.stream.cli import main as stream

    _two_gpu_desktop(setup, monkeypatch, tmp_path)
    asked = [] if device == "auto" else ["--device", device]
    doctor_code = doctor(asked)
    report = capsys.readouterr()
    stream_code = stream(["sample", str(tmp_path / "out.mp4"), *asked, "--max-frames", "1", "--headless"])
    ran = capsys.readouterr()
    assert "EP Error" not in report.out + ran.out  # ORT's fallback banner stays off the report and the stream
    if stream_code != 0:
        assert (stream_code, doctor_code) == (2, 2), (report, ran)
        assert report.err.splitlines()[-1] == ran.err.splitlines()[-1]
        return
    assert doctor_code == 0, report.err
    summary = next(line for line in ran.out.splitlines() if line.startswith("model "))
    backend, precision, on = summary.split(" on ", 1)[1].split(", ")[:3]
    last = report.out.splitlines()[-1]
    if backend == "tensorrt" and builds() == 1:  # the stream built the engine: the doctor names that first start
        assert last.startswith(f"unet-stream --model camvid runs on: tensorrt {precision} once its engine is "
                               "built: none is cached, so its first start builds it"), last
    else:
        assert last == f"unet-stream --model camvid runs on: {backend} {precision} {on}", (last, summary)


@pytest.mark.parametrize("onnxruntime", ["cpu", "gpu-without-its-libraries"])
def test_a_numbered_gpu_without_pycuda_names_pycuda_first_everywhere(
        onnxruntime: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """TensorRT 11 without pycuda on the two-GPU desktop, `--device cuda:1`, ONNX Runtime with no CUDA provider that
    loads: TensorRT gave way to ONNX Runtime, which stopped on its own fix ("install onnxruntime-gpu", or its
    CUDA libraries), and the Segmenter, the stream and the doctor ended on that line, where what runs the model on
    that GPU here is TensorRT and its missing piece is pycuda. The line names both, TensorRT's first."""
    from unetrt.doctor import main as doctor
    from unetrt.stream.cli import main as stream

    _two_gpu_desktop("no-pycuda" if onnxruntime == "cpu" else "no-pycuda-ort-gpu-no-libs", monkeypatch, tmp_path)
    with pytest.raises(ValueError) as refused:
        Segmenter("camvid", device="cuda:1", warm_up=False)
    line = str(refused.value)
    assert line.startswith("no TensorRT engine (pycuda is not installed: run `pip install pycuda`"), line
    assert "), and onnxruntime cannot run it instead: device 'cuda:1' asked, but " in line and "\n" not in line
    capsys.readouterr()
    assert stream(["sample", str(tmp_path / "out.mp4"), "--device", "cuda:1", "--headless"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"error: {line}"
    assert doctor(["--device", "cuda:1"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"error: {line}"


def test_a_gpu_cuda_visible_devices_hides_is_named_as_hidden_not_missing(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The two-GPU desktop from a shell with CUDA_VISIBLE_DEVICES=1 (set for another program), `--device cuda:1`:
    Segmenter, unet-stream and the doctor said "this machine has 1 CUDA device(s)" to a user who has two, naming
    neither the variable nor that the GPU it shows is cuda:0."""
    from unetrt.doctor import main as doctor
    from unetrt.stream.cli import main as stream

    _two_gpu_desktop("hidden", monkeypatch, tmp_path)
    line = ("CUDA device 1 does not exist for this process: CUDA_VISIBLE_DEVICES=1 shows it 1 CUDA device(s), "
            "numbered from 0 (cuda:0 is the first it lists); ask for one of those, or unset CUDA_VISIBLE_DEVICES to "
            "see every GPU of the machine")
    with pytest.raises(ValueError) as refused:
        Segmenter("camvid", device="cuda:1", warm_up=False)
    assert str(refused.value) == line
    assert stream(["sample", str(tmp_path / "out.mp4"), "--device", "cuda:1", "--headless"]) == 2
    assert capsys.readouterr().err == f"error: {line}\n"
    assert doctor(["--device", "cuda:1"]) == 2
    assert capsys.readouterr().err == f"error: {line}\n"


def test_cuda_visible_devices_naming_no_gpu_is_named_where_cuda_does_not_start(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """CUDA_VISIBLE_DEVICES=-1 left in the shell (to keep another program off the GPU): cuInit fails with
    CUDA_ERROR_NO_DEVICE as on a machine without a GPU (numba issue 5793, pytorch issue 1040), and the line sent the
    user to `nvidia-smi`, which does not read the variable and lists both GPUs, and to a laptop's prime-select."""
    from fakes.cuda import CUDA_ERROR_NO_DEVICE

    from unetrt.doctor import main as doctor

    gpu = _two_gpu_desktop("pycuda", monkeypatch, tmp_path)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    gpu.init_error = CUDA_ERROR_NO_DEVICE
    named = ("CUDA_VISIBLE_DEVICES='-1' may name no GPU of this machine (empty, -1 or an index `nvidia-smi` does not "
             "list make CUDA see none): unset it or name a GPU `nvidia-smi` lists")
    started = r"^CUDA did not start \(cuInit failed: no CUDA-capable device is detected\): "
    with pytest.raises(ValueError, match=started) as refused:
        Segmenter("camvid", backend="tensorrt", warm_up=False)
    assert named in str(refused.value) and "prime-select" not in str(refused.value)
    assert doctor([]) == 0
    assert named in capsys.readouterr().out


def test_an_empty_cuda_visible_devices_is_named_where_cuda_does_not_start(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """CUDA_VISIBLE_DEVICES= (set, empty: `export CUDA_VISIBLE_DEVICES=` to keep a program off the GPU) hides every
    GPU as -1 does; the variable is named although its value is empty."""
    from fakes.cuda import CUDA_ERROR_NO_DEVICE

    gpu = _two_gpu_desktop("pycuda", monkeypatch, tmp_path)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    gpu.init_error = CUDA_ERROR_NO_DEVICE
    named = r"^CUDA did not start \(.*\): CUDA_VISIBLE_DEVICES='' may name no GPU of this machine"
    with pytest.raises(ValueError, match=named) as refused:
        Segmenter("camvid", backend="tensorrt", warm_up=False)
    assert "prime-select" not in str(refused.value)


def test_a_gpu_the_desktop_lacks_is_named_alone_where_tensorrt_gave_way_to_onnx_runtime(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`--device cuda:2` on the two-GPU desktop with TensorRT but no pycuda, and onnxruntime-gpu: TensorRT gives way
    for want of pycuda and ONNX Runtime finds no such GPU. The device is the user's mistake, and any other fix is
    wasted on it: the line names it alone (no TensorRT failure, no pycuda install) as NoSuchDeviceError."""
    from unetrt.cuda import NoSuchDeviceError

    _two_gpu_desktop("no-pycuda-ort-gpu", monkeypatch, tmp_path)
    with pytest.raises(NoSuchDeviceError, match=r"^CUDA device 2 does not exist; this machine has 2 CUDA device\(s\)$"):
        Segmenter("camvid", device="cuda:2", warm_up=False)


def test_an_onnx_runtime_that_does_not_import_behind_tensorrt_is_an_import_error(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """TensorRT without pycuda gives way to an onnxruntime that does not import (one built against another NumPy):
    the line names both, and stays the ImportError that Segmenter documents for a package missing, which a
    caller's `except ImportError` (install it, or run another backend) relies on."""
    _two_gpu_desktop("no-pycuda", monkeypatch, tmp_path)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r"^no TensorRT engine \(pycuda is not installed: .*\), and onnxruntime "
                                          r"cannot run it instead: "):
        Segmenter("camvid", device="cuda:1", warm_up=False)
