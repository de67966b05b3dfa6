"""Video lists as a torch Dataset: decode sampled frames, preprocess them, and carry per-video errors in the batch.

One bad file never stops a batch: ``__getitem__`` turns any decode failure into an error record, and
:func:`collate_videos` stacks the good clips and lists the failures (index, path, reason) beside them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, NamedTuple, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from ..config import DecodeConfig
from ..storage import child, find_files, is_url, name_of, read_bytes, sibling
from ..transforms import ImageTransform
from ..video.isolate import follow_root
from ..video.source import open_video, reused_copies  # open_video's home; still importable from here


@dataclass
class VideoItem:
    """One video: its path, an optional integer label, and an optional [start, end) window in seconds."""

    path: str
    label: int = -1
    start_sec: float | None = None
    end_sec: float | None = None


@dataclass
class ClipSampling:
    """How frames are drawn: ``num_frames`` by TSN segments (``eval``: centres; ``train``: random in each
    segment), repeated for ``temporal_views`` evenly shifted views, each cut into ``spatial_crops`` (1 or 3) crops.
    ``fps``: one frame per ``1 / fps`` seconds of the item's window (fewer per second where the video would give more
    than ``max_frames``), at most ``num_frames``, padded to ``num_frames`` by repeating the last; the record's
    ``meta["frame_windows"]`` lists the real frames' [start, end) in seconds."""

    num_frames: int = 16
    mode: Literal["eval", "train", "linspace", "fps"] = "eval"
    temporal_views: int = 1
    spatial_crops: Literal[1, 3] = 1
    fps: float = 1.0
    max_frames: int | None = None


class VideoClipDataset(Dataset):
    """items -> {"frames": (V, T, 3, S, S) uint8, "index", "path"} or {"error": reason, ...}.

    V = temporal_views * spatial_crops. Frames are decoded already resized (short side S) and cropped with the
    model's transform but stay uint8 (a quarter of float32's bytes between processes): the consumer normalises them
    on the model's device with ``transform.normalise``. Train-mode randomness comes from ``(seed, epoch, index)``:
    worker count never changes it.
    """

    def __init__(self, items: Sequence[VideoItem], transform: ImageTransform, sampling: ClipSampling = ClipSampling(),
                 seed: int = 0, backend: str = "auto", timeout: float | None = None, device: str = "cpu") -> None:
        self.items, self.transform, self.sampling = list(items), transform, sampling
        self.seed, self.backend, self.timeout, self.device, self.epoch = seed, backend, timeout, device, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        """A batch's records (what a DataLoader asks a worker for): the items of one object or tar member (a video's
        scenes or windows, consecutive) share one download (:func:`~coca_video.video.source.reused_copies`)."""
        with reused_copies():
            return [self[index] for index in indices]

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        record: dict[str, Any] = {"index": index, "path": item.path, "label": item.label}
        try:
            record["frames"], record["meta"] = self.load(item, np.random.default_rng([self.seed, self.epoch, index]))
        except Exception as err:  # noqa: BLE001 -- any failure becomes this video's error, never the batch's
            record["error"] = describe_error(item.path, err)
        return record

    def load(self, item: VideoItem, rng: np.random.Generator) -> tuple[torch.Tensor, dict[str, Any]]:
        with open_video(item.path, backend=self.backend, short_side=self.transform.image_size, timeout=self.timeout,
                        device=self.device) as reader:
            return self.read(reader, item, rng)

    def read(self, reader, item: VideoItem, rng: np.random.Generator) -> tuple[torch.Tensor, dict[str, Any]]:
        """The clip(s) of ``item`` from its open reader: (views*C, T, 3, S, S) uint8 and the video's metadata."""
        meta = {"duration": reader.duration, "num_frames": reader.num_frames, "fps": reader.fps}
        if self.sampling.mode == "fps":
            indices, meta["frame_windows"] = self.fps_frames(reader, item)
            index_views = [indices]
        else:
            index_views = self.frame_indices(reader, item, rng)
        frames = torch.as_tensor(np.stack([reader.get_frames(indices) for indices in index_views]))  # (V, T, H, W, 3)
        # (C, views*T, 3, S, S) uint8; a training transform draws its one box and flip per clip from this rng
        crops = self.transform.crops(frames.flatten(0, 1), self.sampling.spatial_crops, rng)
        t = self.sampling.num_frames
        return crops.unflatten(1, (-1, t)).transpose(0, 1).flatten(0, 1), meta  # (views*C, T, 3, S, S)

    def fps_frames(self, reader, item: VideoItem) -> tuple[np.ndarray, list[tuple[float, float]]]:
        """sampling=fps: the [start, end) of each frame's interval in the item's window (the whole video if none),
        and the frame indices of those intervals padded to ``num_frames`` by repeating the last."""
        from ..video import fps_indices, fps_rate, fps_windows

        rate = fps_rate(reader.duration, self.sampling.fps, self.sampling.max_frames)
        start = item.start_sec or 0.0
        end = reader.duration if item.end_sec is None else item.end_sec
        windows = fps_windows(start, max(end, start), rate, limit=self.sampling.num_frames)
        indices = fps_indices(reader.fps, reader.num_frames, windows)
        return np.pad(indices, (0, self.sampling.num_frames - len(indices)), mode="edge"), windows

    def frame_indices(self, reader, item: VideoItem, rng: np.random.Generator) -> list[np.ndarray]:
        """One index array per temporal view: views shift the segment centres evenly within a segment."""
        from ..video import linspace_indices, sample_indices
        from ..video.sampling import segment_points, window_frames

        first, count = window_frames(reader.fps, reader.num_frames, item.start_sec, item.end_sec)
        views = []
        for view in range(self.sampling.temporal_views):
            if self.sampling.mode == "train":
                local = sample_indices(count, self.sampling.num_frames, mode="train", rng=rng)
            elif self.sampling.mode == "linspace":
                local = linspace_indices(count, self.sampling.num_frames)
            else:
                offset = (view + 0.5) / self.sampling.temporal_views  # 0.5 = the centre for one view
                local = segment_points(count, self.sampling.num_frames, offset)
            views.append(first + local)
        return views


