"""Batch scoring of a folder of videos: zero-shot labels, embeddings and captions, one row per file, resumable.

    coca-video score VIDEO_DIR --labels kinetics400 --caption --out scores.parquet
    torchrun --nproc_per_node 2 -m coca_video.cli score VIDEO_DIR ...     # each rank scores its shard
    coca-video score VIDEO_DIR --engine ray ray.decode_actors=4            # on Ray (coca_video.engines.ray_engine)

What a row holds and how it is computed: :mod:`coca_video.scoring`. Results are flushed per batch (see
:mod:`coca_video.data.results`); a rerun skips files already scored ok.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, NamedTuple, Sequence, overload

import numpy as np
import pyarrow as pa
import torch
import torch.distributed as dist

from ..config import CaptionConfig, DecodeConfig, ModelConfig, RayConfig, check, check_at_least, check_suffix
from ..data.labels import model_templates, read_class_names, read_templates, video_templates
from ..data.results import PartStore, embeddings_path, input_key, lines_digest, merge, stored_key, stored_path
from ..data.synthetic import is_synthetic_class
from ..data.video import VIDEO_EXTENSIONS, ClipSampling, list_inputs
from ..distributed import init_distributed, is_distributed
from ..errors import ConfigError, DataError, InputError
from ..io import check_output_file
from ..model import CoCa, create_model, get_tokenizer, load_probe, read_probe_info
from ..runtime import load_model
from ..scoring import Counts, ScoreItem, VideoScorer, score_files
from ..transforms import image_transform
from ..video.sampling import clock


@dataclass
class ScoreConfig:
    videos: str | list[str] = ""  # a folder (recursively), a video, a .txt list or a table with 'path', s3://; or several
    follow_symlinks: Literal["inside", "outside"] = "inside"  # folder links pointing outside the folder: skip/follow
    out: str = "scores.parquet"  # .parquet or .csv (local or s3://); embeddings go to <stem>.embeddings.parquet
    labels: str | None = None  # class list file (formats: data/labels.py) or kinetics400|600|700|moments_in_time
    probe: str | None = None  # a trained probe folder (output_dir/probe of the probe task): its classes and scores
    probe_views: bool = True  # with probe: its softmax averaged over the views it was evaluated with (e.g. 4x3)
    templates: str | None = None  # prompt file; default: the model's own prompts, else the video templates
    top_k: int = 5  # labels kept per video, best first
    caption: CaptionConfig | None = None  # a caption per video (null: none; true or any caption.* key: captions)
    video_pooling: Literal["mean", "attentional"] = "mean"  # mean of frame embeddings, or the pooler over all tokens
    frame_embeddings: bool = False  # also store each frame's embedding in the embeddings file
    report: str | None = None  # HTML report path (page 1, with the totals); more pages go beside it: <stem>-002.html
    report_page_size: int = 200  # videos per report page (a segmented video's rows stay together on one page)
    segment_seconds: float = 0.0  # > 0: score consecutive windows of this length, one row each (0: whole videos)
    segment_stride: float | None = None  # seconds between window starts (default segment_seconds; less: overlap)
    engine: Literal["local", "ray"] = "local"  # local: this process and its decoding workers; ray: Ray Data (ray.*)
    model: ModelConfig = field(default_factory=ModelConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    ray: RayConfig = field(default_factory=RayConfig)  # the cluster and its actor pools, with engine=ray

    def __post_init__(self) -> None:
        check_at_least("top_k", self.top_k, 1)
        check_at_least("report_page_size", self.report_page_size, 1)
        check_suffix("out", self.out, (".parquet", ".csv"))
        check_suffix("report", self.report, (".html",), optional=True)
        check_at_least("segment_seconds", self.segment_seconds, 0)
        if self.segment_stride is not None:
            check(self.segment_stride > 0, "segment_stride", "be > 0 seconds (or null: segment_seconds)",
                  self.segment_stride)
        if self.decode.sampling == "fps":  # every frame is its own row already
            check(self.segment_seconds == 0, "segment_seconds", "be 0 with decode.sampling=fps (a row per frame)",
                  self.segment_seconds)
            check(self.probe is None, "probe", "be unset with decode.sampling=fps (a probe reads whole clips)",
                  self.probe)


def run(cfg: ScoreConfig) -> dict[str, Any]:
    """Score every video under ``cfg.videos`` not yet scored; merge all results into ``cfg.out``."""
    if cfg.probe and cfg.labels:
        raise ConfigError("score takes labels= (zero-shot) or probe= (a trained probe), not both")
    if cfg.probe:  # the probe's own backbone (finetuned or named) and frame count replace the model and num_frames
        info = read_probe_info(cfg.probe)
        cfg = dataclasses.replace(
            cfg, model=dataclasses.replace(cfg.model, name=info.backbone, pretrained=info.pretrained,
                                           image_size=info.image_size),
            decode=dataclasses.replace(cfg.decode, num_frames=info.classifier.num_frames))
    if cfg.engine == "ray":
        check_ray_engine()
    files = list_inputs(cfg.videos, cfg.follow_symlinks)
    if not files:
        raise InputError(f"{cfg.videos}: no video files found (looked recursively for {', '.join(VIDEO_EXTENSIONS)})")
    check_outputs(cfg, files)
    warning = toy_model_warning(cfg)
    if warning and init_distributed().is_main:
        print(f"coca-video score: warning: {warning}", file=sys.stderr, flush=True)
    store = PartStore(cfg.out, rank=init_distributed().rank)
    with store.locked():  # before the model: a second run stops at once
        stored = store.settings()
        if cfg.model.precision == "auto" and stored and stored.get("precision") in ("fp32", "bf16", "fp16", "int8"):
            cfg.model.precision = stored["precision"]  # a resumed run computes as the rows already stored were
        model = load_model(cfg.model)
        store.check_settings(row_settings(cfg))
        summary, scores = score_paths(cfg, files, model, get_tokenizer(cfg.model.name))
        if scores is not None and cfg.report:
            from ..report import write_score_report

            notes = [warning] if warning else []
            summary["report"] = str(write_score_report(scores.to_pandas(), cfg.report, cfg, notes,
                                                                 cfg.report_page_size))
    return summary


def check_ray_engine() -> None:
    """engine=ray, before any work: not under torchrun (Ray spreads the work itself), and Ray Data installed (else
    the one-line error naming the extra)."""
    from ..engines.ray_engine import require_ray

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # torchrun's, before any process group is joined
        raise ConfigError("engine=ray runs from one process (Ray spreads the work); start it without torchrun")
    require_ray()


def row_settings(cfg: ScoreConfig) -> dict[str, Any]:
    """Everything that decides what a row holds (``model.precision`` as it runs, so after ``load_model``): rows
    stored under other settings are neither mixed with this run's nor taken as done."""
    probe = Path(cfg.probe).resolve() if cfg.probe else None
    return {"model": cfg.model.name, "pretrained": cfg.model.pretrained, "precision": cfg.model.precision,
            "image_size": cfg.model.image_size, "frames": cfg.decode.frames_rule(),
            "labels": lines_digest(read_class_names(cfg.labels)) if cfg.labels else None,
            "templates": lines_digest(read_templates(cfg.templates)) if cfg.templates else None,
            "probe": str(probe) if probe else None, "probe_views": cfg.probe_views if probe else None,
            "top_k": cfg.top_k, "caption": list(dataclasses.astuple(cfg.caption))
            if cfg.caption else None, "video_pooling": cfg.video_pooling, "frame_embeddings": cfg.frame_embeddings,
            "segments": [cfg.segment_seconds, cfg.segment_stride] if cfg.segment_seconds else None}


