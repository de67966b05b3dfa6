"""The score report at scale: pages of N videos behind an index, failures first, each video once, bounded page
size (small JPEG thumbnails under a per-page budget), file links, a sort script, and the output guard's view of
the pages. No decoding: thumbnails come from a stand-in strip that encodes synthetic frames."""

from __future__ import annotations

import base64
import functools
import io
import math
import re
import subprocess
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from probes import CHROMIUM, CHROMIUM_FLAGS

from coca_video.config import DecodeConfig
from coca_video.errors import OutputError
from coca_video.report import REPORT_MARKER, write_score_report
from coca_video.report.page import THUMBNAILS_PER_PAGE, thumbnail_tags
from coca_video.tasks.score import ScoreConfig, check_outputs
from coca_video.tasks.score_shards import ScoreInputs
from coca_video.video import thumbnails
from coca_video.video.thumbnails import THUMBNAIL_BOX, THUMBNAIL_MAX_BYTES, letterbox, thumbnail_jpeg

CFG = SimpleNamespace(model=SimpleNamespace(name="default"), decode=DecodeConfig(num_frames=4))
VIDEOS, PAGE_SIZE = 2000, 200


def scores_table(videos: int, folder: Path) -> pd.DataFrame:
    """``videos`` rows, every 53rd one failed, labels and scores varying by row."""
    rows = []
    for i in range(videos):
        failed = i % 53 == 7
        rows.append({"path": str(folder / f"v{i:05d}.mp4"), "status": "error" if failed else "ok",
                     "error": "cannot decode" if failed else "", "duration": float(i % 30),
                     "top1_label": None if failed else f"class{i % 17}",
                     "top1_score": None if failed else (i % 97) / 97, "caption": "" if failed else f"caption {i}"})
    return pd.DataFrame(rows)


def textured_frame(seed: int) -> np.ndarray:
    """A 180x320 frame: a gradient with mild noise, like a real picture, well over the thumbnail box."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 200, 320)[None, :, None] + np.linspace(0, 50, 180)[:, None, None]
    return np.clip(ramp + rng.normal(0, 8, (180, 320, 3)), 0, 255).astype(np.uint8)


@functools.lru_cache
def strip_of(count: int) -> str:
    return thumbnail_tags(textured_frame(seed) for seed in range(count))


def fake_strip(path: str, count: int, start: float | None = None, end: float | None = None) -> str:
    """Stands in for thumbnail_strip without decoding: ``count`` real small JPEG thumbnails (encoded once)."""
    return strip_of(count)


class Page(HTMLParser):
    """A report page's video groups (tbody data-path in order), image sources and links."""

    def __init__(self) -> None:
        super().__init__()
        self.groups: list[str] = []
        self.images: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tbody":
            self.groups.append(attrs["data-path"])
        elif tag == "img":
            self.images.append(attrs["src"])
        elif tag == "a":
            self.links.append(attrs["href"])


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text())
    return page


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    folder = tmp_path_factory.mktemp("report")
    scores = scores_table(VIDEOS, folder / "videos")
    index = write_score_report(scores, folder / "report.html", CFG, page_size=PAGE_SIZE, strip=fake_strip)
    return index, scores


def pages_of(index: Path) -> list[Path]:
    return [index, *sorted(index.parent.glob("report-*.html"))]


def test_2000_videos_make_ten_pages_each_video_once_failures_first(report):
    index, scores = report
    pages = pages_of(index)
    assert [p.name for p in pages] == ["report.html", *(f"report-{n:03d}.html" for n in range(2, 11))]
    assert len(pages) == math.ceil(VIDEOS / PAGE_SIZE)
    listed = [path for page in pages for path in parse(page).groups]
    assert Counter(listed) == Counter(scores.path)  # every video exactly once across the pages
    failed = list(scores.path[scores.status != "ok"])
    first = parse(index).groups
    assert first[:len(failed)] == failed  # failures open page 1, in table order
    assert all(REPORT_MARKER in page.read_text()[:200] for page in pages)
    for page in pages:  # every page links every other page by name
        links = set(parse(page).links)
        assert {p.name for p in pages if p != page} <= links


def test_pages_stay_under_their_size_bound_with_small_jpeg_thumbnails(report):
    index, _ = report
    image_bound = THUMBNAILS_PER_PAGE * (math.ceil(THUMBNAIL_MAX_BYTES / 3) * 4 + 64)
    for page in pages_of(index):
        parsed = parse(page)
        assert 0 < len(parsed.images) <= THUMBNAILS_PER_PAGE
        assert page.stat().st_size < image_bound + 1_000 * PAGE_SIZE, page.name
        for src in parsed.images[:20]:
            head, data = src.split(",", 1)
            assert head == "data:image/jpeg;base64"
            jpeg = base64.b64decode(data)
            image = Image.open(io.BytesIO(jpeg))
            assert image.format == "JPEG" and len(jpeg) <= THUMBNAIL_MAX_BYTES
            assert image.size == THUMBNAIL_BOX


def test_a_thumbnail_fits_the_box_and_byte_cap_or_is_left_out(monkeypatch):
    noise = np.random.default_rng(0).integers(0, 256, (72, 128, 3), dtype=np.uint8)  # the worst case for JPEG
    for frame in (noise, textured_frame(0)):  # 128x72 and 320x180
        jpeg = thumbnail_jpeg(frame)
        assert jpeg is not None and len(jpeg) <= THUMBNAIL_MAX_BYTES
        assert Image.open(io.BytesIO(jpeg)).size == (128, 72)  # 16:9 shrunk into the 128x72 box
    monkeypatch.setattr(thumbnails, "THUMBNAIL_MAX_BYTES", 1_000)
    assert thumbnail_jpeg(noise) is None and thumbnail_tags([noise]) == ""


