"""``python -m unetrt.doctor --prune``: the engine cache's files that cannot run here, each with why; ``--yes``
removes them and says what it freed.

What cannot run here, in the words of :func:`unetrt.plan_cache.why_not_here` (the doctor's and the build line's):
an engine built by an older TensorRT (a JetPack upgrade), for a GPU this machine does not have (an SD card moved
between Orin modules), from an earlier version of its model file (a retrained model), or under an older key of the
cache; a damaged entry (its metadata missing or unreadable, its plan missing or not the bytes its metadata names);
the temporary files of a build that was killed; the timing caches of older TensorRT releases and of GPUs that are
not here. What stays: every engine this TensorRT runs on a GPU of this machine; an engine of a newer TensorRT
(another venv may use it); one for a GPU that ``CUDA_VISIBLE_DEVICES`` may be hiding; the lock files (empty:
removing one that another process waits on would let two builds of one engine run at once) and failure notes.

Nothing outside the cache folder is touched: only regular files directly in it whose names are the cache's own
(a symbolic link is never followed nor removed). An entry is removed under its lock, taken without waiting: one
that another process is building is left, and one rebuilt since it was judged is left too. A process reading a
plan as it is removed still reads it whole (POSIX: an unlinked file lives while it is open), and a running stream
keeps the engine it loaded.
"""

from __future__ import annotations

import fcntl
import os
import re
import shlex
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .backends.tensorrt import tensorrt_release
from .paths import file_sha256
from .plan_cache import PlanKey, blocking_file, cache_usage, megabytes, why_not_here
from .plan_metadata import GpuIdentity, PlanMetadata, metadata_path, read_plan_metadata

# MODEL-PRECISION-KEY.plan and its .plan.json (plan_cache.PlanKey.stem); a killed build's temporaries of them
# (paths.replace_file: .NAME.PID.THREAD.tmp); TensorRT's timing caches (plan_cache._timing_cache_name).
_STEM = r"(?P<stem>[^/]+-(?:fp32|fp16|int8)-[0-9a-f]{16})"
ENTRY = re.compile(_STEM + r"\.plan(?:\.json)?")
TEMPORARY = re.compile(r"\." + _STEM + r"\.plan(?:\.json)?\.\d+\.\d+\.tmp")
TIMING = re.compile(r"timing-(?P<version>[^-/]+)-sm_(?P<major>\d+?)(?P<minor>\d)(?:-(?P<count>\d+)sm)?\.cache")
BOOKKEEPING = re.compile(_STEM + r"\.(?:lock|failed)")


@dataclass(frozen=True)
class Finding:
    """One thing in the cache that cannot run here, and what ``--prune`` does with it.

    Attributes:
        name: the file the line names (an entry's plan).
        files: the regular files of the cache folder that removing it deletes.
        size: their bytes.
        why: why it cannot run here.
        remove: whether ``--prune --yes`` removes it (False: it is kept, and ``why`` says why).
        stem: the entry's stem, whose lock is held while it is removed (None: a timing cache, which has none).
        plan_sha256: what the entry's metadata said when it was judged: it is removed only if that is still so.
    """

    name: str
    files: tuple[Path, ...]
    size: int
    why: str
    remove: bool
    stem: str | None = None
    plan_sha256: str | None = None

    def describe(self) -> str:
        """'camvid-fp16-1f0c....plan, 24 MB: built by TensorRT 10.2.0, this is 10.3.0'; a kept one ends with the
        ``rm`` that frees it."""
        line = f"{self.name}, {_megabytes(self.size)}: {self.why}"
        if self.remove:
            return line
        return f"{line}; rm {' '.join(shlex.quote(str(path)) for path in self.files)} frees it"


@dataclass(frozen=True)
class Survey:
    """What the cache holds, as ``--prune`` judges it.

    Attributes:
        folder: the cache folder.
        usage: what it held when judged (:func:`unetrt.plan_cache.cache_usage`).
        findings: what cannot run here, to remove or kept with why.
        runnable: how many engines run here (kept).
        foreign: the names in the folder that are not the cache's own files, or are not regular files (left alone).
    """

    folder: Path
    usage: str
    findings: list[Finding]
    runnable: int
    foreign: list[str]

    @property
    def removable(self) -> list[Finding]:
        """The findings ``--yes`` removes."""
        return [finding for finding in self.findings if finding.remove]