def describe_error(path: str, err: Exception) -> str:
    reason = getattr(err, "reason", None) or f"{type(err).__name__}: {err}"
    return reason if str(path) in reason else f"{path}: {reason}"


class VideoBatch(NamedTuple):
    """The clips of one batch that decoded, and the ones that did not."""

    frames: torch.Tensor | None  # (B, V, T, 3, S, S) uint8, cropped, not normalised; None when nothing decoded
    indices: list[int]  # dataset index of each decoded clip
    paths: list[str]
    labels: torch.Tensor  # (B,) long, -1 for unlabelled
    meta: dict[int, dict[str, Any]]  # dataset index -> duration, num_frames, fps
    errors: list[tuple[int, str, str]]  # (dataset index, path, reason) of the clips that failed


def collate_videos(records: list[dict[str, Any]]) -> VideoBatch:
    """Stack the clips that decoded; list the ones that did not as ``errors``."""
    good = [r for r in records if "frames" in r]
    return VideoBatch(
        # in a worker, default_collate stacks straight into shared memory: no second copy to send the batch
        frames=default_collate([r["frames"] for r in good]) if good else None,
        indices=[r["index"] for r in good],
        paths=[r["path"] for r in good],
        labels=torch.tensor([r["label"] for r in good], dtype=torch.long),
        meta={r["index"]: r["meta"] for r in good},
        errors=[(r["index"], r["path"], r["error"]) for r in records if "error" in r],
    )


