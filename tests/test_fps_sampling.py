"""sampling=fps: one frame per 1/fps seconds, each its own row keyed by its interval (per-second embeddings, as
clip-video-encode users keep them), decoded in chunks of num_frames, capped by max_frames, resumable per chunk."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from coca_video import create_model, encode_video_frames, image_transform
from coca_video.config import load_config
from coca_video.errors import ConfigError
from coca_video.tasks import retrieval, score
from coca_video.video import VideoReader, fps_indices, fps_rate, fps_windows, write_video

FPS, SECONDS = 4, 10


def test_fps_windows_and_indices_hand_worked():
    assert fps_windows(0, 2.5, 1) == [(0, 1), (1, 2), (2, 2.5)]  # the last interval ends at the window's end
    assert fps_windows(8, 10, 2) == [(8, 8.5), (8.5, 9), (9, 9.5), (9.5, 10)]
    assert fps_windows(0, 10, 1, limit=4) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert fps_windows(3, 3, 1) == [(3, 3)]  # never empty
    # centres 0.5, 1.5, 2.25 s at 30 fps -> frames 15, 45, 67 (frame i is shown from i/30 s)
    assert fps_indices(30, 75, [(0, 1), (1, 2), (2, 2.5)]).tolist() == [15, 45, 67]
    assert fps_indices(30, 60, [(1.9, 2.1)]).tolist() == [59]  # clamped to the last frame
    assert fps_rate(3600, 1.0, 600) == pytest.approx(1 / 6)  # an hour at 1 fps capped at 600: one frame per 6 s
    assert fps_rate(60, 1.0, 600) == 1.0 and fps_rate(60, 2.0) == 2.0


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """10 s at 4 fps, every frame different (so a wrong frame index shows in the embedding)."""
    folder = tmp_path_factory.mktemp("fps")
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(SECONDS * FPS, 8, 8, 3), dtype=np.uint8).repeat(8, axis=1).repeat(8, axis=2)
    write_video(folder / "clip.mp4", frames, fps=FPS)
    return folder


def run(folder, out, *extra):
    return score.run(load_config(score.ScoreConfig, None, [
        f"videos={folder}", f"out={out}", "decode.sampling=fps", "decode.num_frames=4", "decode.workers=0", *extra]))


def expected_embeddings(path, indices) -> np.ndarray:
    """Each frame at ``indices`` encoded on its own, independently of score's pipeline."""
    model = create_model("default")
    frames = VideoReader(path, short_side=64).get_frames(np.asarray(indices))
    with torch.no_grad():
        embeddings = model.encode_image(image_transform(model).frames(frames))
    return torch.nn.functional.normalize(embeddings, dim=-1).numpy()


@pytest.mark.slow
def test_a_row_per_second_with_that_seconds_frame_and_resume(video, tmp_path):
    out = tmp_path / "s.parquet"
    summary = run(video, out, "decode.fps=1")
    table = pd.read_parquet(out)
    assert summary["scored_now"] == SECONDS and (table.status == "ok").all()
    assert list(table.segment_start) == list(range(SECONDS)) and list(table.segment_end) == list(range(1, 11))
    sidecar = pq.read_table(score.embeddings_path(out)).to_pandas().sort_values("segment_start")
    # second k's row holds the frame shown at k + 0.5 s: index 4k + 2 (chunks of 4 frames: 4 + 4 + 2 rows)
    expected = expected_embeddings(video / "clip.mp4", [FPS * k + 2 for k in range(SECONDS)])
    np.testing.assert_allclose(np.stack(sidecar.video_embedding), expected, atol=1e-5)
    assert run(video, out, "decode.fps=1")["scored_now"] == 0  # every chunk resumes
    # the Python API gives the same rows: same intervals, same embeddings (decoded in chunks of 3 here)
    windows, embeddings = encode_video_frames(create_model("default"), video / "clip.mp4", fps=1, chunk=3)
    assert windows == list(zip(table.segment_start, table.segment_end))
    np.testing.assert_allclose(embeddings.numpy(), expected, atol=1e-5)


def test_max_frames_spreads_the_frames_over_the_whole_video(video, tmp_path):
    out = tmp_path / "s.parquet"
    run(video, out, "decode.fps=2", "decode.max_frames=5")  # 20 frames asked, 5 allowed: one per 2 s
    table = pd.read_parquet(out).sort_values("segment_start")
    assert list(zip(table.segment_start, table.segment_end)) == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10)]
    sidecar = pq.read_table(score.embeddings_path(out)).to_pandas().sort_values("segment_start")
    expected = expected_embeddings(video / "clip.mp4", [FPS * (2 * k + 1) for k in range(5)])  # centres 1, 3, ... s
    np.testing.assert_allclose(np.stack(sidecar.video_embedding), expected, atol=1e-5)


def test_fps_where_it_cannot_apply_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="segment_seconds must be 0 with decode.sampling=fps"):
        load_config(score.ScoreConfig, None, ["videos=x", "decode.sampling=fps", "segment_seconds=10"])
    with pytest.raises(ConfigError, match="decode.sampling must be eval or linspace for retrieval"):
        load_config(retrieval.RetrievalConfig, None, ["decode.sampling=fps"])
    with pytest.raises(ConfigError, match="fps must be > 0"):
        load_config(score.ScoreConfig, None, ["decode.sampling=fps", "decode.fps=0"])
