"""A batch segmentation job on Ray Data: units are decoded by tasks spread over the cluster's nodes, and a pool
of actors, each owning one :class:`unetrt.segmenter.Segmenter`, segments the frames and writes the masks.

Ray's fault tolerance does the rest: an actor that dies is restarted and its batch retried
(``max_restarts`` and ``max_task_retries`` are -1 for Ray Data's actor pools). A retried batch skips the
frames the dead actor had already written, and every file is renamed into place only once complete
(:mod:`unetrt.batch.outputs`), so each output is written once and never left half-written.

Ray is an extra (``pip install 'unetrt[ray]'``); this module imports it only inside the calls that need it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..backends import choose_model
from ..caller_warning import warn_caller
from ..cli import StopOnSigterm, raise_terminated
from ..paths import file_sha256
from ..segmenter import Segmenter
from ..stream.output_path import check_writable_file
from .inputs import (
    FAILED,
    IMAGE,
    SKIPPED,
    TODO,
    WHOLE_INPUT,
    WorkUnit,
    expand_inputs,
    frame_from_row,
    read_unit,
    unit_is_done,
    unread_subfolders,
)
from .outputs import PARTIAL_MARK, is_done, overlay_output, remove_partial_files, write_png_atomically

WRITTEN = "written"
SUMMARY_NAME = "summary.json"
# What decides the job's masks (job_identity), written before its first mask: a job stopped before its summary
# still tells a re-run with another model that the masks are not its own.
JOB_NAME = "job.json"
INSTALL_HINT = "unet-batch needs Ray Data: pip install 'unetrt[ray]'"
# Rows of decoded frames per actor call; equal-size frames of a call go through the network as one batch.
DEFAULT_BATCH_SIZE = 4
# Decoding tasks reserve no CPU, so that they always fit beside actors that fill a node's CPUs (a reserved
# share would wait forever there); at most this many run per node.
READ_TASKS_PER_NODE = 2

SegmenterFactory = Callable[[], Segmenter]


class NoRayClusterError(ConnectionError, ValueError):
    """No Ray cluster answers at the address given: a ConnectionError, and a ValueError so that a command reports
    it as the user's to fix (start a cluster, or correct --address) in one line."""


@dataclass(frozen=True)
class BatchSettings:
    """How every actor opens its Segmenter, and what it writes.

    Attributes:
        model: a .plan, .onnx or .pt path (the same on every node) or a bundled model name.
        backend: 'auto', 'onnxruntime', 'openvino', 'torch' or 'tensorrt'.
        precision: 'auto', 'fp32', 'fp16', 'bf16' or 'int8' (see :func:`unetrt.backends.choose_model`).
        working_size: ``(width, height)`` frames are resized to for the network, or None for the model's own.
        threads: CPU inference threads per actor (and the CPUs each actor reserves on a CPU cluster).
        gpus_per_worker: GPUs each actor reserves on a cluster with GPUs (a fraction shares one GPU).
        batch_size: frames per actor call.
        overlay: also write each frame with its coloured mask blended over it.

    Raises:
        ValueError: on threads or a batch size below 1, or GPUs per worker outside (0, 8].

    Example:
        >>> BatchSettings("camvid", precision="int8", threads=2).batch_size
        4
    """

    model: str = "camvid"
    backend: str = "auto"
    precision: str = "auto"
    working_size: tuple[int, int] | None = None
    threads: int = 1
    gpus_per_worker: float = 1.0
    batch_size: int = DEFAULT_BATCH_SIZE
    overlay: bool = False

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if not 0 < self.gpus_per_worker <= 8:
            raise ValueError(f"GPUs per worker must be in (0, 8], got {self.gpus_per_worker}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")

    def open_segmenter(self, device: str) -> Segmenter:
        """The Segmenter an actor owns, on 'cpu' or 'cuda'."""
        options: dict[str, Any] = {"backend": self.backend, "precision": self.precision, "device": device,
                                   "working_size": self.working_size}
        if device == "cpu":
            options["threads"] = self.threads
        return Segmenter(self.model, **options)

    def engine(self, device: str) -> dict[str, str]:
        """The model file, backend and precision that run on ``device`` (for the summary)."""
        choice = choose_model(self.model, self.backend, self.precision, device)
        return {"model": str(choice.path), "backend": choice.backend, "precision": choice.precision}


