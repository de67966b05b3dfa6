"""What the tasks show people: self-contained HTML reports (score, retrieval; thumbnails inline, no external
assets, so a file can be mailed or opened anywhere) and the probe's metrics, tables and plots."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence
from urllib.parse import quote

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
th[data-key] { cursor: pointer; text-decoration: underline dotted; }
img.thumb { height: 72px; margin-right: 2px; }
.score { color: #666; font-size: 90%; }
.error { color: #b00; }
tr.video th { background: #f4f4f4; }
.warning { color: #b00; font-weight: bold; }
nav a, nav b { margin-right: 0.5em; }
"""

# Click a column header with data-key to sort the table's video groups (one <tbody> each, so a segmented video's
# rows move together) by that key; a second click reverses the order. Inline: the page needs no external assets.
SORT_SCRIPT = """<script>
for (const th of document.querySelectorAll('th[data-key]')) th.addEventListener('click', () => {
  const table = th.closest('table'), key = th.dataset.key, numeric = 'numeric' in th.dataset;
  const order = th.dataset.order === 'ascending' ? -1 : 1;
  th.dataset.order = order > 0 ? 'ascending' : 'descending';
  const value = group => numeric ? parseFloat(group.dataset[key]) : group.dataset[key];
  const groups = [...table.tBodies].sort((a, b) => order * (numeric ? value(a) - value(b)
                                                                    : value(a).localeCompare(value(b))));
  for (const group of groups) table.appendChild(group);
});
</script>"""

THUMBNAIL_BOX = (128, 72)  # a thumbnail is shrunk to fit this (width, height) in pixels
THUMBNAIL_MAX_BYTES = 6_000  # its JPEG is re-encoded at a lower quality above this, and left out if still above
THUMBNAIL_QUALITIES = (75, 50, 30)  # JPEG qualities tried in turn
THUMBNAILS_PER_ROW = 6  # at most, when the page's budget allows
# Each page's rows share this many thumbnails, so a page holds at most 400 x 8 KB (6,000 bytes in base64) = 3.2 MB
# of images whatever its row count; the rest of a page is text, about 1 KB per row.
THUMBNAILS_PER_PAGE = 400


def thumbnail_strip(path: str, count: int = THUMBNAILS_PER_ROW, height: int = 72, start: float | None = None,
                    end: float | None = None) -> str:
    """``count`` evenly spaced frames of a video, or of its [start, end) window in seconds, as inline <img> tags
    ('' when the video cannot be read or count is 0). Decoded in the guarded helper process with a time limit (a
    30 s base budget, growing with the video as the reader's ``timeout`` does), so one hanging file cannot stall
    the report."""
    from .video import VideoReader, window_indices

    if count < 1:
        return ""
    try:
        reader = VideoReader(path, short_side=height, timeout=30.0)
        indices = window_indices(reader.fps, reader.num_frames, count, start, end)
        frames = reader.get_frames(np.unique(indices))  # a window shorter than count frames: each frame once
    except Exception:  # noqa: BLE001 -- a report shows what it can; the failure is listed elsewhere
        return ""
    return thumbnail_tags(frames)


def thumbnail_tags(frames: Iterable[np.ndarray]) -> str:
    """Inline <img class="thumb"> tags of ``frames`` as small JPEGs (those that cannot be made small enough left out)."""
    jpegs = (thumbnail_jpeg(frame) for frame in frames)
    return "".join(f'<img class="thumb" src="data:image/jpeg;base64,{base64.b64encode(jpeg).decode()}">'
                   for jpeg in jpegs if jpeg is not None)


def thumbnail_jpeg(frame: np.ndarray) -> bytes | None:
    """``frame`` shrunk to fit ``THUMBNAIL_BOX`` as a JPEG of at most ``THUMBNAIL_MAX_BYTES`` (the first of
    ``THUMBNAIL_QUALITIES`` that fits), or None when even the lowest quality is too big (e.g. pure noise)."""
    image = Image.fromarray(frame)
    image.thumbnail(THUMBNAIL_BOX)
    for quality in THUMBNAIL_QUALITIES:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        if buffer.tell() <= THUMBNAIL_MAX_BYTES:
            return buffer.getvalue()
    return None


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


# -- the score report ----------------------------------------------------------------------------------------------
ThumbnailStrip = Callable[..., str]  # thumbnail_strip's signature: (path, count, start=, end=) -> <img> tags


