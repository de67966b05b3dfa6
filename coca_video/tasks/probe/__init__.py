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
head and what the shared loop trains), :mod:`.evaluate`, :mod:`.linear` (the scikit-learn baseline), :mod:`.task` (the run). Importing the package reads
only :mod:`.config` (no torch: ``coca-video probe --help`` and config errors stay fast); the rest loads on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from .config import ProbeConfig

__all__ = ["ProbeConfig", "run"]

LAZY = {"load_sets": "features", "init_classifier": "train", "classifier_config": "train", "evaluate": "evaluate"}


def run(cfg: ProbeConfig) -> dict[str, Any]:
    """Train the probe (resuming if asked), evaluate with multi-view testing, write every output."""
    from .task import run as run_probe

    return run_probe(cfg)


def __getattr__(name: str) -> Any:
    """The package's heavier names (they import torch), loaded when first asked for."""
    if name not in LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{LAZY[name]}", __name__), name)