def survey(folder: Path, tensorrt_version: str, gpus: list[GpuIdentity], hidden: str | None) -> Survey:
    """Judge every file of the cache folder against this TensorRT and this machine's GPUs.

    Args:
        folder: the cache folder (one that does not exist holds nothing).
        tensorrt_version: this TensorRT's version.
        gpus: every GPU this process sees.
        hidden: ``CUDA_VISIBLE_DEVICES`` when it is set (it may hide GPUs of this machine): an engine for a GPU not
            seen is then kept.

    Raises:
        ValueError: when ``folder`` is a file.

    Example:
        >>> survey(engine_cache_dir(), "10.3.0", machine_gpus(), None).removable  # doctest: +SKIP
        []
    """
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        names = []
    except NotADirectoryError as exc:
        blocker = blocking_file(folder)
        what = "is" if blocker in (None, folder) else f"cannot exist: {blocker} is"
        raise ValueError(f"the engine cache {folder} {what} a file, not a folder: nothing to prune there") from exc
    regular = {name for name in names if _regular(folder / name)}
    foreign = [name for name in names if name not in regular]
    stems: dict[str, None] = {}
    temporaries: dict[str, list[str]] = {}
    timing: list[tuple[str, re.Match[str]]] = []
    for name in sorted(regular):
        if (match := ENTRY.fullmatch(name)) is not None:
            stems.setdefault(match["stem"])
        elif (match := TEMPORARY.fullmatch(name)) is not None:
            temporaries.setdefault(match["stem"], []).append(name)
        elif (match := TIMING.fullmatch(name)) is not None:
            timing.append((name, match))
        elif BOOKKEEPING.fullmatch(name) is None:
            foreign.append(name)
    findings: list[Finding] = []
    runnable = 0
    hashes: dict[str, str | None] = {}
    for stem in stems:
        plan = folder / f"{stem}.plan"
        if any(path.name in names and path.name not in regular for path in (plan, metadata_path(plan))):
            continue  # half of it is a link or a folder: left alone with it, listed among the foreign names
        finding = _judge_entry(folder, stem, tensorrt_version, gpus, hidden, hashes)
        if finding is None:
            runnable += 1
        else:
            findings.append(finding)
    for stem, files in temporaries.items():
        paths = tuple(folder / name for name in files)
        building = _being_built(folder, stem)
        if building is None:
            findings.append(Finding(files[0], paths, _size(paths), "a temporary file of a build, kept: this folder "
                                    "cannot be locked, so whether a build is still writing it cannot be told", False,
                                    stem))
        elif building:
            findings.append(Finding(files[0], paths, _size(paths), "a temporary file of a build in progress (another "
                                    "process holds its lock)", False, stem))
        else:
            findings.append(Finding(files[0], paths, _size(paths), "a temporary file of a build that was killed (a "
                                    "power cut, SIGKILL)", True, stem))
    for name, match in timing:
        finding = _judge_timing(folder / name, match, tensorrt_version, gpus, hidden)
        if finding is not None:
            findings.append(finding)
    return Survey(folder, cache_usage(folder), findings, runnable, sorted(foreign))