@dataclass
class VideoGroup:
    """One video's rows of a score table: a single row for a whole-video run, its segments (time order) else."""

    path: str
    records: list[dict[str, Any]]

    @property
    def failed(self) -> bool:
        return any(r["status"] != "ok" for r in self.records)

    def sort_keys(self) -> dict[str, str]:
        """The values the page's sort script orders groups by: path, top-1 label and score of the best row (score -1
        without an ok row), duration."""
        ok = [r for r in self.records if r["status"] == "ok"]
        best = max(ok, key=lambda r: r.get("top1_score") or 0.0, default=None)
        label = str(best.get("top1_label") or "") if best else ""
        score = float(best.get("top1_score") or 0.0) if best else -1.0
        return {"path": self.path, "label": label, "score": f"{score:.4f}", "duration": f"{duration(self.records[0]):.2f}"}


def video_groups(scores: pd.DataFrame) -> list[VideoGroup]:
    """The table's rows grouped by video (in order of first appearance), groups with a failure first."""
    by_path: dict[str, list[dict[str, Any]]] = {}
    for record in scores.to_dict("records"):
        by_path.setdefault(str(record["path"]), []).append(record)
    groups = [VideoGroup(path, sorted(records, key=lambda r: (segment_window(r) or (0.0, 0.0))[0]))
              for path, records in by_path.items()]
    return sorted(groups, key=lambda group: not group.failed)


def report_page_paths(path: str | Path, pages: int) -> list[Path]:
    """The files of a report with ``pages`` pages: ``path`` itself (the index, page 1), then ``<stem>-002.html``, ...
    beside it."""
    path = Path(path)
    return [path] + [path.with_name(f"{path.stem}-{n:03d}{path.suffix}") for n in range(2, pages + 1)]


def page_count(videos: int, page_size: int) -> int:
    """Pages of ``page_size`` videos needed for ``videos`` (at least one)."""
    return max(1, math.ceil(videos / page_size))


def write_score_report(scores: pd.DataFrame, path: str | Path, cfg: Any, warnings: Sequence[str] = (),
                       page_size: int = 200, strip: ThumbnailStrip = thumbnail_strip) -> Path:
    """The ``score`` report: pages of ``page_size`` videos, videos with a failure first. ``path`` is page 1, which
    also carries ``warnings`` (the run's) and the totals; every page links all pages and the video files, shows per
    video thumbnails (``strip`` makes them; the page's rows share ``THUMBNAILS_PER_PAGE``), top labels with
    probabilities, caption, and sorts by a clicked column header. A segmented run (columns segment_start/segment_end)
    shows one group per video, a header row with its path and duration, then one row per segment with its time
    range and thumbnails from inside its window. Returns ``path``."""
    groups = video_groups(scores)
    paths = report_page_paths(path, page_count(len(groups), page_size))
    segmented = "segment_start" in scores.columns
    label_columns = sorted((c for c in scores.columns if c.endswith("_label")), key=lambda c: int(c[3:-6]))
    header = [*(f"<p class='warning'>Warning: {html.escape(w)}</p>" for w in warnings),
              score_summary(scores, cfg, segmented)]
    for number, page_path in enumerate(paths, start=1):
        page_groups = groups[(number - 1) * page_size:number * page_size]
        first = (number - 1) * page_size + 1
        sections = [*(header if number == 1 else []), page_navigation(paths, number),
                    f"<p>Videos {first}&ndash;{first + len(page_groups) - 1} of {len(groups)}.</p>" if page_groups else "",
                    score_table(page_groups, label_columns, segmented, strip), SORT_SCRIPT]
        write_html(page_path, "coca-video score report" + (f" (page {number})" if number > 1 else ""), sections)
    return Path(path)


def score_summary(scores: pd.DataFrame, cfg: Any, segmented: bool) -> str:
    """'N videos scored, M failed. Model: ...; F frames per video.' (segments for a segmented run)."""
    ok = int((scores.status == "ok").sum())
    unit = "segment" if segmented else "video"
    frames = f"frames {cfg.decode.frames_rule()}" if cfg.decode.sampling == "fps" else \
        f"{cfg.decode.num_frames} frames per {unit}"
    return (f"<p>{ok} {unit}s scored, {len(scores) - ok} failed. Model: {html.escape(str(cfg.model.name))}; "
            f"{frames}.</p>")


def page_navigation(paths: list[Path], current: int) -> str:
    """Links to every page of the report by number (the current one in bold); '' for a one-page report."""
    if len(paths) == 1:
        return ""
    links = (f"<b>{n}</b>" if n == current else f"<a href='{html.escape(quote(p.name))}'>{n}</a>"
             for n, p in enumerate(paths, start=1))
    return "<nav>Pages: " + " ".join(links) + "</nav>"


