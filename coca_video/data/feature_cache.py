"""Frozen encoder tokens of a video set on disk, filled once and read by every epoch of a frozen probe.

Tokens of every (video, view) are stored in one memory-mapped ``.npy`` (videos, views, T*N, C), named by a digest of
what they depend on: every store's settings (:func:`~coca_video.data.results.encoding_settings`: model, weights and
the stamp of a checkpoint folder's weights file, image size, precision, frames rule), then the video list and windows,
the sampling, the finetuned encoder's digest and the cache format. Formats
(``probe.cache``): ``fp16``; ``int8``, one byte a value plus an fp16 scale per token in ``*.scales.npy`` (values
dequantised on read, error <= scale/2); ``pooled``, fp16 with each frame's patch tokens averaged over
``token_pool`` x ``token_pool`` squares (class token kept), about token_pool^2 times fewer tokens; ``embedding``
(the linear probe's), fp16 with one (1, D) row per view, the normalised mean of the frames' contrastive embeddings,
T*N*C/D times smaller than the tokens. A ``*.meta.json``
beside the arrays records shape, dtype, format and digest; an array file whose size is not what its header promises
(a fill killed while the file was being made, a full disk) is rebuilt with a warning, never read as zeros.
Each rank records the rows it finished (and the failures with their reasons) in its own state file, so an interrupted
fill resumes and ranks never write the same file; :meth:`FeatureCache.reload` unites them. Each finished row's
CRC-32 is recorded with it and checked when the cache is opened for a run: a row whose bytes changed (random values
of the same size, a partial write) is encoded again with a warning, and an unreadable state file counts as no rows
done, never as a traceback.

Before a new cache is made, :func:`plan_cache` gives its size, and the fill refuses to start when the folder's disk
cannot hold it with a margin (``probe.cache_check=false`` skips the check).

The cache is filled by the one encoding pass (:func:`coca_video.engines.feature_fill.fill_cache`), to which
:class:`CacheStore` makes it a store: the pass's rows carry each clip's tokens, and a Ray encode actor opens the
cache under a rank of its own and writes the rows of its batches.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import shutil
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ..config import DecodeConfig, ModelConfig, to_dict
from ..distributed import barrier, get_info, print0
from ..errors import OutputError
from ..io import atomic_write_text, exclusive_lock
from ..model import CoCa
from ..model.precision import compute_dtype
from ..model.state_dict import weights_digest as digest_of
from ..model.video_classifier import pooled_tokens_per_frame
from ..runtime import autocast
from ..transforms import ImageTransform
from .results import encoding_settings, row_key
from .video import ClipSampling, VideoItem

CacheFormat = Literal["fp16", "int8", "pooled"]  # an attentional probe's tokens
StoredFormat = Literal["fp16", "int8", "pooled", "embedding"]  # embedding: a linear probe's mean video embeddings
MARGIN_FRACTION, MARGIN_BYTES = 0.05, 2**30  # free space needed beyond the plan: 5% + 1 GiB


# -- planning ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CachePlan:
    """The size of a feature cache: videos x views x tokens (T * tokens per frame) x width values."""

    videos: int
    views: int
    tokens: int  # T * tokens per frame, after pooling (1 for embeddings)
    width: int
    fmt: StoredFormat

    @property
    def value_bytes(self) -> int:
        return self.videos * self.views * self.tokens * self.width * (1 if self.fmt == "int8" else 2)

    @property
    def scale_bytes(self) -> int:
        """int8 only: one fp16 scale per token."""
        return self.videos * self.views * self.tokens * 2 if self.fmt == "int8" else 0

    @property
    def total_bytes(self) -> int:
        return self.value_bytes + self.scale_bytes

    @property
    def needed_bytes(self) -> int:
        """What the disk must have free: the cache plus the safety margin."""
        return int(self.total_bytes * (1 + MARGIN_FRACTION)) + MARGIN_BYTES

    def describe(self) -> str:
        per_value = "1 byte + 2 per token" if self.fmt == "int8" else "2 bytes"
        return (f"{self.videos} videos x {self.views} views x {self.tokens} tokens x {self.width} wide x {per_value}"
                f" ({self.fmt}) = {human_size(self.total_bytes)}")


def plan_cache(videos: int, views: int, num_frames: int, tokens_per_frame: int, width: int,
               fmt: CacheFormat = "fp16", token_pool: int = 2) -> CachePlan:
    """The :class:`CachePlan` for ``videos`` x ``views`` clips of ``num_frames`` frames whose encoder gives
    ``tokens_per_frame`` tokens (class token + square patch grid) of ``width`` each, stored as ``fmt``."""
    if fmt == "pooled":
        tokens_per_frame = pooled_tokens_per_frame(tokens_per_frame, token_pool)
    return CachePlan(videos, views, num_frames * tokens_per_frame, width, fmt)


def human_size(size: int) -> str:
    """``294912000000`` -> ``294.9 GB``; below a gigabyte in MB (``66.6 MB``)."""
    return f"{size / 1e9:,.1f} GB" if size >= 1e9 else f"{size / 1e6:,.1f} MB"


def check_free_space(folder: Path, plan: CachePlan, enforce: bool = True) -> None:
    """Print the plan and the folder's free space; raise :class:`OutputError` when the cache would not fit with the
    margin, if ``enforce``."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    print0(f"feature cache {folder}: {plan.describe()}; {human_size(free)} free")
    if enforce and free < plan.needed_bytes:
        raise OutputError(
            f"{folder}: the feature cache needs {human_size(plan.total_bytes)} (+5% + 1 GB margin) but only "
            f"{human_size(free)} is free; use probe.cache=int8 (about half) or probe.cache=pooled probe.token_pool=2 "
            f"(about a quarter), a bigger disk, or probe.cache_check=false")


