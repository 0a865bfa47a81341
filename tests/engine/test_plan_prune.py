"""``python -m unetrt.doctor --prune`` (unetrt.plan_prune): a Jetson's engine cache after a month of upgrades, a moved
SD card and a retrained model, cleaned in one command that never removes an engine that runs here, one another
process is building, or anything that is not the cache's own."""

from __future__ import annotations

import fcntl
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from fakes.cuda import FakeGpu
from plan_fixtures import install_fake_tensorrt_gpu

from unetrt.doctor import main as doctor
from unetrt.plan_cache import cached_plan
from unetrt.plan_metadata import metadata_path, read_plan_metadata, write_plan_metadata

pytestmark = pytest.mark.gpu_contract


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    folder = tmp_path / "engines"
    monkeypatch.setenv("UNETRT_ENGINE_CACHE", str(folder))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return folder


def _model(tiny_model_files: dict[str, Path], folder: Path, name: str) -> Path:
    """A copy of the tiny model named ``name``, in ``folder``."""
    return Path(shutil.copy(tiny_model_files["onnx"], folder / f"{name}.onnx"))


def _sizeless(lines: list[str]) -> list[str]:
    """The lines with each entry's size ('37 KB') written as SIZE."""
    return [re.sub(r", \d+ [KM]B: ", ", SIZE: ", line) for line in lines]


def _a_month_on(monkeypatch: pytest.MonkeyPatch, tiny_model_files: dict[str, Path], cache: Path,
                tmp_path: Path) -> dict[str, Path]:
    """The cache of a Jetson after a month, with TensorRT 10.4.0 and the AGX Orin now: each kind of entry by name."""
    model = _model(tiny_model_files, tmp_path, "mine")
    install_fake_tensorrt_gpu(monkeypatch, version="10.3.0")
    entries = {"older-tensorrt": cached_plan(model, "fp32", cache_dir=cache, progress=False)}
    install_fake_tensorrt_gpu(monkeypatch, FakeGpu(multiprocessors=8), version="10.4.0")
    entries["orin-nx"] = cached_plan(model, cache_dir=cache, progress=False)
    install_fake_tensorrt_gpu(monkeypatch, version="10.5.0")
    entries["newer-tensorrt"] = cached_plan(model, cache_dir=cache, progress=False)
    install_fake_tensorrt_gpu(monkeypatch, version="10.4.0")
    entries["runs-here"] = cached_plan(model, cache_dir=cache, progress=False)
    entries["damaged"] = cached_plan(model, working_size=(64, 48), cache_dir=cache, progress=False)
    entries["damaged"].write_bytes(entries["damaged"].read_bytes()[:100])
    retrained = _model(tiny_model_files, tmp_path, "other")
    entries["retrained"] = cached_plan(retrained, cache_dir=cache, progress=False)
    retrained.write_bytes(retrained.read_bytes() + b"\0")  # another training run exported over it
    entries["temporary"] = cache / f".{entries['damaged'].name}.4242.1.tmp"
    entries["temporary"].write_bytes(b"half a plan")
    return entries


