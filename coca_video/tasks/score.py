"""Batch scoring of a folder of videos: zero-shot labels, embeddings and captions, one row per file, resumable.

    coca-video score VIDEO_DIR --labels kinetics400 --caption --out scores.parquet
    torchrun --nproc_per_node 2 -m coca_video.cli score VIDEO_DIR ...     # each rank scores its shard
    coca-video score VIDEO_DIR --engine ray ray.decode_actors=4            # on Ray (coca_video.engines.ray_engine)
    coca-video score 'shards/{00000..00099}.tar' shard_outputs=true      # WebDataset shards (tasks/score_shards.py)

What a row holds and how it is computed: :mod:`coca_video.scoring`. Results are flushed per batch (see
:mod:`coca_video.data.results`); a rerun skips files already scored ok.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa

from ..data.labels import read_class_names, read_templates
from ..data.segments import SegmentRule, video_windows
from ..data.results import FileKey, PartStore, embeddings_path, encoding_settings, input_key, lines_digest, merge, \
    stored_key, stored_path
from ..data.shards import url_shards
from ..data.synthetic import is_synthetic_class
from ..data.video import VIDEO_EXTENSIONS, ClipSampling, list_inputs
from ..distributed import init_distributed
from ..engines import Encoder, check_engine, encode_locked, loaded
from ..errors import ConfigError, InputError, NothingSucceeded
from ..io import check_output_file
from ..model import CoCa, get_tokenizer, load_probe, read_probe_info
from ..model.answer_head import load_answer_head
from ..prompts import prompt_templates
from ..runtime import load_model, with_trained_settings
from ..scoring import QuestionOptions, ScoreItem, VideoScorer
from ..storage import is_url
from ..video.scenes import DEFAULT_THRESHOLDS, SceneRule, require_scenedetect
from .score_config import ScoreConfig
from .score_shards import ScoreInputs, ShardPublisher, check_shard_outputs, names_shards, rejected_rows, \
    shard_inputs


def run(cfg: ScoreConfig) -> dict[str, Any]:
    """Score every video under ``cfg.videos`` not yet scored; merge all results into ``cfg.out``."""
    if cfg.probe and cfg.labels:
        raise ConfigError("score takes labels= (zero-shot) or probe= (a trained probe), not both")
    if cfg.probe and cfg.qa_model:
        raise ConfigError("score takes probe= or qa_model= (each brings its own model), not both")
    if cfg.probe:  # the probe's own backbone (finetuned or named) and frame count replace the model and num_frames
        info = read_probe_info(cfg.probe)
        cfg = dataclasses.replace(
            cfg, model=dataclasses.replace(cfg.model, name=info.backbone, pretrained=info.pretrained,
                                           image_size=info.image_size),
            decode=dataclasses.replace(cfg.decode, num_frames=info.classifier.num_frames))
    else:
        if cfg.qa_model:  # the videoqa folder is the model that encodes and answers
            cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name=cfg.qa_model))
        cfg = with_trained_settings(cfg, "score")  # a caption-finetuned folder's frames and caption source
    check_engine(cfg.engine)
    if cfg.segment_by == "scenes":
        require_scenedetect()  # before any work: the one line naming the extra
    inputs = score_inputs(cfg)
    check_outputs(cfg, inputs)
    warning = toy_model_warning(cfg)
    if warning and init_distributed().is_main:
        print(f"coca-video score: warning: {warning}", file=sys.stderr, flush=True)
    store = PartStore(cfg.out, rank=init_distributed().rank)
    with store.locked():  # before the model: a second run stops at once
        stored = store.settings()
        if cfg.model.precision == "auto" and stored and stored.get("precision") in ("fp32", "bf16", "fp16", "int8"):
            cfg.model.precision = stored["precision"]  # a resumed run computes as the rows already stored were
        model = load_model(cfg.model)
        store.check_settings(row_settings(cfg))  # refused before the merge below could rewrite the output
        summary, scores = score_paths(cfg, inputs, model, get_tokenizer(cfg.model.name))
        if scores is not None:
            report_failures(cfg, scores, set(inputs.paths))
        if scores is not None and cfg.report:
            from ..report import write_score_report

            notes = [warning] if warning else []
            summary["report"] = str(write_score_report(scores.to_pandas(), cfg.report, cfg, notes,
                                                                 cfg.report_page_size))
    return summary


def row_settings(cfg: ScoreConfig) -> dict[str, Any]:
    """Everything that decides what a row holds (``model.precision`` as it runs, so after ``load_model``): rows
    stored under other settings are neither mixed with this run's nor taken as done."""
    probe = Path(cfg.probe).resolve() if cfg.probe else None
    return encoding_settings(cfg.model, cfg.decode) | {
            "labels": lines_digest(read_class_names(cfg.labels)) if cfg.labels else None,
            "templates": lines_digest(read_templates(cfg.templates)) if cfg.templates else None,
            "probe": str(probe) if probe else None, "probe_views": cfg.probe_views if probe else None,
            "top_k": cfg.top_k, "caption": list(dataclasses.astuple(cfg.caption))
            if cfg.caption else None, "questions": list(cfg.question) or None, "video_pooling": cfg.video_pooling,
            "frame_embeddings": cfg.frame_embeddings,
            "embedding_dtype": None if cfg.embedding_dtype == "float32" else cfg.embedding_dtype,  # None: as before it
            "segments": segment_settings(cfg)}