def toy_model_warning(cfg: ScoreConfig) -> str | None:
    """The warning for zero-shot labels with the built-in default model that are not the synthetic world's
    (colour, shape, size, motion words): that model cannot tell them apart. None when there is nothing to say."""
    if cfg.model.name != "default" or not cfg.labels:
        return None
    foreign = [name for name in read_class_names(cfg.labels) if not is_synthetic_class(name)]
    if not foreign:
        return None
    examples = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
    return (f"the built-in default model knows only coloured shapes; pass --model/--pretrained with a real "
            f"checkpoint for {cfg.labels} ({examples})")


def check_outputs(cfg: ScoreConfig, videos: list[Path | str]) -> None:
    """Refuse (before any work) an ``out``, embeddings sidecar or ``report`` that is an input file, or an existing
    file we did not write: ``out`` and its sidecar are ours when ``<out>.parts`` is beside them, a report page (each
    of the pages ``videos`` will fill) when it carries the report marker."""
    from ..report import is_our_report, page_count, report_page_paths

    sources = [cfg.videos] if isinstance(cfg.videos, str) else cfg.videos
    inputs = [*videos, *(Path(p) for p in (*sources, cfg.labels, cfg.templates) if p and Path(p).is_file())]
    ours = PartStore(cfg.out).exists()
    check_output_file(cfg.out, inputs, ours, "out")
    check_output_file(embeddings_path(cfg.out), inputs, ours, "out (its embeddings file)")
    if cfg.report:
        for page in report_page_paths(cfg.report, page_count(len(videos), cfg.report_page_size)):
            check_output_file(page, [*inputs, cfg.out, embeddings_path(cfg.out)], is_our_report(page),
                              "report" if page == Path(cfg.report) else "report (its page)")