class SegmentWorker:
    """A Ray Data actor: owns one Segmenter, segments batches of frame rows and writes their outputs.

    Args:
        settings: how to open the Segmenter and what to write.
        out_dir: the job's output folder (shared storage, the same path on every node).
        device: 'cpu' or 'cuda' (Ray has given the actor a GPU).
        segmenter_factory: opens the Segmenter instead of ``settings`` (a custom or instrumented one), with
            ``color_order='bgr'``: frames are read with OpenCV.

    Raises:
        ValueError: when the Segmenter opened takes RGB frames (it is closed).

    Example:
        >>> worker = SegmentWorker(BatchSettings("camvid"), "out", "cpu")  # doctest: +SKIP
    """

    def __init__(self, settings: BatchSettings, out_dir: str, device: str,
                 segmenter_factory: SegmenterFactory | None = None) -> None:
        self.settings = settings
        self.out_dir = Path(out_dir)
        with warnings.catch_warnings(record=True) as said:
            # Ray shows an actor's output only in its node's log: what the open warned (ONNX Runtime on the CPU, an
            # INT8 file left unfused) goes back with every batch's rows, for the job to say.
            self.segmenter = (segmenter_factory() if segmenter_factory is not None
                              else settings.open_segmenter(device))
        self.warnings = "\n".join(dict.fromkeys(" ".join(str(warning.message).split()) for warning in said))
        if self.segmenter.color_order != "bgr":
            self.segmenter.close()
            # Every frame is read with OpenCV: an RGB segmenter would get BGR frames and write BGR overlays wrong.
            raise ValueError(f"unet-batch reads frames with OpenCV (BGR), and segmenter_factory opened a segmenter "
                             f"with color_order={self.segmenter.color_order!r}: open it with color_order='bgr' "
                             "(the default; the masks are the same)")
        import ray

        node = ray.get_runtime_context().get_node_id()
        self.node = node
        self.worker = f"{node[:8]}:{os.getpid()}"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Segment the batch's 'todo' rows and write their masks; every row comes back with its status."""
        start = time.perf_counter()
        count = len(batch["output"])
        outputs = [str(name) for name in batch["output"]]
        status = [str(s) for s in batch["status"]]
        errors = [str(e) for e in batch["error"]]
        todo = []
        for row in range(count):
            if status[row] != TODO:
                continue
            if is_done(self.out_dir, outputs[row], self.settings.overlay):
                # Written by an earlier attempt of this batch, on an actor that died before returning it.
                status[row] = SKIPPED
            else:
                todo.append(row)
        frames = [frame_from_row(batch["pixels"][row], str(batch["shape"][row]), str(batch["dtype"][row]))
                  for row in todo]
        for row, frame, outcome in zip(todo, frames, self._segment(frames)):
            if isinstance(outcome, str):
                status[row], errors[row] = FAILED, outcome
                continue
            try:
                self._write(outputs[row], frame, outcome)
            except (OSError, ValueError) as exc:
                status[row], errors[row] = FAILED, f"cannot write {outputs[row]!r}: {exc}"
                continue
            status[row] = WRITTEN
        busy = time.perf_counter() - start
        return {
            "input": np.asarray(batch["input"]), "index": np.asarray(batch["index"]),
            "output": np.asarray(outputs), "status": np.asarray(status), "error": np.asarray(errors),
            "worker": np.asarray([self.worker] * count), "node": np.asarray([self.node] * count),
            "busy_s": np.full(count, busy / count),
            "backend": np.asarray([self.segmenter.backend.name] * count),
            "device": np.asarray([self.segmenter.backend.device] * count),
            "warnings": np.asarray([self.warnings] * count),
        }

    def _segment(self, frames: list[np.ndarray]) -> list[Any]:
        """A result per frame, or the error text for a frame the Segmenter refuses."""
        if not frames:
            return []
        try:
            return list(self.segmenter.segment_batch(frames))
        except ValueError:
            pass
        # One malformed frame refuses the whole call: segment one by one to blame only that one.
        outcomes: list[Any] = []
        for frame in frames:
            try:
                outcomes.append(self.segmenter.segment(frame))
            except ValueError as exc:
                outcomes.append(f"cannot segment: {exc}")
        return outcomes

    def _write(self, output: str, frame: np.ndarray, result: Any) -> None:
        if self.settings.overlay:
            write_png_atomically(self.out_dir / overlay_output(output), self.segmenter.overlay(frame, result))
        # The mask last: a mask on disk means the frame is done.
        write_png_atomically(self.out_dir / output, result.mask)


