"""The page every report is: one self-contained HTML file (styles and JPEG thumbnails inline, no external
assets, so it can be mailed or opened anywhere), written atomically with a marker that lets a later run
replace it, and links to the videos it shows."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Iterable

import numpy as np

from ..io import atomic_write_text
from ..video.thumbnails import THUMBNAIL_BOX, thumbnail_jpeg, window_frames

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

THUMBNAILS_PER_ROW = 6  # at most, when the page's budget allows
# Each page's rows share this many thumbnails, so a page holds at most 400 x 8 KB (6,000 bytes in base64) = 3.2 MB
# of images whatever its row count; the rest of a page is text, about 1 KB per row.
THUMBNAILS_PER_PAGE = 400


def thumbnail_strip(path: str, count: int = THUMBNAILS_PER_ROW, height: int = THUMBNAIL_BOX[1],
                    start: float | None = None, end: float | None = None) -> str:
    """``count`` evenly spaced frames of a video, or of its [start, end) window in seconds, as inline <img> tags
    ('' when the video cannot be read or count is 0), decoded within a time limit
    (:func:`~coca_video.video.thumbnails.window_frames`), so one hanging file cannot stall the report."""
    if count < 1:
        return ""
    try:
        frames = window_frames(path, count, height, start, end)
    except Exception:  # noqa: BLE001 -- a report shows what it can; the failure is listed elsewhere
        return ""
    return thumbnail_tags(frames)


def thumbnail_tags(frames: Iterable[np.ndarray]) -> str:
    """Inline <img class="thumb"> tags of ``frames`` as small letterboxed JPEGs (any that cannot be made small enough
    left out)."""
    jpegs = (thumbnail_jpeg(frame) for frame in frames)
    return "".join(f'<img class="thumb" src="data:image/jpeg;base64,{base64.b64encode(jpeg).decode()}">'
                   for jpeg in jpegs if jpeg is not None)


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


def file_uri(path: str, window: tuple[float, float] | None = None) -> str:
    """A file:// URL of ``path`` (percent-encoded; an ``s3://`` URL stays itself), with a ``#t=start,end`` media
    fragment for a segment's window."""
    from ..storage import is_url

    uri = path if is_url(path) else Path(path).absolute().as_uri()
    return f"{uri}#t={window[0]:g},{window[1]:g}" if window else uri


def file_link(path: str) -> str:
    """``path`` as a link to the file (the URL and the text escaped)."""
    return f"<a href='{html.escape(file_uri(path))}'>{html.escape(path)}</a>"