def probe_sampling(cfg: ScoreConfig) -> ClipSampling | None:
    """The views ``cfg.probe`` was evaluated with, when ``probe_views`` asks for them (None: one clip)."""
    if not (cfg.probe and cfg.probe_views):
        return None
    views = read_probe_info(cfg.probe).eval_views
    return ClipSampling(cfg.decode.num_frames, mode=views.sampling, temporal_views=views.temporal_views,
                        spatial_crops=views.spatial_crops)


def build_scorer(cfg: ScoreConfig, model: CoCa, tokenizer: Callable) -> VideoScorer:
    """The scorer ``cfg`` asks for: zero-shot labels or a probe's, captions, frame embeddings."""
    probe, class_names, templates = None, None, None
    if cfg.probe:
        probe, info = load_probe(cfg.probe)
        class_names = info.classes
    elif cfg.labels:
        class_names = read_class_names(cfg.labels)
        templates = read_templates(cfg.templates) if cfg.templates else \
            model_templates(cfg.model.name) or video_templates()
    return VideoScorer(model, tokenizer, cfg.model, class_names, templates, probe, cfg.top_k, cfg.caption,
                       cfg.frame_embeddings, cfg.video_pooling)


def score_paths(cfg: ScoreConfig, files: list[Path | str], model: CoCa,
                tokenizer: Callable) -> tuple[dict, pa.Table | None]:
    """Score ``files`` (this rank's share, skipping those already scored ok into ``cfg.out``), then merge every
    rank's parts into ``cfg.out`` on rank 0. Returns a summary and the merged table (None off rank 0)."""
    info = init_distributed()
    store = PartStore(cfg.out, rank=info.rank)
    done = store.done_keys()
    keys = [input_key(path) for path in files]
    todo = [item for item in plan_items(cfg, keys[info.rank::info.world_size]) if item.stored() not in done]
    started, scores = time.time(), None
    counts = None
    try:
        counts = score_items(cfg, todo, store, model, tokenizer, show=info.is_main)
    finally:  # Ctrl-C or a crash still leaves every flushed batch merged into the output
        if is_distributed():
            dist.barrier()
        if info.is_main:
            provenance = {"model": cfg.model.name, "pretrained": cfg.model.pretrained or "",
                          "video_pooling": cfg.video_pooling, "precision": cfg.model.precision,
                          "frames": cfg.decode.frames_rule()}
            scores = merge(cfg.out, paths=[stored_path(p) for p in files], metadata=provenance)
    seconds = time.time() - started
    summary = {"videos": len(files), "scored_now": counts.total, "errors_now": counts.error,
               "already_scored": len(already_scored(done, keys, todo)),
               "kept_from_earlier_runs": 0 if scores is None else len(set(scores.column("path").to_pylist()) -
                                                                      {stored_path(p) for p in files}),
               "seconds": round(seconds, 2),
               "videos_per_second": round(counts.total / max(seconds, 1e-9), 2),
               "out": str(cfg.out), "embeddings": str(embeddings_path(cfg.out))}
    if scores is not None:
        summary["ok_total"] = int(sum(s == "ok" for s in scores.column("status").to_pylist()))
    if counts.stage_seconds is not None:  # engine=ray: busy seconds per stage, from Ray Data's stats
        summary["stage_seconds"] = counts.stage_seconds
    return summary, scores


