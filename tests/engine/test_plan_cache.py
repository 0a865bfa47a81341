"""The engine cache (unetrt.plan_cache): key, folder, build once, load later, rebuild what cannot be trusted."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from fakes.cuda import FakeGpu
from fakes.tensorrt_builder import Builder
from plan_fixtures import builds, full_disk_under, install_fake_tensorrt_gpu

from unetrt.plan_cache import (
    ENGINE_CACHE_ENV,
    PlanKey,
    PlanNotCachedError,
    cache_usage,
    cache_write_problem,
    cached_plan,
    engine_cache_dir,
    entry_problem,
    look_up,
    plan_key,
)
from unetrt.plan_metadata import GpuIdentity, metadata_path, read_plan_metadata, write_plan_metadata

pytestmark = pytest.mark.gpu_contract


@pytest.fixture
def fake_trt(monkeypatch: pytest.MonkeyPatch) -> FakeGpu:
    return install_fake_tensorrt_gpu(monkeypatch)[1]


def test_cache_folder_follows_env_then_xdg_then_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(ENGINE_CACHE_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert engine_cache_dir() == tmp_path / "home" / ".cache" / "unetrt" / "engines"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # the XDG spec: relative paths are invalid
    assert engine_cache_dir() == tmp_path / "home" / ".cache" / "unetrt" / "engines"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert engine_cache_dir() == tmp_path / "xdg" / "unetrt" / "engines"
    monkeypatch.setenv(ENGINE_CACHE_ENV, str(tmp_path / "mine"))
    assert engine_cache_dir() == tmp_path / "mine"


def test_every_part_of_the_key_names_another_entry() -> None:
    key = PlanKey("camvid", "ab" * 32, "fp16", (256, 192), None, "10.3.0", GpuIdentity("Orin", (8, 7)))
    variants = [replace(key, source_sha256="cd" * 32), replace(key, precision="int8"),
                replace(key, working_size=(320, 240)), replace(key, dla_core=0),
                replace(key, tensorrt_version="10.3.1"), replace(key, gpu=GpuIdentity("Orin", (8, 6))),
                replace(key, gpu=GpuIdentity("Orin Nano", (8, 7))),
                replace(key, gpu=GpuIdentity("Orin", (8, 7), 8))]
    stems = {key.stem, *(v.stem for v in variants)}
    assert len(stems) == len(variants) + 1
    assert key.stem.startswith("camvid-fp16-") and key.stem == replace(key).stem


def test_first_use_builds_later_uses_load(fake_trt: FakeGpu, tiny_model_files: dict[str, Path],
                                          tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = cached_plan(tiny_model_files["onnx"], cache_dir=tmp_path)
    assert builds() == 1
    err = capsys.readouterr().err
    assert "building a TensorRT engine for tiny FP16" in err and "cached" in err
    assert plan.parent == tmp_path and plan.name.startswith("tiny-fp16-")
    assert cached_plan(tiny_model_files["onnx"], cache_dir=tmp_path) == plan
    assert cached_plan(tiny_model_files["onnx"], cache_dir=tmp_path, build=False) == plan
    assert builds() == 1 and capsys.readouterr().err == ""
    metadata = read_plan_metadata(plan)
    assert metadata.precision == "fp16" and metadata.gpu.name == fake_trt.name


def test_no_build_without_a_cached_engine_says_how(fake_trt: FakeGpu, tiny_model_files: dict[str, Path],
                                                   tmp_path: Path) -> None:
    with pytest.raises(PlanNotCachedError, match=r"no usable cached TensorRT engine for tiny FP16 .* --no-build"):
        cached_plan(tiny_model_files["onnx"], cache_dir=tmp_path, build=False)
    assert builds() == 0


@pytest.mark.parametrize("under", [False, True], ids=["the-cache-is-a-file", "a-parent-is-a-file"])
def test_an_unwritable_cache_builds_into_a_temporary_folder(under: bool, fake_trt: FakeGpu,
                                                           tiny_model_files: dict[str, Path], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A cache folder that cannot be made (here: a file stands where it or a parent folder should be, as a
    read-only file system refuses) still gets the first run its engine, and says that later starts build again
    and why: the file, where the reason read "File exists" or "Not a directory"."""
    blocker = tmp_path / "home"
    blocker.write_text("a file, not a folder")
    cache = blocker / ".cache" / "engines" if under else blocker
    plan = cached_plan(tiny_model_files["onnx"], cache_dir=cache)
    assert plan.is_file() and plan.parent != cache and builds() == 1
    err = capsys.readouterr().err
    assert f"cannot write the engine cache {cache} ({blocker} is a file, not a folder); " in err
    assert "set UNETRT_ENGINE_CACHE to a writable folder" in err
    assert read_plan_metadata(plan).plan_sha256 is not None
    assert cached_plan(tiny_model_files["onnx"], cache_dir=cache) != plan and builds() == 2