def video_loader(dataset: Dataset, batch_size: int, workers: int = 2, batches: list[list[int]] | None = None,
                 gate: bool = False) -> DataLoader:
    """A DataLoader over ``dataset`` in order, or over the given ``batches`` of indices (then ``batch_size`` is
    unused), that never raises on a bad video (errors ride in the batch).

    Decoding workers run at the lowest CPU priority: where cores are scarce the model keeps them (preempting one of
    its threads stalls every thread of a parallel op) and decoding fills the gaps. With 2 cores this makes scoring
    ~16% faster than workers at equal priority (benchmarks/bench_score.py); with spare cores it changes nothing.
    ``gate`` (for a model that keeps every core busy, see :func:`model_fills_cores`) goes further: a worker starts a
    video only while this process waits for a batch (:class:`DecodeGate`).
    Where CUDA is present the uint8 batches are pinned, so their copy to the GPU (``non_blocking``) overlaps work.
    """
    batching = {"batch_sampler": batches} if batches is not None else {"batch_size": batch_size}
    options = dict(num_workers=workers, collate_fn=collate_videos, persistent_workers=False,
                   prefetch_factor=2 if workers else None, worker_init_fn=background_priority,
                   pin_memory=torch.cuda.is_available(), **batching)
    if gate and workers:
        return GatedLoader(GatedDataset(dataset, DecodeGate()), **options)
    return DataLoader(dataset, **options)


def decode_loader(items: Sequence[VideoItem], transform: ImageTransform, decode: DecodeConfig,
                  sampling: ClipSampling | None = None, seed: int = 0, batches: list[list[int]] | None = None,
                  epoch: int = 0, model_device: str | torch.device = "cpu") -> DataLoader:
    """A :func:`video_loader` over ``items`` as a task's decode block says (frames, sampling, backend, time limit,
    workers, batch size); ``sampling`` replaces the block's frame rule (training clips, multi-view testing);
    ``epoch`` seeds training draws; workers are gated when the model on ``model_device`` fills every core."""
    dataset = decode_dataset(items, transform, decode, sampling, seed)
    dataset.set_epoch(epoch)
    return video_loader(dataset, decode.batch_size, decode.workers, batches=batches,
                        gate=model_fills_cores(model_device))


def clip_sampling(decode: DecodeConfig, sampling: ClipSampling | None = None) -> ClipSampling:
    """``sampling``, or the one clip a task's decode block asks for (its frames, sampling rule, fps and cap)."""
    return sampling or ClipSampling(decode.num_frames, mode=decode.sampling, fps=decode.fps,
                                    max_frames=decode.max_frames)


def decode_dataset(items: Sequence[VideoItem], transform: ImageTransform, decode: DecodeConfig,
                   sampling: ClipSampling | None = None, seed: int = 0) -> VideoClipDataset:
    """The :class:`VideoClipDataset` of ``items`` as a task's decode block says (backend, time limit, device);
    ``sampling`` replaces the block's frame rule (see :func:`clip_sampling`)."""
    return VideoClipDataset(items, transform, clip_sampling(decode, sampling), seed=seed, backend=decode.backend,
                            timeout=decode.timeout, device=decode.device)


def background_priority(worker_id: int = 0) -> None:
    """Lowest priority for a decoding worker and, inherited, the helper process it decodes in; the worker ends as
    soon as the run's root process does (``isolate.follow_root``), not at the DataLoader's next 5 s check."""
    if hasattr(os, "nice"):
        os.nice(19)
    follow_root()


# -- decoding only while the model waits ------------------------------------------------------------------------------
GATE_POLL_SECONDS = 0.5  # how often a worker waiting at a closed gate checks that the model's process still lives