def score_items(cfg: ScoreConfig, todo: list[ScoreItem], store: PartStore, model: CoCa, tokenizer: Callable,
                show: bool = True) -> Counts:
    """Score ``todo`` into ``store`` (unmerged) with ``cfg.engine``: here with ``model``, or on Ray, whose encode
    actors each load the same model (``cfg.model``, its precision already resolved) through :func:`actor_scorer`."""
    if cfg.engine == "ray":
        from ..engines.ray_engine import score_items as score_on_ray

        return score_on_ray(todo, functools.partial(actor_scorer, cfg), image_transform(model), cfg.decode,
                            probe_sampling(cfg), cfg.out, cfg.ray, show=show)
    return score_files(build_scorer(cfg, model, tokenizer), todo, store, cfg.decode, show=show,
                       sampling=probe_sampling(cfg))


def actor_scorer(cfg: ScoreConfig) -> VideoScorer:
    """The scorer ``cfg`` asks for, with its own model and tokenizer: what each Ray encode actor holds."""
    return build_scorer(cfg, load_model(cfg.model), get_tokenizer(cfg.model.name))


def already_scored(done: set[tuple], keys: list[tuple[str, int, float]], todo: list[ScoreItem]) -> set[tuple]:
    """The files of ``keys`` a rerun has nothing left to score in: some row of theirs scored ok in ``done`` and none
    of their items (segments, fps chunks) still in ``todo``; a partly scored file is not counted."""
    unfinished = {stored_key(item.key) for item in todo}
    return ({key[:3] for key in done} & {stored_key(key) for key in keys}) - unfinished


def plan_items(cfg: ScoreConfig, keys: list[tuple[str, int, float]]) -> list[ScoreItem]:
    """One item per file, or with ``segment_seconds`` one per window of each file, or with ``decode.sampling=fps``
    one per chunk of ``num_frames`` frames (bounded memory, resumable per chunk; its frames get a row each). The
    duration comes from the headers; a file whose headers cannot be read stays one item, whose decode then fails
    with the reason."""
    per_frame = cfg.decode.sampling == "fps"
    if cfg.segment_seconds <= 0 and not per_frame:
        return [ScoreItem(key) for key in keys]
    from ..data.video import open_video
    from ..video import fps_rate, segment_windows

    items = []
    for key in keys:
        try:
            with open_video(key[0], backend=cfg.decode.backend, timeout=cfg.decode.timeout) as reader:
                duration = reader.duration
        except Exception:  # noqa: BLE001 -- the decode of the whole-file item reports what is wrong
            items.append(ScoreItem(key))
            continue
        if per_frame:
            rate = fps_rate(duration, cfg.decode.fps, cfg.decode.max_frames)
            windows = segment_windows(duration, cfg.decode.num_frames / rate)
        else:
            windows = segment_windows(duration, cfg.segment_seconds, cfg.segment_stride)
        items += [ScoreItem(key, start, end) for start, end in windows]
    return items


class SearchHit(NamedTuple):
    path: str
    score: float  # cosine similarity to the query
    start: float | None = None  # the segment's window in seconds, for a segmented run
    end: float | None = None

    def __str__(self) -> str:
        window = f" {clock(self.start)}-{clock(self.end)}" if self.start is not None else ""
        return f"{self.path}{window}"


SEARCH_ROW_KEYS = ("query", "rank", "path", "score", "start", "end")