def test_prune_lists_then_removes_what_cannot_run_here(monkeypatch: pytest.MonkeyPatch,
                                                       tiny_model_files: dict[str, Path], cache: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    entries = _a_month_on(monkeypatch, tiny_model_files, cache, tmp_path)
    outside = tmp_path / "precious.plan"
    outside.write_bytes(b"not the cache's")
    link = cache / f"{entries['runs-here'].stem[:-16]}{'0' * 16}.plan"
    link.symlink_to(outside)
    (cache / "notes.txt").write_text("mine")
    before = sorted(path.name for path in cache.iterdir())
    capsys.readouterr()

    assert doctor(["--prune"]) == 0
    out = capsys.readouterr().out.splitlines()
    header = out[0]
    assert sorted(path.name for path in cache.iterdir()) == before  # nothing removed without --yes
    older, nx, newer, damaged, retrained = (entries[name] for name in (
        "older-tensorrt", "orin-nx", "newer-tensorrt", "damaged", "retrained"))
    assert out[0].startswith(f"engine cache: {cache}: ")
    expected = [
        f"would remove {older.name}, SIZE: built by TensorRT 10.3.0, this is 10.4.0",
        f"would remove {nx.name}, SIZE: built for Orin (fake) (sm_87, 8 SMs), this is Orin (fake) (sm_87, 16 SMs)",
        f"would remove {damaged.name}, SIZE: its plan is truncated or replaced (checksum mismatch)",
        f"would remove {retrained.name}, SIZE: built from an earlier version of other.onnx",
        f"would remove .{damaged.name}.4242.1.tmp, SIZE: a temporary file of a build that was killed (a power cut, "
        "SIGKILL)",
        "would remove timing-10.3.0-sm_87-16sm.cache, SIZE: a timing cache of TensorRT 10.3.0, this is 10.4.0",
        "would remove timing-10.4.0-sm_87-8sm.cache, SIZE: a timing cache for sm_87 (8 SMs), which no GPU here is",
        f"keeps {newer.name}, SIZE: built by TensorRT 10.5.0, this is 10.4.0 (kept: another install of that TensorRT "
        f"may use it); rm {newer} {metadata_path(newer)} frees it",
        f"left alone: 2 file(s) that are not the cache's own or not regular files ({link.name}, notes.txt)",
    ]
    assert sorted(_sizeless(out[1:-1])) == sorted(expected), out
    assert out[-1].startswith("python -m unetrt.doctor --prune --yes removes these 7 (")
    assert out[-1].endswith("); 1 engine that runs here stays")

    assert doctor(["--prune", "--yes"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == header  # what the cache held, not what is left
    assert sorted(_sizeless([line for line in out if line.startswith("removed ")])) == sorted(
        line.replace("would remove", "removed") for line in expected if line.startswith("would remove"))
    assert out[-1].startswith("freed ") and " (7 removed); 1 engine that runs here stays; engine cache now: " in out[-1]
    left = {path.name for path in cache.iterdir()}
    assert {entries["runs-here"].name, newer.name, link.name, "notes.txt", "timing-10.4.0-sm_87-16sm.cache",
            "timing-10.5.0-sm_87-16sm.cache"} <= left
    assert not {older.name, nx.name, damaged.name, retrained.name, entries["temporary"].name} & left
    assert not any(name.endswith(".plan.json") and name[:-5] not in left for name in left)
    assert outside.read_bytes() == b"not the cache's" and link.is_symlink()
    assert cached_plan(tmp_path / "mine.onnx", cache_dir=cache, build=False) == entries["runs-here"]

    assert doctor(["--prune", "--yes"]) == 0  # the second time: nothing to do
    assert "nothing to remove; 1 engine that runs here stays" in capsys.readouterr().out


def test_prune_leaves_an_entry_another_process_is_building(monkeypatch: pytest.MonkeyPatch,
                                                           tiny_model_files: dict[str, Path], cache: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A build of minutes holds its entry's lock and writes its temporaries; a prune meanwhile leaves both."""
    install_fake_tensorrt_gpu(monkeypatch, version="10.3.0")
    plan = cached_plan(tiny_model_files["onnx"], cache_dir=cache, progress=False)
    write_plan_metadata(plan, replace(read_plan_metadata(plan), tensorrt_version="10.2.0"))
    temporary = cache / f".{plan.name}.4242.1.tmp"
    temporary.write_bytes(b"being written")
    with open(plan.with_suffix(".lock"), "a+b") as holder:  # another open file: flock sees another process
        fcntl.flock(holder.fileno(), fcntl.LOCK_EX)
        assert doctor(["--prune"]) == 0
        listed = capsys.readouterr().out
        assert doctor(["--prune", "--yes"]) == 0
    out = capsys.readouterr().out
    # The listing does not call the build's temporary a killed build's, nor count it among what --yes removes.
    assert f"keeps {temporary.name}, 1 KB: a temporary file of a build in progress (another process holds its lock)" \
        in listed
    assert "killed" not in listed
    assert f"left {plan.name}: another process is building it" in out
    assert plan.exists() and temporary.exists()


def test_prune_keeps_a_temporary_where_the_cache_cannot_be_locked(monkeypatch: pytest.MonkeyPatch,
                                                                  tiny_model_files: dict[str, Path], cache: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """On an NFS home without its lock service no lock says whether a build is still writing a temporary (another
    machine's, maybe): it is kept and the line says why."""
    import errno

    import unetrt.plan_prune as plan_prune

    install_fake_tensorrt_gpu(monkeypatch, version="10.3.0")
    plan = cached_plan(tiny_model_files["onnx"], cache_dir=cache, progress=False)
    temporary = cache / f".{plan.name}.4242.1.tmp"
    temporary.write_bytes(b"being written elsewhere")

    def no_locks(descriptor: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(plan_prune.fcntl, "flock", no_locks)
    assert doctor(["--prune", "--yes"]) == 0
    out = capsys.readouterr().out
    assert f"keeps {temporary.name}" in out and "whether a build is still writing it cannot be told" in out
    assert temporary.exists() and plan.exists()



def test_a_killed_builds_temporary_whose_lock_file_is_gone_is_removed_and_the_listing_makes_no_lock(
        monkeypatch: pytest.MonkeyPatch, tiny_model_files: dict[str, Path], cache: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The temporary of an entry a newer build replaced (which removed its lock file): no build holds it, so it is a
    killed build's, listed and removed as one; the listing opens no lock file it would have to create."""
    install_fake_tensorrt_gpu(monkeypatch, version="10.3.0")
    plan = cached_plan(tiny_model_files["onnx"], cache_dir=cache, progress=False)
    temporary = cache / f".{plan.name}.4242.1.tmp"
    temporary.write_bytes(b"half a plan")
    lock = plan.with_suffix(".lock")
    lock.unlink()
    capsys.readouterr()
    assert doctor(["--prune"]) == 0
    assert (f"would remove {temporary.name}, SIZE: a temporary file of a build that was killed (a power cut, "
            "SIGKILL)") in _sizeless(capsys.readouterr().out.splitlines())
    assert not lock.exists()
    assert doctor(["--prune", "--yes"]) == 0
    assert not temporary.exists() and plan.exists()



def test_a_temporary_whose_lock_file_cannot_be_opened_is_kept(monkeypatch: pytest.MonkeyPatch,
                                                              tiny_model_files: dict[str, Path], cache: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A lock file the listing may not open (another user's, mode 600): whether a build holds it cannot be told, so
    its temporary is kept, not listed as a killed build's."""
    import errno
    import os

    install_fake_tensorrt_gpu(monkeypatch, version="10.3.0")
    plan = cached_plan(tiny_model_files["onnx"], cache_dir=cache, progress=False)
    temporary = cache / f".{plan.name}.4242.1.tmp"
    temporary.write_bytes(b"being written")
    real_open = os.open

    def refused(path: str | os.PathLike[str], flags: int, *args: int, **kwargs: int) -> int:
        if str(path).endswith(".lock"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refused)
    capsys.readouterr()
    assert doctor(["--prune"]) == 0
    out = capsys.readouterr().out
    assert f"keeps {temporary.name}" in out and "whether a build is still writing it cannot be told" in out, out
    assert "killed" not in out

def test_on_nfs_a_killed_builds_temporary_is_told_by_a_shared_lock(monkeypatch: pytest.MonkeyPatch,
                                                                   tiny_model_files: dict[str, Path], cache: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """An NFS home with its lock service: flock is emulated there by fcntl byte-range locks, and an exclusive one
    needs a file open for writing (flock(2), NOTES), which the listing's read-only lock file is not. A killed build's
    temporary is still told apart: listed and removed as one, not kept as 'cannot be told'."""
    import errno
    import os

    install_fake_tensorrt_gpu(monkeypatch, version="10.3.0")
    plan = cached_plan(tiny_model_files["onnx"], cache_dir=cache, progress=False)
    temporary = cache / f".{plan.name}.4242.1.tmp"
    temporary.write_bytes(b"half a plan")
    local_flock = fcntl.flock

    def nfs_flock(descriptor: int, operation: int) -> None:
        read_only = fcntl.fcntl(descriptor, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY
        if operation & fcntl.LOCK_EX and read_only:
            raise OSError(errno.EBADF, "Bad file descriptor")
        local_flock(descriptor, operation)

    monkeypatch.setattr(fcntl, "flock", nfs_flock)
    capsys.readouterr()
    assert doctor(["--prune"]) == 0
    assert (f"would remove {temporary.name}, SIZE: a temporary file of a build that was killed (a power cut, "
            "SIGKILL)") in _sizeless(capsys.readouterr().out.splitlines())
    assert doctor(["--prune", "--yes"]) == 0
    assert not temporary.exists() and plan.exists()

def test_prune_keeps_every_engine_that_runs_here_even_one_a_stream_runs(monkeypatch: pytest.MonkeyPatch,
                                                                        tiny_model_files: dict[str, Path],
                                                                        cache: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from unetrt.plan_cache import open_cached_engine

    install_fake_tensorrt_gpu(monkeypatch)
    fp32 = cached_plan(tiny_model_files["onnx"], "fp32", cache_dir=cache, progress=False)
    with open_cached_engine(tiny_model_files["onnx"], cache_dir=cache, progress=False) as backend:
        assert doctor(["--prune", "--yes"]) == 0
        assert backend.path.exists() and fp32.exists()
    assert "nothing to remove; 2 engines that run here stay" in capsys.readouterr().out


def test_prune_keeps_an_engine_of_a_gpu_cuda_visible_devices_hides(monkeypatch: pytest.MonkeyPatch,
                                                                   tiny_model_files: dict[str, Path], cache: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A desktop with two GPUs, pruned from a shell with CUDA_VISIBLE_DEVICES=1: the engine of the hidden GPU 0 is one
    that runs on this machine."""
    install_fake_tensorrt_gpu(monkeypatch, FakeGpu(name="NVIDIA GeForce RTX 4090", compute_capability=(8, 9)))
    hidden = cached_plan(tiny_model_files["onnx"], cache_dir=cache, progress=False)
    install_fake_tensorrt_gpu(monkeypatch, FakeGpu(name="NVIDIA RTX A4000", compute_capability=(8, 6)))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert doctor(["--prune", "--yes"]) == 0
    out = "\n".join(_sizeless(capsys.readouterr().out.splitlines()))
    assert f"keeps {hidden.name}, SIZE: built for NVIDIA GeForce RTX 4090 (sm_89, 16 SMs), this is NVIDIA RTX A4000 " \
           "(sm_86, 16 SMs) (kept: CUDA_VISIBLE_DEVICES=1 may hide the GPU it is for" in out, out
    assert hidden.exists()


@pytest.mark.parametrize("argv", [["--yes"], ["--prune", "--build"], ["--prune", "--model", "isbi"],
                                  ["--prune", "--device", "cuda:1"]])
def test_a_prune_asked_wrongly_is_one_line_and_exit_2(argv: list[str], cache: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        doctor(argv)
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and err.count("\n") == 1 and err.startswith("python -m unetrt.doctor: error: ")


def test_prune_without_tensorrt_says_it_cannot_tell_and_removes_nothing(monkeypatch: pytest.MonkeyPatch, cache: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from unetrt.backends.tensorrt import MISSING_TENSORRT

    def missing() -> None:
        raise ImportError(MISSING_TENSORRT)

    monkeypatch.setattr("unetrt.backends.tensorrt.require_tensorrt", missing)
    cache.mkdir()
    (cache / "camvid-fp16-0123456789abcdef.plan").write_bytes(b"plan")
    assert doctor(["--prune", "--yes"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot tell which do: TensorRT is not installed" in err
    assert (cache / "camvid-fp16-0123456789abcdef.plan").exists()


def test_prune_with_tensorrt_installed_but_not_importing_says_so(monkeypatch: pytest.MonkeyPatch, cache: Path,
                                                                 tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """tensorrt-cu13-bindings whose libraries' wheel is gone, on a machine with a GPU: --prune said "TensorRT is not
    installed", where the rest of unetrt names what is installed, why it does not import and the reinstall."""
    import sys

    install_fake_tensorrt_gpu(monkeypatch, version="11.0.0")
    site = tmp_path / "site"
    (site / "tensorrt").mkdir(parents=True)
    (site / "tensorrt" / "__init__.py").write_text("raise ImportError('libnvinfer.so.11: cannot open shared object "
                                                   "file: No such file or directory')\n")
    info = site / "tensorrt_cu13_bindings-11.0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tensorrt-cu13-bindings\nVersion: 11.0.0\n")
    monkeypatch.delitem(sys.modules, "tensorrt")
    monkeypatch.syspath_prepend(str(site))
    cache.mkdir()
    assert doctor(["--prune", "--yes"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert ("cannot tell which do: TensorRT is installed (tensorrt-cu13-bindings 11.0.0) but does not import "
            "(libnvinfer.so.11: cannot open shared object file: No such file or directory)") in err, err
    assert "pip install --force-reinstall tensorrt-cu13==11.0.0" in err


def test_a_file_the_cache_cannot_remove_is_named_and_exits_1(monkeypatch: pytest.MonkeyPatch,
                                                             tiny_model_files: dict[str, Path], cache: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A cache a sudo run left to root: each file that cannot be removed is named with the reason, and the command
    fails after its lines."""
    import errno

    install_fake_tensorrt_gpu(monkeypatch, version="10.3.0")
    plan = cached_plan(tiny_model_files["onnx"], cache_dir=cache, progress=False)
    install_fake_tensorrt_gpu(monkeypatch, version="10.4.0")
    real_unlink = Path.unlink

    def refused(path: Path, missing_ok: bool = False) -> None:
        if path.parent == cache:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        real_unlink(path, missing_ok)

    monkeypatch.setattr(Path, "unlink", refused)
    assert doctor(["--prune", "--yes"]) == 1
    out = capsys.readouterr().out
    assert f"left {plan.name}: cannot remove it: Permission denied" in out and plan.exists()


def test_a_cache_that_is_a_file_is_one_line(cache: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    install_fake_tensorrt_gpu(monkeypatch)
    cache.write_text("not a folder")
    assert doctor(["--prune"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: the engine cache {cache} is a file, not a folder: nothing to prune there\n"


def test_a_cache_under_a_file_names_that_file(cache: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """UNETRT_ENGINE_CACHE=FILE/engines: the line said the engine cache FILE/engines was a file, where FILE is."""
    install_fake_tensorrt_gpu(monkeypatch)
    cache.parent.joinpath("blocker").write_text("not a folder")
    folder = cache.parent / "blocker" / "engines"
    monkeypatch.setenv("UNETRT_ENGINE_CACHE", str(folder))
    assert doctor(["--prune"]) == 2
    assert capsys.readouterr().err == (f"error: the engine cache {folder} cannot exist: {folder.parent} is a file, "
                                       "not a folder: nothing to prune there\n")


def test_a_plan_being_read_as_it_is_removed_is_read_whole(monkeypatch: pytest.MonkeyPatch,
                                                          tiny_model_files: dict[str, Path], cache: Path) -> None:
    """Another process (a venv of the older TensorRT) has the old plan open as --prune --yes removes it: the file
    lives while it is open (POSIX unlink), so that reader gets every byte."""
    install_fake_tensorrt_gpu(monkeypatch, version="10.3.0")
    plan = cached_plan(tiny_model_files["onnx"], cache_dir=cache, progress=False)
    whole = plan.read_bytes()
    install_fake_tensorrt_gpu(monkeypatch, version="10.4.0")
    with open(plan, "rb") as reader:
        head = reader.read(10)
        assert doctor(["--prune", "--yes"]) == 0
        assert not plan.exists() and head + reader.read() == whole


def test_prune_on_a_desktop_keeps_the_engine_of_each_gpu(monkeypatch: pytest.MonkeyPatch,
                                                         tiny_model_files: dict[str, Path], cache: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Device 0 sm_89, device 1 sm_86, and an engine of the sm_75 card they replaced: both GPUs' engines run on this
    machine and stay, whichever device the shell's default is; the old card's goes."""
    install_fake_tensorrt_gpu(monkeypatch, FakeGpu(name="NVIDIA GeForce RTX 2080", compute_capability=(7, 5),
                                                   multiprocessors=46, integrated=False))
    old = cached_plan(tiny_model_files["onnx"], cache_dir=cache, progress=False)
    install_fake_tensorrt_gpu(monkeypatch, FakeGpu(name="NVIDIA GeForce RTX 4090", compute_capability=(8, 9),
                                                   multiprocessors=128, integrated=False, count=2,
                                                   kinds={1: ("NVIDIA RTX A4000", (8, 6), 48)}))
    engines = [cached_plan(tiny_model_files["onnx"], device_index=index, cache_dir=cache, progress=False)
               for index in (0, 1)]
    assert doctor(["--prune", "--yes"]) == 0
    out = _sizeless(capsys.readouterr().out.splitlines())
    assert (f"removed {old.name}, SIZE: built for NVIDIA GeForce RTX 2080 (sm_75, 46 SMs), this machine has NVIDIA "
            "GeForce RTX 4090 (sm_89, 128 SMs) and NVIDIA RTX A4000 (sm_86, 48 SMs)") in out, out
    assert out[-1].startswith("freed ") and "; 2 engines that run here stay; " in out[-1], out
    assert all(engine.exists() for engine in engines) and not old.exists()


def test_an_entry_whose_metadata_is_a_link_is_left_whole(monkeypatch: pytest.MonkeyPatch,
                                                         tiny_model_files: dict[str, Path], cache: Path,
                                                         tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An older TensorRT's entry whose .plan.json someone replaced by a link to a file of theirs: the link is not the
    cache's own, so neither half of the entry is removed (removing the plan alone would leave the link dangling)."""
    install_fake_tensorrt_gpu(monkeypatch, version="10.3.0")
    plan = cached_plan(tiny_model_files["onnx"], cache_dir=cache, progress=False)
    install_fake_tensorrt_gpu(monkeypatch, version="10.4.0")
    theirs = Path(shutil.move(metadata_path(plan), tmp_path / "theirs.json"))
    metadata_path(plan).symlink_to(theirs)
    assert doctor(["--prune", "--yes"]) == 0
    out = capsys.readouterr().out
    link = metadata_path(plan).name
    assert f"left alone: 1 file(s) that are not the cache's own or not regular files ({link})" in out
    assert plan.exists() and metadata_path(plan).is_symlink() and theirs.exists()


def test_cuda_visible_devices_keeps_only_what_the_hidden_gpu_may_run(monkeypatch: pytest.MonkeyPatch,
                                                                     tiny_model_files: dict[str, Path], cache: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Pruned with CUDA_VISIBLE_DEVICES=1: the hidden GPU's engine and timing cache of this TensorRT stay; an older
    TensorRT's engine of a GPU not seen runs nowhere, whatever GPU it is for, and goes."""
    install_fake_tensorrt_gpu(monkeypatch, FakeGpu(name="NVIDIA GeForce RTX 2080", compute_capability=(7, 5)),
                              version="10.3.0")
    old = cached_plan(tiny_model_files["onnx"], cache_dir=cache, progress=False)
    install_fake_tensorrt_gpu(monkeypatch, FakeGpu(name="NVIDIA GeForce RTX 4090", compute_capability=(8, 9)),
                              version="10.4.0")
    hidden = cached_plan(tiny_model_files["onnx"], cache_dir=cache, progress=False)
    install_fake_tensorrt_gpu(monkeypatch, FakeGpu(name="NVIDIA RTX A4000", compute_capability=(8, 6)),
                              version="10.4.0")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert old.exists() and hidden.exists()
    assert doctor(["--prune", "--yes"]) == 0
    out = _sizeless(capsys.readouterr().out.splitlines())
    assert (f"removed {old.name}, SIZE: built by TensorRT 10.3.0, this is 10.4.0, built for NVIDIA GeForce RTX 2080 "
            "(sm_75, 16 SMs), this is NVIDIA RTX A4000 (sm_86, 16 SMs)") in out, out
    assert not old.exists() and hidden.exists() and (cache / "timing-10.4.0-sm_89-16sm.cache").exists()
    assert out[-1].startswith("freed ") and "; 0 engines that run here stay; " in out[-1], out


def test_an_engine_under_an_older_key_of_the_cache_is_removed(monkeypatch: pytest.MonkeyPatch,
                                                              tiny_model_files: dict[str, Path], cache: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """An entry an earlier unetrt cached under another key: its TensorRT, GPU and model are this machine's, but this
    unetrt never loads it (it builds its own), so it is not one that runs here."""
    install_fake_tensorrt_gpu(monkeypatch)
    plan = cached_plan(tiny_model_files["onnx"], cache_dir=cache, progress=False)
    older = cache / f"{plan.stem[:-16]}{'0' * 16}.plan"
    shutil.copy(plan, older)
    shutil.copy(metadata_path(plan), metadata_path(older))
    assert doctor(["--prune"]) == 0
    out = _sizeless(capsys.readouterr().out.splitlines())
    assert f"would remove {older.name}, SIZE: built by an earlier unetrt, whose engines this one builds anew" in out
    assert out[-1].endswith("; 1 engine that runs here stays"), out


def test_an_orin_nx_removes_the_timing_cache_of_an_agx_orin(monkeypatch: pytest.MonkeyPatch,
                                                            tiny_model_files: dict[str, Path], cache: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """An SD card moved from an AGX Orin (16 SMs) to an Orin NX (8 SMs): the same sm_87, but TensorRT refuses a timing
    cache of another SM count, so the AGX's goes."""
    install_fake_tensorrt_gpu(monkeypatch)
    cached_plan(tiny_model_files["onnx"], cache_dir=cache, progress=False)
    install_fake_tensorrt_gpu(monkeypatch, FakeGpu(multiprocessors=8))
    assert doctor(["--prune"]) == 0
    out = _sizeless(capsys.readouterr().out.splitlines())
    assert ("would remove timing-10.3.0-sm_87-16sm.cache, SIZE: a timing cache for sm_87 (16 SMs), which no GPU here "
            "is") in out, out


def test_an_entry_rebuilt_between_the_survey_and_the_removal_is_left(monkeypatch: pytest.MonkeyPatch,
                                                                     tiny_model_files: dict[str, Path],
                                                                     cache: Path) -> None:
    """A venv of the older TensorRT rebuilds its engine after --prune judged the old one: the new plan is not the one
    judged, so it stays."""
    from unetrt.backends.tensorrt import machine_gpus
    from unetrt.paths import file_sha256
    from unetrt.plan_prune import prune, survey

    install_fake_tensorrt_gpu(monkeypatch, version="10.3.0")
    plan = cached_plan(tiny_model_files["onnx"], cache_dir=cache, progress=False)
    install_fake_tensorrt_gpu(monkeypatch, version="10.4.0")
    found = survey(cache, "10.4.0", machine_gpus(), None)
    assert plan.name in [finding.name for finding in found.removable]
    plan.write_bytes(plan.read_bytes() + b"rebuilt")
    write_plan_metadata(plan, replace(read_plan_metadata(plan), plan_sha256=file_sha256(plan)))
    done = prune(found)
    assert [(finding.name, why) for finding, why in done.left] == [(plan.name, "it was rebuilt meanwhile")]
    assert plan.exists() and metadata_path(plan).exists()


def test_a_model_path_that_became_a_folder_is_no_reason_to_remove(monkeypatch: pytest.MonkeyPatch,
                                                                  tiny_model_files: dict[str, Path], cache: Path,
                                                                  tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """The model file an engine was built from is now a folder (an export unpacked in its place): like a model file
    that is gone, nothing is said of it, and the engine stays."""
    model = _model(tiny_model_files, tmp_path, "mine")
    install_fake_tensorrt_gpu(monkeypatch)
    plan = cached_plan(model, cache_dir=cache, progress=False)
    model.unlink()
    model.mkdir()
    assert doctor(["--prune", "--yes"]) == 0
    assert "nothing to remove; 1 engine that runs here stays" in capsys.readouterr().out
    assert plan.exists()


def test_prune_from_another_folder_keeps_the_engine_of_a_model_named_as_typed(
        monkeypatch: pytest.MonkeyPatch, tiny_model_files: dict[str, Path], cache: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Robot a's `model.onnx`, built from its folder, and the prune run from robot b's folder, which holds a
    `model.onnx` of its own: the cache recorded the path as typed and prune hashed b's file, so a's engine, which runs
    here, went as "built from an earlier version of model.onnx". Entries now record the absolute path; one recorded
    as typed (an older unetrt's) names no file prune can find, and stays."""
    for robot in ("a", "b"):
        (tmp_path / robot).mkdir()
        _model(tiny_model_files, tmp_path / robot, "model")
    (tmp_path / "b" / "model.onnx").write_bytes((tmp_path / "b" / "model.onnx").read_bytes() + b"\0")
    install_fake_tensorrt_gpu(monkeypatch)
    monkeypatch.chdir(tmp_path / "a")
    plan = cached_plan("model.onnx", cache_dir=cache, progress=False)
    assert read_plan_metadata(plan).source == str(tmp_path / "a" / "model.onnx")
    monkeypatch.chdir(tmp_path / "b")
    assert doctor(["--prune", "--yes"]) == 0
    assert "nothing to remove; 1 engine that runs here stays" in capsys.readouterr().out
    write_plan_metadata(plan, replace(read_plan_metadata(plan), source="model.onnx"))
    assert doctor(["--prune", "--yes"]) == 0
    assert "nothing to remove; 1 engine that runs here stays" in capsys.readouterr().out
    assert plan.exists()


def test_five_foreign_files_are_all_named(monkeypatch: pytest.MonkeyPatch, cache: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    install_fake_tensorrt_gpu(monkeypatch)
    cache.mkdir()
    names = [f"note{index}.txt" for index in range(5)]
    for name in names:
        (cache / name).write_text("mine")
    assert doctor(["--prune"]) == 0
    assert (f"left alone: 5 file(s) that are not the cache's own or not regular files ({', '.join(names)})\n"
            in capsys.readouterr().out)


def test_sizes_from_half_a_mib_are_in_mb_and_below_in_kb() -> None:
    from unetrt.plan_prune import Finding

    assert Finding("a.plan", (), 3 << 18, "why", True).describe() == "a.plan, 1 MB: why"
    assert Finding("t.cache", (), (1 << 19) - 1024, "why", True).describe() == "t.cache, 511 KB: why"


def test_prune_where_the_driver_sees_no_gpu_removes_nothing(monkeypatch: pytest.MonkeyPatch,
                                                            tiny_model_files: dict[str, Path], cache: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """TensorRT is installed and the driver starts but lists no GPU: every engine would read 'this machine has no
    GPU', so --prune cannot tell which run here and removes nothing."""
    install_fake_tensorrt_gpu(monkeypatch)
    plan = cached_plan(tiny_model_files["onnx"], cache_dir=cache, progress=False)
    install_fake_tensorrt_gpu(monkeypatch, FakeGpu(count=0))
    assert doctor(["--prune", "--yes"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot tell which do: no CUDA GPU is visible" in err
    assert plan.exists()