def _regular(path: Path) -> bool:
    """Whether ``path`` is a regular file itself (a symbolic link is not, whatever it points to)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _size(paths: tuple[Path, ...]) -> int:
    total = 0
    for path in paths:
        try:
            total += os.lstat(path).st_size
        except OSError:
            continue
    return total


def _judge_entry(folder: Path, stem: str, tensorrt_version: str, gpus: list[GpuIdentity], hidden: str | None,
                 hashes: dict[str, str | None]) -> Finding | None:
    """The finding for the entry ``stem``, None when it runs here."""
    plan = folder / f"{stem}.plan"
    files = tuple(path for path in (plan, metadata_path(plan)) if _regular(path))
    size = _size(files)

    def damaged(why: str, plan_sha256: str | None = None) -> Finding:
        return Finding(plan.name, files, size, why, True, stem, plan_sha256)

    if not _regular(metadata_path(plan)):
        return damaged("its metadata is missing")
    try:
        metadata = read_plan_metadata(plan)
    except (OSError, ValueError) as exc:
        return damaged(f"its metadata is unreadable ({exc})")
    if not _regular(plan):
        return damaged("its plan is missing", metadata.plan_sha256)
    source = metadata.source
    if source not in hashes:
        # A source recorded as typed (a relative path, by unetrt before 2026-12-07) names a file of the folder the
        # build ran in, not of this one: which file it was cannot be told, so nothing is said of it.
        hashes[source] = file_sha256(source) if Path(source).is_absolute() and Path(source).is_file() else None
    reasons = [reason for reason in why_not_here(metadata, tensorrt_version, gpus, source, hashes[source])
               if reason.kind != "unetrt" or _stem_of(metadata) != stem]
    if not reasons:
        if metadata.plan_sha256 is None or file_sha256(plan) != metadata.plan_sha256:
            return damaged("its plan is truncated or replaced (checksum mismatch)", metadata.plan_sha256)
        return None
    why = ", ".join(reason.text for reason in reasons)
    kinds = {reason.kind for reason in reasons}
    if "newer tensorrt" in kinds:
        return Finding(plan.name, files, size, f"{why} (kept: another install of that TensorRT may use it)", False,
                       stem, metadata.plan_sha256)
    if kinds == {"gpu"} and hidden is not None:
        return Finding(plan.name, files, size, f"{why} (kept: CUDA_VISIBLE_DEVICES={hidden} may hide the GPU it is "
                       "for; run without it to prune such engines)", False, stem, metadata.plan_sha256)
    return Finding(plan.name, files, size, why, True, stem, metadata.plan_sha256)


def _stem_of(metadata: PlanMetadata) -> str | None:
    """The stem this unetrt's key gives the engine the metadata describes (another stem: an older key); None for
    metadata without the model file's SHA-256 (written by an older unetrt)."""
    working_size = metadata.info.working_size
    if metadata.source_sha256 is None:
        return None
    return PlanKey(
        model_name=Path(metadata.source).name.split(".")[0], source_sha256=metadata.source_sha256,
        precision=metadata.precision,
        working_size=None if working_size is None else (int(working_size[0]), int(working_size[1])),
        dla_core=metadata.dla_core, tensorrt_version=metadata.tensorrt_version, gpu=metadata.gpu).stem


def _judge_timing(path: Path, match: re.Match[str], tensorrt_version: str, gpus: list[GpuIdentity],
                  hidden: str | None) -> Finding | None:
    """The finding for a timing cache, None when a build here may use it (or a newer TensorRT's)."""
    version = match["version"]
    files = (path,)
    if tensorrt_release(version) < tensorrt_release(tensorrt_version):
        return Finding(path.name, files, _size(files), f"a timing cache of TensorRT {version}, this is "
                       f"{tensorrt_version}", True)
    capability = (int(match["major"]), int(match["minor"]))
    count = None if match["count"] is None else int(match["count"])
    if hidden is None and not any(gpu.compute_capability == capability and count in (None, gpu.multiprocessors)
                                  for gpu in gpus):
        return Finding(path.name, files, _size(files), f"a timing cache for sm_{capability[0]}{capability[1]}"
                       f"{'' if count is None else f' ({count} SMs)'}, which no GPU here is", True)
    return None


@dataclass(frozen=True)
class Pruned:
    """What ``--prune --yes`` did.

    Attributes:
        removed: the findings removed.
        freed: their bytes.
        left: (finding, why it was left) for those it did not remove.
        failed: how many of those it could not remove (the file system refused: permissions, a read-only folder).
    """

    removed: list[Finding]
    freed: int
    left: list[tuple[Finding, str]]
    failed: int


