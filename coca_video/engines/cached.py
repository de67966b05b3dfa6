"""The one encoding pass of every task that encodes videos (``score``, ``retrieval``, ``captioning``, ``zeroshot``,
and the feature-cache fill of ``probe`` and ``finetune-captions``): check the store's settings -> skip what is done
-> run the rest on the one engine chosen (``engine: local|ray``) -> hand the stored rows back per item, with the
failures. The store is a :class:`~.store.RowStore`: a task's result parts, or a feature cache.

A store's rows are reusable only under the settings that made them (:func:`~coca_video.data.results.encoding_settings`
plus the task's own). The pass records them with the store's first rows and refuses a run whose settings differ, in
one line (:meth:`~coca_video.data.results.PartStore.check_settings`). Which store a task opens decides what a changed
setting does: an output the user named (``score``'s ``out``, ``zeroshot``'s per-video store) is refused, since its
rows are the user's results and mixing two models' rows in one table would be wrong; a cache (``retrieval``'s
embeddings, ``captioning``'s captions) is one store per settings (:func:`keyed_store`), so another model or resolution
starts a store of its own beside the old one and switching back reuses it. Stale rows are never reused silently.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..config import DecodeConfig, Engine, ModelConfig, RayConfig  # noqa: F401 -- Engine: re-exported
from ..data.results import PartStore, input_key, row_key, settings_digest
from ..data.video import ClipSampling
from ..distributed import barrier, init_distributed
from ..errors import ConfigError, InputError
from ..model import CoCa, get_tokenizer
from ..runtime import load_model
from ..scoring import Counts, ScoreItem, VideoScorer
from ..transforms import image_transform
from .store import RowStore, Stored



class ScorerFactory(Protocol):
    """Builds a task's scorer: with the driver's loaded ``model`` and ``tokenizer`` (the local engine), or with none,
    loading its own (each Ray encode actor). Must pickle (a ``functools.partial`` of a module-level function)."""

    def __call__(self, model: CoCa | None = None, tokenizer: Any = None) -> VideoScorer: ...


@dataclass
class Encoder:
    """How a pass encodes: the scorer factory, the driver's loaded model and tokenizer, the decoding, and the engine
    with its cluster (``ray``) for ``engine="ray"``; ``sampling``: several views per clip (a probe's), else one.
    ``on_stored``: called in this process (the driver, for Ray) with the items whose rows (ok or error) the store
    holds durably, batch by batch as they land, e.g. to publish what they complete (``score``'s per-shard outputs)."""

    make_scorer: ScorerFactory
    model: CoCa
    tokenizer: Any
    decode: DecodeConfig
    engine: Engine = "local"
    ray: RayConfig = field(default_factory=RayConfig)
    sampling: ClipSampling | None = None
    on_stored: Stored | None = None


@dataclass
class Encoded:
    """One pass: the rows it wrote (``counts``), the keys already done when it began, and what it had to do."""

    counts: Counts
    done: set[tuple]
    todo: list[ScoreItem]


def loaded(model_cfg: ModelConfig, model: CoCa | None, tokenizer: Any) -> tuple[CoCa, Any]:
    """A scorer factory's model and tokenizer: the driver's, or when given none (a Ray encode actor) ``model_cfg``'s
    loaded here (its precision already resolved by the driver's ``load_model``)."""
    if model is None:
        return load_model(model_cfg), get_tokenizer(model_cfg.name)
    return model, tokenizer


def check_engine(engine: Engine) -> None:
    """engine=ray, before any work: not under torchrun (Ray spreads the work itself), and Ray Data installed (else
    the one-line error naming the extra)."""
    if engine != "ray":
        return
    from .ray_engine import require_ray

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # torchrun's, before any process group is joined
        raise ConfigError("engine=ray runs from one process (Ray spreads the work); start it without torchrun")
    require_ray()


def keyed_store(folder: str | Path, prefix: str, settings: dict[str, Any]) -> PartStore:
    """A cache's store for ``settings``: ``<folder>/<prefix>-<digest>.parquet``, one per settings."""
    return PartStore(Path(folder) / f"{prefix}-{settings_digest(settings)}.parquet", rank=init_distributed().rank)


def encode(items: list[ScoreItem], store: RowStore, settings: dict[str, Any], encoder: Encoder,
           shard: bool = True) -> Encoded:
    """The pass under the store's lock (a second run into it is refused at once): see :func:`encode_locked`."""
    with store.locked():
        return encode_locked(items, store, settings, encoder, shard)


def encode_locked(items: list[ScoreItem], store: RowStore, settings: dict[str, Any], encoder: Encoder,
                  shard: bool = True) -> Encoded:
    """Check ``settings`` against the store's (refused in one line when they differ), then encode this rank's share
    of ``items`` (all of them without ``shard``: the caller shared them out) not yet stored ok, into ``store``
    (unmerged). The caller holds the store's lock; every rank has written its rows when this returns."""
    info = init_distributed()
    store.check_settings(settings)
    done = store.done_keys()
    share = items[info.rank::info.world_size] if shard else items
    todo = [item for item in share if item.stored() not in done]
    counts = run_engine(todo, store, encoder, show=info.is_main)
    barrier()
    return Encoded(counts, done, todo)


def run_engine(todo: list[ScoreItem], store: RowStore, encoder: Encoder, show: bool = True) -> Counts:
    """Encode ``todo`` into ``store`` on ``encoder.engine``: the local engine with the driver's model, or Ray, whose
    encode actors each build their own scorer (``encoder.make_scorer()``)."""
    if encoder.engine == "ray":
        from .ray_engine import score_items

        on_gpu = next(encoder.model.parameters()).device.type == "cuda"
        return score_items(todo, encoder.make_scorer, image_transform(encoder.model), encoder.decode,
                           encoder.sampling, store, encoder.ray, show=show, on_gpu=on_gpu, on_stored=encoder.on_stored)
    from .local import score_files

    return score_files(encoder.make_scorer(encoder.model, encoder.tokenizer), todo, store, encoder.decode,
                       show=show, sampling=encoder.sampling, on_stored=encoder.on_stored)


def stored_rows(store: PartStore, items: list[ScoreItem], columns: list[str] | None = None
                ) -> list[dict[str, Any] | None]:
    """The newest stored row of each item (``columns`` and the key columns), None for an item with none: a row of
    an earlier version of the file (another size or mtime) is not its row."""
    keys = ["path", "size", "mtime", "segment_start", "status", "error", "scored_at"]
    table = store.read(columns=None if columns is None else list(dict.fromkeys([*keys, *columns])))
    found = {} if table is None else {row_key(row): row for row in table.to_pylist()}
    return [found.get(item.stored()) for item in items]


def failure(row: dict[str, Any] | None, unscored: str) -> str | None:
    """Why an item has no result: its error row's reason, ``unscored`` without a row, None when it was scored ok."""
    if row is None:
        return unscored
    return None if row["status"] == "ok" else row["error"] or unscored


def encode_files(videos: list[str], where: str, store: PartStore, settings: dict[str, Any], encoder: Encoder,
                 columns: list[str], unscored: str) -> tuple[dict[str, dict[str, Any]], list[tuple[str, str]]]:
    """Whole videos through the pass: the stored row of each video encoded ok (video -> row) and ``failed``, (video,
    reason) of the others in ``videos`` order (``file not found``, the decode error, or ``unscored``). Refused in one
    line naming ``where`` when none of them exists."""
    keys = {video: input_key(video) for video in videos}  # a file, an object or a tar member; size -1: missing
    missing = {v for v in videos if keys[v][1] < 0}
    if len(missing) == len(videos):
        raise InputError(f"{where}: none of the {len(videos)} videos exist (e.g. {videos[0]})")
    present = [v for v in videos if v not in missing]
    items = [ScoreItem(keys[v]) for v in present]
    encode(items, store, settings, encoder)
    rows = dict(zip(present, stored_rows(store, items, columns)))
    found, failed = {}, []
    for video in videos:
        reason = "file not found" if video in missing else failure(rows[video], unscored)
        if reason is None:
            found[video] = rows[video]
        else:
            failed.append((video, reason))
    return found, failed
