"""``engine: ray`` (every task that encodes videos): the local engine's items, decoder and rows, run as Ray Data
stages across a cluster.

The driver (:func:`coca_video.engines.cached.encode`) subtracts the keys already done as for the local engine;
this module takes the remaining :class:`~coca_video.scoring.ScoreItem`\\ s and runs::

    from_items(items) -> decode actors (CPU) -> encode actors (the model) -> counts back to the driver

* A decode actor decodes one item at a time through the local engine's dataset (:func:`decode_dataset`, so the
  decode happens in the time-limited helper process of :mod:`coca_video.video.isolate`, where a segfault or a hang
  in FFmpeg stays); it never raises: a bad file travels on as its error record.
* An encode actor loads the model once (``make_scorer``), sets its torch threads from the CPUs it reserved, turns a
  batch of records into rows with :func:`~coca_video.scoring.batch_rows` (the local engine's code: nothing about a
  row is written twice) and appends them to the driver's store, opened in the actor under a part rank of its own
  (random, so names are unique per actor and run): the output's :class:`~coca_video.data.results.PartStore`, whose
  parts are written atomically, or a probe's feature cache, whose actors write distinct rows of the memory-mapped
  array, each with its own state file. Only each item's position and counts go back to the driver, which tells the
  pass's ``on_stored`` of the items as their rows land and merges the parts at the end as the local engine does. A
  batch whose rows this run already wrote (see :class:`Written`) is not scored again.
* A crashed actor (or one lost with its node) is restarted at most ``ray.max_retries`` times (Ray Data's default
  is forever), then the run fails; its batch is retried on the restarted actor for as long as it lives (a retry
  count would run out while Ray is still finding out that a node is gone: it counts every "actor unavailable"
  reply). A deterministic crash kills each restart, so the run stops after ``max_retries + 1`` crashes. A batch
  retried after its part was written (the actor lost between the write and its reply) finds its rows written.
  Ray's ``max_errored_blocks`` stays off: it would drop rows silently.

Ray is an optional extra (``pip install 'coca-video[ray]'``); this module imports it only when a run starts.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import pickle
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

import numpy as np

from ..config import DecodeConfig, RayConfig
from ..data.results import SEGMENT_COLUMNS, row_key, stored_key
from ..data.video import ClipSampling, VideoItem, background_priority, clip_sampling, collate_videos, \
    decode_dataset, describe_error
from ..data.segments import Cut, SegmentRule, WindowsOf
from ..errors import MissingExtraError
from ..scoring import Counts, ScoreItem, VideoScorer, batch_rows
from ..transforms import ImageTransform
from .store import RowStore, Stored

PART_RANK_BASE = 1_000_000  # encode actors' part ranks start here, clear of torchrun's ranks 0..N-1
PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the folder holding this coca_video, for local workers


def require_ray() -> Any:
    """The ``ray`` module with Ray Data; without it a one-line error naming the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401 -- ray without its data extra imports, but cannot run the stages
    except ImportError:
        raise MissingExtraError("engine=ray needs Ray Data, which is not installed; pip install "
                                "'coca-video[ray]'") from None
    return ray


def local_cpus(cluster: RayConfig) -> int:
    """Logical CPUs for a local cluster: ``num_cpus``, else this machine's, but at least what the pools set in full
    reserve plus one (logical CPUs above the physical count keep a pool from waiting forever for a CPU)."""
    if cluster.num_cpus is not None:
        return cluster.num_cpus
    return max(os.cpu_count() or 1, math.ceil(cluster.reserved_cpus()) + 1)


class Pools(NamedTuple):
    """The actor pools a run uses: ``ray.*`` as set, the keys left null sized from the cluster (:func:`sized`).
    ``threads``: each encode actor's torch threads (None: every core of its node, for one encode actor a node)."""

    decode_actors: int
    cpus_per_decoder: float
    encode_actors: int
    cpus_per_encoder: float
    gpus_per_encoder: float
    threads: int | None