def import_ray() -> Any:
    """Ray, or an ImportError that says in one line how to install it."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return ray


@contextlib.contextmanager
def ray_connection(address: str | None) -> Iterator[Any]:
    """Connect to a Ray cluster for the job; yields the ``ray`` module.

    Args:
        address: 'auto' (the cluster this machine belongs to, after ``ray start``), ``ray://HOST:PORT``
            (Ray Client), ``HOST:PORT`` (a head node's GCS), or None for a local cluster started for the job
            and stopped after it. A process already connected keeps its connection.

    Raises:
        ImportError: when Ray Data is not installed.
        NoRayClusterError: when no cluster answers at ``address``.
    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    options: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    if address is None:
        options["include_dashboard"] = False
    else:
        options["address"] = address
    try:
        ray.init(**options)
    except ConnectionError as exc:
        raise NoRayClusterError(f"no Ray cluster at {address!r}: {exc}; start one with 'ray start --head'") from exc
    try:
        yield ray
    finally:
        ray.shutdown()


def cluster_nodes(ray: Any) -> list[dict[str, Any]]:
    """The cluster's live nodes: id, address, CPUs and GPUs."""
    return [{"node_id": node["NodeID"], "address": node["NodeManagerAddress"],
             "cpus": node["Resources"].get("CPU", 0), "gpus": node["Resources"].get("GPU", 0)}
            for node in ray.nodes() if node.get("Alive")]


def default_workers(resources: dict[str, float], settings: BatchSettings) -> int:
    """Actors for a cluster: as many as its GPUs hold, else one per ``threads`` CPUs, one CPU kept for decoding.

    Example:
        >>> default_workers({"CPU": 8.0}, BatchSettings(threads=2))
        3
    """
    gpus = resources.get("GPU", 0.0)
    if gpus > 0:
        return max(1, int(gpus / settings.gpus_per_worker))
    return max(1, int(resources.get("CPU", 1.0) - 1) // settings.threads)


def actor_resources(settings: BatchSettings, on_gpu: bool) -> dict[str, float]:
    """What each actor reserves: ``gpus_per_worker`` GPUs and one CPU on a cluster with GPUs, else ``threads`` CPUs.

    Example:
        >>> actor_resources(BatchSettings(gpus_per_worker=0.5), on_gpu=True)
        {'num_gpus': 0.5, 'num_cpus': 1}
    """
    if on_gpu:
        return {"num_gpus": settings.gpus_per_worker, "num_cpus": 1}
    return {"num_cpus": settings.threads}


def check_pool_fits(pool: int, resources: dict[str, float], settings: BatchSettings) -> None:
    """Refuse a pool whose actors ask for more than the cluster has (Ray Data would wait for them forever).

    Raises:
        ValueError: naming what the pool needs and what the cluster has.

    Example:
        >>> check_pool_fits(2, {"CPU": 2.0}, BatchSettings(threads=1))
    """
    gpus = resources.get("GPU", 0.0)
    if gpus > 0:
        needed, have, what = pool * settings.gpus_per_worker, gpus, "GPUs"
        hint = "lower --workers or --gpus-per-worker"
    else:
        needed, have, what = float(pool * settings.threads), resources.get("CPU", 0.0), "CPUs"
        hint = "lower --workers or --threads"
    if needed > have:
        raise ValueError(f"{pool} workers need {needed:g} {what} but the Ray cluster has {have:g}; {hint}")


def check_output_apart(inputs: Sequence[str], units: Sequence[WorkUnit], out_dir: Path) -> None:
    """Refuse an output folder that holds an input, or lies inside an input folder.

    An input PNG inside the output folder passes for the mask of its own name (the job then reports it done and
    writes nothing), and masks written inside an input folder become frames of the next run.

    Args:
        inputs: the job's inputs as given (files, folders, patterns).
        units: what they expanded to.
        out_dir: the output folder.

    Raises:
        ValueError: naming the input and the output folder.

    Example:
        >>> check_output_apart(["data/a.png"], [WorkUnit("image", "data/a.png", "a.png")], Path("masks"))
    """
    output = out_dir.resolve()
    folders = [Path(text) for text in inputs if Path(text).is_dir()]
    for source, shown in [*((Path(unit.path), unit.path) for unit in units), *((f, str(f)) for f in folders)]:
        resolved = source.resolve()
        if resolved.is_relative_to(output) or (source.is_dir() and output.is_relative_to(resolved)):
            raise ValueError(f"the output folder {str(out_dir)!r} and the input {shown!r} overlap: masks would "
                             "pass for frames or frames for masks; give the masks a folder of their own")


def job_identity(settings: BatchSettings, device: str) -> dict[str, Any]:
    """What decides a job's masks: the model file's bytes (its SHA-256), the precision it runs at, the working size.

    Example:
        >>> job_identity(BatchSettings("camvid", precision="fp32"), "cpu")["precision"]  # doctest: +SKIP
        'fp32'
    """
    engine = settings.engine(device)
    model = Path(engine["model"])
    return {"model": engine["model"], "model_sha256": file_sha256(model) if model.is_file() else None,
            "precision": engine["precision"],
            "working_size": None if settings.working_size is None else list(settings.working_size)}


def check_same_job(out_dir: Path, identity: dict[str, Any]) -> None:
    """Refuse to resume into a folder whose masks another model, precision or working size made.

    A re-run skips every frame whose mask exists, so it would report another model's masks as its own work done
    (the earlier job is known from the ``job.json`` it wrote when it started, or, from a unetrt before that file,
    the ``summary.json`` it wrote when it finished).

    Raises:
        ValueError: naming both jobs and the fix.
    """
    before = _earlier_identity(out_dir)
    if before is None:
        return  # no job started here, or one of a unetrt that did not record its model's bytes
    keys = ("model_sha256", "precision", "working_size")
    if all(before[key] == identity[key] for key in keys):
        return
    if not any(path.is_file() and PARTIAL_MARK not in path.name for path in out_dir.rglob("*.png")):
        return  # its masks were deleted: nothing to mix with

    def described(job: dict[str, Any]) -> str:
        size = ("working size " + "x".join(map(str, job["working_size"])) if job["working_size"]
                else "the model's working size")
        digest = str(job["model_sha256"])[:12]
        return f"model {job['model']} (SHA-256 {digest}), {job['precision']}, {size}"

    raise ValueError(f"the output folder {str(out_dir)!r} holds the masks of another job ({described(before)}; this "
                     f"job: {described(identity)}), which this job would count as already done: give this job "
                     "another output folder, or delete those masks to segment again")


def _earlier_identity(out_dir: Path) -> dict[str, Any] | None:
    """The identity of the last job in ``out_dir`` (see :func:`job_identity`), or None when none is recorded."""
    try:
        record = json.loads((out_dir / JOB_NAME).read_text())
        return {key: record[key] for key in ("model", "model_sha256", "precision", "working_size")}
    except (OSError, ValueError, TypeError, KeyError):
        pass  # none, or a damaged one: the summary, when the job finished, says the same
    try:
        earlier = json.loads((out_dir / SUMMARY_NAME).read_text())
        return {"model": earlier["model"], "model_sha256": earlier["model_sha256"],
                "precision": earlier["precision"], "working_size": earlier["settings"]["working_size"]}
    except (OSError, ValueError, TypeError, KeyError):
        return None


def run_batch(inputs: Sequence[str], out_dir: str | Path, settings: BatchSettings, address: str | None = None,
              workers: int | None = None, segmenter_factory: SegmenterFactory | None = None,
              progress: bool | None = None) -> dict[str, Any]:
    """Segment every frame of ``inputs`` on a Ray cluster and write masks and ``summary.json`` to ``out_dir``.

    Outputs that already exist are skipped, so a re-run after an interruption writes only what is missing.

    Args:
        inputs: image files, folders, globs, video files (see :func:`unetrt.batch.inputs.expand_inputs`).
        out_dir: the output folder, created when missing (on a multi-node cluster: shared storage, the same
            path on every node, as the inputs and the model file).
        settings: the model and what to write.
        address: see :func:`ray_connection`.
        workers: actors in the pool (None: :func:`default_workers`).
        segmenter_factory: opens each actor's Segmenter instead of ``settings`` (it must pickle).
        progress: show a progress bar (None: when stderr is a terminal).

    Returns:
        The summary that was written to ``out_dir/summary.json``: frames written, skipped and failed, the
        failures, wall time, frames per second per worker, model, backend, precision, the cluster's nodes, and the
        subfolders of input folders whose images and videos were not read (``not_read``).

    Raises:
        ValueError: on bad inputs, settings, worker count or output folder, or an output folder holding the masks of
            another model, precision or working size (:func:`check_same_job`).
        FileNotFoundError: when an input or the model does not exist.
        ImportError: when Ray Data is not installed.
        NoRayClusterError: when no cluster answers at ``address`` (the output folder is then not created).
        TerminatedError: on SIGTERM (in the main thread); what was written stays, no summary is written.

    Ray's connection belongs to the process: do not run two jobs at once from threads of one process.

    Example:
        >>> summary = run_batch(["clips/*.mp4"], "masks", BatchSettings("camvid"), address="auto")  # doctest: +SKIP
        >>> summary["frames"]["failed"]  # doctest: +SKIP
        0
    """
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    folder = Path(out_dir)
    # Checked here (a file is there, no permission, a name too long), created only once a cluster answers: a job
    # that cannot start leaves no empty folder behind.
    check_writable_file(folder / SUMMARY_NAME, f"output folder {str(folder)!r}")
    units = expand_inputs(inputs)
    check_output_apart(inputs, units, folder)
    settings.engine("auto")  # a bad model, backend or precision is reported before any node starts on it
    failures: list[dict[str, Any]] = []
    per_worker: dict[str, dict[str, Any]] = defaultdict(lambda: {"frames": 0, "busy_s": 0.0})
    engines: set[tuple[str, str]] = set()
    said: set[str] = set()  # the actors' warnings, each said once
    start = time.perf_counter()
    # SIGTERM (docker stop, a scheduler) ends the job as Ctrl-C does: what is written stays, Ray is shut down,
    # and a re-run resumes; without this Ray's own handler dumps a native stack trace.
    with ray_connection(address) as ray, StopOnSigterm() as sigterm:
        sigterm.stop = raise_terminated
        nodes = cluster_nodes(ray)
        resources = ray.cluster_resources()
        on_gpu = resources.get("GPU", 0.0) > 0
        pool = workers if workers is not None else default_workers(resources, settings)
        check_pool_fits(pool, resources, settings)
        if not on_gpu and settings.engine("cpu")["backend"] == "tensorrt":
            # Each actor's Segmenter would refuse it, and Ray would print every actor's traceback before giving up.
            raise ValueError(f"{settings.model!r} runs on TensorRT here (backend {settings.backend!r}), which needs an "
                             "NVIDIA GPU, and the Ray cluster has none; to run on its CPUs give an .onnx model or a "
                             "bundled name with --backend auto, onnxruntime or openvino")
        device = "cuda" if on_gpu else "cpu"
        identity = job_identity(settings, device)
        check_same_job(folder, identity)
        # After the pool is known to fit: a job refused there leaves no empty folder behind either.
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / JOB_NAME, identity)
        done = [unit_is_done(unit, folder, settings.overlay) for unit in units]
        # A row found done during the job counts as skipped only when its mask existed before the job: Ray re-runs
        # a batch whose results died with their actor, and that batch then finds the masks this job already wrote.
        written_before = {path.relative_to(folder).as_posix() for path in folder.rglob("*.png")}
        pending = [unit for unit, finished in zip(units, done) if not finished]
        counts: Counter[str] = Counter({SKIPPED: sum(unit.frames for unit, finished in zip(units, done) if finished)})
        known = all(unit.frames > 0 for unit in pending)
        total = sum(unit.frames for unit in pending) if known else None
        with tqdm(total=total, desc="segmenting", unit="frame", disable=None if progress is None else not progress,
                  dynamic_ncols=True) as bar:
            if pending:
                dataset = _dataset(ray, pending, folder, settings, pool, on_gpu, len(nodes), segmenter_factory)
                for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                    _tally(batch, counts, failures, per_worker, engines, written_before)
                    met = {line for text in batch["warnings"] for line in str(text).splitlines()}
                    for message in sorted(met - said):
                        said.add(message)
                        warn_caller(message)
                    bar.update(len(batch["output"]))
                    bar.set_postfix(failed=counts[FAILED], refresh=False)
                    sigterm.raise_if_received()
        sigterm.raise_if_received()
    wall = time.perf_counter() - start
    remove_partial_files(folder)
    summary = _summary(settings, units, counts, failures, per_worker, engines, wall, nodes, address, pool, device)
    summary["model_sha256"] = identity["model_sha256"]
    summary["not_read"] = unread_subfolders(inputs, units)
    write_json(folder / SUMMARY_NAME, summary)
    return summary


def _dataset(ray: Any, units: list[WorkUnit], out_dir: Path, settings: BatchSettings, pool: int, on_gpu: bool,
             node_count: int, segmenter_factory: SegmenterFactory | None) -> Any:
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # ours counts frames; Ray's would draw over it
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    # Videos first, one block each, so that the long decodes start early; Ray Data spreads tasks over the nodes.
    ordered = sorted(units, key=lambda unit: unit.kind == IMAGE)
    items = ray.data.from_items([unit.as_row() for unit in ordered], override_num_blocks=min(len(ordered), 200))
    frames = items.flat_map(read_unit, fn_kwargs={"out_dir": str(out_dir), "overlay": settings.overlay},
                            num_cpus=0,
                            compute=ray.data.TaskPoolStrategy(size=min(len(ordered), READ_TASKS_PER_NODE * node_count)))
    return frames.map_batches(
        SegmentWorker, batch_size=settings.batch_size, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=pool),
        fn_constructor_kwargs={"settings": settings, "out_dir": str(out_dir), "device": "cuda" if on_gpu else "cpu",
                               "segmenter_factory": segmenter_factory},
        **actor_resources(settings, on_gpu))


