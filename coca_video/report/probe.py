"""The probe's outputs: metrics, the per-video tables and confusion matrix (:mod:`.classification`) and training
curves."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..io import atomic_write_text
from ..training.curves import plot_curves
from .classification import ClassificationPaths, Classified, write_classification_outputs


@dataclass
class ProbeResult:
    """A probe's multi-view evaluation: accuracies (percent) and what they were computed from."""

    top1: float
    top5: float
    mean_class_accuracy: float
    probs: torch.Tensor  # (videos, classes) view-averaged softmax
    labels: torch.Tensor  # (videos,)
    paths: list[str]  # evaluated videos, in row order
    failed: list[tuple[str, str]]  # (path, reason) of videos that could not be decoded


def write_probe_outputs(output: Path, result: ProbeResult, classes: list[str], history: list[dict[str, float]],
                        proto: dict[str, Any]) -> None:
    """The probe's outputs: metrics.json, predictions.csv, per_class.csv, confusion.png (or top confusions in
    metrics.json past 50 classes), curves.png (a linear probe: c_sweep.png, held-out top-1 and loss against C)."""
    probs, labels = result.probs, result.labels
    if len(probs):
        predictions = probs.argmax(-1)  # (videos,): as evaluate's mean class accuracy has it
        scores = probs.gather(-1, predictions[:, None])[:, 0]  # (videos,)
        top5 = probs.topk(min(5, len(classes)), dim=-1).indices.tolist()
    else:
        scores, predictions, top5 = torch.empty(0), torch.empty(0, dtype=torch.long), []
    classified = Classified(result.paths, labels, predictions, scores, top5)
    paths = ClassificationPaths(output / "predictions.csv", output / "per_class.csv", output / "confusion.png")
    metrics = {"top1": result.top1, "top5": result.top5, "mean_class_accuracy": result.mean_class_accuracy,
               "protocol": proto} | write_classification_outputs(paths, classified, classes)
    atomic_write_text(output / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    plot_curves(output, history, "val_top1", "validation top-1 (%)")
    if "linear" in proto:
        plot_c_sweep(output, proto["linear"]["sweep"], proto["linear"]["chosen_c"])
    print(f"top-1 {result.top1:.1f}  top-5 {result.top5:.1f}  mean class {result.mean_class_accuracy:.1f}  "
          f"({proto['val_videos_evaluated']} videos evaluated) -> {output / 'metrics.json'}")


def plot_c_sweep(output: Path, points: list[dict[str, float]], chosen: float) -> None:
    """c_sweep.png: a linear probe's held-out top-1 (percent) and cross-entropy for each C tried, the chosen C
    marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    cs = [p["C"] for p in points]
    ax.semilogx(cs, [p["holdout_top1"] for p in points], marker="o", label="held-out top-1 (%)")
    ax.axvline(chosen, color="grey", linestyle="--", label=f"chosen C = {chosen:g}")
    ax.set_xlabel("C (inverse L2 strength)")
    ax.set_ylabel("held-out top-1 (%)")
    loss_axis = ax.twinx()
    loss_axis.semilogx(cs, [p["holdout_loss"] for p in points], color="tab:orange", marker=".")
    loss_axis.set_ylabel("held-out cross-entropy", color="tab:orange")
    ax.legend(fontsize=7, loc="center right")
    fig.tight_layout()
    fig.savefig(output / "c_sweep.png", dpi=100)
    plt.close(fig)
