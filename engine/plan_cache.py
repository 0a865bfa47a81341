"""The engine cache: a TensorRT plan built from an ONNX model on its first use and loaded on later starts.

As jetson-inference's segNet does, ``Segmenter("camvid")`` on a machine with TensorRT and a GPU builds an engine
from the ONNX model the first time (minutes on a Jetson, with a progress line), and every later start loads it
(a second or so). Entries live in a user cache folder (:func:`engine_cache_dir`: ``$UNETRT_ENGINE_CACHE``, else
``$XDG_CACHE_HOME/unetrt/engines``, else ``~/.cache/unetrt/engines``), named by a key of everything that makes
a plan valid (:class:`PlanKey`): the TensorRT version, the GPU and its compute capability, the precision, the
working size, the DLA core and the ONNX file's SHA-256.

An entry is trusted only when its metadata matches the key and the plan's bytes match the SHA-256 recorded in
the metadata; anything else (a truncated plan, a plan of another TensorRT, metadata of another model, a plan
TensorRT cannot deserialise) is rebuilt. Concurrent first runs are safe: the builder holds a lock file per entry
and writes the metadata and then the plan, each to a temporary name renamed into place
(:func:`unetrt.plan_build.write_plan`); a reader that sees a half-replaced entry finds the hashes disagree and
waits for the lock.

Needs TensorRT, pycuda and onnx (to build), never torch.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from .backends.tensorrt import gpu_identity, parse_device, require_tensorrt, tensorrt_release
from .build_watch import check_before_build, tell_note
from .cli import format_size
from .cuda import GpuResourceError, require_pycuda
from .model_file import read_model_file
from .paths import file_sha256
from .plan_build import (
    BuildCancelledError,
    BuildOptions,
    BuiltPlan,
    asymmetric_quantizers,
    cancellable,
    check_int8_request,
    has_qdq,
    int8_source_advice,
    load_onnx,
    write_plan,
)
from .plan_metadata import GpuIdentity, PlanMetadata, metadata_path, read_plan_metadata

if TYPE_CHECKING:
    from .backends.tensorrt import TensorRTBackend

ENGINE_CACHE_ENV = "UNETRT_ENGINE_CACHE"
# 2: the GPU's multiprocessor count joined the key (every Orin module is "Orin", sm_87). 3: FP16 entries of an FP32
# graph that stores its weights as float16 (the bundled models) had been built in FP32, and DLA entries with a range
# of shapes, which put every layer on the GPU: they are built again.
KEY_VERSION = 3
BUILD_PRECISIONS = ("auto", "fp32", "fp16", "int8")


class PlanNotCachedError(LookupError, ValueError):
    """No usable cached engine, and building was not allowed (``build=False``, ``--no-build``).

    A ValueError too, so that a command run with ``--backend tensorrt --no-build`` (no fallback) reports it as a
    user's error, in one line naming the build, as it reports the other reasons a model cannot be opened."""


class NoCacheFolderError(ValueError):
    """No engine cache folder can be named: no home directory (``HOME`` unset and no passwd entry for this user, as
    in a container started with a numeric user id) and no ``$UNETRT_ENGINE_CACHE``."""


def engine_cache_dir() -> Path:
    """The folder of cached engines: ``$UNETRT_ENGINE_CACHE``, else ``$XDG_CACHE_HOME/unetrt/engines``, else
    ``~/.cache/unetrt/engines`` (the XDG base-directory default).

    Raises:
        NoCacheFolderError: when the folder depends on a home directory this process has none of.

    Example:
        >>> engine_cache_dir().name  # doctest: +SKIP
        'engines'
    """
    override = os.environ.get(ENGINE_CACHE_ENV)
    base = os.environ.get("XDG_CACHE_HOME")
    try:
        if override:
            return Path(override).expanduser()
        root = Path(base).expanduser() if base and Path(base).is_absolute() else Path.home() / ".cache"
    except RuntimeError as exc:  # pathlib: "Could not determine home directory."
        raise NoCacheFolderError(f"no folder for the engine cache: this process has no home directory (HOME is "
                                 f"not set and user {os.getuid()} has none); set {ENGINE_CACHE_ENV} to a writable "
                                 "folder") from exc
    return root / "unetrt" / "engines"


@dataclass(frozen=True)
class PlanKey:
    """Everything a cached plan must have been built with to be used here.

    Attributes:
        model_name: the ONNX file's stem, for a readable file name.
        source_sha256: SHA-256 of the ONNX file.
        precision: 'fp32', 'fp16' or 'int8'.
        working_size: (width, height) the profile is fixed at (the model's own unless another is asked), None:
            a model without one.
        dla_core: the DLA core, None: the GPU alone.
        tensorrt_version: ``tensorrt.__version__``.
        gpu: the GPU's name and compute capability.
    """

    model_name: str
    source_sha256: str
    precision: str
    working_size: tuple[int, int] | None
    dla_core: int | None
    tensorrt_version: str
    gpu: GpuIdentity

    @property
    def stem(self) -> str:
        """The entry's file stem: model, precision and the key's digest, e.g. ``camvid-fp16-1f0c...``."""
        text = json.dumps({"key_version": KEY_VERSION, **asdict(self)}, sort_keys=True)
        return f"{self.model_name}-{self.precision}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"

    def describe(self) -> str:
        """'camvid FP16 at 256x192 for Orin (sm_87), TensorRT 10.3.0'."""
        size = "" if self.working_size is None else f" at {format_size(self.working_size)}"
        dla = "" if self.dla_core is None else f" on DLA core {self.dla_core}"
        return (f"{self.model_name} {self.precision.upper()}{size}{dla} for {self.gpu.describe()}, "
                f"TensorRT {self.tensorrt_version}")

    def mismatch(self, metadata: PlanMetadata) -> str | None:
        """What in a plan's metadata disagrees with this key (None: nothing)."""
        working_size = metadata.info.working_size
        pairs = {
            "TensorRT version": (metadata.tensorrt_version, self.tensorrt_version),
            "GPU": (metadata.gpu, self.gpu),
            "precision": (metadata.precision, self.precision),
            "DLA core": (metadata.dla_core, self.dla_core),
            "ONNX file": (metadata.source_sha256, self.source_sha256),
            "working size": (working_size, self.working_size),
        }
        wrong = [name for name, (found, wanted) in pairs.items() if found != wanted]
        return f"its {', '.join(wrong)} differ" if wrong else None