def _tally(batch: dict[str, np.ndarray], counts: Counter[str], failures: list[dict[str, Any]],
           per_worker: dict[str, dict[str, Any]], engines: set[tuple[str, str]], written_before: set[str]) -> None:
    for row in range(len(batch["output"])):
        status = str(batch["status"][row])
        if status == SKIPPED and str(batch["output"][row]) not in written_before:
            status = WRITTEN
        counts[status] += 1
        worker = per_worker[str(batch["worker"][row])]
        worker["node"] = str(batch["node"][row])
        worker["busy_s"] += float(batch["busy_s"][row])
        engines.add((str(batch["backend"][row]), str(batch["device"][row])))
        if status == WRITTEN:
            worker["frames"] += 1
        elif status == FAILED:
            index = int(batch["index"][row])
            failures.append({"input": str(batch["input"][row]), "frame": None if index == WHOLE_INPUT else index,
                             "output": str(batch["output"][row]), "error": str(batch["error"][row])})


def _summary(settings: BatchSettings, units: list[WorkUnit], counts: Counter[str], failures: list[dict[str, Any]],
             per_worker: dict[str, dict[str, Any]], engines: set[tuple[str, str]], wall: float,
             nodes: list[dict[str, Any]], address: str | None, pool: int, device: str) -> dict[str, Any]:
    workers = {name: {"node": figures.get("node"), "frames": figures["frames"], "busy_s": round(figures["busy_s"], 3),
                      "fps": round(figures["frames"] / figures["busy_s"], 2) if figures["busy_s"] > 0 else None}
               for name, figures in sorted(per_worker.items())}
    frames = {"total": counts[WRITTEN] + counts[SKIPPED] + counts[FAILED], "written": counts[WRITTEN],
              "skipped": counts[SKIPPED], "failed": counts[FAILED]}
    return {
        **settings.engine(device),
        "engines": sorted(f"{backend} on {where}" for backend, where in engines),
        "settings": asdict(settings),
        "inputs": len(units),
        "frames": frames,
        "failures": sorted(failures, key=lambda f: (f["input"], -1 if f["frame"] is None else f["frame"])),
        "wall_time_s": round(wall, 3),
        "fps": round(counts[WRITTEN] / wall, 2) if wall > 0 else None,
        "workers": workers,
        "pool_size": pool,
        "cluster": {"address": address or "local", "nodes": nodes},
    }


def write_json(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` (the summary, the job's identity) as JSON under a temporary name, then rename it into
    place, so that a job stopped meanwhile leaves the earlier file or the new one, never half of one."""
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    partial.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(partial, path)


__all__ = ["FAILED", "SKIPPED", "WRITTEN", "BatchSettings", "SegmentWorker", "run_batch"]
