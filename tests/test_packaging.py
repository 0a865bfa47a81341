"""The one import root: engine/ is unetrt, export/ is unetrt.export, benchmarks/ is unetrt.benchmarks."""

from __future__ import annotations

import os
import re
import runpy
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from packaging.version import Version

import unetrt
import unetrt.benchmarks

ROOT = Path(__file__).resolve().parents[1]


def test_folders_map_onto_one_import_root() -> None:
    assert Path(unetrt.__file__).resolve().parent == ROOT / "engine"
    assert Path(unetrt.benchmarks.__file__).resolve().parent == ROOT / "benchmarks"


def test_export_package_maps_to_export_folder() -> None:
    import importlib.util

    spec = importlib.util.find_spec("unetrt.export")
    assert spec is not None and spec.origin is not None
    assert Path(spec.origin).resolve().parent == ROOT / "export"


def test_bundled_model_and_clip_are_package_data() -> None:
    from unetrt.bundled import bundled_model_names, bundled_model_path, sample_clip

    assert "camvid" in bundled_model_names()
    for suffix in (".onnx", ".pt"):
        path = bundled_model_path("camvid", suffix)
        assert path.stat().st_size <= 10 * 1024 * 1024
    assert sample_clip().stat().st_size <= 5 * 1024 * 1024


def test_every_bundled_model_file_is_package_data_within_10_mb() -> None:
    # The TensorRT-layout INT8 file beside the others: a Jetson's pip install must carry what TensorRT builds from.
    import fnmatch
    import re

    from unetrt.bundled import MODELS_DIR, TENSORRT_INT8_SUFFIX

    setup = (ROOT / "setup.py").read_text()
    patterns = re.search(r'package_data=\{"unetrt": \[([^\]]*)\]', setup)
    assert patterns is not None, "setup.py names the package data of unetrt"
    globs = re.findall(r'"([^"]+)"', patterns.group(1))
    assert (MODELS_DIR / f"camvid{TENSORRT_INT8_SUFFIX}").is_file()
    for path in MODELS_DIR.iterdir():
        assert any(fnmatch.fnmatch(f"models/{path.name}", pattern) for pattern in globs), path.name
        assert path.stat().st_size <= 10 * 1024 * 1024, path.name


# tools/gpu_check_bundle.sh's pycuda and CUDA kernels, as measured on 2026-12-05 (docs/gpu-path.md).
GPU_CHECK_BUNDLE_BYTES = 5_492_785


def test_the_checkout_leaves_room_for_the_gpu_check_bundle() -> None:
    # A call to the GPU machine carries the checkout and the bundle, 64 MiB in all; a file more (another model
    # variant) must not find that out only when a GPU is lent.
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=False)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    files = [ROOT / name for name in listed.stdout.decode().split("\0") if name]
    tracked = sum(path.stat().st_size for path in files if path.is_file())
    assert tracked + GPU_CHECK_BUNDLE_BYTES <= 64 << 20, f"the checkout is {tracked} bytes"



def _setup_py(monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, Any], dict[str, Any]]:
    """setup.py's functions and the arguments it passes to setup(), without building anything."""
    import setuptools
    from pybind11.setup_helpers import ParallelCompile

    given: dict[str, Any] = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: given.update(kwargs))
    # install() would swap distutils' compile for the whole test process.
    monkeypatch.setattr(ParallelCompile, "install", lambda self: self)
    monkeypatch.chdir(ROOT)
    return runpy.run_path(str(ROOT / "setup.py")), given


def test_every_package_folder_and_its_data_go_into_the_wheel(monkeypatch: pytest.MonkeyPatch) -> None:
    # A Jetson's non-editable install gets only what setup() names: a folder missing is an ImportError of
    # unet-batch, a sample missing is 'unet-stream sample' failing.
    import fnmatch

    _, given = _setup_py(monkeypatch)
    folders = {path.parent.relative_to(ROOT).as_posix() for top in ("engine", "export", "benchmarks")
               for path in (ROOT / top).rglob("__init__.py")}
    assert folders == set(given["package_dir"].values())
    engine = ROOT / "engine"
    for path in [*(engine / "samples").iterdir(), *(engine / "models").iterdir()]:
        relative = path.relative_to(engine).as_posix()
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in given["package_data"]["unetrt"]), relative