def prune(found: Survey) -> Pruned:
    """Remove what :func:`survey` found removable, each entry under its lock (taken without waiting).

    Example:
        >>> prune(survey(folder, "10.3.0", machine_gpus(), None)).freed  # doctest: +SKIP
        18874368
    """
    removed: list[Finding] = []
    left: list[tuple[Finding, str]] = []
    failed = 0
    for finding in found.removable:
        try:
            with _entry_lock(found.folder, finding.stem) as held:
                if not held:
                    left.append((finding, "another process is building it"))
                    continue
                if finding.plan_sha256 is not None and _current_sha256(found.folder, finding) != finding.plan_sha256:
                    left.append((finding, "it was rebuilt meanwhile"))
                    continue
                for path in finding.files:
                    path.unlink(missing_ok=True)
        except OSError as exc:
            left.append((finding, f"cannot remove it: {exc.strerror or exc}"))
            failed += 1
            continue
        removed.append(finding)
    return Pruned(removed, sum(finding.size for finding in removed), left, failed)


def _current_sha256(folder: Path, finding: Finding) -> str | None:
    try:
        return read_plan_metadata(folder / f"{finding.stem}.plan").plan_sha256
    except (OSError, ValueError):
        return None


def _being_built(folder: Path, stem: str) -> bool | None:
    """Whether another process holds the entry's build lock (a build writes its temporaries under it); None where
    the folder's files cannot be locked (an NFS home without its lock service). Opened read-only, so that a listing
    creates no lock file."""
    try:
        descriptor = os.open(folder / f"{stem}.lock", os.O_RDONLY)
    except FileNotFoundError:
        return False  # a build makes its lock file before anything else
    except OSError:
        return None
    try:
        # Shared: on NFS, flock is emulated by fcntl locks, and an exclusive one needs a file open for writing.
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return None
    finally:
        os.close(descriptor)  # closing it lets go of a lock taken here
    return False


@contextmanager
def _entry_lock(folder: Path, stem: str | None) -> Iterator[bool]:
    """The entry's build lock (:func:`unetrt.plan_cache.cached_plan` holds it while it builds and writes), taken
    without waiting; yields whether it was (True at once for what has no lock)."""
    if stem is None:
        yield True
        return
    with open(folder / f"{stem}.lock", "a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def report_lines(found: Survey, done: Pruned | None) -> list[str]:
    """The lines of ``--prune`` (``done`` None) or ``--prune --yes``.

    Example:
        >>> print("\\n".join(report_lines(survey(folder, "10.3.0", gpus, None), None)))  # doctest: +SKIP
        engine cache: /home/me/.cache/unetrt/engines: 3 engines, 52 MB
        would remove camvid-fp16-1f0c....plan, 17 MB: built by TensorRT 10.2.0, this is 10.3.0
        ...
    """
    lines = [f"engine cache: {found.folder}: {found.usage}"]
    if done is None:
        lines += [f"would remove {finding.describe()}" for finding in found.removable]
    else:
        lines += [f"removed {finding.describe()}" for finding in done.removed]
        lines += [f"left {finding.name}: {why}" for finding, why in done.left]
    lines += [f"keeps {finding.describe()}" for finding in found.findings if not finding.remove]
    one = found.runnable == 1
    kept = f"{found.runnable} engine{'' if one else 's'} that run{'s' if one else ''} here stay{'s' if one else ''}"
    if found.foreign:
        shown = ", ".join(found.foreign[:5]) + (", ..." if len(found.foreign) > 5 else "")
        lines.append(f"left alone: {len(found.foreign)} file(s) that are not the cache's own or not regular files "
                     f"({shown})")
    if not found.removable:
        lines.append(f"nothing to remove; {kept}")
    elif done is not None:
        lines.append(f"freed {_megabytes(done.freed)} ({len(done.removed)} removed); {kept}; engine cache now: "
                     f"{cache_usage(found.folder)}")
    else:
        size = sum(finding.size for finding in found.removable)
        lines.append(f"python -m unetrt.doctor --prune --yes removes these {len(found.removable)} "
                     f"({_megabytes(size)}); {kept}")
    return lines


def _megabytes(size: int) -> str:
    """:func:`unetrt.plan_cache.megabytes`, but '12 KB' below half a MiB (a timing cache)."""
    return megabytes(size) if size >= 2**19 or not size else f"{max(1, round(size / 2**10))} KB"

