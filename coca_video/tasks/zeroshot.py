"""Zero-shot action recognition on an annotated video set, the paper-style number in one command:

    coca-video zeroshot --annotations kinetics400/validate.csv --video-root kinetics400/val --labels kinetics400 \
        --model coca_ViT-L-14 --pretrained laion2b_s13b_b90k

Each video (or its [time_start, time_end) window of an untrimmed file) becomes a video embedding (``video_pooling``:
the mean of its frame embeddings, or VideoCoCa's pooler over all frames' tokens) and is classified against the
prompt-ensembled class embeddings; top-1, top-5 and mean class accuracy (percent) go to ``out`` with the protocol,
and beside it the probe's per-video outputs (:mod:`coca_video.report.classification`): ``<stem>_predictions.csv``,
``<stem>_per_class.csv`` and ``<stem>_confusion.png`` (past 50 classes ``top_confusions`` in ``out`` instead).
Rows are kept in a result store beside ``out``, so an interrupted run resumes. Videos that fail to decode are
excluded and listed, never replaced.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import torch

from ..data.actions import ActionSet, load_actions
from ..data.labels import read_class_names
from ..data.results import PartStore, encoding_settings, file_key, lines_digest
from ..data.video import VideoItem
from ..distributed import init_distributed
from ..engines import Encoder, check_engine, encode, failure, loaded, stored_rows
from ..errors import DataError
from ..io import atomic_write_text, check_output_file, is_our_metrics
from ..metrics import mean_class_accuracy, topk_accuracy
from ..model import CoCa, get_tokenizer
from ..prompts import prompt_templates
from ..report.classification import (ClassificationPaths, Classified, check_classification_outputs,
                                     write_classification_outputs)
from ..runtime import load_model
from ..scoring import ScoreItem, VideoScorer
from .zeroshot_config import ZeroShotConfig

TOP_K = 5


def run(cfg: ZeroShotConfig) -> dict[str, Any]:
    """Classify every annotated video zero-shot; write and return top-1/top-5/mean class accuracy (and, beside
    ``out``, the predictions and per-class tables and the confusion matrix)."""
    check_engine(cfg.engine)
    info = init_distributed()
    classes = read_class_names(cfg.classes) if cfg.classes else None
    actions = load_actions(cfg.format, cfg.annotations, cfg.video_root, classes)
    check_outputs(cfg, actions)
    items = [item for item in actions.items if item.label >= 0]
    if not items:
        raise DataError(f"{cfg.annotations}: no labelled video found under {cfg.video_root}")
    model = load_model(cfg.model)
    templates = prompt_templates(model, cfg.templates)
    out = Path(cfg.out)
    store = PartStore(out.with_name(out.stem + "_videos.parquet"), rank=info.rank)
    wanted = [ScoreItem(file_key(item.path), item.start_sec, item.end_sec) for item in items]
    encoder = Encoder(functools.partial(label_scorer, cfg, actions.classes, templates), model,
                      get_tokenizer(cfg.model.name), cfg.decode, cfg.engine, cfg.ray)
    encode(wanted, store, row_settings(cfg, actions.classes, templates), encoder)  # others' rows: refused
    if not info.is_main:
        return {}
    videos, failed = classified_videos(stored_rows(store, wanted), wanted, items, actions.classes)
    result = accuracy(videos, len(actions.classes))
    result["protocol"] = protocol(cfg, len(actions.missing), len(templates), len(videos.paths), failed)
    result |= write_classification_outputs(classification_paths(out), videos, actions.classes)
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(f"zero-shot top-1 {result['top1']:.1f}  top-5 {result['top5']:.1f}  mean class "
          f"{result['mean_class_accuracy']:.1f}  ({result['protocol']['videos_evaluated']} videos) -> {out}")
    return result


def classification_paths(out: Path) -> ClassificationPaths:
    """The tables and the plot beside ``out``: ``<stem>_predictions.csv``, ``<stem>_per_class.csv``,
    ``<stem>_confusion.png``."""
    return ClassificationPaths(*(out.with_name(f"{out.stem}_{name}") for name in
                                 ("predictions.csv", "per_class.csv", "confusion.png")))


def check_outputs(cfg: ZeroShotConfig, actions: ActionSet) -> None:
    """Refuse (before any work) outputs that are inputs (the annotations, the videos) or existing files we did not
    write: metrics JSON with our protocol block, our tables' headers, our plot's mark."""
    inputs = [Path(cfg.annotations), *(Path(i.path) for i in actions.items)]
    check_output_file(cfg.out, inputs, is_our_metrics(cfg.out, "annotations"), "out")
    check_classification_outputs(classification_paths(Path(cfg.out)), inputs, len(actions.classes), "out")


def row_settings(cfg: ZeroShotConfig, classes: list[str], templates: list[str]) -> dict[str, Any]:
    """What decides a stored row's labels (``model.precision`` as it runs, so after ``load_model``)."""
    return encoding_settings(cfg.model, cfg.decode) | {
        "classes": lines_digest(classes), "templates": lines_digest(templates), "video_pooling": cfg.video_pooling}


