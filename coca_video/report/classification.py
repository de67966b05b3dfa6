"""A classifier's per-video outputs, the probe's and zero-shot's alike: the predictions and per-class tables and the
confusion matrix (a PNG up to ``CONFUSION_PLOT_CLASSES`` classes; past that its largest off-diagonal cells, which the
caller puts in its metrics JSON)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import torch
from torch import Tensor

from ..io import atomic_write_table, check_output_file, first_line
from ..metrics import per_class_accuracy

PREDICTIONS_HEADER = "path,label,prediction,score,top5"
PER_CLASS_HEADER = "class,accuracy,videos"
PNG_SOFTWARE = "coca-video"  # the PNG's Software text: how a rerun knows the confusion plot is ours
CONFUSION_PLOT_CLASSES = 50  # more classes than this: top confusions in the metrics instead of an unreadable plot
TOP_CONFUSIONS = 20


@dataclass
class Classified:
    """Videos classified: what the tables and the confusion matrix are made of."""

    paths: list[str]  # evaluated videos, in row order
    labels: Tensor  # (videos,) true class index
    predictions: Tensor  # (videos,) predicted class index
    scores: Tensor  # (videos,) the predicted class's probability
    top5: list[list[int]]  # per video, up to five class indices, best first


@dataclass(frozen=True)
class ClassificationPaths:
    """Where the tables and the plot go."""

    predictions: Path
    per_class: Path
    confusion: Path


def write_classification_outputs(paths: ClassificationPaths, classified: Classified,
                                 classes: list[str]) -> dict[str, Any]:
    """Write the predictions CSV (path, label, prediction, score, top5 joined by ``|``: one row per video), the
    per-class CSV (class, accuracy in percent or empty without videos, videos) and, up to 50 classes, the confusion
    PNG (true class rows, predicted columns). Returns what the metrics JSON adds: ``top_confusions`` (true,
    predicted, count; the 20 largest off-diagonal cells) past 50 classes, else nothing."""
    labels, predictions = classified.labels, classified.predictions
    confusion = confusion_matrix(labels, predictions, len(classes))
    table = {"path": classified.paths, "label": [classes[i] for i in labels.tolist()],
             "prediction": [classes[i] for i in predictions.tolist()], "score": classified.scores.tolist(),
             "top5": ["|".join(classes[i] for i in row) for row in classified.top5]}
    atomic_write_table(pa.table(table), paths.predictions)
    per_class = {"class": classes, "accuracy": per_class_accuracy(predictions, labels, len(classes)),
                 "videos": [int((labels == c).sum()) for c in range(len(classes))]}
    atomic_write_table(pa.table(per_class), paths.per_class)
    if len(classes) <= CONFUSION_PLOT_CLASSES:
        plot_confusion(paths.confusion, confusion, classes)
        return {}
    return {"top_confusions": top_confusions(confusion, classes)}


def confusion_matrix(labels: Tensor, predictions: Tensor, num_classes: int) -> Tensor:
    """(classes, classes) counts: row = true class, column = predicted class."""
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    confusion.index_put_((labels, predictions), torch.ones_like(labels), accumulate=True)
    return confusion


def top_confusions(confusion: Tensor, classes: list[str], count: int = TOP_CONFUSIONS) -> list[dict[str, Any]]:
    """The ``count`` largest off-diagonal cells of ``confusion`` (none that are zero), largest first."""
    off = confusion.clone().fill_diagonal_(0).flatten()
    top = off.topk(min(count, off.numel())).indices
    return [{"true": classes[i // len(classes)], "predicted": classes[i % len(classes)], "count": int(off[i])}
            for i in top.tolist() if off[i] > 0]


def plot_confusion(path: Path, confusion: Tensor, classes: list[str]) -> None:
    """The confusion matrix as a PNG, marked as ours (its Software text)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2 + 0.3 * len(classes), 2 + 0.3 * len(classes)))
    ax.imshow(confusion.numpy(), cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": PNG_SOFTWARE})
    plt.close(fig)


def check_classification_outputs(paths: ClassificationPaths, inputs: Iterable[Path], num_classes: int,
                                 key: str) -> None:
    """Refuse (before any work) tables or a plot that would overwrite an input or an existing file we did not write
    (our header, our PNG mark); ``key`` is the option that named them."""
    inputs = list(inputs)
    check_output_file(paths.predictions, inputs, first_line(paths.predictions) == PREDICTIONS_HEADER,
                      f"{key} (its predictions CSV)")
    check_output_file(paths.per_class, inputs, first_line(paths.per_class) == PER_CLASS_HEADER,
                      f"{key} (its per-class CSV)")
    if num_classes <= CONFUSION_PLOT_CLASSES:
        check_output_file(paths.confusion, inputs, is_our_png(paths.confusion), f"{key} (its confusion plot)")


def is_our_png(path: Path) -> bool:
    """True for a PNG :func:`plot_confusion` wrote (its tEXt chunk says Software: coca-video)."""
    try:
        with path.open("rb") as handle:
            return b"tEXtSoftware\x00" + PNG_SOFTWARE.encode() in handle.read(1 << 16)
    except OSError:
        return False