def segment_settings(cfg: ScoreConfig) -> list | None:
    """What decides a segmented run's windows (None: whole videos); fixed windows as stores already record them."""
    if cfg.segment_by == "scenes":
        return ["scenes", *dataclasses.astuple(scene_rule(cfg))]
    return [cfg.segment_seconds, cfg.segment_stride] if cfg.segment_seconds else None


def scene_rule(cfg: ScoreConfig) -> SceneRule:
    """``cfg``'s scene keys as the rule the decoding workers cut by (the threshold resolved to the detector's)."""
    threshold = DEFAULT_THRESHOLDS[cfg.scene_detector] if cfg.scene_threshold is None else cfg.scene_threshold
    return SceneRule(cfg.scene_detector, threshold, cfg.min_scene_seconds, cfg.max_scene_seconds)


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


def sources_of(cfg: ScoreConfig) -> list[str]:
    """The inputs ``cfg.videos`` names, as a list."""
    return [cfg.videos] if isinstance(cfg.videos, str) else list(cfg.videos)


def score_inputs(cfg: ScoreConfig) -> ScoreInputs:
    """What ``cfg.videos`` names: the files (a folder, lists, tables, a prefix), or the samples of tar shards."""
    if names_shards(sources_of(cfg)):
        return shard_inputs(sources_of(cfg))
    files = list_inputs(cfg.videos, cfg.follow_symlinks)
    if not files and all(is_url(source) and url_shards(source) for source in sources_of(cfg)):
        return shard_inputs(sources_of(cfg))  # prefixes holding shards only (listed again: a rare case)
    if not files:
        raise InputError(f"{cfg.videos}: no video files found (looked recursively for {', '.join(VIDEO_EXTENSIONS)})")
    return ScoreInputs([input_key(path) for path in files], [stored_path(path) for path in files])


def shard_fields(cfg: ScoreConfig) -> list[str]:
    """``shard_fields`` as a list of names (``url,caption`` or a YAML list)."""
    names = cfg.shard_fields.split(",") if isinstance(cfg.shard_fields, str) else cfg.shard_fields
    return [name.strip() for name in names if name.strip()]


