"""The linear-probe baseline (``mode: linear``), CLIP's protocol for Kinetics-700 (Radford et al., 2021, appendix
A.3): scikit-learn's L-BFGS logistic regression (at most ``max_iter`` iterations) on each clip's mean-pooled,
L2-normalised contrastive frame embeddings, its inverse L2 strength C chosen on a held-out part of the training
split and the model then refitted on the whole split with that C.

The sweep: ``linear.c_grid`` (default 1e-6 ... 1e6, one value a decade, 13 fits; CLIP swept the same range in 96
log steps), each fitted on the training split minus a held-out share (``linear.holdout``, default 20%, stratified by
class when every class has two clips or more) and scored on that share by top-1 accuracy, ties going to the lower
held-out cross-entropy. The fitted coefficients become a :class:`~coca_video.model.linear_probe.LinearProbe` (plain
arrays; no pickle anywhere).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ...data.actions import ActionSet
from ...data.video import ClipSampling
from ...distributed import print0
from ...errors import ConfigError, DataError
from ...metrics import topk_accuracy
from ...model import CoCa
from ...model.linear_probe import LinearProbe, LinearProbeConfig, linear_probe_from_sklearn
from .config import LinearFitConfig, ProbeConfig
from .features import cached_tokens, gathered, streamed_views


@dataclass
class LinearSweep:
    """What chose C: held-out top-1 (percent) and cross-entropy for each value, the choice, the split sizes."""

    chosen_c: float
    points: list[dict[str, float]]  # {"C", "holdout_top1", "holdout_loss", "iterations"} in grid order
    fit_videos: int
    holdout_videos: int

    def protocol(self, cfg: LinearFitConfig) -> dict[str, Any]:
        return {"solver": "lbfgs", "max_iter": cfg.max_iter, "c_grid": list(cfg.c_grid), "chosen_c": self.chosen_c,
                "holdout_share": cfg.holdout, "fit_videos": self.fit_videos, "holdout_videos": self.holdout_videos,
                "sweep": self.points}


def require_sklearn() -> None:
    """Raise :class:`ConfigError` (one line, naming the extra) when scikit-learn is not installed."""
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise ConfigError("mode=linear needs scikit-learn: pip install 'coca-video[linear]'") from None


def fit_logistic(embeddings: np.ndarray, labels: np.ndarray, c: float, cfg: LinearFitConfig,
                 probe_cfg: LinearProbeConfig) -> tuple[LinearProbe, int]:
    """One L-BFGS fit of (N, D) embeddings to (N,) labels at ``c`` -> the probe and the iterations it took."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    regression = LogisticRegression(C=c, max_iter=cfg.max_iter, solver="lbfgs")
    with warnings.catch_warnings():  # the iteration count goes into the sweep record instead
        warnings.simplefilter("ignore", ConvergenceWarning)
        regression.fit(embeddings, labels)
    probe = linear_probe_from_sklearn(regression.coef_, regression.intercept_, regression.classes_,
                                      LinearProbeConfig(**{**vars(probe_cfg), "C": float(c)}))
    return probe, int(np.max(regression.n_iter_))


def holdout_split(labels: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (fit, held out): ``share`` of the rows held out, stratified by label when every label has two
    rows or more and the share leaves one row per label, seeded."""
    from sklearn.model_selection import train_test_split

    counts = np.bincount(labels)
    held = max(1, round(share * len(labels)))
    present = int((counts > 0).sum())
    stratify = labels if counts[counts > 0].min() >= 2 and present <= held <= len(labels) - present else None
    fit, holdout = train_test_split(np.arange(len(labels)), test_size=held, random_state=seed, stratify=stratify)
    return np.sort(fit), np.sort(holdout)


def fit_linear_probe(embeddings: np.ndarray, labels: np.ndarray, probe_cfg: LinearProbeConfig,
                     cfg: LinearFitConfig, seed: int,
                     source: str = "the training split") -> tuple[LinearProbe, LinearSweep]:
    """CLIP's linear probe on (N, D) embeddings and (N,) class indices: sweep C on a held-out share, refit on all
    rows with the best C. Raises :class:`DataError` when there are too few clips or classes to hold any out."""
    require_sklearn()
    if len(np.unique(labels)) < 2 or len(labels) < 4:
        raise DataError(f"{source}: mode=linear needs at least 4 clips of 2 classes or more, got {len(labels)} clips "
                        f"of {len(np.unique(labels))} classes")
    fit, holdout = holdout_split(labels, cfg.holdout, seed)
    if len(np.unique(labels[fit])) < 2:
        raise DataError(f"{source}: holding out {cfg.holdout:.0%} leaves one class to fit; lower linear.holdout")
    points = []
    held_labels = torch.from_numpy(labels[holdout])
    for c in sorted(cfg.c_grid):
        probe, iterations = fit_logistic(embeddings[fit], labels[fit], c, cfg, probe_cfg)
        with torch.no_grad():
            logits = probe(torch.from_numpy(embeddings[holdout]).float())
        probs = logits.softmax(-1)
        loss = -torch.log(probs[torch.arange(len(held_labels)), held_labels].clamp_min(1e-12)).mean()
        points.append({"C": float(c), "holdout_top1": topk_accuracy(probs, held_labels, (1,))["top1"],
                       "holdout_loss": float(loss), "iterations": iterations})
    best = max(points, key=lambda p: (p["holdout_top1"], -p["holdout_loss"]))
    probe, _ = fit_logistic(embeddings, labels, best["C"], cfg, probe_cfg)
    return probe, LinearSweep(best["C"], points, len(fit), len(holdout))


def train_linear(cfg: ProbeConfig, model: CoCa, train_set: ActionSet) -> tuple[LinearProbe, LinearSweep]:
    """CLIP's linear probe on the mean embeddings of view 0 of the evaluation sampling (the frozen probe's clips),
    cached (``probe.cache: fp16``) or not (``none``), fitted by :func:`fit_linear_probe`."""
    model.requires_grad_(False)
    model.eval()
    probe_cfg = LinearProbeConfig(model.cfg.embed_dim, len(train_set.classes), cfg.decode.num_frames)
    sampling = ClipSampling(cfg.decode.num_frames, mode=cfg.decode.sampling)
    if cfg.probe.cache == "none":
        first_view = lambda read, views: read(slice(0, 1))[:, 0].cpu()  # noqa: E731
        rows, embeddings, _ = gathered(streamed_views(cfg, model, LinearProbe(probe_cfg), train_set.items,
                                                      sampling, first_view), torch.empty(0, probe_cfg.embed_dim))
    else:
        cache = cached_tokens(cfg, model, train_set, sampling, "train")
        rows = sorted(cache.done)
        embeddings = cache.read(rows, 0)[:, 0]  # (N, D)
    if not rows:
        raise DataError(f"{cfg.data.train}: no training video could be decoded")
    labels = np.array([train_set.items[i].label for i in rows])
    probe, sweep = fit_linear_probe(embeddings.double().numpy(), labels, probe_cfg, cfg.linear, cfg.train.seed,
                                    cfg.data.train or "the training split")
    print0(f"linear probe: C={sweep.chosen_c:g} (held-out top-1 "
           f"{max(p['holdout_top1'] for p in sweep.points):.1f}% on {sweep.holdout_videos} clips), refitted on "
           f"{len(rows)} clips")
    return probe.to(cfg.model.device), sweep
