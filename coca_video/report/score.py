"""The score report: pages of video groups (a segmented video's rows together), failures first, sortable
columns, thumbnails under a per-page budget, links to the files."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence
from urllib.parse import quote

import pandas as pd

from .page import THUMBNAILS_PER_PAGE, THUMBNAILS_PER_ROW, file_link, file_uri, thumbnail_strip, write_html

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
        return {"path": self.path, "label": label, "score": f"{score:.4f}",
                "duration": f"{duration(self.records[0]):.2f}"}


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
        shown = f"<p>Videos {first}&ndash;{first + len(page_groups) - 1} of {len(groups)}.</p>" if page_groups else ""
        sections = [*(header if number == 1 else []), page_navigation(paths, number), shown,
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
    from ..video import clock

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