def label_scorer(cfg: ZeroShotConfig, classes: list[str], templates: list[str], model: CoCa | None = None,
                 tokenizer: Any = None) -> VideoScorer:
    """The scorer of the labels pass (top-5 of ``classes``); without ``model``, one loading its own (``cfg.model``,
    precision already resolved): what each Ray encode actor holds."""
    model, tokenizer = loaded(cfg.model, model, tokenizer)
    return VideoScorer(model, tokenizer, cfg.model, classes, templates, top_k=TOP_K, video_pooling=cfg.video_pooling)


def classified_videos(rows: list[dict[str, Any] | None], wanted: list[ScoreItem], items: list[VideoItem],
                      classes: list[str]) -> tuple[Classified, list[list[str]]]:
    """Every wanted video scored ok, from its stored top-5 labels and top-1 score (``rows``, one per wanted video;
    the prediction is the top-1 label), and the others as [path, reason]."""
    index = {name: i for i, name in enumerate(classes)}
    paths, labels, scores, ranked, failed = [], [], [], [], []
    for key, item, row in zip(wanted, items, rows):
        reason = failure(row, "not scored")
        if reason is not None:
            failed.append([key.key[0], reason])
            continue
        paths.append(item.path)
        labels.append(item.label)
        scores.append(row["top1_score"])
        ranked.append([index[row[f"top{k}_label"]] for k in range(1, min(TOP_K, len(classes)) + 1)])
    if not labels:
        raise DataError(f"no video could be classified ({failed[0][0]}: {failed[0][1]})")
    predictions = torch.tensor([order[0] for order in ranked])
    return Classified(paths, torch.tensor(labels), predictions, torch.tensor(scores, dtype=torch.float64),
                      ranked), failed


def accuracy(videos: Classified, num_classes: int) -> dict[str, float]:
    """Top-1/top-5/mean class accuracy (percent) of classified videos from their top-5 class indices."""
    scores = torch.zeros(len(videos.paths), num_classes)  # a score per class that reproduces each video's top-5 order
    for row, order in enumerate(videos.top5):
        scores[row, order] = torch.arange(len(order), 0, -1, dtype=torch.float)
    top = topk_accuracy(scores, videos.labels, (1, TOP_K))
    return {"top1": top["top1"], "top5": top[f"top{TOP_K}"],
            "mean_class_accuracy": mean_class_accuracy(videos.predictions, videos.labels)}


def protocol(cfg: ZeroShotConfig, missing: int, templates: int, evaluated: int, failed: list) -> dict[str, Any]:
    """What was measured, so a number is never read without its conditions."""
    return {"annotations": cfg.annotations, "model": cfg.model.name,
            "checkpoint": cfg.model.pretrained or cfg.model.name, "precision": cfg.model.precision,
            "video_pooling": cfg.video_pooling, "frames": cfg.decode.num_frames, "sampling": cfg.decode.sampling,
            "prompt_templates": templates, "videos_evaluated": evaluated, "videos_missing": missing,
            "videos_failed": failed}