def _timing_cache_name(key: PlanKey) -> str:
    """'timing-10.3.0-sm_87-16sm.cache': TensorRT refuses a timing cache of another device, and Orin modules
    differ only in their multiprocessor count."""
    count = "" if key.gpu.multiprocessors is None else f"-{key.gpu.multiprocessors}sm"
    return f"timing-{key.tensorrt_version}-{key.gpu.sm}{count}.cache"


def resolve_build_precision(precision: str, quantized: bool, onnx_path: str | Path) -> str:
    """The precision a plan is built at: 'auto' is INT8 for a QDQ graph and FP16 otherwise.

    Raises:
        ValueError: on an unknown precision, or one the graph cannot be built at.

    Example:
        >>> resolve_build_precision("auto", False, "camvid.onnx")
        'fp16'
    """
    if precision not in BUILD_PRECISIONS:
        raise ValueError(f"a TensorRT engine is built at {', '.join(BUILD_PRECISIONS)}, not {precision!r}")
    if precision == "auto":
        return "int8" if quantized else "fp16"
    if precision == "int8" and not quantized:
        raise ValueError(f"precision 'int8' needs a QDQ model, the calibrated INT8 model TensorRT builds from, and "
                         f"{str(onnx_path)!r} is a float model, which TensorRT does not calibrate here: "
                         f"{int8_source_advice(onnx_path)}")
    if quantized and precision != "int8":
        raise ValueError(f"precision {precision!r} needs the FP32 model (this one is QDQ INT8: use precision "
                         f"'int8'); got {str(onnx_path)!r}")
    return precision


def plan_key(onnx_path: str | Path, precision: str = "auto", working_size: tuple[int, int] | None = None,
             dla_core: int | None = None, device_index: int = 0) -> PlanKey:
    """The cache key of an ONNX model built here at a precision and working size.

    Raises:
        ImportError: when TensorRT, pycuda or onnx is missing.
        FileNotFoundError: when the ONNX file does not exist.
        ValueError: on a precision the graph cannot be built at (a QDQ graph in the CPU layout at any), or no such
            CUDA device.
    """
    require_tensorrt()
    require_pycuda()
    import tensorrt as trt

    path = Path(onnx_path)
    model = load_onnx(path)
    if working_size is None:
        working_size = read_model_file(path).info.working_size
    quantized = has_qdq(model)
    resolved = resolve_build_precision(precision, quantized, path)
    if quantized:
        # Refused here, before the build line's "takes minutes" and before the doctor names TensorRT as what a
        # stream runs once built: the build would refuse the CPU layout in a second, every time.
        check_int8_request(BuildOptions(int8=True), quantized, path, asymmetric_quantizers(model))
    return PlanKey(
        model_name=path.name.split(".")[0],
        source_sha256=file_sha256(path),
        precision=resolved,
        working_size=None if working_size is None else (int(working_size[0]), int(working_size[1])),
        dla_core=dla_core,
        tensorrt_version=str(trt.__version__),
        gpu=gpu_identity(device_index),
    )


def _entry_missing(plan_path: Path) -> bool:
    """Whether no part of the entry at ``plan_path`` exists (neither the plan nor its metadata)."""
    return not plan_path.exists() and not metadata_path(plan_path).is_file()


def entry_problem(plan_path: Path, key: PlanKey) -> str | None:
    """Why the cache entry at ``plan_path`` cannot be used for ``key`` (None: it can).

    Checks, without TensorRT: the metadata exists, parses and matches the key; the plan exists and its bytes
    hash to the metadata's ``plan_sha256`` (a truncated or half-replaced plan does not).
    """
    if not metadata_path(plan_path).is_file():
        return "no engine is cached" if not plan_path.exists() else "its metadata is missing"
    try:
        metadata = read_plan_metadata(plan_path)
    except (OSError, ValueError) as exc:
        return f"its metadata is unreadable ({exc})"
    mismatch = key.mismatch(metadata)
    if mismatch is not None:
        return mismatch
    if not plan_path.is_file():
        return "its plan is missing"
    if metadata.plan_sha256 is None or file_sha256(plan_path) != metadata.plan_sha256:
        return "its plan is truncated or replaced (checksum mismatch)"
    return None