def check_outputs(cfg: ScoreConfig, run: ScoreInputs) -> None:
    """Refuse (before any work) an ``out``, embeddings sidecar or ``report`` that is an input file, or an existing
    file we did not write: ``out`` and its sidecar are ours when ``<out>.parts`` is beside them, a report page (each
    of the pages the run's rows will fill) when it carries the report marker; with ``shard_outputs``, per-shard
    outputs that would land beside an input shard or on a file not ours."""
    from ..report import is_our_report, page_count, report_page_paths

    tars = [shard.path for shard in run.shards or []]
    inputs = [*(Path(p) for p in (*sources_of(cfg), *tars, cfg.labels, cfg.templates) if p and Path(p).is_file()),
              *(Path(path) for path in run.paths if not run.shards)]
    ours = PartStore(cfg.out).exists()
    check_output_file(cfg.out, inputs, ours, "out")
    check_output_file(embeddings_path(cfg.out), inputs, ours, "out (its embeddings file)")
    if cfg.shard_outputs:
        check_shard_outputs(str(cfg.out), run, ours)
    if cfg.report:
        for page in report_page_paths(cfg.report, page_count(len(run.paths), cfg.report_page_size)):
            check_output_file(page, [*inputs, cfg.out, embeddings_path(cfg.out)], is_our_report(page),
                              "report" if page == Path(cfg.report) else "report (its page)")


def probe_sampling(cfg: ScoreConfig) -> ClipSampling | None:
    """The views ``cfg.probe`` was evaluated with, when ``probe_views`` asks for them (None: one clip)."""
    if not (cfg.probe and cfg.probe_views):
        return None
    views = read_probe_info(cfg.probe).eval_views
    return ClipSampling(cfg.decode.num_frames, mode=views.sampling, temporal_views=views.temporal_views,
                        spatial_crops=views.spatial_crops)


def build_scorer(cfg: ScoreConfig, model: CoCa | None = None, tokenizer: Callable | None = None) -> VideoScorer:
    """The scorer ``cfg`` asks for: zero-shot labels or a probe's, captions, frame embeddings; without ``model``, with
    its own (``cfg.model``, precision already resolved): what each Ray encode actor holds."""
    model, tokenizer = loaded(cfg.model, model, tokenizer)
    probe, class_names, templates = None, None, None
    if cfg.probe:
        probe, info = load_probe(cfg.probe)
        class_names = info.classes
    elif cfg.labels:
        class_names = read_class_names(cfg.labels)
        templates = prompt_templates(model, cfg.templates)
    questions = None
    if cfg.qa_model:
        head, answers = load_answer_head(cfg.qa_model)
        questions = QuestionOptions(list(cfg.question), head, answers)
    return VideoScorer(model, tokenizer, cfg.model, class_names, templates, probe, cfg.top_k, cfg.caption,
                       cfg.frame_embeddings, cfg.video_pooling, cfg.embedding_dtype, questions)


