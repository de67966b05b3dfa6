"""Long videos as segments: one row per window, each window's frames from inside it, resumable per segment, and
search that says where in the video the match is."""

from __future__ import annotations

import base64
import io
from html.parser import HTMLParser
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from coca_video import create_model, image_transform
from coca_video.config import DecodeConfig, load_config
from coca_video.data.synthetic import COLOURS, SyntheticVideos
from coca_video.report import write_score_report
from coca_video.search import search
from coca_video.tasks import score
from coca_video.search.rows import SearchHit
from coca_video.video import VideoReader, clock, sample_indices, segment_windows, write_video
from coca_video.video.thumbnails import letterbox

FPS, SECONDS_PER_SCENE = 4, 10


def test_segment_windows_hand_worked():
    assert segment_windows(25, 10) == [(0, 10), (10, 20), (20, 25)]  # the last window is shorter
    assert segment_windows(20, 10) == [(0, 10), (10, 20)]  # no empty tail window
    assert segment_windows(4, 10) == [(0, 4)]  # shorter than one window: one window
    assert segment_windows(25, 10, stride=5) == [(0, 10), (5, 15), (10, 20), (15, 25)]
    with pytest.raises(ValueError):
        segment_windows(10, 0)


def test_clock_shows_tenths_only_for_a_time_that_is_not_a_whole_second():
    assert [clock(t) for t in (0, 83, 3723, 600)] == ["00:00", "01:23", "1:02:03", "10:00"]  # whole seconds as before
    assert [clock(t) for t in (0.5, 83.5, 3723.3, 83.46)] == ["00:00.5", "01:23.5", "1:02:03.3", "01:23.5"]
    assert [clock(t) for t in (59.96, 3599.99, 0.04)] == ["01:00", "1:00:00", "00:00"]  # nearest tenth, carried
    assert str(SearchHit("a.mp4", 0.3, 0.0, 0.5)) == "a.mp4 00:00-00:00.5"  # a 0.5 s segment, once 00:00-00:00
    assert str(SearchHit("a.mp4", 0.3, 1.5, 2.0)) == "a.mp4 00:01.5-00:02"


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    """30 s of three 10 s scenes whose main objects have three different colours."""
    clips = SyntheticVideos(40, size=64, num_frames=8, seed=5, split="test", p_reference=0.0)
    chosen, colours = [], []
    for i in range(len(clips)):
        colour = clips.scene(i).main.colour
        if colour not in colours:
            chosen.append(i)
            colours.append(colour)
        if len(chosen) == 3:
            break
    hold = SECONDS_PER_SCENE * FPS // 8  # each rendered frame shown this many times: 8 frames -> 10 s
    frames = np.concatenate([np.repeat(clips[i][0], hold, axis=0) for i in chosen])
    folder = tmp_path_factory.mktemp("long")
    write_video(folder / "long.mp4", frames, fps=FPS)
    labels = folder / "colours.txt"
    labels.write_text("\n".join(COLOURS) + "\n")
    return folder, colours, labels


def run(folder, out, labels, *extra):
    return score.run(load_config(score.ScoreConfig, None, [
        f"videos={folder}", f"out={out}", f"labels={labels}", "segment_seconds=10", "decode.num_frames=4",
        "decode.workers=0", "top_k=1", *extra]))


@pytest.mark.slow
def test_each_segment_gets_its_row_its_frames_and_its_label(long_video, tmp_path):
    folder, colours, labels = long_video
    out = tmp_path / "s.parquet"
    summary = run(folder, out, labels)
    table = pd.read_parquet(out)
    assert summary["scored_now"] == 3 and list(table.segment_start) == [0, 10, 20]
    assert list(table.segment_end) == [10, 20, 30]
    assert list(table.top1_label) == colours  # each window sees only its own scene
    # the stored embedding of the middle segment equals the frames of 10 s..20 s encoded here, independently
    model = create_model("default")
    reader = VideoReader(folder / "long.mp4", short_side=64)
    indices = 10 * FPS + sample_indices(10 * FPS, 4)
    with torch.no_grad():
        frames = image_transform(model).frames(reader.get_frames(indices))
        expected = torch.nn.functional.normalize(model.encode_image(frames).mean(0), dim=-1)
    sidecar = pq.read_table(score.embeddings_path(out)).to_pandas()
    assert list(sidecar.segment_start) == [0, 10, 20]
    np.testing.assert_allclose(sidecar.video_embedding[1], expected.numpy(), atol=1e-5)
    assert run(folder, out, labels)["scored_now"] == 0  # resumes per segment