# When search goes through a fresh index, measured with benchmarks/bench_search.py (random 512-d rows, 2 busy cores).
# One query per call, exact vs index: 0.7 vs 2.0 ms at 10,000 rows, 1.7-1.9 vs 1.5-2.5 at 20,000, 5.8 vs 3.2 at
# 50,000, 60 vs 31 at 500,000, 108-221 vs 92-102 at 1,000,000; 1,000 queries at once: index 3.8x exact at 50,000,
# 2.2-3.9x at 1,000,000. But checking that the index is fresh (the row digest) costs ~0.3-0.65 us a row per search
# (20 ms at 50,000 rows, 303-647 ms at 1,000,000; ~0.75 us a row for segment rows, whose windows are hashed too), and
# one query saves 3.6 ms at 50,000 rows, 54-105 ms at 1,000,000 (batched), so a search breaks even from about 6
# queries on above 50,000 rows (50,000: 6, 100,000: 6, 200,000: 4, 500,000: 6, 1,000,000: 5 and 11 in two runs, 6 in
# a third; 20,000: 9, 10,000: 26).
INDEX_MIN_ROWS = 50_000  # search uses a fresh index only for files of more rows than this...
INDEX_MIN_QUERIES = 6  # ...and only for at least this many queries at once


@overload
def search(embeddings: str | os.PathLike, queries: str, k: int = 10, model: str | None = None,
           index_min_rows: int = INDEX_MIN_ROWS, pretrained: str | None = None) -> list[SearchHit]:
    ...


@overload
def search(embeddings: str | os.PathLike, queries: Sequence[str], k: int = 10, model: str | None = None,
           index_min_rows: int = INDEX_MIN_ROWS, pretrained: str | None = None) -> list[list[SearchHit]]:
    ...


def search(embeddings: str | os.PathLike, queries: str | Sequence[str], k: int = 10, model: str | None = None,
           index_min_rows: int = INDEX_MIN_ROWS,
           pretrained: str | None = None) -> list[SearchHit] | list[list[SearchHit]]:
    """The ``k`` videos (or segments) whose embeddings are closest to a text query (cosine), best first.

    ``queries``: one query (returns its hits) or a list (returns one list of hits per query); the embeddings file is
    read and the text model created once for all of them. ``model`` and ``pretrained``: the text model and its
    weights (default: those named in the file's provenance, which made the embeddings). A file of more than
    ``index_min_rows`` rows is searched for ``INDEX_MIN_QUERIES`` or more queries through its approximate index
    (``coca-video index``) when that exists and was built from the file as it is now; else every row is compared (a
    stale index is ignored with a warning).
    """
    if k < 1:
        raise ConfigError(f"-k must be >= 1, got {k}")
    texts = [queries] if isinstance(queries, str) else list(queries)
    if not texts:
        raise ConfigError("search: no queries given")
    hits, vectors, provenance = read_embeddings(embeddings)
    text = encode_queries(texts, *query_model(model, pretrained, provenance))
    use_index = len(hits) > index_min_rows and len(texts) >= INDEX_MIN_QUERIES
    index = fresh_index(embeddings, hits, vectors.shape[1]) if use_index else None
    found = index_candidates(index, text.numpy(), k) if index is not None else None
    ranked = [rank_hits(hits, vectors, query, k, rows) for query, rows in
              zip(text.numpy(), found if found is not None else [None] * len(texts))]
    return ranked[0] if isinstance(queries, str) else ranked


def rank_hits(hits: Sequence[SearchHit], vectors: np.ndarray, query: np.ndarray, k: int,
              rows: np.ndarray | None = None) -> list[SearchHit]:
    """The ``k`` best of ``hits`` for ``query`` by exact cosine, best first: among ``rows`` (an index's
    candidates) when given, else among all."""
    best, scores = rank_rows(vectors, query, k, rows)
    return [hits[int(row)]._replace(score=float(score)) for row, score in zip(best, scores)]