def score_paths(cfg: ScoreConfig, inputs: ScoreInputs, model: CoCa,
                tokenizer: Callable) -> tuple[dict, pa.Table | None]:
    """Score ``inputs`` (this rank's share, skipping those already scored ok into ``cfg.out``) through the one
    encoding pass, then merge every rank's parts into ``cfg.out`` on rank 0. With ``shard_outputs`` each shard's
    outputs are published as soon as its samples all have rows (:class:`~.score_shards.ShardPublisher`). Returns a
    summary and the merged table (None off rank 0). The caller holds the store's lock (its settings checked)."""
    info = init_distributed()
    store = PartStore(cfg.out, rank=info.rank)
    keys = inputs.keys
    if info.is_main:  # inputs that cannot be decoded (shard samples without a usable video): their error rows
        store.append(rejected_rows(inputs.rejected))
    publisher = ShardPublisher(str(cfg.out), inputs, shard_fields(cfg)) if cfg.shard_outputs else None
    encoder = Encoder(functools.partial(build_scorer, cfg), model, tokenizer, cfg.decode, cfg.engine, cfg.ray,
                      probe_sampling(cfg), on_stored=publisher)
    started, scores, encoded, published = time.time(), None, None, None
    try:  # a file's windows stay on one rank: shared out by file, then planned
        with one_connection(cfg):
            items, uncut = plan_items(cfg, keys[info.rank::info.world_size], store)
            store.append(rejected_rows(uncut))  # videos not cut in time: their error rows
            if publisher is not None:
                publisher.start(items, store.done_keys(), sweep=info.is_main)
            encoded = encode_locked(items, store, row_settings(cfg), encoder, shard=False)
    finally:  # Ctrl-C or a crash still leaves every flushed batch merged into the output
        if info.is_main:
            provenance = {"model": cfg.model.name, "pretrained": cfg.model.pretrained or "",
                          "video_pooling": cfg.video_pooling, "precision": cfg.model.precision,
                          "frames": cfg.decode.frames_rule()}
            scores = merge(cfg.out, paths=inputs.paths, metadata=provenance, columns=inputs.columns(shard_fields(cfg)))
            published = publisher.finish() if publisher is not None else None
    seconds = time.time() - started
    counts = encoded.counts
    not_decoded = len(inputs.rejected) + len(uncut)  # this rank's videos not cut in time, with the rejected inputs
    summary = {"videos": len(inputs.paths), "scored_now": counts.total + not_decoded,
               "errors_now": counts.error + not_decoded,
               "already_scored": len(already_scored(encoded.done, keys, encoded.todo)),
               "kept_from_earlier_runs": 0 if scores is None else len(set(scores.column("path").to_pylist()) -
                                                                      set(inputs.paths)),
               "seconds": round(seconds, 2),
               "rows_per_second": round(counts.total / max(seconds, 1e-9), 2),
               "out": str(cfg.out), "embeddings": str(embeddings_path(cfg.out))}
    if inputs.shards is not None:
        summary["shards"] = len(inputs.shards)
        if cfg.shard_outputs and info.is_main:
            summary["shards_published"] = published
    if scores is not None:
        summary["ok_total"] = int(sum(s == "ok" for s in scores.column("status").to_pylist()))
    if counts.stage_seconds is not None:  # engine=ray: busy seconds per stage, from Ray Data's stats
        summary["stage_seconds"], summary["ray_pools"] = counts.stage_seconds, counts.pools
    return summary, scores


def one_connection(cfg: ScoreConfig) -> contextlib.AbstractContextManager:
    """Ray connected for the whole run when it both cuts scenes and scores on Ray (one local cluster started, not
    two); nothing otherwise."""
    if cfg.engine == "ray" and cfg.segment_by == "scenes":
        from ..engines.ray_engine import connected

        return connected(cfg.ray)
    return contextlib.nullcontext()


FAILURES_SHOWN = 3  # failed inputs named on stderr; the rest are counted per reason


def report_failures(cfg: ScoreConfig, scores: pa.Table, paths: set[str]) -> None:
    """Name on stderr the inputs of this run whose row is an error (the first few, and a count per reason) and where
    the full list is; a run in which no input succeeded is one error line (exit 1), its error rows kept."""
    rows = [row for row in scores.select(["path", "status", "error"]).to_pylist() if row["path"] in paths]
    failed = [row for row in rows if row["status"] != "ok"]
    if not failed:
        return
    reasons: dict[str, int] = {}
    for row in failed:
        reason = row["error"].removeprefix(f"{row['path']}: ")
        reasons[reason] = reasons.get(reason, 0) + 1
    counted = "; ".join(f"{count} x {reason}" for reason, count in sorted(reasons.items(), key=lambda rc: -rc[1])[:5])
    shown = "; ".join(row["error"] for row in failed[:FAILURES_SHOWN])
    where = f"the rows with status=error in {cfg.out}"
    if len(failed) == len(rows):
        raise NothingSucceeded(f"{cfg.videos}: no input could be scored ({len(rows)} rows failed: {counted}); e.g. {shown};"
                        f" all listed in {where}")
    print(f"coca-video score: {len(failed)} of {len(rows)} rows failed ({counted}); e.g. {shown}; the full list: "
          f"{where}", file=sys.stderr, flush=True)