def test_a_partly_scored_video_is_not_counted_as_already_scored(long_video, tmp_path, monkeypatch):
    """Interrupted after its first window, the 30 s video has 1 of 3 rows: the rerun scores the other two and does not
    report the video as already scored; only a third run, with nothing left, does."""
    folder, _, labels = long_video
    out = tmp_path / "s.parquet"
    calls, score_batch = [], score.VideoScorer.__call__

    def interrupt_second_window(self, frames):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return score_batch(self, frames)

    monkeypatch.setattr(score.VideoScorer, "__call__", interrupt_second_window)
    with pytest.raises(KeyboardInterrupt):
        run(folder, out, labels, "decode.batch_size=1")
    monkeypatch.undo()
    assert len(pd.read_parquet(out)) == 1
    resumed = run(folder, out, labels, "decode.batch_size=1")
    assert (resumed["scored_now"], resumed["already_scored"]) == (2, 0)
    finished = run(folder, out, labels)
    assert (finished["scored_now"], finished["already_scored"]) == (0, 1)


@pytest.mark.slow
def test_search_names_the_time_range(long_video, tmp_path):
    folder, colours, labels = long_video
    out = tmp_path / "s.parquet"
    run(folder, out, labels)
    best = search(score.embeddings_path(out), f"a {colours[1]} shape", k=1)[0]
    assert (best.start, best.end) == (10, 20) and str(best).endswith("long.mp4 00:10-00:20")


class ReportPage(HTMLParser):
    """The score report's table as rows of (kind, cell texts, image sources): kind is the row's class."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[str, list[str], list[str]]] = []
        self.cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr":
            self.rows.append((attrs.get("class") or "", [], []))
        elif tag in ("td", "th") and self.rows:
            self.cell = []
        elif tag == "img" and self.rows:
            self.rows[-1][2].append(attrs["src"])

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            self.rows[-1][1].append("".join(self.cell).strip())
            self.cell = None


def parse_report(path) -> list[tuple[str, list[str], list[str]]]:
    page = ReportPage()
    page.feed(path.read_text())
    return page.rows


def jpeg_pixels(src: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB"), dtype=np.int64)


def test_report_groups_segments_under_their_video_with_their_own_frames(long_video, tmp_path):
    """No model: three segment rows of one 30 s video (4 fps) -> one group header, three rows with their time
    ranges, and each row's thumbnails are frames from inside its window (by hand: window [10, 20) is frames 40..79,
    six segment centres 43, 50, 56, 63, 70, 76)."""
    folder, colours, _ = long_video
    video = str(folder / "long.mp4")
    rows = [{"path": video, "segment_start": float(s), "segment_end": float(s + 10), "duration": 30.0,
             "status": "ok", "error": "", "top1_label": colour, "top1_score": 0.9, "caption": f"a {colour} scene"}
            for s, colour in zip((20, 0, 10), (colours[2], colours[0], colours[1]))]
    report = write_score_report(pd.DataFrame(rows), tmp_path / "r.html", SimpleNamespace(
        model=SimpleNamespace(name="default"), decode=DecodeConfig(num_frames=4)))
    table = [row for row in parse_report(report) if row[0]]
    assert [kind for kind, _, _ in table] == ["video", "segment", "segment", "segment"]
    assert video in table[0][1][0] and "30.0 s" in table[0][1][0]
    assert [cells[0] for _, cells, _ in table[1:]] == ["00:00\u201300:10", "00:10\u201300:20", "00:20\u201300:30"]
    assert [cells[2] for _, cells, _ in table[1:]] == [f"{c} 0.90" for c in colours]
    decoded = VideoReader(video, short_side=72).get_frames([43, 50, 56, 63, 70, 76, 3, 116])
    frames = [letterbox(frame) for frame in decoded]  # as the thumbnails show them
    middle = [jpeg_pixels(src) for src in table[2][2]]
    assert len(middle) == 6
    for thumb, frame in zip(middle, frames[:6]):
        own, elsewhere = (np.abs(thumb - f).mean() for f in (frame, frames[6]))
        assert own < 8 and own < elsewhere, (own, elsewhere)


@pytest.mark.slow
def test_segmented_score_run_reports_one_group_and_its_segment_rows(long_video, tmp_path):
    folder, colours, labels = long_video
    report = tmp_path / "report.html"
    run(folder, tmp_path / "s.parquet", labels, f"report={report}")
    table = [row for row in parse_report(report) if row[0]]
    assert [kind for kind, _, _ in table] == ["video", "segment", "segment", "segment"]
    assert str(folder / "long.mp4") in table[0][1][0]
    assert [cells[0] for _, cells, _ in table[1:]] == ["00:00\u201300:10", "00:10\u201300:20", "00:20\u201300:30"]
    assert all(len(images) == 6 for _, _, images in table[1:])