def sized(cluster: RayConfig, nodes: list[dict[str, float]], on_gpu: bool) -> Pools:
    """The pools for a cluster of ``nodes`` (each node's resources: ``CPU``, ``GPU``) and a model on a GPU or not,
    keeping every key ``cluster`` sets. With GPUs for the model: an encode actor per GPU (1 GPU, 1 CPU each), the
    other CPUs decoding, a decode actor each. Otherwise the encoder is the bottleneck (on 2 cores it costs about 4x
    the decoding of the default model's clips), so as in the local engine it gets every core: one encode actor per
    node whose torch threads are the node's cores, reserving all but a quarter of its CPUs (at least one, at most
    half); that quarter is reserved by decode actors of one CPU each (half a CPU on a one-core node), which run at
    the lowest priority (as the local engine's decoding workers) and so decode on the cores the model leaves idle.
    One decode actor per decoding CPU, not two of half a CPU: on 2 cores a second one takes the encoder's cores
    (bench_ray.py: 0.67x the local engine with two, 0.97x with one)."""
    cpu_nodes = [node for node in nodes if node.get("CPU", 0) > 0] or [{"CPU": 1.0}]
    cpus, gpus = sum(node["CPU"] for node in cpu_nodes), sum(node.get("GPU", 0) for node in nodes)
    if on_gpu and gpus > 0:
        gpus_each = given(cluster.gpus_per_encoder, 1.0)
        encoders = given(cluster.encode_actors, max(1, int(gpus / gpus_each)))
        cpus_each = given(cluster.cpus_per_encoder, 1.0)
        per_decoder = given(cluster.cpus_per_decoder, 1.0)
        decoders = given(cluster.decode_actors, max(1, int((cpus - encoders * cpus_each) / per_decoder)))
        return Pools(decoders, per_decoder, encoders, cpus_each, gpus_each, max(1, int(cpus_each)))
    per_node = min(node["CPU"] for node in cpu_nodes)
    share = min(max(1.0, per_node // 4), per_node / 2)  # each node's CPUs for decoding
    per_decoder = given(cluster.cpus_per_decoder, min(1.0, share))
    decoders = given(cluster.decode_actors, max(1, int(share * len(cpu_nodes) / per_decoder)))
    encoders = given(cluster.encode_actors, len(cpu_nodes))
    left = min((cpus - decoders * per_decoder) / encoders, per_node)  # per encoder (on one node), in half CPUs
    cpus_each = given(cluster.cpus_per_encoder, max(0.5, math.floor(left * 2) / 2))
    whole_nodes = cluster.encode_actors is None and cluster.cpus_per_encoder is None
    return Pools(decoders, per_decoder, encoders, cpus_each, given(cluster.gpus_per_encoder, 0.0),
                 None if whole_nodes else max(1, int(cpus_each)))


def given(value: Any, default: Any) -> Any:
    """A key's value as set, else (null) the default sized from the cluster."""
    return default if value is None else value


def cluster_nodes(ray: Any) -> list[dict[str, float]]:
    """The resources of each live node of the cluster ``ray`` is connected to."""
    return [node["Resources"] for node in ray.nodes() if node.get("Alive")]


@contextlib.contextmanager
def connected(cluster: RayConfig) -> Iterator[Any]:
    """Ray, connected for the run: a process already connected (``ray.init`` done by the caller) stays as it is;
    else ``address`` null starts a local cluster of this machine, whose workers import this same package, and ends
    it on every way out; ``auto`` or ``ray://...`` joins a running cluster (every node needs coca-video installed)."""
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    if cluster.address is not None:
        ray.init(address=cluster.address, **log_options(cluster))
        quiet_console(cluster)
        try:
            yield ray
        finally:
            ray.shutdown()
        return
    with local_cluster(ray, cluster):
        yield ray


def log_options(cluster: RayConfig) -> dict[str, Any]:
    """``ray.init``'s logging: with ``verbose`` off, the driver's ``ray`` logger at ERROR (its start-up WARNINGs,
    e.g. about token authentication, read as failures in a user's terminal) and the workers' and raylets' output
    kept in the session's log files instead of this terminal (a task that fails still raises here)."""
    if cluster.verbose:
        return {"logging_level": logging.WARNING}
    return {"logging_level": logging.ERROR, "log_to_driver": False}


def quiet_console(cluster: RayConfig) -> None:
    """With ``verbose`` off, Ray Data's terminal lines (its own ``ray.data`` logger, which does not go through
    ``ray``'s) at ERROR too; its log file in the session folder keeps everything."""
    if cluster.verbose:
        return
    import ray.data  # noqa: F401 -- configures the ray.data logger and its handlers

    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setLevel(max(handler.level, logging.ERROR))


@contextlib.contextmanager
def local_cluster(ray: Any, cluster: RayConfig) -> Iterator[None]:
    """A local cluster of this machine for the block, whose every process (gcs_server, raylet, agents, workers,
    their decode helpers) ends with this process even when it is SIGKILLed (:mod:`.reaper`).

    Its workers import this package through ``PYTHONPATH`` in the environment they inherit, not a ``runtime_env``:
    a job with a runtime environment cannot use the idle workers the raylet starts with (one per CPU), so each actor
    waited for a fresh worker set up for it (4.5 vs 3.9 CPU-s and 6.3 vs 4.0 s for two actors importing the
    package, measured on 2 cores) while the idle ones were started for nothing."""
    from . import reaper

    path = os.pathsep.join(p for p in (PACKAGE_ROOT, os.environ.get("PYTHONPATH")) if p)
    token, watcher = reaper.start()
    try:
        # inherited by every process Ray starts from here on: the token marks them for the reaper
        with environment({reaper.TOKEN_ENV: token, "PYTHONPATH": path}):
            ray.init(address="local", num_cpus=local_cpus(cluster), include_dashboard=False, **log_options(cluster))
            quiet_console(cluster)
            try:
                yield
            finally:
                ray.shutdown()
    finally:
        reaper.finish(watcher)


@contextlib.contextmanager
def environment(variables: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``variables`` set for the block, then as it was."""
    before = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class Decoder:
    """A decode actor: a pickled :class:`ScoreItem` (and its ``index`` in the run's items) -> the local engine's
    record for it (frames and metadata, or the error), pickled. It runs at the lowest CPU priority, as the local
    engine's decoding workers do."""

    def __init__(self, transform: ImageTransform, decode: DecodeConfig, sampling: ClipSampling) -> None:
        self.transform, self.decode, self.sampling = transform, decode, sampling
        background_priority()

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        item = pickle.loads(row["item"])
        video = VideoItem(item.key[0], start_sec=item.start, end_sec=item.end)
        try:
            record = decode_dataset([video], self.transform, self.decode, self.sampling)[0]
        except Exception as err:  # noqa: BLE001 -- the dataset catches decode errors; this is anything else
            record = {"index": 0, "path": video.path, "label": -1, "error": describe_error(video.path, err)}
        return {"item": row["item"], "index": row["index"],
                "record": pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL)}


class Written:
    """The rows this run has written so far, by file: read from the parts of ranks that were not there when the run
    began (``earlier_ranks``), then kept up to date with the actor's own. Ray retries a batch when its actor is lost
    between writing the batch's part and replying (a node gone, a kill), and the retry must find its rows done."""

    def __init__(self, store: RowStore, earlier_ranks: frozenset[int], per_frame: bool) -> None:
        self.per_frame = per_frame
        self.rows: dict[tuple, list[tuple[float | None, str]]] = {}  # file key -> (window start, status) per row
        self.add(store.rows_since(earlier_ranks))

    def add(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self.rows.setdefault(row_key(row)[:3], []).append((row.get(SEGMENT_COLUMNS[0]), row["status"]))

    def statuses(self, item: ScoreItem) -> list[str]:
        """The statuses of the rows written for ``item`` (none: not written yet). A whole file's rows are all its
        file's; a window's, the one starting where it does; an fps chunk's, its frames, which start inside it."""
        rows = self.rows.get(stored_key(item.key), [])
        if item.start is None:
            return [status for _, status in rows]
        if self.per_frame:
            return [status for start, status in rows if start is not None and item.start <= start < item.end]
        return [status for start, status in rows if start == item.start]


class Encoder:
    """An encode actor: holds the scorer (``make_scorer``, called once), turns a batch of decoded records into rows
    as the local engine does and appends them to the driver's store, opened here (``open_store``) under a part rank
    of its own; items whose rows this run already wrote (a retried batch, see :class:`Written`) are counted, not
    scored again. Returns a row per item once its rows are stored: its ``index`` and its ``ok`` and ``error`` rows."""

    def __init__(self, make_scorer: Callable[[], VideoScorer], open_store: Callable[[int], RowStore], per_frame: bool,
                 threads: int | None, earlier_ranks: frozenset[int]) -> None:
        import torch

        torch.set_num_threads(threads or usable_cores())
        self.scorer, self.per_frame = make_scorer(), per_frame
        self.store = open_store(PART_RANK_BASE + int.from_bytes(os.urandom(6), "big"))
        self.written = Written(self.store, earlier_ranks, per_frame)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items: list[ScoreItem] = [pickle.loads(b) for b in batch["item"]]
        done = [self.written.statuses(item) for item in items]
        fresh = [i for i, statuses in enumerate(done) if not statuses]
        records = [pickle.loads(batch["record"][i]) | {"index": j} for j, i in enumerate(fresh)]
        rows = batch_rows(self.scorer, collate_videos(records), [items[i] for i in fresh],
                          self.per_frame) if fresh else []
        self.store.append(rows)
        self.written.add(rows)
        statuses = [self.written.statuses(item) for item in items]
        ok = [found.count("ok") for found in statuses]
        return {"index": np.asarray(batch["index"], dtype=np.int64), "ok": np.array(ok, dtype=np.int64),
                "error": np.array([len(found) - n for found, n in zip(statuses, ok)], dtype=np.int64)}


def usable_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def pipeline(ray: Any, todo: list[ScoreItem], make_scorer: Callable[[], VideoScorer], transform: ImageTransform,
             decode: DecodeConfig, sampling: ClipSampling, store: RowStore, cluster: RayConfig, pools: Pools) -> Any:
    """The lazy dataset of ``todo``: decode actors, then encode actors writing parts; one count row per item (its
    index in ``todo``). No pool has more actors than there are batches (an actor that gets no work would still load
    the model)."""
    from ray.data import ActorPoolStrategy, DataContext

    context = DataContext.get_current()
    context.enable_progress_bars, context.print_on_execution_start = False, False  # the driver shows its own bar
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # its line saying they are off
    logging.getLogger("ray.data._internal.execution.streaming_executor").setLevel(logging.WARNING)  # "finished in"
    # Ray Data restarts actors forever unless told: restarts are bounded, the retries of a task on its (restarted)
    # actor are not (-1), since they happen only while the actor lives. Neither has a named parameter in 2.60 (the
    # extra is pinned below 2.61), only the deprecated **ray_remote_args, whose warning is noise here
    retries = {"max_restarts": cluster.max_retries, "max_task_retries": -1}
    rows = [{"item": pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL), "index": index}
            for index, item in enumerate(todo)]
    # a block per batch: decoders work on blocks in parallel, and each block reaches the encoders as one batch
    blocks = math.ceil(len(rows) / decode.batch_size)
    items = ray.data.from_items(rows, override_num_blocks=blocks)
    decoder = {"transform": transform, "decode": decode, "sampling": sampling}
    encoder = {"make_scorer": make_scorer, "open_store": store.opener(), "per_frame": sampling.mode == "fps",
               "threads": pools.threads, "earlier_ranks": frozenset(store.ranks())}
    gpus = {"num_gpus": pools.gpus_per_encoder} if pools.gpus_per_encoder else {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        decoded = items.map(Decoder, fn_constructor_kwargs=decoder, num_cpus=pools.cpus_per_decoder,
                            compute=ActorPoolStrategy(size=min(pools.decode_actors, blocks)), **retries)
        return decoded.map_batches(Encoder, fn_constructor_kwargs=encoder, batch_size=decode.batch_size,
                                   batch_format="numpy",
                                   compute=ActorPoolStrategy(size=min(pools.encode_actors, blocks)),
                                   num_cpus=pools.cpus_per_encoder, **gpus, **retries)


def score_items(todo: list[ScoreItem], make_scorer: Callable[[], VideoScorer], transform: ImageTransform,
                decode: DecodeConfig, sampling: ClipSampling | None, store: RowStore, cluster: RayConfig,
                show: bool = True, on_gpu: bool = False, on_stored: Stored | None = None) -> Counts:
    """Score ``todo`` on Ray into ``store`` (a part store is not merged: the caller merges, as after the local
    engine); ``make_scorer`` (picklable, e.g. a ``functools.partial`` of a module-level function) builds the scorer
    in each encode actor (on a GPU when ``on_gpu``: the pools are sized for it); ``on_stored`` is told here, in the
    driver, of each item whose rows an actor has stored. Returns the rows written, ok and error, as
    :func:`~coca_video.engines.local.score_files` does, with the pools used and the busy seconds per stage."""
    from tqdm import tqdm

    counts = Counts()
    if not todo:
        return counts
    sampling = clip_sampling(decode, sampling)
    with connected(cluster) as ray:
        pools = sized(cluster, cluster_nodes(ray), on_gpu)
        scored = pipeline(ray, todo, make_scorer, transform, decode, sampling, store, cluster, pools)
        unit = "video" if todo[0].start is None else "window"
        with tqdm(total=len(todo), unit=unit, disable=not show, dynamic_ncols=True) as bar:  # done, videos/s
            for row in scored.iter_rows():
                counts.ok += int(row["ok"])
                counts.error += int(row["error"])
                if on_stored is not None:
                    on_stored([todo[int(row["index"])]])
                bar.update(1)
                bar.set_postfix(ok=counts.ok, error=counts.error)
        counts.stage_seconds = stage_seconds(scored)
        counts.pools = pools._asdict()
    return counts


class Cutter:
    """A decode actor that cuts: a video's path -> its windows (``None``: its whole-file item reports why; a string:
    why cutting ran out of time), as the local engine's decoding workers work them out
    (:class:`~coca_video.data.segments.WindowsOf`), pickled. It runs at the lowest CPU priority, as the decode actors
    do."""

    def __init__(self, rule: SegmentRule, decode: DecodeConfig) -> None:
        self.rule, self.decode = rule, decode
        background_priority()

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        windows = WindowsOf([row["path"]], self.rule, self.decode)[0]
        return {"index": row["index"], "windows": pickle.dumps(windows, protocol=pickle.HIGHEST_PROTOCOL)}


def cut_videos(paths: list[str], rule: SegmentRule, decode: DecodeConfig, cluster: RayConfig) -> list[Cut]:
    """The windows of each of ``paths``, in order, worked out on a pool of decode actors (sized as the scoring
    run's, one video each at a time): scene cutting decodes every frame, so it runs where the decoding runs."""
    if not paths:
        return []
    from ray.data import ActorPoolStrategy

    with connected(cluster) as ray:
        pools = sized(cluster, cluster_nodes(ray), on_gpu=False)
        rows = [{"index": index, "path": str(path)} for index, path in enumerate(paths)]
        cut = ray.data.from_items(rows, override_num_blocks=len(rows)).map(
            Cutter, fn_constructor_kwargs={"rule": rule, "decode": decode}, num_cpus=pools.cpus_per_decoder,
            compute=ActorPoolStrategy(size=min(pools.decode_actors, len(rows))))
        found = {row["index"]: pickle.loads(row["windows"]) for row in cut.iter_rows()}
    return [found[index] for index in range(len(paths))]


STAGES = {"Decoder": "decode", "Encoder": "encode"}  # our actors' classes -> the summary's names for their stages


def stage_seconds(dataset: Any) -> dict[str, float]:
    """Busy seconds per stage of an executed dataset, from Ray Data's stats: the sum over its tasks of their wall
    time (a stage of N actors busy for T seconds reports about N*T), keyed ``decode``/``encode`` for our two (Ray's
    operator name for any other, e.g. the read of the items)."""
    times: dict[str, float] = {}
    summaries = [dataset._get_stats_summary()]  # 2.60's structured stats (stats() is text); earlier stages: parents
    while summaries:
        summary = summaries.pop()
        for op in summary.operators_stats:
            name = next((ours for cls, ours in STAGES.items() if f"({cls})" in op.operator_name), op.operator_name)
            busy = op.wall_time.sum if op.wall_time is not None else op.time_total_s
            times[name] = round(times.get(name, 0.0) + float(busy), 3)
        summaries += summary.parents
    return dict(reversed(times.items()))  # in pipeline order: the read, decode, encode
