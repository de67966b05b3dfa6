"""The probe's run: train (the shared loop), validate, evaluate with multi-view testing, write every output."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ...config import to_dict
from ...distributed import barrier, init_distributed, print0
from ...engines import check_engine
from ...errors import ConfigError
from ...io import atomic_write_text, check_output_dir
from ...model import VideoClassifier, save_probe
from ...model.probe_folder import ProbeViews
from ...report import write_probe_outputs
from ...runtime import load_model
from ...training import best_validation, check_resumable, fit
from .config import ProbeConfig
from .evaluate import evaluate, protocol
from .features import load_sets
from .linear import require_sklearn, train_linear
from .train import classifier_config, finetune_task, frozen_task, init_classifier

def run(cfg: ProbeConfig) -> dict[str, Any]:
    """Train the probe (resuming if asked), evaluate with multi-view testing, write every output."""
    if cfg.decode.sampling == "linspace" and cfg.eval.temporal_views > 1:
        raise ConfigError("decode.sampling=linspace takes the same frames for every view: use eval.temporal_views=1 "
                          "or decode.sampling=eval")
    if cfg.mode == "linear":
        require_sklearn()  # before any video is decoded
    check_engine(cfg.engine)
    check_output_dir(cfg.output_dir)
    check_resumable(cfg.output_dir, cfg.resume, cfg)
    info = init_distributed()
    torch.manual_seed(cfg.train.seed)
    output = Path(cfg.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    if info.is_main:  # rank 0 writes a synthetic dataset; the others wait for it
        train_set, val_set = load_sets(cfg)
    barrier()
    if not info.is_main:
        train_set, val_set = load_sets(cfg)
    print0(train_set.summary("train"), val_set.summary("val"), sep="\n")
    model = load_model(cfg.model, training=cfg.mode == "finetune")
    if info.is_main:
        atomic_write_text(output / "config.json", json.dumps(to_dict(cfg), indent=2) + "\n")
    sweep, history = None, []
    if cfg.mode == "linear":
        classifier, sweep = train_linear(cfg, model, train_set)
    else:
        classifier = VideoClassifier(classifier_config(cfg, model, len(train_set.classes)))
        init_classifier(cfg, classifier, train_set.classes)
        classifier = classifier.to(cfg.model.device)
        task = (frozen_task if cfg.mode == "frozen" else finetune_task)(cfg, model, classifier, train_set)
        validate = lambda: {"val_top1": evaluate(cfg, model, classifier, val_set).top1}  # noqa: E731
        history = fit(replace(task, validate=validate, best="val_top1"), cfg.train, cfg.optim, cfg.output_dir,
                      cfg.resume)
    result = evaluate(cfg, model, classifier, val_set)
    if info.is_main:
        write_probe_outputs(output, result, train_set.classes, history,
                            protocol(cfg, train_set, val_set, result, sweep) | best_validation(history, "val_top1"))
        save_probe(output / "probe", classifier, train_set.classes, cfg.model.name, cfg.model.pretrained,
                   finetuned=model if cfg.mode == "finetune" else None, image_size=model.cfg.vision.image_size,
                   eval_views=ProbeViews(cfg.eval.temporal_views, cfg.eval.spatial_crops, cfg.decode.sampling))
    barrier()
    return {"top1": result.top1, "top5": result.top5, "mean_class_accuracy": result.mean_class_accuracy}