def edge_frame(height: int, width: int) -> np.ndarray:
    """A grey frame with a red band along its left edge, a blue one along its right, a green one along its top and
    a yellow one along its bottom (each a fifth of the frame deep), so a crop on any side loses a colour."""
    frame = np.full((height, width, 3), 128, np.uint8)
    frame[:, : width // 5] = (255, 0, 0)
    frame[:, width - width // 5:] = (0, 0, 255)
    frame[: height // 5, width // 5: width - width // 5] = (0, 255, 0)
    frame[height - height // 5:, width // 5: width - width // 5] = (255, 255, 0)
    return frame


@pytest.mark.parametrize("height, width, content", [
    (90, 60, (slice(0, 72), slice(40, 88))),  # 2:3 portrait: scaled to 48x72, bars 40 px left and right
    (64, 64, (slice(0, 72), slice(28, 100))),  # square (the synthetic clips): 72x72, bars 28 px left and right
    (50, 200, (slice(20, 52), slice(0, 128))),  # 4:1: scaled to 128x32, bars 20 px above and below
    (180, 320, (slice(0, 72), slice(0, 128))),  # 16:9 like the box: fills it, no bars
])
def test_a_thumbnail_is_the_whole_frame_letterboxed_into_the_box(height, width, content):
    """The frame is scaled to fit the 128x72 box whole: its edges (a coloured band on each side) are all in the
    thumbnail, and the bars are black where the aspect ratios differ: worked out here from the two ratios."""
    boxed = letterbox(edge_frame(height, width)).astype(int)
    assert boxed.shape == (72, 128, 3)
    rows, columns = content
    inside = np.zeros((72, 128), bool)
    inside[rows, columns] = True
    assert (boxed[~inside] == 0).all()  # the bars
    picture = boxed[rows, columns]
    middle_row, middle_column = picture.shape[0] // 2, picture.shape[1] // 2
    near = lambda pixel, colour: np.abs(pixel - np.array(colour)).max() < 40  # noqa: E731 -- resampling blurs
    assert near(picture[middle_row, 1], (255, 0, 0)) and near(picture[middle_row, -2], (0, 0, 255))
    assert near(picture[1, middle_column], (0, 255, 0)) and near(picture[-2, middle_column], (255, 255, 0))
    decoded = np.asarray(Image.open(io.BytesIO(thumbnail_jpeg(edge_frame(height, width))))).astype(int)
    assert decoded.shape == (72, 128, 3) and np.abs(decoded - boxed).mean() < 8  # the JPEG is of that picture


def test_video_links_are_escaped_file_urls(tmp_path):
    path = str(tmp_path / "a & b" / "it's <odd> #1.mp4")
    scores = pd.DataFrame([{"path": path, "status": "ok", "error": "", "duration": 3.0, "top1_label": "x",
                            "top1_score": 0.5, "caption": ""}])
    page = write_score_report(scores, tmp_path / "r.html", CFG, strip=fake_strip)
    assert Path(path).as_uri() in parse(page).links
    assert "<odd>" not in page.read_text()  # the path text is escaped too


def test_the_guard_replaces_our_pages_and_refuses_a_foreign_one(tmp_path):
    videos = [tmp_path / f"v{i}.mp4" for i in range(3)]
    cfg = ScoreConfig(videos=str(tmp_path), out=str(tmp_path / "s.parquet"), report=str(tmp_path / "r.html"),
                      report_page_size=2)
    scores = pd.DataFrame([{"path": str(v), "status": "error", "error": "x", "duration": None} for v in videos])
    write_score_report(scores, cfg.report, CFG, page_size=2, strip=fake_strip)
    assert (tmp_path / "r-002.html").is_file() and not (tmp_path / "r-003.html").exists()
    run = ScoreInputs([], [str(v) for v in videos])  # three files: two pages
    check_outputs(cfg, run)  # both pages are ours: a rerun may replace them
    (tmp_path / "r-002.html").write_text("<html>someone else's page</html>")
    with pytest.raises(OutputError, match="r-002.html"):
        check_outputs(cfg, run)


def chromium_dom(page: Path, profile: Path) -> str:
    cmd = [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout


@pytest.mark.slow
@pytest.mark.needs("chromium")
def test_every_page_renders_and_a_header_click_sorts_in_headless_chromium(report, tmp_path):
    index, scores = report
    for page in pages_of(index):
        dom = chromium_dom(page, tmp_path / "profile")
        assert dom.count("<tbody") == PAGE_SIZE and "<table>" in dom, page.name
    clicked = tmp_path / "clicked.html"  # page 2 with two clicks on "top-1 score": descending order
    clicked.write_text(pages_of(index)[1].read_text().replace(
        "</body>", "<script>const h = document.querySelector(\"th[data-key='score']\"); h.click(); h.click();"
                   "</script></body>"))
    dom = chromium_dom(clicked, tmp_path / "profile")
    shown = [float(s) for s in re.findall(r'<tbody [^>]*data-score="([-0-9.]+)"', dom)]
    expected = sorted(scores.set_index("path").loc[parse(pages_of(index)[1]).groups].top1_score.fillna(-1),
                      reverse=True)
    assert len(shown) == PAGE_SIZE and shown == pytest.approx(expected, abs=1e-4)