def model_fills_cores(device: str | torch.device) -> bool:
    """Whether a model on ``device`` keeps every core of this process busy while it computes: on the CPU, with as
    many torch threads as usable cores (torch's default). Then decoding beside it only slows it down."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return torch.device(device).type == "cpu" and torch.get_num_threads() >= cores


class DecodeGate:
    """Open while the model's process waits for its next batch, closed while it computes; decoding workers start a
    video only while it is open.

    A model on the CPU with a thread per core runs every op in parallel, and each op waits for its slowest thread: a
    worker that takes a core for a few milliseconds of decoding, even at the lowest priority, stalls the whole op.
    Decoding in the gaps instead costs the same CPU once, where nothing else runs. coca_ViT-B-32 int8 scoring 160
    Kinetics-like clips on 2 cores: 1.9% more videos/s (median of 8 back-to-back pairs, ahead in 7; 3.52 vs 3.43).
    A worker waits in steps of ``GATE_POLL_SECONDS`` and stops waiting when the process that made the gate is gone,
    so none is stranded."""

    def __init__(self) -> None:
        import multiprocessing

        self.event = multiprocessing.get_context().Event()  # the DataLoader's context (fork on Linux)
        self.owner = os.getpid()
        self.event.set()

    def open(self) -> None:
        self.event.set()

    def close(self) -> None:
        self.event.clear()

    def wait(self) -> None:
        """In a worker: return once the gate is open, or the model's process has died."""
        while not self.event.wait(GATE_POLL_SECONDS):
            if os.getppid() != self.owner:
                return


class GatedDataset(Dataset):
    """``dataset`` whose items each wait at ``gate`` before they load."""

    def __init__(self, dataset: Dataset, gate: DecodeGate) -> None:
        self.dataset, self.gate = dataset, gate

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        self.gate.wait()
        return self.dataset[index]

    def __getitems__(self, indices: list[int]) -> list[Any]:
        """A batch's items, each through the gate, sharing downloads as :class:`VideoClipDataset`'s do."""
        with reused_copies():
            return [self[index] for index in indices]


_END = object()


class GatedLoader(DataLoader):
    """A DataLoader over a :class:`GatedDataset` that opens the gate while the caller waits in ``next`` and closes
    it while the caller works on the batch; open again on every way out (the end, ``break``, an exception), so
    the workers finish and shut down."""

    def __iter__(self) -> Iterator[Any]:
        gate = self.dataset.gate
        batches = super().__iter__()
        try:
            while True:
                gate.open()
                batch = next(batches, _END)
                if batch is _END:
                    return
                gate.close()
                yield batch
        finally:
            gate.open()
            del batches  # shut the workers down now, through an open gate


VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts")


def find_videos(root: str | Path, extensions: Sequence[str] = VIDEO_EXTENSIONS,
                follow_symlinks: Literal["inside", "outside"] = "inside") -> list[Path]:
    """Video files under ``root``, recursively and sorted: extensions case-insensitive, hidden files and folders
    skipped, each real file once (a link to a video counts, wherever it points). Symlinked folders are entered only
    when they point inside ``root`` (``follow_symlinks="outside"``: anywhere), each once: a link to ``/`` never
    walks the whole filesystem."""
    root = Path(root)
    top = os.path.realpath(root)
    wanted = {e.lower() for e in extensions}
    found, visited, seen_files = [], set(), set()
    for folder, subfolders, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        inside = real == top or real.startswith(top.rstrip(os.sep) + os.sep)
        if real in visited or (follow_symlinks == "inside" and not inside):
            subfolders[:] = []
            continue
        visited.add(real)
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        for name in names:
            path = Path(folder) / name
            if name.startswith(".") or path.suffix.lower() not in wanted or not path.is_file():
                continue
            stat = path.stat()
            identity = (stat.st_dev, stat.st_ino)  # hard links and symlinks to one file are one file
            if identity not in seen_files:
                seen_files.add(identity)
                found.append(path)
    return sorted(found)


LIST_SUFFIXES, TABLE_SUFFIXES = (".txt", ".lst"), (".csv", ".tsv", ".parquet")


