"""What the tasks show people: self-contained HTML reports (score, retrieval; thumbnails inline, no external
assets, so a file can be mailed or opened anywhere) and the probe's metrics, tables and plots."""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from PIL import Image

from .io import atomic_write_table, atomic_write_text

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; width: 100%; }
td, th { border-bottom: 1px solid #ddd; padding: 6px 8px; text-align: left; vertical-align: top; }
img.thumb { height: 72px; margin-right: 2px; }
.score { color: #666; font-size: 90%; }
.error { color: #b00; }
tr.video th { background: #f4f4f4; }
.warning { color: #b00; font-weight: bold; }
"""


def thumbnail_strip(path: str, count: int = 6, height: int = 72, start: float | None = None,
                    end: float | None = None) -> str:
    """``count`` evenly spaced frames of a video, or of its [start, end) window in seconds, as inline <img> tags
    ('' when the video cannot be read). Decoded in the guarded helper process with a time limit (a 30 s base
    budget, growing with the video as the reader's ``timeout`` does), so one hanging file cannot stall the report."""
    from .video import VideoReader, window_indices

    try:
        reader = VideoReader(path, short_side=height, timeout=30.0)
        indices = window_indices(reader.fps, reader.num_frames, count, start, end)
        frames = reader.get_frames(np.unique(indices))  # a window shorter than count frames: each frame once
    except Exception:  # noqa: BLE001 -- a report shows what it can; the failure is listed elsewhere
        return ""
    return "".join(f'<img class="thumb" src="{jpeg_data_uri(frame)}">' for frame in frames)


def jpeg_data_uri(frame: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


REPORT_MARKER = "<!-- coca-video report -->"  # in every page we write: a later run may replace the file


def is_our_report(path: str | Path) -> bool:
    """True for an existing HTML file that a coca-video report wrote (it carries ``REPORT_MARKER`` near the top)."""
    try:
        with open(path, "rb") as handle:
            return REPORT_MARKER.encode() in handle.read(4096)
    except OSError:
        return False


def write_html(path: str | Path, title: str, sections: Iterable[str]) -> Path:
    """Write a report page atomically."""
    body = "\n".join(sections)
    page = (f"<!doctype html>{REPORT_MARKER}<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n")
    return atomic_write_text(path, page)


def write_score_report(scores: pd.DataFrame, path: str | Path, cfg: Any, warnings: Sequence[str] = ()) -> Path:
    """The ``score`` report: ``warnings`` (the run's, shown first), then per video thumbnails, top labels with
    probabilities, caption; then the failures. A segmented run (columns segment_start/segment_end) shows one group
    per video, a header row with its path and duration, then one row per segment with its time range and thumbnails
    from inside its window."""
    ok, failed = scores[scores.status == "ok"], scores[scores.status != "ok"]
    label_columns = sorted((c for c in scores.columns if c.endswith("_label")), key=lambda c: int(c[3:-6]))
    records = [record._asdict() for record in ok.itertuples(index=False)]
    segmented = "segment_start" in scores.columns
    rows = segment_groups(records, label_columns) if segmented else \
        [video_row(record, label_columns) for record in records]
    first_column = "segment" if segmented else "video"
    table = (f"<table><tr><th>{first_column}</th><th>frames</th><th>top labels</th><th>caption</th></tr>"
             + "".join(rows) + "</table>")
    failures = "".join(f"<li><b>{html.escape(str(r.path))}</b>{failure_window(r._asdict())}: <span class='error'>"
                       f"{html.escape(str(r.error))}</span></li>" for r in failed.itertuples(index=False))
    unit = "segment" if segmented else "video"
    summary = (f"<p>{len(ok)} {unit}s scored, {len(failed)} failed. Model: {html.escape(str(cfg.model.name))}; "
               f"{cfg.decode.num_frames} frames per {unit}.</p>")
    notes = "".join(f"<p class='warning'>Warning: {html.escape(w)}</p>" for w in warnings)
    sections = [notes, summary, table, f"<h2>Failures ({len(failed)})</h2><ul>{failures}</ul>" if len(failed) else ""]
    return write_html(path, "coca-video score report", sections)


def video_row(record: dict[str, Any], label_columns: list[str]) -> str:
    """A whole-video run's row: path and duration, thumbnails, labels, caption."""
    return (f"<tr><td>{html.escape(str(record['path']))}<br><span class='score'>{record['duration'] or 0:.1f} s"
            f"</span></td><td>{thumbnail_strip(record['path'])}</td>{result_cells(record, label_columns)}</tr>")


def segment_groups(records: list[dict[str, Any]], label_columns: list[str]) -> list[str]:
    """Per video (in order of first appearance): a header row with its path and duration, then its segments in
    time order, each with its time range and thumbnails from inside its window."""
    from .video import clock

    by_video: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_video.setdefault(str(record["path"]), []).append(record)
    rows = []
    for video, segments in by_video.items():
        rows.append(f"<tr class='video'><th colspan=4>{html.escape(video)} <span class='score'>"
                    f"{segments[0]['duration'] or 0:.1f} s, {len(segments)} segments</span></th></tr>")
        for record in sorted(segments, key=lambda r: r["segment_start"]):
            start, end = record["segment_start"], record["segment_end"]
            rows.append(f"<tr class='segment'><td>{clock(start)}&ndash;{clock(end)}</td>"
                        f"<td>{thumbnail_strip(video, start=start, end=end)}</td>"
                        f"{result_cells(record, label_columns)}</tr>")
    return rows


def result_cells(record: dict[str, Any], label_columns: list[str]) -> str:
    """The top labels (with probabilities) and caption cells of one row."""
    labels = "<br>".join(f"{html.escape(str(record[c]))} <span class='score'>{record[c[:-6] + '_score']:.2f}"
                         "</span>" for c in label_columns)
    return f"<td>{labels}</td><td>{html.escape(str(record.get('caption') or ''))}</td>"


def failure_window(record: dict[str, Any]) -> str:
    """' 00:10-00:20' for a failed segment, '' for a whole video."""
    from .video import clock

    start = record.get("segment_start")
    return "" if start is None or pd.isna(start) else f" {clock(start)}-{clock(record['segment_end'])}"


def recall_curve_uri(ranks: np.ndarray, max_k: int = 50) -> str:
    """R@K for K = 1..max_k as an inline PNG line plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = np.arange(1, max_k + 1)
    recall = [(ranks < k).mean() * 100 for k in ks]
    figure, axis = plt.subplots(figsize=(5, 3.2), dpi=100)
    axis.plot(ks, recall)
    axis.set(xlabel="K", ylabel="text-to-video R@K (%)", ylim=(0, 100), xscale="log")
    axis.grid(alpha=0.3)
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def write_retrieval_report(path: str | Path, dataset: Any, ranks: np.ndarray, text: Any, video: Any,
                           num_queries: int) -> Path:
    """The retrieval report: the R@K curve, then for the first ``num_queries`` captions the top-5 videos (one
    middle-frame thumbnail each, the correct one marked) beside the ground-truth video."""
    rows = []
    for query in range(min(num_queries, len(dataset.captions))):
        truth = dataset.videos[dataset.caption_video[query]]
        top5 = (text[query] @ video.T).topk(min(5, len(dataset.videos))).indices.tolist()
        cells = "".join(f"<td>{thumbnail_strip(dataset.videos[i], count=1)}<br>"
                        f"{'&#10003; ' if dataset.videos[i] == truth else ''}"
                        f"{html.escape(Path(dataset.videos[i]).name)}</td>" for i in top5)
        rows.append(f"<tr><td>{html.escape(dataset.captions[query])}<br><span class='score'>rank "
                    f"{ranks[query] + 1}</span></td><td>{thumbnail_strip(truth, count=1)}</td>{cells}</tr>")
    sections = [f"<img src='{recall_curve_uri(ranks)}'>",
                "<table><tr><th>query</th><th>ground truth</th><th colspan=5>top-5 videos</th></tr>"
                + "".join(rows) + "</table>"]
    return write_html(path, f"coca-video retrieval report: {dataset.split}", sections)


# -- the probe ---------------------------------------------------------------------------------------------------------
@dataclass
class ProbeResult:
    """A probe's multi-view evaluation: accuracies (percent) and what they were computed from."""

    top1: float
    top5: float
    mean_class_accuracy: float
    per_class: list[float | None]  # percent per class index (None: no validation video)
    probs: torch.Tensor  # (videos, classes) view-averaged softmax
    labels: torch.Tensor  # (videos,)
    paths: list[str]  # evaluated videos, in row order
    failed: list[tuple[str, str]]  # (path, reason) of videos that could not be decoded


def write_probe_outputs(output: Path, result: ProbeResult, classes: list[str], history: list[dict[str, float]],
                        proto: dict[str, Any]) -> None:
    """The probe's outputs: metrics.json, predictions.csv, per_class.csv, confusion.png (or top confusions in
    metrics.json past 50 classes), curves.png."""
    probs, labels = result.probs, result.labels
    predictions = probs.argmax(-1) if len(probs) else torch.empty(0, dtype=torch.long)
    confusion = torch.zeros(len(classes), len(classes), dtype=torch.long)
    confusion.index_put_((labels, predictions), torch.ones_like(labels), accumulate=True)
    metrics = {"top1": result.top1, "top5": result.top5, "mean_class_accuracy": result.mean_class_accuracy,
               "protocol": proto}
    if len(classes) > 50:
        off = confusion.clone().fill_diagonal_(0)
        top = off.flatten().topk(min(20, off.numel())).indices
        metrics["top_confusions"] = [{"true": classes[i // len(classes)], "predicted": classes[i % len(classes)],
                                      "count": int(off.flatten()[i])} for i in top.tolist() if off.flatten()[i] > 0]
    atomic_write_text(output / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    top5 = probs.topk(min(5, len(classes)), dim=-1).indices.tolist() if len(probs) else []
    predictions_table = {"path": result.paths, "label": [classes[i] for i in labels.tolist()],
                         "prediction": [classes[i] for i in predictions.tolist()],
                         "top5": ["|".join(classes[i] for i in row) for row in top5]}
    atomic_write_table(pa.table(predictions_table), output / "predictions.csv")
    per_class = {"class": classes, "accuracy": result.per_class,
                 "videos": [int((labels == c).sum()) for c in range(len(classes))]}
    atomic_write_table(pa.table(per_class), output / "per_class.csv")
    plot_probe_curves(output, confusion, classes, history)
    print(f"top-1 {result.top1:.1f}  top-5 {result.top5:.1f}  mean class {result.mean_class_accuracy:.1f}  "
          f"({proto['val_videos_evaluated']} videos evaluated) -> {output / 'metrics.json'}")


def plot_probe_curves(output: Path, confusion: torch.Tensor, classes: list[str],
                      history: list[dict[str, float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if len(classes) <= 50:
        fig, ax = plt.subplots(figsize=(2 + 0.3 * len(classes), 2 + 0.3 * len(classes)))
        ax.imshow(confusion.numpy(), cmap="Blues")
        ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        fig.tight_layout()
        fig.savefig(output / "confusion.png", dpi=100)
        plt.close(fig)
    if history:
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.plot([h["epoch"] for h in history], [h["train_loss"] for h in history], marker="o")
        ax.set_xlabel("epoch")
        ax.set_ylabel("training loss")
        fig.tight_layout()
        fig.savefig(output / "curves.png", dpi=100)
        plt.close(fig)