# -- storage -------------------------------------------------------------------------------------------------------
def quantise_int8(tokens: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(..., C) float -> int8 values (..., C) and fp16 scales (...): value * scale is within scale/2 of the token.
    The scale (max |x| / 127) is rounded UP to fp16, so no value needs clipping."""
    peak = tokens.float().abs().amax(-1).numpy()
    scales = (peak / 127).astype(np.float16)
    low = scales.astype(np.float32) * 127 < peak
    scales[low] = np.nextafter(scales[low], np.float16(np.inf))
    divisor = np.maximum(scales.astype(np.float32), np.finfo(np.float32).tiny)[..., None]
    values = np.clip(np.rint(tokens.float().numpy() / divisor), -127, 127).astype(np.int8)
    return values, scales


def npy_size_ok(path: Path) -> bool:
    """Whether the ``.npy`` at ``path`` has a readable header and exactly the bytes that header promises."""
    try:
        with path.open("rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(handle)
            expected = handle.tell() + int(np.prod(shape)) * dtype.itemsize
    except (ValueError, OSError, EOFError):
        return False
    return path.stat().st_size == expected


def cache_digest(key: dict[str, Any]) -> str:
    """The name of the cache that ``key`` (everything its tokens depend on) describes."""
    return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def read_state(path: Path) -> dict[str, Any] | None:
    """A rank's state file, or None (with a warning naming it) when it is unreadable: its rows count as not done."""
    try:
        state = json.loads(path.read_text())
        if isinstance(state, dict) and {"done", "failed", "crc"} <= set(state):
            return state
    except (OSError, ValueError):
        pass
    warnings.warn(f"{path}: feature cache state unreadable or from an older version; its rows will be encoded again",
                  stacklevel=2)
    return None


def read_meta(path: Path) -> dict[str, Any] | None:
    """A cache's meta.json, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class FeatureCache:
    """The token array ``tokens`` (videos, views, T*N, C) (int8 with ``scales`` (videos, views, T*N) for
    ``dtype="int8"``) and which rows are ``done`` or ``failed`` (row -> reason). Read with :meth:`read`."""

    def __init__(self, folder: Path, key: dict[str, Any], shape: tuple[int, ...], rank: int = 0,
                 dtype: Literal["fp16", "int8"] = "fp16") -> None:
        digest = cache_digest(key)
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.key, self.shape, self.rank, self.digest, self.dtype = folder, key, shape, rank, digest, dtype
        self.tokens_path = folder / f"{digest}.tokens.npy"
        self.scales_path = folder / f"{digest}.scales.npy"
        self.meta_path = folder / f"{digest}.meta.json"
        self.state_pattern = f"{digest}.state.rank*.json"
        self.state_path = folder / f"{digest}.state.rank{rank}.json"
        meta = {"digest": digest, "shape": list(shape), "dtype": dtype, "format": key.get("format", dtype)}
        if rank == 0:
            self._open_or_rebuild(meta)
        barrier()
        self.tokens = np.lib.format.open_memmap(self.tokens_path, mode="r+")
        self.scales = np.lib.format.open_memmap(self.scales_path, mode="r+") if dtype == "int8" else None
        self.done: set[int] = set()
        self.failed: dict[int, str] = {}
        self.checksums: dict[int, set[int]] = {}  # row -> the CRC-32s its content had when a rank stored it
        self.mine: dict[str, Any] = {"done": [], "failed": {}, "crc": {}}
        self.reload()

    def array_paths(self) -> list[Path]:
        return [self.tokens_path, self.scales_path] if self.dtype == "int8" else [self.tokens_path]

    def _open_or_rebuild(self, meta: dict[str, Any]) -> None:
        """Keep the arrays when their meta matches and their sizes are whole; otherwise (warning naming the file)
        start them afresh, with no rows done."""
        paths = self.array_paths()
        if any(p.exists() for p in paths) or self.meta_path.exists():
            broken = [p for p in paths if not p.exists() or not npy_size_ok(p)]
            stale = read_meta(self.meta_path) != meta
            if not broken and not stale:
                return
            culprit = broken[0] if broken else self.meta_path
            warnings.warn(f"{culprit}: feature cache file {'truncated or unreadable' if broken else 'does not match'}"
                          f" (expected {meta}); rebuilding it", stacklevel=2)
            for path in [*paths, *self.tokens_path.parent.glob(self.state_pattern)]:
                path.unlink(missing_ok=True)
        shape = tuple(meta["shape"])
        np.lib.format.open_memmap(self.tokens_path, mode="w+", dtype=np.int8 if self.dtype == "int8" else np.float16,
                                  shape=shape).flush()
        if self.dtype == "int8":
            np.lib.format.open_memmap(self.scales_path, mode="w+", dtype=np.float16, shape=shape[:-1]).flush()
        atomic_write_text(self.meta_path, json.dumps(meta) + "\n")

    def states(self) -> dict[int, dict[str, Any]]:
        """Each rank's readable state file (an unreadable one: warned about, left out), by rank."""
        paths = sorted(self.folder.glob(self.state_pattern))
        found = {int(path.name.rsplit(".rank", 1)[1].removesuffix(".json")): read_state(path) for path in paths}
        return {rank: state for rank, state in found.items() if state is not None}

    def reload(self) -> None:
        """Rows done and failed according to every rank's state file (an unreadable one: warned about, ignored)."""
        self.done, self.failed, self.checksums = set(), {}, {}
        self.mine = {"done": [], "failed": {}, "crc": {}}
        for rank, state in self.states().items():
            self.done.update(state["done"])
            self.failed.update({int(k): v for k, v in state["failed"].items()})
            for row, crc in state["crc"].items():
                self.checksums.setdefault(int(row), set()).add(crc)
            if rank == self.rank:
                self.mine = state

    def verify(self) -> list[int]:
        """Drop from ``done`` every row whose content no longer has a recorded checksum (so it is encoded again);
        returns those rows, after one warning naming the file."""
        changed = [row for row in sorted(self.done) if self.row_checksum(row) not in self.checksums.get(row, ())]
        if changed:
            warnings.warn(f"{self.tokens_path}: {len(changed)} cached rows do not match their checksums (e.g. row "
                          f"{changed[0]}); encoding them again", stacklevel=2)
            self.done.difference_update(changed)
        return changed

    def row_checksum(self, row: int) -> int:
        """CRC-32 of one row's stored bytes (values, and scales for int8)."""
        crc = zlib.crc32(np.ascontiguousarray(self.tokens[row]).tobytes())
        return zlib.crc32(np.ascontiguousarray(self.scales[row]).tobytes(), crc) if self.scales is not None else crc

    def todo(self) -> list[int]:
        """Rows neither done nor failed, in order."""
        return [i for i in range(self.tokens.shape[0]) if i not in self.done and i not in self.failed]

    def read(self, rows: np.ndarray | list[int], views: slice | int = slice(None)) -> torch.Tensor:
        """float32 tokens of ``rows`` (in that order) and ``views``: (len(rows), [views,] T*N, C)."""
        values = torch.from_numpy(np.asarray(self.tokens[rows, views])).float()
        if self.scales is None:
            return values
        return values * torch.from_numpy(np.asarray(self.scales[rows, views])).float()[..., None]

    def store(self, rows: list[int], tokens: torch.Tensor | None, errors: list[tuple[int, str]]) -> None:
        """Write ``tokens`` (len(rows), views, T*N, C) into ``rows`` and record them, and ``errors`` (row, reason)."""
        if rows and self.scales is not None:
            values, scales = quantise_int8(tokens)
            for position, row in enumerate(rows):
                self.tokens[row], self.scales[row] = values[position], scales[position]
            self.scales.flush()
        elif rows:
            for position, row in enumerate(rows):
                self.tokens[row] = tokens[position].to(torch.float16).numpy()
        self.tokens.flush()
        self.done.update(rows)
        self.failed.update(dict(errors))
        self.mine["done"] = sorted({*self.mine["done"], *rows})
        self.mine["failed"].update({str(row): reason for row, reason in errors})
        for row in rows:
            crc = self.row_checksum(row)
            self.mine["crc"][str(row)] = crc
            self.checksums.setdefault(row, set()).add(crc)
        atomic_write_text(self.state_path, json.dumps(self.mine))


@torch.no_grad()
def encode_clips(model: CoCa, transform: ImageTransform, clips: torch.Tensor, model_cfg: ModelConfig,
                 fmt: StoredFormat = "fp16") -> torch.Tensor:
    """(B, V, T, 3, S, S) uint8 -> encoder tokens (B, V, T*N, C), normalised on the model's device in its dtype; for
    ``fmt="embedding"`` the (B, V, 1, D) normalised mean of each view's frame embeddings instead."""
    frames = transform.normalise(clips, model_cfg.device, compute_dtype(model))
    with autocast(frames.device, model_cfg.precision):
        encoding = model.encode_video(frames.flatten(0, 1))
    values = encoding.video_embedding[:, None] if fmt == "embedding" else encoding.tokens  # mean pooling: default
    return values.float().unflatten(0, frames.shape[:2])


def open_cache(folder: Path, items: list[VideoItem], model: CoCa, model_cfg: ModelConfig, sampling: ClipSampling,
               decode: DecodeConfig, weights_digest: str | None = None, fmt: StoredFormat = "fp16",
               token_pool: int = 2, check_space: bool = True) -> FeatureCache:
    """The cache of ``items`` under ``sampling`` in format ``fmt`` for this rank, its rows verified (see
    :meth:`FeatureCache.verify`). ``weights_digest``: set for a finetuned encoder, whose tokens are valid for its
    weights only; a model loaded from a checkpoint folder gets its encoder's digest here (a folder rewritten by a new
    finetune or pretraining run keeps its name, not its weights). A new cache is first planned and checked against
    the free space (``check_space``)."""
    views = sampling.temporal_views * sampling.spatial_crops
    if weights_digest is None and Path(model_cfg.name).is_dir():  # a checkpoint folder can be rewritten in place
        weights_digest = digest_of(model.image_encoder)
    key = encoding_settings(model_cfg, decode) | {  # every store's rule, then the cache's own
        "videos": [i.path for i in items], "windows": [(i.start_sec, i.end_sec) for i in items],
        "sampling": to_dict(sampling), "finetuned": weights_digest, "format": fmt,
        "token_pool": token_pool if fmt == "pooled" else 1,
        "image_size": model.cfg.vision.image_size}  # the size as it runs, even where model.image_size is null
    plan = CachePlan(len(items), views, 1, model.cfg.embed_dim, fmt) if fmt == "embedding" else \
        plan_cache(len(items), views, sampling.num_frames, model.image_encoder.num_tokens, model.cfg.vision.width,
                   fmt, token_pool)
    if not (folder / f"{cache_digest(key)}.meta.json").exists():  # a new cache: plan it first
        check_free_space(folder, plan, enforce=check_space)
    cache = FeatureCache(folder, key, (plan.videos, plan.views, plan.tokens, plan.width), get_info().rank,
                         "int8" if fmt == "int8" else "fp16")
    cache.verify()
    return cache


class CacheStore:
    """A feature cache as a store of the one encoding pass (:class:`~coca_video.engines.store.RowStore`): an ok
    row's ``tokens`` (views, T*N, C) go into the cache rows of its key, an error row's reason becomes their failure.
    ``keys``: each cache row's item key as the pass compares it (``ScoreItem.stored()``), in row order; rows sharing
    a key (a video listed twice) get the same tokens. A row done or failed is done: a failure is not tried again."""

    def __init__(self, cache: FeatureCache, keys: list[tuple]) -> None:
        self.cache, self.keys = cache, keys
        self.rows_of: dict[tuple, list[int]] = {}
        for row, key in enumerate(keys):
            self.rows_of.setdefault(key, []).append(row)

    @classmethod
    def open(cls, folder: Path, key: dict[str, Any], shape: tuple[int, ...], dtype: Literal["fp16", "int8"],
             keys: list[tuple], rank: int) -> CacheStore:
        """The cache (already made by rank 0) written by ``rank``: a Ray encode actor's, with a state file of its
        own; it writes only the rows of the batches it encodes."""
        return cls(FeatureCache(folder, key, shape, rank, dtype), keys)

    def opener(self) -> functools.partial[CacheStore]:
        """``open(rank)``, picklable: see :meth:`open`."""
        cache = self.cache
        return functools.partial(CacheStore.open, cache.folder, cache.key, cache.shape, cache.dtype, self.keys)

    def locked(self) -> contextlib.AbstractContextManager[Path]:
        """This (cache, rank)'s lock for a fill: a second fill of the same cache by the same rank is refused."""
        cache = self.cache
        return exclusive_lock(cache.folder / f"{cache.digest}.rank{cache.rank}.lock", str(cache.tokens_path),
                              "wait for it or choose another output_dir")

    def check_settings(self, settings: dict[str, Any]) -> None:
        """A cache is named by the digest of its settings (one cache per settings): refuse others, in one line."""
        if cache_digest(settings) != self.cache.digest:
            raise OutputError(f"{self.cache.tokens_path}: a feature cache made under other settings")

    def done_keys(self) -> set[tuple]:
        """Keys whose every row is done or failed."""
        finished = self.cache.done | self.cache.failed.keys()
        return {key for key, rows in self.rows_of.items() if finished.issuperset(rows)}

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Store each ok row's ``tokens`` in its key's cache rows; record each error row's reason as theirs."""
        placed = [(index, row) for row in rows for index in self.rows_of[row_key(row)]]
        written = [(index, row["tokens"]) for index, row in placed if row["status"] == "ok"]
        errors = [(index, row["error"]) for index, row in placed if row["status"] != "ok"]
        tokens = torch.stack([values for _, values in written]) if written else None  # (rows, views, T*N, C)
        self.cache.store([index for index, _ in written], tokens, errors)

    def ranks(self) -> set[int]:
        return set(self.cache.states())

    def rows_since(self, earlier_ranks: frozenset[int]) -> list[dict[str, Any]]:
        """Rows of the state files of ranks not in ``earlier_ranks``, as the pass's rows: key columns and status."""
        found = []
        for rank, state in self.cache.states().items():
            if rank in earlier_ranks:
                continue
            statuses = [(row, "ok") for row in state["done"]] + [(int(row), "error") for row in state["failed"]]
            for row, status in statuses:
                path, size, mtime, *start = self.keys[row]
                found.append({"path": path, "size": size, "mtime": mtime,
                              "segment_start": start[0] if start else None, "status": status})
        return found
