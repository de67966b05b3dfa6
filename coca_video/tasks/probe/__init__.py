"""Action recognition, the CoCa paper's video recipe: every frame through the shared image encoder, ONE learned
query attending over all spatio-temporal tokens, softmax cross-entropy.

    python pipelines/kinetics_probe.py --config configs/probe/kinetics400_frozen.yaml data.video_root=/data/k400

``mode: frozen`` trains only the pooler and classifier on tokens from a feature cache (:mod:`coca_video.data.
feature_cache`): the first epoch decodes and encodes, later epochs read the cache. Frozen training therefore uses
the evaluation sampling (``decode.sampling``: segment centres by default), the usual practice for frozen features;
``probe.cache`` stores them as fp16, int8 or 2x2-pooled tokens, and a new cache is sized against the disk first;
``probe.cache: none`` keeps no cache: every epoch decodes (in the decoding workers) and encodes the same clips again,
for machines with an accelerator and little disk (evaluation then decodes and encodes too, in any mode).
``mode: linear`` is the linear-probe baseline (CLIP's protocol, :mod:`coca_video.tasks.probe.linear`): scikit-learn
logistic regression on each clip's mean frame embedding, C chosen on a held-out share of the training split; it
caches one (1, D) embedding per view (``probe.cache: fp16``) or none.
``mode: finetune`` trains the encoder too, on fresh TSN-sampled clips every epoch, at ``optim.lr``, and the new
modules (pooler, position embeddings, classifier) at ``optim.head_lr``: one rate cannot serve both (the encoder's is
too slow for a fresh head, the head's rewrites the encoder; configs/probe/synthetic_finetune.yaml has the numbers);
``optim.clip_per_module`` clips the two's gradients apart, so the encoder's never shrink the head's steps.
``probe.init`` starts the head from a trained probe (linear probing, then finetuning); ``optim.ema`` evaluates and
saves an exponential moving average of the weights.
Under torchrun (either mode) every rank takes its share of the same global batches and the loss is the global
batch's mean, so N processes take the same steps as one; each validation video is scored by exactly one rank.
Outputs in ``output_dir``: metrics.json (top1, top5, mean_class_accuracy in percent, plus the protocol and the best
validated epoch), predictions.csv, per_class.csv, confusion.png, curves.png (training loss and validation top-1 per
epoch), metrics.jsonl (and tensorboard/ when TensorBoard is installed), checkpoints/ (``best.pt``: the checkpoint of
the epoch with the best validation top-1, every ``train.eval_every`` epochs) and probe/ (the last epoch's weights).
The package: :mod:`.config` (the keys), :mod:`.features` (the sets and the encoder's tokens), :mod:`.train` (the
head and what the shared loop trains), :mod:`.evaluate`, :mod:`.linear` (the scikit-learn baseline).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ...config import to_dict
from ...distributed import barrier, init_distributed, print0
from ...errors import ConfigError
from ...io import atomic_write_text, check_output_dir
from ...model import VideoClassifier, save_probe
from ...model.probe_folder import ProbeViews
from ...report import write_probe_outputs
from ...runtime import load_model
from ...training import check_resumable, fit
from .config import ProbeConfig
from .evaluate import best_validation, evaluate, protocol
from .features import load_sets
from .linear import require_sklearn, train_linear
from .train import classifier_config, finetune_task, frozen_task, init_classifier

__all__ = ["ProbeConfig", "run"]


def run(cfg: ProbeConfig) -> dict[str, Any]:
    """Train the probe (resuming if asked), evaluate with multi-view testing, write every output."""
    if cfg.decode.sampling == "linspace" and cfg.eval.temporal_views > 1:
        raise ConfigError("decode.sampling=linspace takes the same frames for every view: use eval.temporal_views=1 "
                          "or decode.sampling=eval")
    if cfg.mode == "linear":
        require_sklearn()  # before any video is decoded
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
                            protocol(cfg, train_set, val_set, result, sweep) | best_validation(history))
        save_probe(output / "probe", classifier, train_set.classes, cfg.model.name, cfg.model.pretrained,
                   finetuned=model if cfg.mode == "finetune" else None, image_size=model.cfg.vision.image_size,
                   eval_views=ProbeViews(cfg.eval.temporal_views, cfg.eval.spatial_crops, cfg.decode.sampling))
    barrier()
    return {"top1": result.top1, "top5": result.top5, "mean_class_accuracy": result.mean_class_accuracy}