def already_scored(done: set[tuple], keys: list[tuple[str, int, float]], todo: list[ScoreItem]) -> set[tuple]:
    """The files of ``keys`` a rerun has nothing left to score in: some row of theirs scored ok in ``done`` and none
    of their items (segments, fps chunks) still in ``todo``; a partly scored file is not counted."""
    unfinished = {stored_key(item.key) for item in todo}
    return ({key[:3] for key in done} & {stored_key(key) for key in keys}) - unfinished


def plan_items(cfg: ScoreConfig, keys: list[tuple[str, int, float]], store: PartStore | None = None
               ) -> tuple[list[ScoreItem], list[tuple[FileKey, str]]]:
    """One item per file, or with ``segment_seconds`` one per window of each file, with ``segment_by=scenes`` one
    per scene (a long one split by ``max_scene_seconds``), or with ``decode.sampling=fps`` one per chunk of
    ``num_frames`` frames (bounded memory, resumable per chunk; its frames get a row each). The windows are worked
    out in the decoding workers (:mod:`coca_video.data.segments`); a file whose windows cannot be (unreadable
    headers, say) stays one item, whose decode then fails with the reason; a file whose cutting ran past its time
    limit has no item: it is returned with the reason (its error row). With scenes, a file whose ok rows in ``store``
    already cover the whole video is not cut again: its items are those rows' windows."""
    per_frame = cfg.decode.sampling == "fps"
    if cfg.segment_seconds <= 0 and not per_frame and cfg.segment_by != "scenes":
        return [ScoreItem(key) for key in keys], []
    scenes = scene_rule(cfg) if cfg.segment_by == "scenes" else None
    rule = SegmentRule(cfg.segment_seconds, cfg.segment_stride, cfg.decode.num_frames if per_frame else None,
                       cfg.decode.fps, cfg.decode.max_frames, scenes)
    covered = covered_windows(store) if scenes is not None and store is not None else {}
    to_cut = [key for key in keys if stored_key(key) not in covered]
    if cfg.engine == "ray" and scenes is not None:  # cut on the cluster's decode actors
        from ..engines.ray_engine import cut_videos

        cut = dict(zip(to_cut, cut_videos([key[0] for key in to_cut], rule, cfg.decode, cfg.ray)))
    else:
        cut = dict(zip(to_cut, video_windows([key[0] for key in to_cut], rule, cfg.decode)))
    items, uncut = [], []
    for key in keys:
        windows = covered.get(stored_key(key)) or cut[key]
        if isinstance(windows, str):
            uncut.append((key, windows.removeprefix(f"{key[0]}: ")))
            continue
        items += [ScoreItem(key)] if windows is None else [ScoreItem(key, start, end) for start, end in windows]
    return items, uncut


def covered_windows(store: PartStore) -> dict[tuple, list[tuple[float, float]]]:
    """Files (stored keys) whose ok rows in ``store`` tile the whole video from 0 to its duration, with those
    windows in order: a rerun has nothing left to cut or score in them (the caller has checked the store's settings
    against the run's)."""
    table = store.read(columns=["path", "size", "mtime", "segment_start", "segment_end", "duration", "status",
                                "scored_at"]) if store.exists() else None
    if table is None or "segment_end" not in table.column_names:
        return {}
    rows: dict[tuple, list[tuple[float, float, float]]] = {}
    for row in table.to_pylist():
        if row["status"] == "ok" and row["segment_start"] is not None:
            rows.setdefault((row["path"], row["size"], row["mtime"]), []).append(
                (row["segment_start"], row["segment_end"], row["duration"]))
    covered = {}
    for key, windows in rows.items():
        windows.sort()
        joined = all(a[1] == b[0] for a, b in zip(windows, windows[1:]))
        if windows[0][0] == 0 and joined and windows[-1][2] is not None and \
                abs(windows[-1][1] - windows[-1][2]) < 1e-6:
            covered[key] = [(start, end) for start, end, _ in windows]
    return covered