def test_a_disk_that_fills_up_during_the_write_keeps_the_build_for_this_run(
        fake_trt: FakeGpu, tiny_model_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Minutes of building on a Jetson whose SD card filled up are not thrown away: the plan goes to a folder of
    the process's own, in shared memory (the temporary folder is usually on the full disk), removed at exit."""
    from unetrt import plan_cache

    removed_at_exit: list[Path] = []
    monkeypatch.setattr(plan_cache, "atexit", SimpleNamespace(
        register=lambda remove, folder, **kwargs: removed_at_exit.append(folder)))
    with monkeypatch.context() as patch:
        full_disk_under(tmp_path, patch)
        plan = cached_plan(tiny_model_files["onnx"], cache_dir=tmp_path)
    try:
        assert plan.is_file() and not plan.is_relative_to(tmp_path) and builds() == 1
        assert removed_at_exit == [plan.parent]
        if Path("/dev/shm").is_dir():
            assert plan.parent.parent == Path("/dev/shm")
        assert read_plan_metadata(plan).plan_sha256 == hashlib.sha256(plan.read_bytes()).hexdigest()
        err = capsys.readouterr().err
        assert (f"the TensorRT engine was built but cannot be cached in {tmp_path} (No space left on device); this "
                f"run loads it from {plan.parent} and the next start builds it again: free space there or set "
                "UNETRT_ENGINE_CACHE to another folder") in err
        with pytest.raises(PlanNotCachedError):  # nothing usable was left in the cache: the next run builds
            cached_plan(tiny_model_files["onnx"], cache_dir=tmp_path, build=False)
    finally:
        shutil.rmtree(plan.parent)


def test_a_disk_full_everywhere_says_so(fake_trt: FakeGpu, tiny_model_files: dict[str, Path], tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from unetrt import plan_cache

    monkeypatch.setattr(plan_cache, "_private_folder_parents", lambda: [tmp_path / "tmp"])
    (tmp_path / "tmp").mkdir()
    full_disk_under(tmp_path, monkeypatch)
    with pytest.raises(ValueError, match=r"built but could not be written to .*No space left on device.*nor to a "
                                         r"temporary folder; free space there or set UNETRT_ENGINE_CACHE"):
        cached_plan(tiny_model_files["onnx"], cache_dir=tmp_path / "cache")
    with pytest.raises(PlanNotCachedError):
        cached_plan(tiny_model_files["onnx"], cache_dir=tmp_path / "cache", build=False)


def test_a_timing_cache_that_cannot_be_saved_keeps_the_cached_plan(
        fake_trt: FakeGpu, tiny_model_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import errno

    from unetrt import plan_build

    write = plan_build.replace_file

    def no_room_for_the_timing_cache(path: Path, data: bytes) -> None:
        if path.suffix != ".plan":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        write(path, data)

    with monkeypatch.context() as patch:
        patch.setattr(plan_build, "replace_file", no_room_for_the_timing_cache)
        plan = cached_plan(tiny_model_files["onnx"], cache_dir=tmp_path)
    assert plan.parent == tmp_path
    assert cached_plan(tiny_model_files["onnx"], cache_dir=tmp_path, build=False) == plan
    err = capsys.readouterr().err
    assert "cannot save the TensorRT timing cache" in err and "the next build times its layers again" in err
    assert f"cached {plan}" in err


def _truncate(plan: Path) -> None:
    plan.write_bytes(plan.read_bytes()[: plan.stat().st_size // 2])


def _garble_metadata(plan: Path) -> None:
    metadata_path(plan).write_text("{ not json")


def _drop_metadata(plan: Path) -> None:
    metadata_path(plan).unlink()


def _foreign_version(plan: Path) -> None:
    write_plan_metadata(plan, replace(read_plan_metadata(plan), tensorrt_version="10.2.0"))


def _foreign_gpu(plan: Path) -> None:
    metadata = read_plan_metadata(plan)
    write_plan_metadata(plan, replace(metadata, gpu=replace(metadata.gpu, compute_capability=(7, 2))))


def _foreign_precision(plan: Path) -> None:
    write_plan_metadata(plan, replace(read_plan_metadata(plan), precision="fp32"))


def _foreign_dla_core(plan: Path) -> None:
    write_plan_metadata(plan, replace(read_plan_metadata(plan), dla_core=0))


def _foreign_onnx(plan: Path) -> None:
    write_plan_metadata(plan, replace(read_plan_metadata(plan), source_sha256="0" * 64))


def _foreign_working_size(plan: Path) -> None:
    metadata = read_plan_metadata(plan)
    write_plan_metadata(plan, replace(metadata, info=replace(metadata.info, working_size=(320, 240))))


# An entry's name carries a digest of its key, but what its metadata says it was built with is checked too: each
# field of the key must be compared, or an entry whose metadata disagrees (copied, or written by another build under
# that name) would be loaded as this one.
@pytest.mark.parametrize("damage", [_truncate, _garble_metadata, _drop_metadata, _foreign_version, _foreign_gpu,
                                    _foreign_precision, _foreign_dla_core, _foreign_onnx, _foreign_working_size],
                         ids=["truncated-plan", "corrupt-metadata", "no-metadata", "other-tensorrt", "other-gpu",
                              "other-precision", "other-dla-core", "other-onnx", "other-working-size"])
def test_an_entry_that_cannot_be_trusted_is_rebuilt(damage: object, fake_trt: FakeGpu,
                                                    tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    plan = cached_plan(tiny_model_files["onnx"], cache_dir=tmp_path)
    good = plan.read_bytes()
    damage(plan)  # type: ignore[operator]
    with pytest.raises(PlanNotCachedError):
        cached_plan(tiny_model_files["onnx"], cache_dir=tmp_path, build=False)
    assert cached_plan(tiny_model_files["onnx"], cache_dir=tmp_path) == plan
    assert builds() == 2
    assert plan.read_bytes() == good and entry_problem(plan, plan_key(tiny_model_files["onnx"])) is None


def test_half_replaced_entry_is_detected(fake_trt: FakeGpu, tiny_model_files: dict[str, Path],
                                         tmp_path: Path) -> None:
    # A reader between the metadata's rename and the plan's sees new metadata beside the old plan.
    fp16 = cached_plan(tiny_model_files["onnx"], cache_dir=tmp_path)
    fp32 = cached_plan(tiny_model_files["onnx"], "fp32", cache_dir=tmp_path)
    fp16.write_bytes(fp32.read_bytes())
    assert entry_problem(fp16, plan_key(tiny_model_files["onnx"])) == (
        "its plan is truncated or replaced (checksum mismatch)")


def test_an_entry_rebuilt_since_it_was_refused_is_not_discarded(fake_trt: FakeGpu, tiny_model_files: dict[str, Path],
                                                                tmp_path: Path) -> None:
    """Two cameras' starts both find that TensorRT refuses the cached engine (bytes its checksum was written for,
    which TensorRT cannot load): the first discards it and builds it again; the second, judged before that rebuild,
    must discard only the engine it was refused, not the one the first just built (built a third time then, with
    the first camera's open finding no file)."""
    from unetrt.plan_cache import discard_entry

    plan = cached_plan(tiny_model_files["onnx"], cache_dir=tmp_path, progress=False)
    plan.write_bytes(b"not an engine TensorRT loads")
    refused = hashlib.sha256(plan.read_bytes()).hexdigest()
    write_plan_metadata(plan, replace(read_plan_metadata(plan), plan_sha256=refused))
    discard_entry(plan, refused)  # the first start
    assert not plan.exists() and not metadata_path(plan).exists()
    assert cached_plan(tiny_model_files["onnx"], cache_dir=tmp_path, progress=False) == plan and builds() == 2
    rebuilt = plan.read_bytes()
    discard_entry(plan, refused)  # the second start
    assert plan.read_bytes() == rebuilt and entry_problem(plan, plan_key(tiny_model_files["onnx"])) is None


def test_a_new_tensorrt_builds_its_own_entry(monkeypatch: pytest.MonkeyPatch, tiny_model_files: dict[str, Path],
                                             tmp_path: Path) -> None:
    module, _ = install_fake_tensorrt_gpu(monkeypatch, version="10.3.0")
    old = cached_plan(tiny_model_files["onnx"], cache_dir=tmp_path)
    module.__version__ = "10.4.0"  # type: ignore[attr-defined]
    new = cached_plan(tiny_model_files["onnx"], cache_dir=tmp_path)
    assert new != old and builds() == 2
    assert read_plan_metadata(new).tensorrt_version == "10.4.0"


def test_working_size_and_precision_are_part_of_the_entry(fake_trt: FakeGpu, tiny_model_files: dict[str, Path],
                                                          tmp_path: Path) -> None:
    small = cached_plan(tiny_model_files["onnx"], working_size=(64, 48), cache_dir=tmp_path)
    large = cached_plan(tiny_model_files["onnx"], working_size=(128, 96), cache_dir=tmp_path)
    fp32 = cached_plan(tiny_model_files["onnx"], "fp32", working_size=(64, 48), cache_dir=tmp_path)
    assert len({small, large, fp32}) == 3 and builds() == 3
    assert read_plan_metadata(small).profile.max[2:] == (48, 64)
    assert read_plan_metadata(large).profile.max[2:] == (96, 128)
    assert read_plan_metadata(fp32).precision == "fp32"


def test_a_dla_entry_is_its_own_and_the_next_start_loads_it(fake_trt: FakeGpu, tiny_model_files: dict[str, Path],
                                                            tmp_path: Path) -> None:
    """The DLA core is part of the key: a DLA engine and the GPU engine of one model are two entries, and each is
    loaded, not built again (minutes on a Jetson), by the next start that asks for it."""
    dla = cached_plan(tiny_model_files["onnx"], dla_core=0, cache_dir=tmp_path)
    gpu_only = cached_plan(tiny_model_files["onnx"], cache_dir=tmp_path)
    assert dla != gpu_only and builds() == 2
    assert cached_plan(tiny_model_files["onnx"], dla_core=0, cache_dir=tmp_path, build=False) == dla
    assert read_plan_metadata(dla).dla_core == 0 and read_plan_metadata(gpu_only).dla_core is None


def test_precision_must_fit_the_graph(fake_trt: FakeGpu, tiny_model_files: dict[str, Path],
                                      tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="precision 'int8' needs a QDQ model"):
        cached_plan(tiny_model_files["onnx"], "int8", cache_dir=tmp_path)
    assert builds() == 0


def test_qdq_model_builds_int8(fake_trt: FakeGpu, tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    from unetrt.export.quantize import quantize_onnx

    batches = [np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)]
    qdq = quantize_onnx(tiny_model_files["onnx"], tmp_path / "tiny.int8.onnx", batches, "minmax", "tensorrt")
    plan = cached_plan(qdq, cache_dir=tmp_path / "cache")
    assert plan.name.startswith("tiny-int8-") and read_plan_metadata(plan).precision == "int8"


def test_an_entry_another_opener_discards_before_the_open_is_rebuilt(
        fake_trt: FakeGpu, tiny_model_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Between the cache's check and TensorRT's open, another thread or process that TensorRT refused the entry
    discards it to rebuild: this open waits for that build instead of failing with FileNotFoundError."""
    from unetrt import plan_cache

    cached_plan(tiny_model_files["onnx"], cache_dir=tmp_path, progress=False)
    check = plan_cache.cached_plan
    checked: list[Path] = []

    def discarded_after_the_check(*args: object, **kwargs: object) -> Path:
        plan = check(*args, **kwargs)  # type: ignore[arg-type]
        if not checked:
            plan_cache.discard_entry(plan, read_plan_metadata(plan).plan_sha256)
        checked.append(plan)
        return plan

    monkeypatch.setattr(plan_cache, "cached_plan", discarded_after_the_check)
    with plan_cache.open_cached_engine(tiny_model_files["onnx"], cache_dir=tmp_path, progress=False) as backend:
        assert backend.name == "tensorrt"
    assert builds() == 2 and len(checked) == 2


def test_concurrent_first_runs_build_once(fake_trt: FakeGpu, tiny_model_files: dict[str, Path],
                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    start = threading.Barrier(4)
    build = Builder.build_serialized_network
    building = threading.Event()

    def slow_build(self: Builder, network: object, config: object) -> object:
        building.set()
        # Hold the build until every other thread has found the entry missing and asked for the lock.
        threading.Event().wait(0.3)
        return build(self, network, config)  # type: ignore[arg-type]

    monkeypatch.setattr(Builder, "build_serialized_network", slow_build)
    results: list[Path] = []

    def first_run() -> None:
        start.wait()
        results.append(cached_plan(tiny_model_files["onnx"], cache_dir=tmp_path, progress=False))

    threads = [threading.Thread(target=first_run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and len(set(results)) == 1
    assert builds() == 1 and building.is_set()
    assert entry_problem(results[0], plan_key(tiny_model_files["onnx"])) is None


CHILD = """
import sys
sys.path[:0] = {paths!r}
import pytest
from plan_fixtures import builds, install_fake_tensorrt_gpu
from unetrt.plan_cache import cached_plan
install_fake_tensorrt_gpu(pytest.MonkeyPatch())
print(cached_plan({onnx!r}, cache_dir={cache!r}, progress=False), builds())
"""


def test_two_processes_share_one_build(tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    tests = Path(__file__).resolve().parents[1]
    script = CHILD.format(paths=[str(tests), str(tests / "engine")], onnx=str(tiny_model_files["onnx"]),
                          cache=str(tmp_path))
    children = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for _ in range(2)]
    outputs = [child.communicate(timeout=120) for child in children]
    assert all(child.returncode == 0 for child in children), [err for _, err in outputs]
    plans = {out.split()[0] for out, _ in outputs}
    assert len(plans) == 1
    assert sum(int(out.split()[1]) for out, _ in outputs) == 1, "exactly one process built the engine"
    plan = Path(plans.pop())
    metadata = json.loads(metadata_path(plan).read_text())
    assert metadata["plan_sha256"] and plan.stat().st_size > 0
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".cache", ".json", ".lock", ".plan"]


def test_a_killed_build_leaves_no_temporaries_behind_the_next(fake_trt: FakeGpu, tiny_model_files: dict[str, Path],
                                                              tmp_path: Path) -> None:
    stem = plan_key(tiny_model_files["onnx"]).stem
    killed = [tmp_path / f".{stem}.plan.4242.1.tmp", tmp_path / f".{stem}.plan.json.4242.1.tmp"]
    other = tmp_path / ".other-fp16-0123456789abcdef.plan.4242.1.tmp"
    for path in (*killed, other):
        path.write_bytes(b"half a plan")
    cached_plan(tiny_model_files["onnx"], cache_dir=tmp_path)
    assert not any(path.exists() for path in killed) and other.exists()


def test_a_start_that_waits_for_another_build_says_so(fake_trt: FakeGpu, tiny_model_files: dict[str, Path],
                                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second program started during a Jetson's minutes-long first build waits for it: one line says why."""
    import fcntl

    import unetrt.plan_cache as plan_cache

    key = plan_key(tiny_model_files["onnx"])
    with open(tmp_path / f"{key.stem}.lock", "a+b") as holder:  # another open file: flock sees another process
        fcntl.flock(holder.fileno(), fcntl.LOCK_EX)
        said: list[str] = []

        def announce(text: str) -> None:
            said.append(text)
            if text.startswith("another process (or thread)"):
                fcntl.flock(holder.fileno(), fcntl.LOCK_UN)  # the other build ends

        monkeypatch.setattr(plan_cache, "_announce", announce)
        # Should the wait go unannounced, the other build still ends (and the assertions below fail).
        timer = threading.Timer(10, fcntl.flock, (holder.fileno(), fcntl.LOCK_UN))
        timer.start()
        try:
            plan = cached_plan(tiny_model_files["onnx"], cache_dir=tmp_path)
        finally:
            timer.cancel()
    assert said[0] == (f"another process (or thread) is building the TensorRT engine for {key.describe()}; "
                       "waiting for it to finish (minutes on a Jetson)")
    assert said[1].startswith("building a TensorRT engine") and entry_problem(plan, key) is None


def test_a_start_that_waited_for_a_failed_build_gives_up_with_its_reason(
        fake_trt: FakeGpu, tiny_model_files: dict[str, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Three cameras' processes on an Orin Nano without memory for the build: the two that waited for the first
    build each built again after it failed, minutes each, to fail alike. A start that did not wait tries again."""
    import fcntl

    import unetrt.plan_cache as plan_cache

    build = Builder.build_serialized_network
    monkeypatch.setattr(Builder, "build_serialized_network", lambda self, network, config: None)
    with pytest.raises(ValueError, match="TensorRT failed to build an engine") as first:
        cached_plan(tiny_model_files["onnx"], cache_dir=tmp_path, progress=False)
    assert builds() == 0
    key = plan_key(tiny_model_files["onnx"])
    with open(tmp_path / f"{key.stem}.lock", "a+b") as holder:  # the failed build still holds the entry
        fcntl.flock(holder.fileno(), fcntl.LOCK_EX)

        def announce(text: str) -> None:
            if text.startswith("another process (or thread)"):
                fcntl.flock(holder.fileno(), fcntl.LOCK_UN)  # the failed build ends

        monkeypatch.setattr(plan_cache, "_announce", announce)
        timer = threading.Timer(10, fcntl.flock, (holder.fileno(), fcntl.LOCK_UN))
        timer.start()
        tried: list[object] = []
        monkeypatch.setattr(Builder, "build_serialized_network", lambda self, network, config: tried.append(1))
        try:
            with pytest.raises(ValueError) as waited:
                cached_plan(tiny_model_files["onnx"], cache_dir=tmp_path)
        finally:
            timer.cancel()
    assert str(waited.value) == (f"the TensorRT engine build for {key.describe()} that this start waited for "
                                 f"failed: {first.value}")
    assert not tried
    monkeypatch.setattr(Builder, "build_serialized_network", build)
    plan = cached_plan(tiny_model_files["onnx"], cache_dir=tmp_path, progress=False)
    assert builds() == 1 and entry_problem(plan, key) is None
    assert not (tmp_path / f"{key.stem}.failed").exists()


def test_cache_usage_counts_plans_and_mebibytes(tmp_path: Path) -> None:
    """The doctor's cache line: engines are the .plan files, sizes are in MiB (as the cache's other lines count
    them); a cache whose plans were removed but whose timing caches and metadata stay is '0 engines', not empty."""
    assert cache_usage(tmp_path) == "empty"
    with open(tmp_path / "camvid-fp16-0123.plan", "wb") as plan:
        plan.truncate(20 << 20)  # 20 MiB: 21 MB in powers of ten
    (tmp_path / "camvid-fp16-0123.plan.json").write_text("{}")
    assert cache_usage(tmp_path) == "1 engine, 20 MB"
    (tmp_path / "camvid-fp16-0123.plan").unlink()
    (tmp_path / "timing-10.3.0-sm87.cache").write_bytes(b"t" * 1000)
    assert cache_usage(tmp_path) == "0 engines, 0 MB"


def test_an_engine_unusable_for_two_reasons_names_both(monkeypatch: pytest.MonkeyPatch,
                                                       tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    """An SD card moved to an Orin NX that also has a newer JetPack: the entry's note gives both reasons, separated
    by commas (semicolons separate the entries)."""
    _, gpu = install_fake_tensorrt_gpu(monkeypatch, version="10.3.0")
    plan = cached_plan(tiny_model_files["onnx"], cache_dir=tmp_path)
    install_fake_tensorrt_gpu(monkeypatch, FakeGpu(multiprocessors=8), version="10.4.0")
    note = look_up(plan_key(tiny_model_files["onnx"]), tiny_model_files["onnx"], cache_dir=tmp_path).note()
    assert note.startswith(f"none that runs here is cached ({plan.name}, ")
    assert (f": built by TensorRT 10.3.0, this is 10.4.0, built for {gpu.name} (sm_87, 16 SMs), this is {gpu.name} "
            f"(sm_87, 8 SMs); kept beside the new one: rm {plan} {plan}.json frees it)") in note, note


def test_half_an_entry_is_named_not_taken_for_none(fake_trt: FakeGpu, tiny_model_files: dict[str, Path],
                                                   tmp_path: Path) -> None:
    """A plan whose metadata was removed (a hand clean-up that stopped half way): the doctor's note names that entry
    and why it cannot be used, not 'none is cached' (which made its next start the 'first')."""
    plan = cached_plan(tiny_model_files["onnx"], cache_dir=tmp_path)
    metadata_path(plan).unlink()
    lookup = look_up(plan_key(tiny_model_files["onnx"]), tiny_model_files["onnx"], cache_dir=tmp_path)
    assert not lookup.missing and not lookup.empty
    assert lookup.note() == (f"the cached {plan.name} cannot be used (its metadata is missing); the next build "
                             "replaces it")


def test_a_cache_that_cannot_be_locked_is_announced_once(fake_trt: FakeGpu, tiny_model_files: dict[str, Path],
                                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """An NFS cache without its lock service: each build finds its entry unlockable, and the line saying so and what
    it costs comes once per folder, not once per engine."""
    import errno
    import fcntl

    real = fcntl.flock

    def no_lock_service(descriptor: int, operation: int) -> None:
        if Path(f"/proc/self/fd/{descriptor}").resolve().is_relative_to(tmp_path):
            raise OSError(errno.ENOLCK, "No locks available")
        real(descriptor, operation)

    monkeypatch.setattr(fcntl, "flock", no_lock_service)
    for precision in ("fp16", "fp32"):
        cached_plan(tiny_model_files["onnx"], precision, cache_dir=tmp_path, progress=False)
    assert builds() == 2
    assert capsys.readouterr().err.count("cannot lock files in the engine cache") == 1


def test_no_build_names_the_damage_of_its_own_entry_before_an_older_one(monkeypatch: pytest.MonkeyPatch,
                                                                        tiny_model_files: dict[str, Path],
                                                                        tmp_path: Path) -> None:
    """Two venvs, TensorRT 10.4.0 and 10.3.0, share the cache, and 10.4.0's plan was cut short: --no-build's error
    gives that entry's own problem, not the older TensorRT's engine beside it."""
    install_fake_tensorrt_gpu(monkeypatch, version="10.4.0")
    plan = cached_plan(tiny_model_files["onnx"], cache_dir=tmp_path)
    install_fake_tensorrt_gpu(monkeypatch, version="10.3.0")
    older = cached_plan(tiny_model_files["onnx"], cache_dir=tmp_path)
    install_fake_tensorrt_gpu(monkeypatch, version="10.4.0")
    plan.write_bytes(plan.read_bytes()[:100])
    assert older.exists() and older != plan
    with pytest.raises(PlanNotCachedError, match=r"\(its plan is truncated or replaced \(checksum mismatch\)\); "):
        cached_plan(tiny_model_files["onnx"], cache_dir=tmp_path, build=False)


def test_an_older_tensorrts_engine_of_the_other_gpu_is_not_that_gpus(monkeypatch: pytest.MonkeyPatch,
                                                                      tiny_model_files: dict[str, Path],
                                                                      tmp_path: Path) -> None:
    """A desktop with two kinds of GPU after a TensorRT upgrade: GPU 1's engine of the older TensorRT runs on no GPU,
    so device 0's note offers its rm, where GPU 1's engine of this TensorRT is that GPU's, kept."""
    from unetrt.backends.tensorrt import machine_gpus

    two = {"count": 2, "integrated": False, "kinds": {1: ("NVIDIA RTX A4000", (8, 6), 48)}}
    install_fake_tensorrt_gpu(monkeypatch, FakeGpu(name="NVIDIA GeForce RTX 4090", compute_capability=(8, 9),
                                                   multiprocessors=128, **two), version="10.3.0")
    older = cached_plan(tiny_model_files["onnx"], device_index=1, cache_dir=tmp_path)
    install_fake_tensorrt_gpu(monkeypatch, FakeGpu(name="NVIDIA GeForce RTX 4090", compute_capability=(8, 9),
                                                   multiprocessors=128, **two), version="10.4.0")
    lookup = look_up(plan_key(tiny_model_files["onnx"]), tiny_model_files["onnx"], cache_dir=tmp_path,
                     gpus=machine_gpus())
    assert [(entry.plan, entry.other_gpu) for entry in lookup.stale] == [(older, None)]
    assert f"; kept beside the new one: rm {older} {older}.json frees it)" in lookup.note()


def test_why_a_cache_cannot_be_written_is_told_apart(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The doctor's reason for a cache it cannot write: a read-only file system (overlayroot on a kiosk Jetson) only
    where statvfs says so (a nosuid mount, as /home often is, is no such thing), a folder that can be written but not
    entered, the cache itself a file, a file above it; nothing where it can be written."""
    import os

    from unetrt import plan_cache

    folder = tmp_path / "ro" / "engines"
    (tmp_path / "ro").mkdir()
    assert cache_write_problem(folder) is None
    denied = {"mode": os.W_OK | os.X_OK}
    monkeypatch.setattr(plan_cache.os, "access", lambda path, mode, **_: Path(path) != tmp_path / "ro"
                        or not mode & denied["mode"])
    for flags, reason in ((os.ST_RDONLY, "Read-only file system"), (os.ST_NOSUID, "Permission denied")):
        monkeypatch.setattr(plan_cache.os, "statvfs", lambda path, flags=flags: SimpleNamespace(f_flag=flags))
        assert cache_write_problem(folder) == reason
    denied["mode"] = os.X_OK  # drwxrw-rw-: writable, but nothing can be made inside
    assert cache_write_problem(folder) == "Permission denied"
    monkeypatch.undo()
    (tmp_path / "file").write_text("not a folder")
    assert cache_write_problem(tmp_path / "file") == f"{tmp_path / 'file'} is a file, not a folder"
    assert cache_write_problem(tmp_path / "file" / "engines") == f"{tmp_path / 'file'} is a file, not a folder"


def _retrain(model: Path, note: str) -> None:
    """The model trained again and written over itself (other bytes, same network shape)."""
    import onnx

    graph = onnx.load(str(model))
    graph.doc_string = note
    onnx.save(graph, str(model))


def test_a_model_named_as_typed_and_retrained_in_place_replaces_its_engine(
        fake_trt: FakeGpu, tiny_model_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`unet-stream --model model.onnx` from the model's folder, retrained and copied over: the entry records the
    model's absolute path, and the doctor's look-up, --no-build's error and the next build each compare it with the
    name as typed made absolute, so all three call the old engine an earlier version of model.onnx, and the build
    removes it."""
    folder, cache = tmp_path / "robot", tmp_path / "cache"
    folder.mkdir()
    shutil.copy(tiny_model_files["onnx"], folder / "model.onnx")
    monkeypatch.chdir(folder)
    old = cached_plan("model.onnx", cache_dir=cache, progress=False)
    _retrain(folder / "model.onnx", "retrained")
    lookup = look_up(plan_key("model.onnx"), "model.onnx", cache_dir=cache)
    assert [(entry.plan, entry.replaced) for entry in lookup.stale] == [(old, True)]
    assert "built from an earlier version of model.onnx; the next build replaces it" in lookup.note()
    with pytest.raises(PlanNotCachedError, match=r"\(the cached engine was built from an earlier version of "
                                                 r"model\.onnx\); run once without --no-build"):
        cached_plan("model.onnx", cache_dir=cache, build=False)
    capsys.readouterr()
    new = cached_plan("model.onnx", cache_dir=cache)
    err = capsys.readouterr().err
    assert "(the cached engine was built from an earlier version of model.onnx)" in err
    assert "removed 1 cached engine(s) of model" in err and not old.exists() and new.exists()


def test_a_model_behind_a_link_moved_to_its_retrained_file_replaces_its_engine(
        fake_trt: FakeGpu, tiny_model_files: dict[str, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A service's `--model current.onnx`, a symbolic link a deploy moves from v1.onnx to the retrained v2.onnx: the
    cache records the path the service names (links kept, as model_source says), so v2's engine replaces v1's; the
    link's target recorded instead would keep every version's engine, tens of MB each, on the Jetson's disk."""
    for version in ("v1", "v2"):
        shutil.copy(tiny_model_files["onnx"], tmp_path / f"{version}.onnx")
    _retrain(tmp_path / "v2.onnx", "v2")
    link = tmp_path / "current.onnx"
    link.symlink_to(tmp_path / "v1.onnx")
    old = cached_plan(link, cache_dir=tmp_path / "cache", progress=False)
    link.unlink()
    link.symlink_to(tmp_path / "v2.onnx")
    capsys.readouterr()
    cached_plan(link, cache_dir=tmp_path / "cache")
    assert "(the cached engine was built from an earlier version of current.onnx)" in capsys.readouterr().err
    assert not old.exists()


@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_a_qdq_model_at_a_float_precision_is_refused_naming_int8(precision: str, fake_trt: FakeGpu,
                                                                 tmp_path: Path) -> None:
    """`Segmenter('mine.int8.onnx', precision='fp16')`: a QDQ model's engine is built at INT8, its scales being in
    the graph; at FP16 or FP32 the line names the FP32 model or precision 'int8', and nothing is built."""
    from unetrt.bundled import MODELS_DIR

    with pytest.raises(ValueError, match=rf"^precision '{precision}' needs the FP32 model \(this one is QDQ INT8: "
                                         r"use precision 'int8'\)"):
        cached_plan(MODELS_DIR / "camvid.int8.tensorrt.onnx", precision, cache_dir=tmp_path)
    assert builds() == 0


def test_a_qdq_model_in_the_cpu_layout_is_refused_before_the_build_line_at_the_default_precision(
        fake_trt: FakeGpu, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`cached_plan('mine.int8.onnx')` at its default precision ('auto': INT8 for a QDQ model) of a file in the CPU
    layout (uint8 with zero points), which TensorRT refuses: one line naming --int8-target tensorrt, before the
    build line's "takes minutes", and nothing built."""
    from unetrt.bundled import MODELS_DIR

    with pytest.raises(ValueError, match="--int8-target tensorrt"):
        cached_plan(MODELS_DIR / "camvid.int8.onnx", cache_dir=tmp_path)
    assert "building" not in capsys.readouterr().err and builds() == 0