def rank_rows(vectors: np.ndarray, query: np.ndarray, k: int,
              rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The row numbers of the ``k`` best rows of ``vectors`` (N, D) for ``query`` (D,) by exact dot product, best
    first (ties in row order), and their scores: among ``rows`` when given, else among all."""
    scores = vectors @ query if rows is None else vectors[rows] @ query
    best = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    best = best[np.argsort(-scores[best], kind="stable")]
    return (best if rows is None else np.asarray(rows)[best]), scores[best]


def index_candidates(index: Any, queries: np.ndarray, k: int) -> list[np.ndarray]:
    """The row numbers an approximate index proposes for each query: ``max(k, CANDIDATES)`` of them, so that the
    exact rescoring of :func:`rank_hits` recovers neighbours the int8 codes ranked a little too low."""
    from ..data.ann_index import CANDIDATES, nearest

    return nearest(index, queries, max(k, CANDIDATES))


def search_row_ids(rows: EmbeddingRows) -> list[str]:
    """One id per searchable row, recorded (as a digest) by an index: path and segment window (``None`` for a
    whole video), tab-separated; read a column at a time (a row at a time took 1.8-2.5 us a row)."""
    paths = rows.paths.to_pylist()
    if rows.starts is None:
        return [f"{path}\tNone\tNone" for path in paths]
    windows = zip(rows.starts.to_pylist(), rows.ends.to_pylist())
    return [f"{path}\t{start}\t{end}" for path, (start, end) in zip(paths, windows)]


def fresh_index(embeddings: str | os.PathLike, hits: EmbeddingRows, ndim: int) -> Any | None:
    """The index beside ``embeddings`` when usearch is installed and the index was built from the file as it is now;
    None otherwise (a stale one with a one-line warning on stderr saying to rebuild it)."""
    from ..data.ann_index import has_usearch, is_fresh, open_index, read_record, source_of

    record = read_record(embeddings)
    if record is None or not has_usearch():
        return None
    if not is_fresh(record, source_of(embeddings, search_row_ids(hits)), ndim):
        print(f"warning: {embeddings}: its search index is stale (the file changed since it was built), so every "
              f"row is compared; rebuild it with: coca-video index {embeddings}", file=sys.stderr)
        return None
    return open_index(embeddings, len(hits), ndim)


def build_index(embeddings: str | os.PathLike, metric: Literal["cos", "ip"] = "cos") -> dict[str, Any]:
    """Write the approximate nearest-neighbour index of the rows with an embedding beside ``embeddings`` (see
    :mod:`coca_video.data.ann_index`); returns a summary: its path, rows, metric and seconds taken."""
    from ..data.ann_index import index_paths, source_of, usearch_search, write_index

    usearch_search()  # without usearch: fail before reading the file
    codes, record = index_paths(embeddings)
    check_output_file(codes, [Path(embeddings)], record.is_file(), "index")
    started = time.time()
    hits, vectors, _ = read_embeddings(embeddings)
    write_index(embeddings, vectors, source_of(embeddings, search_row_ids(hits)), metric)
    return {"index": str(codes), "rows": len(hits), "metric": metric, "seconds": round(time.time() - started, 2)}


def query_model(model: str | None, pretrained: str | None, provenance: dict[str, str]) -> tuple[str, str | None]:
    """The text model and weights for queries of an embeddings file: ``model`` (default: the one its provenance
    names, which made the embeddings) and ``pretrained`` (default: the provenance's weights when that is the model)."""
    name = model or provenance.get("model", "default")
    if pretrained is None and name == provenance.get("model", "default"):
        pretrained = provenance.get("pretrained") or None
    return name, pretrained


def encode_queries(queries: Sequence[str], model: str, pretrained: str | None, batch_size: int = 256) -> torch.Tensor:
    """(Q, D) normalised text embeddings of ``queries`` from one ``create_model(model, pretrained)``."""
    net = create_model(model, pretrained=pretrained)
    tokenizer = get_tokenizer(model)
    with torch.no_grad():
        return torch.cat([net.encode_text(tokenizer(list(queries[i:i + batch_size])))
                          for i in range(0, len(queries), batch_size)])


def search_rows(queries: Sequence[str], results: Sequence[Sequence[SearchHit]]) -> list[dict[str, Any]]:
    """``search``'s hits per query as flat JSON-ready rows: query, rank (from 1), path, score, start, end."""
    return [dict(zip(SEARCH_ROW_KEYS, (query, rank, hit.path, hit.score, hit.start, hit.end)))
            for query, hits in zip(queries, results) for rank, hit in enumerate(hits, start=1)]


def is_search_output(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds rows :func:`search_rows` wrote (so a later search may replace it)."""
    import json

    try:
        rows = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(rows, list) and all(isinstance(r, dict) and tuple(r) == SEARCH_ROW_KEYS for r in rows)


def read_queries(path: str | os.PathLike) -> list[str]:
    """The queries of a text file, one per line (blank lines skipped); a missing, non-UTF-8 or empty file raises a
    one-line error naming it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: queries file not found")
    try:
        queries = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise DataError(f"{path}: queries file is not UTF-8 text") from None
    if not queries:
        raise DataError(f"{path}: no queries (one per line)")
    return queries


class EmbeddingRows(Sequence[SearchHit]):
    """The searchable rows of an embeddings file as hits made on demand (score not set): the columns stay in Arrow,
    and only the rows a search returns become Python objects (a million hits built up front took longer than
    ranking them)."""

    def __init__(self, paths: pa.Array, starts: pa.Array | None = None, ends: pa.Array | None = None) -> None:
        self.paths, self.starts, self.ends = paths, starts, ends

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, row: int) -> SearchHit:  # type: ignore[override]
        if not -len(self) <= row < len(self):
            raise IndexError(row)
        window = (self.starts[row].as_py(), self.ends[row].as_py()) if self.starts is not None else (None, None)
        return SearchHit(self.paths[row].as_py(), 0.0, *window)

    def __iter__(self) -> Iterator[SearchHit]:
        return (self[row] for row in range(len(self)))


def read_embeddings(embeddings: str | os.PathLike,
                    content: bytes | None = None) -> tuple[EmbeddingRows, np.ndarray, dict[str, str]]:
    """The rows scored ok in an embeddings file (as :class:`EmbeddingRows`: hits with no score yet), their video
    embeddings (N, D) float32, and the file's provenance metadata; a missing, unreadable or foreign file, or one
    without a single embedding, raises a one-line error naming it. ``content``: the file's bytes, already read
    (parsed instead of opening ``embeddings``, which then only names it)."""
    import pyarrow.parquet as pq

    path = Path(embeddings)
    if content is None and not path.is_file():
        raise InputError(f"{path}: embeddings file not found (score writes <out>.embeddings.parquet)")
    source = path if content is None else pa.BufferReader(content)
    try:
        schema = pq.read_schema(source)
        if not {"path", "video_embedding"} <= set(schema.names):
            raise DataError(f"{path}: not an embeddings file (needs columns path and video_embedding; found "
                            f"{schema.names})")
        segments = ["segment_start", "segment_end"] if "segment_start" in schema.names else []
        table = pq.read_table(source, columns=["path", "video_embedding", *segments])
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: not a readable Parquet file ({err.__class__.__name__})") from None
    provenance = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}
    total = table.num_rows
    if table.column("video_embedding").null_count:  # failed rows; the filter copies every column
        table = table.filter(table.column("video_embedding").is_valid())
    if not table.num_rows:
        raise DataError(f"{path}: no video embeddings to search (every one of its {total} rows failed)")
    columns = [table.column(name).combine_chunks() for name in ("path", *segments)]
    return EmbeddingRows(*columns), embedding_matrix(table.column("video_embedding"), table.num_rows), provenance


def embedding_matrix(column: pa.ChunkedArray, rows: int) -> np.ndarray:
    """A list<float> column without nulls as an (N, D) float32 array (no Python lists in between)."""
    values = pa.concat_arrays([chunk.flatten() for chunk in column.chunks]) if column.num_chunks else pa.array([])
    return np.ascontiguousarray(values.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(rows, -1)