def list_inputs(source: str | Path | Sequence[str | Path],
                follow_symlinks: Literal["inside", "outside"] = "inside") -> list[Path | str]:
    """The videos ``source`` names, as absolute normalised paths (so results keyed by them resume from any working
    directory): a folder (searched recursively, see :func:`find_videos`), one video file, a text file with one path
    per line (``#`` comments), or a CSV/TSV/Parquet table with a ``path`` column; or a list of those (a shell glob),
    their videos in order, each once. Relative paths in a list resolve against the list file's folder. Listed files
    are kept even when missing: they get an error row each. ``source`` and the listed entries may be object-storage
    URLs (``s3://bucket/prefix/``), which stay URLs. No source at all is an error, never the working directory."""
    from ..errors import InputError

    several = not isinstance(source, (str, Path))
    if not (source if several else str(source).strip()):
        raise InputError("no videos given: name a folder, video files, a .txt list or a table (coca-video score "
                         "VIDEOS..., or videos= in the config)")
    if several:
        return list(dict.fromkeys(path for one in source for path in list_inputs(one, follow_symlinks)))
    if is_url(source):
        return _url_inputs(str(source))
    source = Path(os.path.abspath(source))
    if source.is_dir():
        return [Path(os.path.abspath(p)) for p in find_videos(source, follow_symlinks=follow_symlinks)]
    if not source.is_file():
        raise InputError(f"{source}: no such file or folder")
    suffix = source.suffix.lower()
    if suffix in LIST_SUFFIXES:
        entries = _list_file_entries(source)
    elif suffix in TABLE_SUFFIXES:
        entries = _table_entries(source)
    elif suffix in VIDEO_EXTENSIONS or suffix in _image_extensions():
        return [source]
    else:
        raise InputError(f"{source}: not a folder, a video ({', '.join(VIDEO_EXTENSIONS)}), a path list "
                         f"({', '.join(LIST_SUFFIXES)}) or a table with a 'path' column ({', '.join(TABLE_SUFFIXES)})")
    paths = list(dict.fromkeys(entry if is_url(entry) else Path(os.path.normpath(source.parent / entry))
                               for entry in entries))
    if not paths:
        raise InputError(f"{source}: lists no videos")
    return paths


def _url_inputs(url: str) -> list[Path | str]:
    """list_inputs for a URL: a video object, a list or table object (relative entries resolve against its
    "folder"), or else a prefix searched recursively."""
    from ..errors import InputError

    suffix = os.path.splitext(name_of(url))[1].lower()
    if suffix in VIDEO_EXTENSIONS or suffix in _image_extensions():
        return [url]
    if suffix not in LIST_SUFFIXES + TABLE_SUFFIXES:
        return list(find_files(url, VIDEO_EXTENSIONS))
    try:
        content = read_bytes(url, InputError)
    except FileNotFoundError:
        raise InputError(f"{url}: no such object") from None
    entries = _list_file_entries(url, content) if suffix in LIST_SUFFIXES else _table_entries(url, content)
    base = sibling(url, "")
    paths = list(dict.fromkeys(e if is_url(e) or e.startswith("/") else child(base, e) for e in entries))
    if not paths:
        raise InputError(f"{url}: lists no videos")
    return paths


def _image_extensions() -> tuple[str, ...]:
    from ..video import IMAGE_EXTENSIONS

    return IMAGE_EXTENSIONS


def _list_file_entries(path: Path | str, content: bytes | None = None) -> list[str]:
    from ..errors import InputError

    try:
        lines = (Path(path).read_bytes() if content is None else content).decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a UTF-8 text file of paths") from None
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _table_entries(path: Path | str, content: bytes | None = None) -> list[str]:
    import io

    import pandas as pd

    from ..errors import InputError

    suffix = os.path.splitext(str(path))[1].lower()
    source = path if content is None else io.BytesIO(content)
    try:
        table = pd.read_parquet(source) if suffix == ".parquet" else \
            pd.read_csv(source, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False)
    except Exception as err:  # noqa: BLE001 -- any unreadable table is the user's file, named in one line
        raise InputError(f"{path}: unreadable table ({type(err).__name__}: {err})") from None
    if "path" not in table.columns:
        raise InputError(f"{path}: needs a 'path' column (found {', '.join(map(str, table.columns))})")
    return [str(p) for p in table["path"] if str(p).strip()]