def _toolkit(root: Path, archs: str) -> Path:
    """A CUDA toolkit whose nvcc lists the compute capabilities `archs` and records each call in nvcc.log."""
    (root / "bin").mkdir(parents=True)
    (root / "include").mkdir()
    (root / "include" / "cuda_runtime_api.h").write_text("")
    (root / "lib64").mkdir()
    (root / "lib64" / "libcudart_static.a").write_text("")
    nvcc = root / "bin" / "nvcc"
    nvcc.write_text(f'#!/bin/sh\n[ "$1" = --list-gpu-arch ] && echo "{archs}" && exit 0\n'
                    f'echo "$@" >> {root / "nvcc.log"}\n')
    nvcc.chmod(0o755)
    return nvcc


def test_the_cuda_build_uses_cuda_home_and_unetrt_cuda(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """setup_jetson.sh passes JetPack's CUDA as CUDA_HOME and UNETRT_CUDA=1 (its --cpu-only 0): another nvcc on
    PATH must not be taken, and 0 must build no CUDA."""
    setup, _ = _setup_py(monkeypatch)
    jetpack = _toolkit(tmp_path / "jetpack-cuda", "")
    other = _toolkit(tmp_path / "other-cuda", "")
    monkeypatch.setenv("PATH", f"{other.parent}:/usr/bin:/bin")
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setenv("CUDA_HOME", str(jetpack.parents[1]))
    monkeypatch.setenv("UNETRT_CUDA", "1")
    assert setup["cuda_wanted"]() == jetpack
    monkeypatch.setenv("UNETRT_CUDA", "0")
    assert setup["cuda_wanted"]() is None
    # No nvcc anywhere: 1 must stop the install (setup_jetson.sh would otherwise end with CPU-only kernels), auto
    # builds for the CPU. (runpy hands back a copy of setup.py's globals; its functions look names up in the real one.)
    monkeypatch.setitem(setup["cuda_wanted"].__globals__, "find_nvcc", lambda: None)
    monkeypatch.setenv("UNETRT_CUDA", "1")
    with pytest.raises(SystemExit, match="UNETRT_CUDA=1 but nvcc was not found"):
        setup["cuda_wanted"]()
    monkeypatch.setenv("UNETRT_CUDA", "auto")
    assert setup["cuda_wanted"]() is None


@pytest.mark.skipif(not Path("/usr/local/cuda/bin/nvcc").is_file(), reason="no CUDA toolkit in /usr/local/cuda")
def test_the_cuda_build_finds_the_nvcc_jetpack_leaves_off_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # JetPack installs nvcc in /usr/local/cuda/bin and puts it on no PATH.
    setup, _ = _setup_py(monkeypatch)
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert setup["find_nvcc"]() == Path("/usr/local/cuda/bin/nvcc")


def test_cuda_kernels_link_a_static_cudart_for_the_asked_gpus_and_ptx_for_the_newest(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Thor (11.0) with Orin (8.7): PTX of 110, not of '87' (the larger string); nvcc reached through a link (in
    /usr/local/bin) still finds its toolkit's headers; a dynamic cudart would not import on a machine without it."""
    from setuptools import Extension

    setup, _ = _setup_py(monkeypatch)
    nvcc = _toolkit(tmp_path / "cuda", "")
    (tmp_path / "links" / "bin").mkdir(parents=True)
    (tmp_path / "links" / "bin" / "nvcc").symlink_to(nvcc)
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setenv("UNETRT_CUDA_ARCHS", "87;110")
    ext = Extension("unetrt._tiling", sources=[])
    setup["BuildExt"]._add_cuda(SimpleNamespace(build_temp=str(tmp_path / "temp")), ext,
                                tmp_path / "links" / "bin" / "nvcc")
    called = (tmp_path / "cuda" / "nvcc.log").read_text().split()
    assert [a for a in called if a.startswith("-gencode")] == [
        "-gencode=arch=compute_87,code=sm_87", "-gencode=arch=compute_110,code=sm_110",
        "-gencode=arch=compute_110,code=compute_110"]
    assert ext.include_dirs == [str(tmp_path / "cuda" / "include")]
    assert ext.library_dirs == [str(tmp_path / "cuda" / "lib64")]
    assert ext.libraries[0] == "cudart_static" and ("UNETRT_WITH_CUDA", "1") in ext.define_macros


def test_default_cuda_archs_are_those_nvcc_still_builds(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    setup, _ = _setup_py(monkeypatch)
    monkeypatch.delenv("UNETRT_CUDA_ARCHS", raising=False)
    # CUDA 13 dropped Xavier's 7.2; Orin's 8.7 stays first.
    newer = _toolkit(tmp_path / "cuda-13", "compute_75 compute_80 compute_86 compute_87 compute_89 compute_90")
    assert setup["cuda_archs"](newer) == ["87", "80", "86", "89", "90"]
    # An nvcc that lists nothing (older than --list-gpu-arch): every default.
    older = _toolkit(tmp_path / "cuda-11", "")
    assert setup["cuda_archs"](older) == ["72", "87", "80", "86", "89", "90"]


def _extras() -> dict[str, list[str]]:
    """``[project.optional-dependencies]`` of pyproject.toml: extra -> its requirement strings (read without
    tomllib, which Python 3.10 lacks; the lists there are one line each)."""
    text = (ROOT / "pyproject.toml").read_text()
    section = re.search(r"^\[project\.optional-dependencies\]\n(.*?)(?=^\[|\Z)", text, re.M | re.S)
    assert section is not None, "pyproject.toml has no [project.optional-dependencies]"
    return {name: re.findall(r'"([^"]+)"', listed) for name, listed in re.findall(r"^([\w-]+) = \[(.*)\]$",
                                                                                   section.group(1), re.M)}


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_no_extra_installs_torch_on_linux(machine: str) -> None:
    # PyPI's torch for Linux is a CUDA build (several GB of nvidia-* wheels): `pip install '.[export]'` on a fresh
    # CPU machine resolved torch 2.14.1 with CUDA 13. torch is the user's to install first; elsewhere (macOS,
    # Windows) PyPI's torch is the CPU build and the extra may bring it.
    from packaging.requirements import Requirement

    extras = _extras()
    assert {"export", "opencv", "openvino", "tensorrt", "dev"} <= set(extras)
    linux = {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": machine}
    for extra, listed in extras.items():
        for requirement in map(Requirement, listed):
            if requirement.name == "torch":
                assert requirement.marker is not None and not requirement.marker.evaluate({**linux, "extra": extra})
                assert requirement.marker.evaluate({"sys_platform": "darwin", "extra": extra})


def test_the_version_commands_print_is_the_package_version() -> None:
    # Every command's --version prints unetrt.__version__, pip show the installed distribution's: one version, the
    # one setup.py gives, with none written in pyproject.toml or the package beside it.
    assert unetrt.__version__ == metadata.version("unetrt")
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^dynamic = \["version"\]$', pyproject, re.M) and not re.search(r"^version = ", pyproject, re.M)


def _commit(repo: Path, name: str) -> None:
    (repo / name).write_text(name)
    subprocess.run(["git", "-C", str(repo), "add", name], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", name],
                   check=True)


def _checkout(tmp_path: Path, *commits: str) -> Path:
    """A new git repository in tmp_path/checkout with one commit of a file per name."""
    repo = tmp_path / "checkout"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    for name in commits:
        _commit(repo, name)
    return repo


def test_each_commit_builds_a_higher_version_so_that_pip_replaces_the_older_install(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The version was 0.1.0 in every checkout: pip install of a newer one's wheel over an older one's found unetrt
    # 0.1.0 "already satisfied" and kept the old files, and --version could not tell the two apart.
    package_version = _setup_py(monkeypatch)[0]["package_version"]
    repo = _checkout(tmp_path)
    versions = []
    for name in ("a", "b"):
        _commit(repo, name)
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short=10", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        versions.append(package_version(repo))
        assert versions[-1] == f"0.1.1.dev{len(versions)}+g{commit}"
    assert Version("0.1.0") < Version(versions[0]) < Version(versions[1])
    (repo / "a").write_text("changed")  # a tracked file changed: marked, as setuptools-scm does
    assert package_version(repo) == versions[1] + time.strftime(".d%Y%m%d")
    subprocess.run(["git", "-C", str(repo), "checkout", "-q", "a"], check=True)
    subprocess.run(["git", "-C", str(repo), "tag", "v0.2.0"], check=True)
    assert package_version(repo) == "0.2.0"  # a release's own commit
    _commit(repo, "c")
    assert package_version(repo).startswith("0.2.1.dev1+g")


def test_without_git_the_version_is_the_sdists_or_the_release(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    # An sdist is built into a wheel where there is no .git (and often no git): the version it was made with.
    given = _setup_py(monkeypatch)[0]
    package_version = given["package_version"]
    assert package_version(tmp_path) == given["RELEASE"] == "0.1.0"
    (tmp_path / "PKG-INFO").write_text("Metadata-Version: 2.4\nName: unetrt\nVersion: 0.1.1.dev7+gabc\n\n")
    assert package_version(tmp_path) == "0.1.1.dev7+gabc"
    (tmp_path / ".git").mkdir()  # a checkout where git is not installed
    monkeypatch.setenv("PATH", str(tmp_path / "no-git"))
    assert package_version(tmp_path) == "0.1.1.dev7+gabc"


def _git_in(repo: Path, *arguments: str) -> None:
    subprocess.run(["git", "-C", str(repo), *arguments], check=True, capture_output=True)


def test_a_release_checkout_with_changes_is_no_release(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A build of a tagged commit whose files were changed is not that release: pip would take it for the release.
    package_version = _setup_py(monkeypatch)[0]["package_version"]
    repo = _checkout(tmp_path, "a")
    _git_in(repo, "tag", "v0.2.0")
    (repo / "a").write_text("changed")
    version = package_version(repo)
    assert re.fullmatch(r"0\.2\.1\.dev0\+g[0-9a-f]{10}\.d\d{8}", version), version
    assert Version(version) > Version("0.2.0")


def test_untracked_files_and_other_tags_leave_the_version_as_it_is(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    # As setuptools-scm: a file git does not track (notes, a build output not ignored) changes no version, and a tag
    # that is no vX.Y.Z release (a "nightly", a "deployed-robot-3") is no release to count from.
    package_version = _setup_py(monkeypatch)[0]["package_version"]
    repo = _checkout(tmp_path, "a")
    clean = package_version(repo)
    assert re.fullmatch(r"0\.1\.1\.dev1\+g[0-9a-f]{10}", clean), clean
    (repo / "notes.txt").write_text("not tracked")
    assert package_version(repo) == clean
    _git_in(repo, "tag", "nightly")
    assert package_version(repo) == clean


def test_a_git_worktree_takes_its_version_from_git(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # In a worktree (git worktree add) and a submodule, .git is a file that names the repository, not a folder.
    package_version = _setup_py(monkeypatch)[0]["package_version"]
    repo = _checkout(tmp_path, "a", "b")
    _git_in(repo, "worktree", "add", "-q", str(tmp_path / "tree"), "HEAD~1")
    assert (tmp_path / "tree" / ".git").is_file()
    version = package_version(tmp_path / "tree")
    assert re.fullmatch(r"0\.1\.1\.dev1\+g[0-9a-f]{10}", version), version


def test_the_wheel_is_built_with_the_version_of_its_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    # setup() must get the version package_version finds, or every build is the release again.
    found, given = _setup_py(monkeypatch)
    assert given["version"] == found["package_version"](ROOT)


@pytest.mark.slow
def test_the_sdist_keeps_the_checkouts_version_where_git_is_not(tmp_path: Path) -> None:
    # pip builds the wheel from the unpacked sdist, with no .git there, and on a machine that may have no git at all.
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    checkout = tmp_path / "checkout"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(checkout)], check=True, timeout=300)
    version = subprocess.run([sys.executable, "setup.py", "--version"], cwd=checkout, capture_output=True, text=True,
                             timeout=300, check=True).stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"0\.1\.1\.dev\d+\+g[0-9a-f]{10}", version), version
    subprocess.run([sys.executable, "setup.py", "-q", "sdist", "--dist-dir", str(tmp_path / "dist")], cwd=checkout,
                   check=True, capture_output=True, timeout=600)
    (sdist,) = (tmp_path / "dist").glob("unetrt-*.tar.gz")
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp_path / "unpacked", filter="data")
    (unpacked,) = (tmp_path / "unpacked").iterdir()
    no_git = {**os.environ, "PATH": str(Path(sys.executable).parent)}
    done = subprocess.run([sys.executable, "setup.py", "--version"], cwd=unpacked, env=no_git, capture_output=True,
                          text=True, timeout=300, check=True)
    assert done.stdout.strip().splitlines()[-1] == version


def test_a_missing_compiler_or_python_headers_stop_the_build_with_what_to_install(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """pip on a fresh Jetson or container without g++ or python3-dev ended a page of compiler lines with
    "No such file or directory: 'g++'" (or Python.h); the build now stops first with one line naming the packages."""
    setup, _ = _setup_py(monkeypatch)
    check = setup["check_build_tools"]
    headers = tmp_path / "include"
    headers.mkdir()
    (headers / "Python.h").write_text("")
    gxx = tmp_path / "bin" / "g++"
    gxx.parent.mkdir()
    gxx.write_text("#!/bin/sh\n")
    gxx.chmod(0o755)
    found = SimpleNamespace(compiler_so=[str(gxx), "-O2"], linker_so=[str(gxx), "-shared"])
    check(found, headers)
    # setuptools that compile C++ with CXX: its command is the one that must exist, whatever CC is.
    check(SimpleNamespace(compiler_so=["/nonexistent/gcc"], compiler_so_cxx=[str(gxx)], linker_so_cxx=[str(gxx)]),
          headers)
    check(SimpleNamespace(), headers)  # MSVC: no Unix command lists
    with pytest.raises(SystemExit, match=r"the compiler '/nonexistent/g\+\+' was not found .*sudo apt install g\+\+ "
                                         r"python3-dev"):
        check(SimpleNamespace(compiler_so_cxx=["/nonexistent/g++"], compiler_so=[str(gxx)]), headers)
    with pytest.raises(SystemExit, match="the compiler 'g-missing' was not found"):
        check(SimpleNamespace(compiler_so=[str(gxx)], linker_so=["g-missing", "-shared"]), headers)
    with pytest.raises(SystemExit, match=r"Python's headers \(Python.h\) are not in .*sudo apt install g\+\+ "
                                         r"python3-dev"):
        check(found, tmp_path)


def _cuda_build_with(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, nvcc_compiles: str) -> Callable[[], None]:
    """setup.py's CUDA step of the build, with a toolkit whose nvcc runs the shell lines ``nvcc_compiles`` when it
    compiles (it lists the GPU architectures as asked)."""
    from setuptools import Extension

    setup, _ = _setup_py(monkeypatch)
    nvcc = _toolkit(tmp_path / "cuda", "")
    nvcc.write_text(f'#!/bin/sh\n[ "$1" = --list-gpu-arch ] && exit 0\n{nvcc_compiles}\n')
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "cuda"))
    monkeypatch.setenv("UNETRT_CUDA_ARCHS", "87")
    build = SimpleNamespace(build_temp=str(tmp_path / "temp"))
    return lambda: setup["BuildExt"]._add_cuda(build, Extension("unetrt._tiling", sources=[]), nvcc)


def test_an_nvcc_that_fails_stops_the_build_with_the_ways_out(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    """A CUDA toolkit that refuses the host g++ (too new for it) ended pip's output in a CalledProcessError
    traceback of setup.py; the build now stops with one line naming CUDA_HOME and UNETRT_CUDA=0."""
    add_cuda = _cuda_build_with(monkeypatch, tmp_path, 'echo "unsupported GNU version" >&2\nexit 1')
    with pytest.raises(SystemExit, match=r"^nvcc could not compile cpp_ext/tiling_cuda.cu \(exit status 1; .*"
                                         r"set CUDA_HOME .*UNETRT_CUDA=0 pip install"):
        add_cuda()
    with pytest.raises(SystemExit, match=r"could not be run \(Permission denied\).*UNETRT_CUDA=0"):
        (tmp_path / "cuda" / "bin" / "nvcc").chmod(0o644)
        add_cuda()


def test_an_nvcc_killed_by_a_signal_stops_the_build(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """nvcc ended by the kernel's OOM killer (a Jetson's few GB compiling for several GPUs) has a negative status:
    the build must stop there too, not link the object nvcc never wrote."""
    add_cuda = _cuda_build_with(monkeypatch, tmp_path, "kill -9 $$")
    with pytest.raises(SystemExit, match=r"^nvcc could not compile cpp_ext/tiling_cuda.cu \(exit status -9; "):
        add_cuda()
