"""Build script: maps the top-level folders onto the one import root ``unetrt``.

``engine/`` is ``unetrt`` (the runtime), ``export/`` is ``unetrt.export``,
``benchmarks/`` is ``unetrt.benchmarks``; ``cpp_ext/`` builds ``unetrt._tiling`` and ``unetrt._tiling_emu``.

``unetrt._tiling`` always has the C++ kernels; the CUDA kernels are compiled in when nvcc is found.
``unetrt._tiling_emu`` is always built, by the host compiler alone: the CUDA kernels run by emulation on numpy
arrays, so that the tests check the GPU's kernel code on every machine (about 20 s more build time).
Environment overrides:

- ``UNETRT_CUDA``: ``auto`` (default: CUDA when nvcc is found), ``1`` (CUDA required), ``0`` (CPU only).
- ``UNETRT_CUDA_ARCHS``: compute capabilities, e.g. ``"87;90"`` (default: Jetson Xavier 72 and Orin 87, desktop
  80 86 89 90, less those the installed nvcc no longer supports).
- ``CUDA_HOME``: the CUDA toolkit (default: found from nvcc on PATH or /usr/local/cuda).

The version comes from git (:func:`package_version`), so that a newer checkout installs over an older one.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

from pybind11.setup_helpers import ParallelCompile, Pybind11Extension
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

PACKAGE_DIR = {
    "unetrt": "engine",
    "unetrt.backends": "engine/backends",
    "unetrt.stream": "engine/stream",
    "unetrt.batch": "engine/batch",
    "unetrt.export": "export",
    "unetrt.benchmarks": "benchmarks",
}

# The last release. A checkout of a later commit builds a development release of the next one (setuptools-scm's
# "guess-next-dev": 0.1.1.devN+gHASH, N commits), which sorts above every earlier checkout's and the release's.
RELEASE = "0.1.0"
CPP_EXT = Path("cpp_ext")
DEFAULT_CUDA_ARCHS = ("72", "87", "80", "86", "89", "90")
CUDA_SOURCES = [CPP_EXT / "tiling_cuda.cu"]


def _log(message: str) -> None:
    print(f"unetrt setup: {message}", file=sys.stderr)


def _git(root: Path, *arguments: str) -> str | None:
    """What ``git ARGUMENTS`` prints in ``root``, or None where git is missing or fails."""
    try:
        done = subprocess.run(["git", "-C", str(root), *arguments], capture_output=True, text=True, check=False,
                              timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def package_version(root: Path) -> str:
    """The version of the package built from ``root``, found without the network.

    In a git checkout: a tag ``vX.Y.Z`` on the commit gives ``X.Y.Z``; else the next release's development release
    counted from the last such tag (or from the first commit, before any tag): ``0.1.1.dev613+g7f8c6aa1b2``, with
    ``.dYYYYMMDD`` added while tracked files are changed. Every later commit thus has a higher version, and pip
    replaces an older checkout's install (the same version would have been kept as already installed). Without git
    (an sdist, which records its version in PKG-INFO): that version. Else (a copy without either): ``RELEASE``.
    """
    if (root / ".git").exists():
        commit = _git(root, "rev-parse", "--short=10", "HEAD")
        described = _git(root, "describe", "--tags", "--long", "--match", "v[0-9]*.[0-9]*.[0-9]*")
        if described:
            tag, commits, _ = described.rsplit("-", 2)
        else:
            tag, commits = f"v{RELEASE}", _git(root, "rev-list", "--count", "HEAD") or ""
        release = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)", tag)
        if commit and commits.isdigit() and release:
            dirty = bool(_git(root, "status", "--porcelain", "--untracked-files=no"))
            if commits == "0" and not dirty:
                return tag[1:]
            major, minor, patch = map(int, release.groups())
            version = f"{major}.{minor}.{patch + 1}.dev{commits}+g{commit}"
            return version + (time.strftime(".d%Y%m%d") if dirty else "")
    pkg_info = root / "PKG-INFO"
    if pkg_info.is_file():
        for line in pkg_info.read_text(encoding="utf-8").splitlines():
            if line.startswith("Version:"):
                return line.partition(":")[2].strip()
    return RELEASE


def find_nvcc() -> Path | None:
    """nvcc from CUDA_HOME, PATH or /usr/local/cuda, or None."""
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    candidates = [Path(home) / "bin" / "nvcc"] if home else []
    on_path = shutil.which("nvcc")
    if on_path:
        candidates.append(Path(on_path))
    candidates.append(Path("/usr/local/cuda/bin/nvcc"))
    return next((c for c in candidates if c.is_file()), None)


def cuda_wanted() -> Path | None:
    """The nvcc to use, or None for a CPU-only build, following UNETRT_CUDA."""
    choice = os.environ.get("UNETRT_CUDA", "auto").strip().lower()
    if choice not in ("0", "1", "auto"):
        raise SystemExit(f"UNETRT_CUDA must be 0, 1 or auto, got {choice!r}")
    if choice == "0":
        return None
    nvcc = find_nvcc()
    if nvcc is None and choice == "1":
        raise SystemExit("UNETRT_CUDA=1 but nvcc was not found; set CUDA_HOME or put nvcc on PATH")
    if nvcc is None:
        _log("nvcc not found: building unetrt._tiling for the CPU only")
    return nvcc


def cuda_archs(nvcc: Path) -> list[str]:
    """Compute capabilities to build for: UNETRT_CUDA_ARCHS as given, else the defaults nvcc supports."""
    override = os.environ.get("UNETRT_CUDA_ARCHS")
    if override:
        archs = [a.strip().replace(".", "") for a in override.replace(",", ";").split(";") if a.strip()]
        if not archs or not all(a.isdigit() for a in archs):
            raise SystemExit(f"UNETRT_CUDA_ARCHS must list compute capabilities like '87;90', got {override!r}")
        return archs
    listed = subprocess.run([str(nvcc), "--list-gpu-arch"], capture_output=True, text=True, check=False).stdout
    supported = {line.strip().removeprefix("compute_") for line in listed.split()}
    archs = [a for a in DEFAULT_CUDA_ARCHS if not supported or a in supported]
    dropped = sorted(set(DEFAULT_CUDA_ARCHS) - set(archs))
    if dropped:
        _log(f"this nvcc cannot build for sm_{', sm_'.join(dropped)}; skipped (use an older CUDA for them)")
    if not archs:
        raise SystemExit(f"nvcc {nvcc} supports none of {DEFAULT_CUDA_ARCHS}; set UNETRT_CUDA_ARCHS")
    return archs


def find_cuda_home(nvcc: Path) -> Path:
    """The CUDA toolkit: CUDA_HOME, the folder above nvcc, or /usr/local/cuda (nvcc may be a wrapper script)."""
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    candidates = [Path(home)] if home else []
    candidates += [nvcc.resolve().parents[1], Path("/usr/local/cuda")]
    for candidate in candidates:
        if (candidate / "include" / "cuda_runtime_api.h").is_file():
            return candidate
    raise SystemExit(f"CUDA headers not found in {', '.join(map(str, candidates))}; set CUDA_HOME")


def cuda_library_dir(cuda_home: Path) -> Path:
    """The folder holding libcudart_static.a."""
    for candidate in (cuda_home / "lib64", cuda_home / "lib", *sorted((cuda_home / "targets").glob("*/lib"))):
        if (candidate / "libcudart_static.a").is_file():
            return candidate
    raise SystemExit(f"libcudart_static.a not found under {cuda_home}; set CUDA_HOME to the CUDA toolkit")


def check_build_tools(compiler: object, python_include: Path) -> None:
    """Stop with one line naming what to install when the C++ compiler or Python's headers are missing.

    Without it pip prints a compiler command line per source and ends in ``No such file or directory: 'g++'`` or
    ``Python.h: No such file or directory`` far above its own summary (a fresh Jetson or container has neither).
    ``compiler`` is setuptools' CCompiler; one without Unix command lists (MSVC) is not checked.
    """
    install = ("Debian, Ubuntu and JetPack: sudo apt install g++ python3-dev; Fedora: sudo dnf install gcc-c++ "
               "python3-devel; then run pip install again")
    # The C++ sources go through compiler_so_cxx and linker_so_cxx where setuptools has them (CXX), else the C ones.
    for names in (("compiler_so_cxx", "compiler_so"), ("linker_so_cxx", "linker_so")):
        command = next((getattr(compiler, n) for n in names if getattr(compiler, n, None)), None)
        if command and shutil.which(command[0]) is None:
            raise SystemExit(f"unetrt compiles its C++ kernels and the compiler {command[0]!r} was not found "
                             f"(set CXX to another): {install}")
    if not (python_include / "Python.h").is_file():
        raise SystemExit(f"unetrt compiles its C++ kernels and Python's headers (Python.h) are not in "
                         f"{python_include}: {install}")


def run_nvcc(command: list[str], source: Path) -> None:
    """Run nvcc; a failure stops the build with one line naming the ways out, not a CalledProcessError traceback.

    nvcc refuses, for instance, a host g++ newer than its CUDA release supports; its own messages come before.
    """
    try:
        status = subprocess.run(command, check=False).returncode
    except OSError as exc:
        raise SystemExit(f"nvcc {command[0]} could not be run ({exc.strerror}): set CUDA_HOME to a CUDA toolkit, or "
                         f"build without the CUDA kernels: UNETRT_CUDA=0 pip install ...") from None
    if status != 0:
        raise SystemExit(f"nvcc could not compile {source} (exit status {status}; its messages are above): set "
                         f"CUDA_HOME to a CUDA toolkit that builds it, or build without the CUDA kernels: "
                         f"UNETRT_CUDA=0 pip install ...")


class BuildExt(build_ext):
    """Compiles the .cu sources with nvcc and links them, with a static cudart, into unetrt._tiling."""

    def build_extensions(self) -> None:
        check_build_tools(self.compiler, Path(sysconfig.get_paths()["include"]))
        super().build_extensions()

    def build_extension(self, ext: Extension) -> None:
        if ext.name == TILING.name:
            nvcc = cuda_wanted()
            if nvcc is not None:
                self._add_cuda(ext, nvcc)
        super().build_extension(ext)

    def _add_cuda(self, ext: Extension, nvcc: Path) -> None:
        cuda_home = find_cuda_home(nvcc)
        archs = cuda_archs(nvcc)
        gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
        # PTX of the newest arch lets later GPUs JIT-compile the kernels.
        newest = max(archs, key=int)
        gencode.append(f"-gencode=arch=compute_{newest},code=compute_{newest}")
        build_temp = Path(self.build_temp)
        build_temp.mkdir(parents=True, exist_ok=True)
        for source in CUDA_SOURCES:
            obj = build_temp / (source.stem + ".o")
            command = [str(nvcc), "-c", str(source), "-o", str(obj), "-O3", "-std=c++17", f"-I{CPP_EXT}",
                       "-Xcompiler=-fPIC,-fvisibility=hidden", "--threads=2", *gencode]
            _log(f"building CUDA kernels for sm_{', sm_'.join(archs)}")
            run_nvcc(command, source)
            ext.extra_objects.append(str(obj))
        ext.define_macros.append(("UNETRT_WITH_CUDA", "1"))
        ext.include_dirs.append(str(cuda_home / "include"))
        ext.library_dirs.append(str(cuda_library_dir(cuda_home)))
        # Static cudart: the module imports on machines without a GPU or driver; the GPU entry points then raise.
        ext.libraries.extend(["cudart_static", "rt", "dl", "pthread"])


# The two C++ sources compile side by side (CI has 2 cores); UNETRT_BUILD_JOBS overrides.
ParallelCompile("UNETRT_BUILD_JOBS", default=2).install()

TILING = Pybind11Extension(
    "unetrt._tiling",
    sources=[str(CPP_EXT / "bindings.cpp"), str(CPP_EXT / "tiling_cpu.cpp")],
    include_dirs=[str(CPP_EXT)],
    depends=[str(CPP_EXT / "tiling.h"), str(CPP_EXT / "tiling_kernels.cuh"), *map(str, CUDA_SOURCES)],
    cxx_std=17,
    # No FMA contraction: the CPU kernels must round exactly as the CUDA kernels and numpy do.
    extra_compile_args=["-O3", "-ffp-contract=off"],
)

# The CUDA kernels compiled by g++ under cuda_emulation.h, in their own namespace (their inline helpers must not
# merge with the CPU build's), without FMA contraction (the device rounds a multiply and an add apart).
TILING_EMULATED = Pybind11Extension(
    "unetrt._tiling_emu",
    sources=[str(CPP_EXT / "emulated_bindings.cpp"), str(CPP_EXT / "tiling_emulated.cpp")],
    include_dirs=[str(CPP_EXT)],
    depends=[str(CPP_EXT / name) for name in ("bindings.cpp", "tiling.h", "tiling_kernels.cuh", "cuda_emulation.h",
                                              "tiling_emulated.h")],
    define_macros=[("UNETRT_EMULATED_CUDA", "1"), ("UNETRT_NAMESPACE", "unetrt_emulated")],
    cxx_std=17,
    extra_compile_args=["-O2", "-ffp-contract=off"],
)

setup(
    version=package_version(Path(__file__).resolve().parent),
    packages=list(PACKAGE_DIR),
    package_dir=PACKAGE_DIR,
    package_data={"unetrt": ["models/*.onnx", "models/*.pt", "models/*.json", "samples/*.mp4", "py.typed"]},
    ext_modules=[TILING, TILING_EMULATED],
    cmdclass={"build_ext": BuildExt},
)