def score_table(groups: list[VideoGroup], label_columns: list[str], segmented: bool, strip: ThumbnailStrip) -> str:
    """The table of one page: a sortable header, then one <tbody> per video group (its sort keys as data-*)."""
    ok_rows = sum(r["status"] == "ok" for group in groups for r in group.records)
    counts = iter(thumbnail_counts(ok_rows))
    first_column = "segment" if segmented else "video"
    head = (f"<thead><tr><th data-key='path'>{first_column}</th><th>frames</th><th data-key='label'>top labels</th>"
            "<th data-key='score' data-numeric>top-1 score</th><th data-key='duration' data-numeric>duration</th>"
            "<th>caption</th></tr></thead>")
    bodies = []
    for group in groups:
        data = " ".join(f"data-{key}='{html.escape(value)}'" for key, value in group.sort_keys().items())
        rows = [group_header(group)] if segmented else []
        rows += [record_row(group.path, record, label_columns, segmented, strip, counts) for record in group.records]
        bodies.append(f"<tbody {data}>{''.join(rows)}</tbody>")
    return f"<table>{head}{''.join(bodies)}</table>"


def thumbnail_counts(rows: int, budget: int = THUMBNAILS_PER_PAGE, per_row: int = THUMBNAILS_PER_ROW) -> list[int]:
    """Thumbnails for each of ``rows`` ok rows of a page within ``budget``: an equal share (at most ``per_row``),
    or when there are more rows than thumbnails, one each for the first ``budget`` rows and none after."""
    share = min(per_row, budget // rows) if rows else 0
    return [share] * rows if share else [1 if i < budget else 0 for i in range(rows)]


def group_header(group: VideoGroup) -> str:
    """A segmented video's header row: its path (a link to the file), duration and segment count."""
    return (f"<tr class='video'><th colspan=6>{file_link(group.path)} <span class='score'>"
            f"{duration(group.records[0]):.1f} s, {len(group.records)} segments</span></th></tr>")


def record_row(path: str, record: dict[str, Any], label_columns: list[str], segmented: bool, strip: ThumbnailStrip,
               counts: Iterator[int]) -> str:
    """One row: the video (a whole-video run) or the segment's time range, thumbnails (ok rows only, ``counts``
    gives how many), labels, top-1 score, duration and caption, or the error of a failed row."""
    from .video import clock

    window = segment_window(record)
    if window:
        first = f"<a href='{html.escape(file_uri(path, window))}'>{clock(window[0])}&ndash;{clock(window[1])}</a>"
        length = window[1] - window[0]
    else:
        first = f"{file_link(path)}<br><span class='score'>{duration(record):.1f} s</span>"
        length = duration(record)
    kind = "segment" if segmented else ""
    if record["status"] != "ok":
        return (f"<tr class='{kind} failed'><td>{first}</td><td></td><td colspan=4 class='error'>"
                f"{html.escape(str(record.get('error') or 'failed'))}</td></tr>")
    start, end = window or (None, None)
    thumbnails = strip(path, next(counts), start=start, end=end)
    return (f"<tr class='{kind}'><td>{first}</td><td>{thumbnails}</td>{label_cell(record, label_columns)}"
            f"<td>{record.get('top1_score') or 0:.2f}</td><td>{length:.1f} s</td>"
            f"<td>{html.escape(str(record.get('caption') or ''))}</td></tr>")


def segment_window(record: dict[str, Any]) -> tuple[float, float] | None:
    """A segment row's (start, end) in seconds; None for a whole-video row (or a file that failed before
    segmenting)."""
    start = record.get("segment_start")
    return None if start is None or pd.isna(start) else (float(start), float(record["segment_end"]))


def label_cell(record: dict[str, Any], label_columns: list[str]) -> str:
    """The top labels (with probabilities) cell of one row."""
    labels = "<br>".join(f"{html.escape(str(record[c]))} <span class='score'>{record[c[:-6] + '_score']:.2f}"
                         "</span>" for c in label_columns)
    return f"<td>{labels}</td>"


def duration(record: dict[str, Any]) -> float:
    """A row's video duration in seconds (0 when unknown)."""
    value = record.get("duration")
    return 0.0 if value is None or pd.isna(value) else float(value)


def file_uri(path: str, window: tuple[float, float] | None = None) -> str:
    """A file:// URL of ``path`` (percent-encoded), with a ``#t=start,end`` media fragment for a segment's window."""
    uri = Path(path).absolute().as_uri()
    return f"{uri}#t={window[0]:g},{window[1]:g}" if window else uri


def file_link(path: str) -> str:
    """``path`` as a link to the file (the URL and the text escaped)."""
    return f"<a href='{html.escape(file_uri(path))}'>{html.escape(path)}</a>"


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