@contextmanager
def _entry_lock(lock_path: Path, holder_note: str | None) -> Iterator[bool]:
    """Hold an exclusive lock on ``lock_path`` (flock: released by the OS if the process dies); yields whether
    another holder had to be waited for.

    When another process holds it (it is building this entry: minutes on a Jetson), ``holder_note`` is announced
    first, so that a second program started meanwhile says why it waits; Ctrl-C ends the wait.
    """
    import fcntl

    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+b") as handle:
        waited = False
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if holder_note is not None:
                _announce(holder_note)
            _wait_for_lock(handle.fileno())
            waited = True
        except OSError as exc:
            # ENOLCK ("No locks available"): an NFS home whose server's lock manager does not answer (NFS v3 locks
            # go through lockd and rpc.statd; Linux's flock(2) emulates flock locks on NFS with them). The entry's
            # files are still each written whole and checked by their hashes: without the lock, two programs
            # starting at once may both build it, where the first start ended in an OSError traceback.
            _announce_unlocked(lock_path.parent, exc)
            yield False
            return
        try:
            yield waited
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


_UNLOCKED_FOLDERS: set[Path] = set()  # the cache folders whose unlocked builds were announced


def _announce_unlocked(folder: Path, error: OSError) -> None:
    """Say once per folder that its entries cannot be locked, and what that costs."""
    if folder in _UNLOCKED_FOLDERS:
        return
    _UNLOCKED_FOLDERS.add(folder)
    _announce(f"cannot lock files in the engine cache {folder} ({error.strerror or error}: a network file system "
              "without its lock service?); engines are still cached, but two programs starting at once may each "
              f"build one: set {ENGINE_CACHE_ENV} to a local folder to avoid that")


# How often a start waiting for another's build tries the entry's lock again.
LOCK_POLL_S = 0.1


def _wait_for_lock(descriptor: int) -> None:
    """Take the exclusive flock another holder has, trying again every :data:`LOCK_POLL_S`, so that
    :func:`~unetrt.plan_build.cancel_builds` ends the wait as it ends a build: a thread blocked in flock wakes only
    when the holder lets go, and a waiter that took the lock from a cancelled build began a build of its own.

    Raises:
        BuildCancelledError: when cancel_builds was called meanwhile.
    """
    import fcntl

    with cancellable() as cancel:
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
            if cancel.wait(LOCK_POLL_S):
                raise BuildCancelledError("the wait for another TensorRT engine build of this engine was stopped "
                                          "(unetrt.cancel_builds); nothing was built")


def _announce(text: str) -> None:
    print(f"unetrt: {text}", file=sys.stderr, flush=True)
    tell_note(text)  # a live view's page says it too, where no one reads stderr


# Files a container runtime leaves at its root (Docker; Podman), and the root a container's own file system is at.
CONTAINER_MARKERS = (Path("/.dockerenv"), Path("/run/.containerenv"))
CONTAINER_ROOT = Path("/")


def _lost_with_container(folder: Path) -> bool:
    """Whether ``folder`` lies in a container's own file system (not a mounted volume), which ``docker run --rm``
    (jetson-containers' default) discards when the container ends: a cache there is rebuilt at every start."""
    if not any(marker.exists() for marker in CONTAINER_MARKERS):
        return False
    try:
        return folder.stat().st_dev == CONTAINER_ROOT.stat().st_dev
    except OSError:
        return False


def _private_folder_parents() -> list[Path | None]:
    """Where a process's own engine folder may go, in order: shared memory where there is some (an engine cache
    that cannot be written is often a full disk, a Jetson's SD card, and the temporary folder is usually on that
    same disk), then the temporary folder (None: ``tempfile``'s, ``$TMPDIR`` honoured)."""
    shared_memory = Path("/dev/shm")
    return [shared_memory, None] if shared_memory.is_dir() and os.access(shared_memory, os.W_OK) else [None]


# The folders of this process's own that engines were built into (a cache that could not be written): removed at
# exit, so nothing in them is cached for later starts.
_private_folders: list[Path] = []


def _private_folder(parent: Path | None) -> Path:
    """A new folder of this process's own under ``parent``, removed when the process exits."""
    folder = Path(tempfile.mkdtemp(prefix="unetrt-engines-", dir=parent))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    _private_folders.append(folder)
    return folder


def kept_for_later_starts(plan: str | Path) -> bool:
    """Whether a plan :func:`cached_plan` returned is in the cache, where later starts load it: False for one built
    into a folder of this process's own, removed at exit (the cache could not be written, or no home directory).

    Example:
        >>> kept_for_later_starts(cached_plan(bundled_model_path("camvid")))  # doctest: +SKIP
        True
    """
    return not any(Path(plan).is_relative_to(folder) for folder in _private_folders)


def _owner(path: Path) -> tuple[int, int]:
    """(uid, gid) of an existing path."""
    status = path.stat()
    return status.st_uid, status.st_gid


def _nearest_existing(folder: Path) -> Path | None:
    return next((candidate for candidate in (folder, *folder.parents) if candidate.exists()), None)


