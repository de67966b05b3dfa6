"""Long videos as segments: one row per window, each window's frames from inside it, resumable per segment, and
search that says where in the video the match is."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from coca_video import create_model, image_transform
from coca_video.config import load_config
from coca_video.data.synthetic import COLOURS, SyntheticVideos
from coca_video.tasks import score
from coca_video.video import VideoReader, sample_indices, segment_windows, write_video

FPS, SECONDS_PER_SCENE = 4, 10


def test_segment_windows_hand_worked():
    assert segment_windows(25, 10) == [(0, 10), (10, 20), (20, 25)]  # the last window is shorter
    assert segment_windows(20, 10) == [(0, 10), (10, 20)]  # no empty tail window
    assert segment_windows(4, 10) == [(0, 4)]  # shorter than one window: one window
    assert segment_windows(25, 10, stride=5) == [(0, 10), (5, 15), (10, 20), (15, 25)]
    with pytest.raises(ValueError):
        segment_windows(10, 0)


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


@pytest.mark.slow
def test_search_names_the_time_range(long_video, tmp_path):
    folder, colours, labels = long_video
    out = tmp_path / "s.parquet"
    run(folder, out, labels)
    best = score.search(score.embeddings_path(out), f"a {colours[1]} shape", k=1)[0]
    assert (best.start, best.end) == (10, 20) and str(best).endswith("long.mp4 00:10-00:20")