def _owner_to_hand_back(folder: Path) -> tuple[int, int] | None:
    """Whom what a root process writes into ``folder`` must belong to: the owner of its nearest existing folder
    when that is another user (``sudo -E`` keeps the user's HOME; a root service pointed at a user's cache), so
    that the user can still replace and remove it. None: keep the files as written."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    existing = _nearest_existing(folder)
    if existing is None:
        return None
    owner = _owner(existing)
    return owner if owner[0] != 0 else None


def _hand_back(paths: list[Path], owner: tuple[int, int] | None) -> None:
    """Give ``paths`` (those that exist) to ``owner``; a failure only costs the user a chown, so it is ignored."""
    if owner is None:
        return
    for path in paths:
        with suppress(OSError):
            os.chown(path, *owner)


def _ownership_hint(folder: Path, exc: OSError) -> str:
    """For a cache refused for its permissions that another user owns (a run with sudo made it): the chown."""
    import errno

    if exc.errno not in (errno.EACCES, errno.EPERM) or not hasattr(os, "geteuid"):
        return ""
    existing = _nearest_existing(folder)
    if existing is None or _owner(existing)[0] == os.geteuid():
        return ""
    uid = _owner(existing)[0]
    top = existing
    while top.parent != top and top.parent.exists() and _owner(top.parent)[0] == uid:
        top = top.parent
    return (f"; {top} belongs to {_user_name(uid)} (a run with sudo?): sudo chown -R {_user_name(os.geteuid())}: "
            f"{top} gives it back, and later starts load their engines again")


def _user_name(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return str(uid)


def blocking_file(folder: Path) -> Path | None:
    """A file where ``folder`` or a folder above it should be (mkdir reads "File exists" or "Not a directory").

    Example:
        >>> blocking_file(Path("/etc/hostname/engines"))  # doctest: +SKIP
        PosixPath('/etc/hostname')
    """
    return next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)


def cache_write_problem(folder: Path) -> str | None:
    """Why no engine can be cached in ``folder``, found without creating anything (for a report): a file in its
    place, or a nearest existing folder this process cannot write (a read-only root file system); None where one
    can, as far as permissions tell.

    Example:
        >>> cache_write_problem(Path("/proc/unetrt/engines"))  # doctest: +SKIP
        'Read-only file system'
    """
    blocker = blocking_file(folder)
    if blocker is not None:
        return f"{blocker} is a file, not a folder"
    existing = _nearest_existing(folder)
    if existing is None or os.access(existing, os.W_OK | os.X_OK):
        return None
    read_only = hasattr(os, "statvfs") and os.statvfs(existing).f_flag & os.ST_RDONLY
    return "Read-only file system" if read_only else "Permission denied"


def _writable_folder(folder: Path, stem: str) -> Path:
    """``folder`` when an engine can be cached there, else a private folder for this process.

    Checked before the build (minutes on a Jetson), so that a read-only file system or a service account
    without a home still gets its engine, told once that later starts will build again and how to avoid it.
    """
    owner = _owner_to_hand_back(folder)
    existing = _nearest_existing(folder)
    created = [] if existing is None else [p for p in (folder, *folder.parents) if p.is_relative_to(existing)
                                           and p != existing]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"{stem}.lock", "a+b"):
            pass
    except OSError as exc:
        fallback = _private_folder(_private_folder_parents()[0])
        blocker = blocking_file(folder)
        reason = f"{blocker} is a file, not a folder" if blocker is not None else exc.strerror or exc
        _announce(f"cannot write the engine cache {folder} ({reason}); this run builds into "
                  f"{fallback}, and every start will build again: set {ENGINE_CACHE_ENV} to a writable folder"
                  f"{_ownership_hint(folder, exc)}")
        return fallback
    _hand_back([*created, folder / f"{stem}.lock"], owner)
    return folder


def _write_outside_cache(built: BuiltPlan, stem: str, folder: Path, error: OSError) -> Path:
    """Write a plan the cache folder refused (a disk that filled up during a build of minutes) where this run can
    load it, rather than lose the build.

    Raises:
        ValueError: when no private folder takes it either.
    """
    reason = error.strerror or str(error)
    for parent in _private_folder_parents():
        if parent is not None and folder.is_relative_to(parent):
            continue
        try:
            fallback = _private_folder(parent)
            plan = fallback / f"{stem}.plan"
            write_plan(plan, built.plan, built.metadata)
        except OSError:
            continue
        _announce(f"the TensorRT engine was built but cannot be cached in {folder} ({reason}); this run loads it "
                  f"from {fallback} and the next start builds it again: free space there or set "
                  f"{ENGINE_CACHE_ENV} to another folder")
        return plan
    raise ValueError(f"the TensorRT engine was built but could not be written to {folder} ({reason}), nor to a "
                     f"temporary folder; free space there or set {ENGINE_CACHE_ENV} to another folder") from error


def model_source(onnx_path: str | Path) -> Path:
    """The model file as a cache entry records it (its metadata's ``source``) and as entries are compared: by its
    absolute path, symbolic links kept. A path as typed, ``model.onnx``, names another file in each folder: two
    robots' ``model.onnx`` each took the other's engine for an earlier version of itself and removed it.

    Example:
        >>> model_source("models/../mine.onnx") == Path.cwd() / "mine.onnx"
        True
    """
    return Path(os.path.abspath(onnx_path))


def _other_entries(folder: Path, key: PlanKey) -> list[tuple[Path, PlanMetadata]]:
    """The cache's other entries of this model and precision than ``key``'s own, by name, each with its metadata
    (those whose metadata cannot be read left out)."""
    entries = []
    for metadata_file in sorted(folder.glob(f"{key.model_name}-{key.precision}-*.plan.json")):
        plan = metadata_file.with_suffix("")
        if plan.name == f"{key.stem}.plan":
            continue
        try:
            entries.append((plan, read_plan_metadata(plan)))
        except (OSError, ValueError):
            continue
    return entries


def _superseded_entries(folder: Path, key: PlanKey, onnx_path: str | Path) -> list[tuple[Path, PlanMetadata]]:
    """Entries of this cache that the entry of ``key`` replaces, each with its metadata.

    An entry is superseded when it was built from the same ONNX file path at the same precision, working size and
    DLA core for the same GPU, but by an older TensorRT (a JetPack upgrade), from other bytes of that file (a
    retrained model), or under an older cache key of unetrt: none of them can load here again, and each is a
    plan's size (tens of MB) on a Jetson's eMMC or SD card. Entries of a newer TensorRT are kept (another venv may
    use them), and so is anything whose metadata cannot be read.
    """
    found = []
    for plan, metadata in _other_entries(folder, key):
        same_slot = (metadata.source == str(onnx_path) and metadata.precision == key.precision
                     and metadata.info.working_size == key.working_size and metadata.dla_core == key.dla_core
                     and metadata.gpu == key.gpu)
        if same_slot and tensorrt_release(metadata.tensorrt_version) <= tensorrt_release(key.tensorrt_version):
            found.append((plan, metadata))
    return found


def _why_superseded(metadata: PlanMetadata, key: PlanKey, onnx_path: str | Path) -> str:
    """The build line's reason: 'the cached engine was built by TensorRT 10.3.0, this is 10.4.0'."""
    reasons = why_not_here(metadata, key.tensorrt_version, [key.gpu], onnx_path, key.source_sha256)
    return f"the cached engine was {', '.join(reason.text for reason in reasons)}"


@dataclass(frozen=True)
class Mismatch:
    """One reason a cached engine cannot run here, as data (``kind``) and in words (``text``).

    Attributes:
        kind: 'tensorrt' (an older TensorRT built it), 'newer tensorrt', 'gpu' (for a GPU not among those given),
            'model' (from other bytes of the model file, or another file), 'unetrt' (under an older key of the
            cache, :data:`KEY_VERSION`).
        text: e.g. 'built by TensorRT 10.3.0, this is 10.4.0'; each starts with 'built'.
    """

    kind: str
    text: str


def why_not_here(metadata: PlanMetadata, tensorrt_version: str, gpus: list[GpuIdentity],
                 onnx_path: str | Path | None, source_sha256: str | None) -> list[Mismatch]:
    """Why a cached engine, other than the entry of the key asked for, cannot run here: the one place that words the
    reasons of the build line, of ``--no-build``'s error, of the doctor and of ``python -m unetrt.doctor --prune``.

    Args:
        metadata: the engine's metadata.
        tensorrt_version: this TensorRT's version.
        gpus: the GPUs it would run on here (the key's; for ``--prune`` every GPU of the machine).
        onnx_path: the model file asked for (for ``--prune``: the one the engine was built from).
        source_sha256: that file's SHA-256 now; None: it is gone, and nothing is said of it.

    Returns:
        The reasons, never none: an entry that differs in none of these was built under an older key ('unetrt').

    Example:
        >>> [r.text for r in why_not_here(metadata, "10.4.0", [gpu], "camvid.onnx", sha)]  # doctest: +SKIP
        ['built by TensorRT 10.3.0, this is 10.4.0']
    """
    reasons = []
    if metadata.tensorrt_version != tensorrt_version:
        newer = tensorrt_release(metadata.tensorrt_version) > tensorrt_release(tensorrt_version)
        reasons.append(Mismatch("newer tensorrt" if newer else "tensorrt",
                                f"built by TensorRT {metadata.tensorrt_version}, this is {tensorrt_version}"))
    if metadata.gpu not in gpus:
        names = [gpu.describe() for gpu in gpus]
        here = (f"this is {names[0]}" if len(names) == 1 else
                f"this machine has {', '.join(names[:-1])} and {names[-1]}" if names else "this machine has no GPU")
        reasons.append(Mismatch("gpu", f"built for {metadata.gpu.describe()}, {here}"))
    if onnx_path is not None and source_sha256 is not None and metadata.source_sha256 != source_sha256:
        reasons.append(Mismatch("model", f"built from an earlier version of {Path(onnx_path).name}"
                                if metadata.source == str(onnx_path) else
                                f"built from another file, {metadata.source}"))
    # An older key of unetrt's cache (KEY_VERSION) differs in none of these.
    return reasons or [Mismatch("unetrt", "built by an earlier unetrt, whose engines this one builds anew")]


def _remove_superseded(folder: Path, entries: list[tuple[Path, PlanMetadata]], key: PlanKey,
                       progress: bool) -> None:
    """Remove the entries the new one replaced, and the timing caches of older TensorRT versions on this GPU."""
    if not entries:
        return
    freed = removed = 0
    for plan, metadata in entries:
        size = plan.stat().st_size if plan.is_file() else 0
        try:
            discard_entry(plan, metadata.plan_sha256)
            plan.with_suffix(".lock").unlink(missing_ok=True)
        except OSError:
            continue
        freed += size
        removed += 1
    current = _timing_cache_name(key)
    suffix = current.removeprefix(f"timing-{key.tensorrt_version}")
    for timing in folder.glob(f"timing-*{suffix}"):
        version = timing.name.removeprefix("timing-").removesuffix(suffix)
        if timing.name != current and tensorrt_release(version) < tensorrt_release(key.tensorrt_version):
            freed += timing.stat().st_size
            timing.unlink(missing_ok=True)
    if progress and removed:
        _announce(f"removed {removed} cached engine(s) of {key.model_name} that this one replaces "
                  f"({freed / 2**20:.0f} MB)")


def cached_plan(onnx_path: str | Path, precision: str = "auto", working_size: tuple[int, int] | None = None,
                dla_core: int | None = None, build: bool = True, device_index: int = 0,
                cache_dir: str | Path | None = None, progress: bool = True) -> Path:
    """The cached plan of an ONNX model for this TensorRT and GPU, built (and cached) when there is none.

    A cache folder that cannot be written (a read-only file system, a service account without a home, a disk
    that fills up during the build) does not stop the first run nor lose its build: the engine goes to a folder of
    this process's own (in shared memory where there is some, removed at exit), with a line saying that later
    starts will build again and how to avoid it.

    Args:
        onnx_path: a unetrt ONNX model (FP32, or QDQ INT8 for precision 'int8').
        precision: 'auto' (INT8 for a QDQ graph, else FP16), 'fp16', 'fp32' or 'int8'.
        working_size: (width, height) to fix the profile at, in place of the model's own.
        dla_core: build for this DLA core (GPU fallback), None: the GPU alone.
        build: False: never build; raise :class:`PlanNotCachedError` when nothing usable is cached.
        device_index: the CUDA device.
        cache_dir: the cache folder (None: :func:`engine_cache_dir`).
        progress: the 'building ...' line and TensorRT's per-phase progress bars.

    Returns:
        The plan's path (its metadata beside it).

    Raises:
        PlanNotCachedError: with ``build=False`` and no usable entry.
        ImportError: when TensorRT, pycuda or onnx is missing.
        ValueError: when the model cannot be built, or the built engine can be written neither to the cache nor
            to a temporary folder; the message says why.

    Example:
        >>> plan = cached_plan(bundled_model_path("camvid"))  # doctest: +SKIP
    """
    key = plan_key(onnx_path, precision, working_size, dla_core, device_index)
    source = model_source(onnx_path)
    try:
        folder = Path(cache_dir) if cache_dir is not None else engine_cache_dir()
    except NoCacheFolderError as exc:
        if not build:
            raise PlanNotCachedError(f"no usable cached TensorRT engine for {key.describe()}: {exc}") from exc
        folder = _private_folder(_private_folder_parents()[0])
        _announce(f"{exc}; this run builds into {folder}, and every start will build again")
    plan = folder / f"{key.stem}.plan"
    problem = entry_problem(plan, key)
    if problem is None:
        return plan
    if not build:
        # An engine of an older TensorRT or of the file before it changed was reported as none at all.
        older = _superseded_entries(folder, key, source) if _entry_missing(plan) else []
        raise PlanNotCachedError(
            f"no usable cached TensorRT engine for {key.describe()} in {folder} "
            f"({_why_superseded(older[0][1], key, source) if older else problem}); run once without --no-build "
            "(build=True) to build and cache it"
        )
    folder = _writable_folder(folder, key.stem)
    plan = folder / f"{key.stem}.plan"
    waiting = (f"another process (or thread) is building the TensorRT engine for {key.describe()}; waiting for it "
               "to finish (minutes on a Jetson)") if progress else None
    # Why the last build of this entry failed, written by that build: a camera's process (or thread) that waited for
    # it gives up with that reason instead of building again (three cameras on an Orin Nano that has no memory for
    # the build would otherwise take minutes each, one after another, to fail alike).
    failed_note = folder / f"{key.stem}.failed"
    # Before the minutes of a build, or of a wait for another's: a stream whose camera can never open says so now.
    check_before_build()
    with _entry_lock(folder / f"{key.stem}.lock", waiting) as waited:
        # Another process may have built it while this one waited for the lock.
        problem = entry_problem(plan, key)
        if problem is None:
            return plan
        failure = _read_failure(failed_note) if waited else None
        if failure is not None:
            raise ValueError(f"the TensorRT engine build for {key.describe()} that this start waited for failed: "
                             f"{failure}")
        # A start that did not wait tries again: what failed then (memory taken by other programs) may be gone.
        failed_note.unlink(missing_ok=True)
        # Writers of this entry hold its lock, so its temporaries are a killed build's (power cut, SIGKILL),
        # each the size of a plan: on a Jetson's eMMC they would pile up. In a folder that cannot be locked they
        # may be another program's plan being written: left.
        for stale in [] if folder in _UNLOCKED_FOLDERS else folder.glob(f".{key.stem}.plan*.tmp"):
            stale.unlink(missing_ok=True)
        from .plan_build import build_plan, save_timing_cache

        superseded = _superseded_entries(folder, key, source)
        if superseded and _entry_missing(plan):
            problem = _why_superseded(superseded[0][1], key, source)
        if progress:
            # A folder of this process's own was announced with "every start will build again": promising that
            # later starts load the engine from it, removed at exit, contradicted that line.
            later = (f"this run loads it from {folder}, removed when it ends" if not kept_for_later_starts(plan) else
                     f"later starts load it from {folder}" if not _lost_with_container(folder) else
                     f"but {folder} is in this container's own file system, lost when the container is removed "
                     f"(docker run --rm): mount a volume and set {ENGINE_CACHE_ENV} to a folder in it "
                     f"(jetson-containers: -e {ENGINE_CACHE_ENV}=/data/models/unetrt) so that later starts load it")
            _announce(f"building a TensorRT engine for {key.describe()} ({problem}); the first run on a Jetson "
                      f"takes minutes, {later}")
        timing_cache = folder / _timing_cache_name(key)
        options = BuildOptions(fp16=key.precision == "fp16", int8=key.precision == "int8",
                               working_size=key.working_size,
                               dla_core=dla_core, progress=progress,
                               timing_cache=timing_cache)
        try:
            built = build_plan(onnx_path, options, device_index)
        except ValueError as exc:
            _note_failure(failed_note, exc)
            raise
        # The build's messages name the file as the user gave it; the entry records it as later starts compare it.
        built = replace(built, metadata=replace(built.metadata, source=str(source)))
        try:
            write_plan(plan, built.plan, built.metadata)
        except OSError as exc:
            # The disk filled up (or the folder changed hands) while the plan was written.
            return _write_outside_cache(built, key.stem, folder, exc)
        save_timing_cache(options.timing_cache, built.timing_cache)
        _hand_back([plan, metadata_path(plan), timing_cache], _owner_to_hand_back(folder))
        if progress:
            _announce(f"cached {plan}")
    # After the entry's lock: removing one takes that entry's lock.
    _remove_superseded(folder, superseded, key, progress)
    return plan


@dataclass(frozen=True)
class StaleEntry:
    """An entry of a model's slot (its precision, working size and DLA core) that cannot run on the GPU asked for.

    Attributes:
        plan: the entry's plan.
        size: the plan's bytes.
        reasons: why it cannot run there.
        replaced: whether the next build of the key replaces (removes) it.
        other_gpu: the index of another GPU of this machine whose engine it is (None: none).
    """

    plan: Path
    size: int
    reasons: list[Mismatch]
    replaced: bool
    other_gpu: int | None

    def describe(self) -> str:
        """'camvid-fp16-1f0c....plan, 24 MB: built by TensorRT 10.2.0, this is 10.3.0; the next build replaces it'."""
        quoted = shlex.quote(str(self.plan))
        fate = ("the next build replaces it" if self.replaced else
                f"the engine of cuda:{self.other_gpu} on this machine, kept" if self.other_gpu is not None else
                f"kept beside the new one: rm {quoted} {quoted}.json frees it")
        return f"{self.plan.name}, {megabytes(self.size)}: {', '.join(r.text for r in self.reasons)}; {fate}"


@dataclass(frozen=True)
class CacheLookup:
    """What the engine cache holds for one key (:func:`look_up`).

    Attributes:
        plan: the key's own entry.
        problem: why that entry cannot be used (None: it can).
        missing: whether no part of that entry exists.
        stale: the entries of the model's slot that cannot run on the key's GPU.
    """

    plan: Path
    problem: str | None
    missing: bool
    stale: list[StaleEntry]

    @property
    def usable(self) -> bool:
        """Whether the key's own entry can be loaded."""
        return self.problem is None

    @property
    def empty(self) -> bool:
        """Whether nothing of the model's slot is cached: its first start builds it."""
        return self.missing and not self.stale

    def note(self) -> str:
        """In words, for a report: 'none is cached', 'none that runs here is cached (ENTRY, SIZE: WHY; FATE)', or
        'the cached ENTRY cannot be used (WHY); the next build replaces it'."""
        if not self.missing:
            return f"the cached {self.plan.name} cannot be used ({self.problem}); the next build replaces it"
        if not self.stale:
            return "none is cached"
        return f"none that runs here is cached ({'; '.join(entry.describe() for entry in self.stale)})"


def look_up(key: PlanKey, onnx_path: str | Path, cache_dir: str | Path | None = None,
            gpus: list[GpuIdentity] | None = None) -> CacheLookup:
    """What the cache holds for ``key`` (from :func:`plan_key`, so the ONNX file is not hashed again): whether its
    entry can be used, and each entry of this model, precision, working size and DLA core that cannot run on the
    key's GPU, with why and what the next build does with it (replaces it, or leaves it beside the new one, with the
    command that removes it).

    Args:
        key: the key asked for.
        onnx_path: the model file of the key.
        cache_dir: the cache folder (None: :func:`engine_cache_dir`).
        gpus: every GPU of this machine, in device order (None: the key's alone): an entry built for another of
            them is that GPU's engine, never one to remove.

    Raises:
        NoCacheFolderError: as :func:`engine_cache_dir`, when ``cache_dir`` is None.

    Example:
        >>> look_up(plan_key(model), model).note()  # doctest: +SKIP
        'none that runs here is cached (camvid-fp16-1f0c....plan, 24 MB: built by TensorRT 10.2.0, this is 10.3.0; \
the next build replaces it)'
    """
    onnx_path = model_source(onnx_path)
    folder = Path(cache_dir) if cache_dir is not None else engine_cache_dir()
    plan = folder / f"{key.stem}.plan"
    problem = entry_problem(plan, key)
    if not _entry_missing(plan):
        return CacheLookup(plan, problem, False, [])
    machine = gpus if gpus is not None else [key.gpu]
    replaced = {path for path, _ in _superseded_entries(folder, key, onnx_path)}
    stale = []
    for entry, metadata in _other_entries(folder, key):
        if (metadata.precision, metadata.info.working_size, metadata.dla_core) != (
                key.precision, key.working_size, key.dla_core):
            continue
        reasons = why_not_here(metadata, key.tensorrt_version, [key.gpu], onnx_path, key.source_sha256)
        # Another GPU of this machine (a desktop with two kinds) runs it: that GPU's engine, not one to remove.
        another = [reason.kind for reason in reasons] == ["gpu"] and metadata.gpu in machine
        size = entry.stat().st_size if entry.is_file() else 0
        stale.append(StaleEntry(entry, size, reasons, entry in replaced,
                                machine.index(metadata.gpu) if another else None))
    return CacheLookup(plan, problem, True, stale)


def cache_usage(folder: str | Path | None = None) -> str:
    """What the engine cache holds, for a report: '3 engines, 52 MB' (plans, their metadata and timing caches), or
    'empty'. Each entry is ``MODEL-PRECISION-KEY.plan`` with its ``.plan.json``; removing any of them (or the whole
    folder) is safe: an engine missing when a model opens is built again.

    Raises:
        NoCacheFolderError: as :func:`engine_cache_dir`, when ``folder`` is None.

    Example:
        >>> cache_usage()  # doctest: +SKIP
        '2 engines, 41 MB'
    """
    root = Path(folder) if folder is not None else engine_cache_dir()
    engines = size = 0
    with suppress(OSError):
        for path in root.iterdir():
            with suppress(OSError):
                if path.is_file():
                    size += path.stat().st_size
                    engines += path.suffix == ".plan"
    if not size:
        return "empty"
    return f"{engines} engine{'' if engines == 1 else 's'}, {megabytes(size)}"


def megabytes(size: int) -> str:
    """'24 MB' (MiB, as the cache's lines count them).

    Example:
        >>> megabytes(25165824)
        '24 MB'
    """
    return f"{size / 2**20:.0f} MB"


def _note_failure(note: Path, failure: ValueError) -> None:
    """Leave why a build failed for the starts waiting for it (best effort: they build again without it)."""
    with suppress(OSError):
        note.write_text(str(failure).splitlines()[0] if str(failure) else type(failure).__name__)


def _read_failure(note: Path) -> str | None:
    try:
        return note.read_text().strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def discard_entry(plan_path: Path, plan_sha256: str | None) -> None:
    """Remove a cache entry found unusable, unless another process has replaced it meanwhile."""
    with _entry_lock(plan_path.with_suffix(".lock"), None):
        try:
            current = read_plan_metadata(plan_path).plan_sha256
        except (OSError, ValueError):
            current = plan_sha256
        if current == plan_sha256:
            metadata_path(plan_path).unlink(missing_ok=True)
            plan_path.unlink(missing_ok=True)


def open_cached_engine(onnx_path: str | Path, precision: str = "auto", device: str = "auto",
                       working_size: tuple[int, int] | None = None, dla_core: int | None = None, build: bool = True,
                       cache_dir: str | Path | None = None, progress: bool = True,
                       cuda_graph: bool = True) -> TensorRTBackend:
    """Open the TensorRT engine of an ONNX model from the cache, building it first when needed.

    A cached plan that TensorRT refuses (it does not deserialise, or its metadata names another TensorRT or
    GPU) is discarded and rebuilt once.

    Args:
        onnx_path, precision, working_size, dla_core, build, cache_dir, progress: as :func:`cached_plan`.
        device: 'auto', 'cuda' or 'cuda:N'.
        cuda_graph: passed to the backend.

    Returns:
        The open backend; close it, or use it as a context manager.

    Raises:
        PlanNotCachedError, ImportError, ValueError: as :func:`cached_plan`.
        GpuResourceError: (a ValueError; :class:`~unetrt.backends.tensorrt.EngineResourceError` among them) when
            the GPU has no memory left to run the engine, or CUDA does not start; the cached engine is kept.

    Example:
        >>> with open_cached_engine(bundled_model_path("camvid")) as net:  # doctest: +SKIP
        ...     logits = net.infer(batch)
    """
    from .backends.tensorrt import TensorRTBackend

    index = parse_device(device)
    plan = cached_plan(onnx_path, precision, working_size, dla_core, build, index, cache_dir, progress)
    try:
        return TensorRTBackend(plan, device=device, cuda_graph=cuda_graph)
    except FileNotFoundError:
        # Another thread or process found the entry unusable and discarded it between the check and this open;
        # it rebuilds under the entry's lock, which cached_plan waits for.
        plan = cached_plan(onnx_path, precision, working_size, dla_core, build, index, cache_dir, progress)
        return TensorRTBackend(plan, device=device, cuda_graph=cuda_graph)
    except GpuResourceError:
        # The GPU is short of memory (or CUDA would not start): nothing says the plan is bad. Rebuilding would
        # delete a good engine and need more.
        raise
    except ValueError as exc:
        # PlanCompatibilityError is a ValueError too. The entry passed the cache's own checks, so TensorRT
        # itself refused it: a plan from another TensorRT build with the same version string, or damaged bytes.
        if not build:
            raise PlanNotCachedError(f"the cached TensorRT engine {plan} is unusable ({exc}); run once without "
                                     "--no-build (build=True) to rebuild it") from exc
        if progress:
            _announce(f"the cached engine {plan.name} is unusable ({exc}); rebuilding it")
        try:
            refused = read_plan_metadata(plan).plan_sha256
        except (OSError, ValueError):
            refused = None
        try:
            discard_entry(plan, refused)
        except OSError as exc:
            # A read-only cache (a prebuilt engine on a read-only root file system, then a JetPack upgrade).
            cache_dir = _private_folder(_private_folder_parents()[0])
            _announce(f"cannot remove the unusable engine from {plan.parent} ({exc.strerror or exc}); this run "
                      f"builds into {cache_dir}, and every start will build again: set {ENGINE_CACHE_ENV} to a "
                      "writable folder")
    plan = cached_plan(onnx_path, precision, working_size, dla_core, True, index, cache_dir, progress)
    return TensorRTBackend(plan, device=device, cuda_graph=cuda_graph)
