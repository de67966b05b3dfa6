"""score segment_by=scenes: videos cut at their shots (PySceneDetect), a row per scene with its start and end.
Cuts at known frames are found within 2 frames, a pan with a dissolve has none, a long scene is split by
max_scene_seconds, scene rows equal the same windows scored as fixed segments, a rerun skips done scenes (and does
not cut a finished video again), and two videos sharing a shot dedup to one row of it."""

from __future__ import annotations

import re
import sys
import tarfile

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from helpers import tiny_config

import coca_video
from coca_video.cli import main
from coca_video.config import DecodeConfig, load_config
from coca_video.data import segments
from coca_video.data.results import embeddings_path
from coca_video.data.segments import SegmentRule
from coca_video.data.synthetic import gradual_video, shots_video
from coca_video.errors import ConfigError, NothingSucceeded
from coca_video.tasks import dedup, score
from coca_video.video import VideoDecodeError, write_video
from coca_video.video.scenes import SceneRule, detect_cuts, scene_windows

FPS, FRAMES = 25, 200  # 8 s clips
CUTS = [37, 88, 141]  # irregular: 1.48 s, 3.52 s, 5.64 s
EVEN_CUTS = [50, 100, 150]  # on 2 s windows


def test_scene_windows_hand_worked():
    rule = SceneRule(min_scene_seconds=1.0, max_scene_seconds=30)
    assert scene_windows(rule, 80.0, [12.4, 50.0]) == [(0, 12.4), (12.4, 42.4), (42.4, 50), (50, 80)]
    assert scene_windows(rule, 10.0, [0.5, 3.0, 3.6, 9.5]) == [(0, 3), (3, 10)]  # too close to 0, to 3, to the end
    assert scene_windows(rule, 10.0, []) == [(0, 10)]  # no cut: one scene
    assert scene_windows(SceneRule(max_scene_seconds=4), 10.0, []) == [(0, 4), (4, 8), (8, 10)]
    assert scene_windows(SceneRule(max_scene_seconds=0), 100.0, [40.0]) == [(0, 40), (40, 100)]  # 0: never split


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """An 8 s clip with cuts at ``CUTS``, one with cuts on 2 s windows, and a pan with a dissolve and no cut."""
    root = tmp_path_factory.mktemp("scenes")
    for name, frames in [("cuts", shots_video(CUTS, FRAMES, 64, seed=1)),
                         ("even", shots_video(EVEN_CUTS, FRAMES, 64, seed=2)),
                         ("pan", gradual_video(FRAMES, 64, seed=1))]:
        (root / name).mkdir()
        write_video(root / name / f"{name}.mp4", frames, fps=FPS)
    return root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    """A tiny model's folder: one set of random weights that every run of the module loads."""
    torch.manual_seed(0)
    return str(coca_video.save_pretrained(coca_video.CoCa(tiny_config()).eval(), tmp_path_factory.mktemp("tiny")))


@pytest.mark.parametrize("detector", ["adaptive", "content"])
def test_each_known_cut_is_found_within_two_frames_and_a_pan_has_none(videos, detector):
    pytest.importorskip("scenedetect")
    root = videos
    duration, cuts = detect_cuts(root / "cuts" / "cuts.mp4", SceneRule(detector))
    assert duration == pytest.approx(FRAMES / FPS)
    assert len(cuts) == len(CUTS) and all(abs(t * FPS - c) <= 2 for t, c in zip(cuts, CUTS)), cuts
    assert detect_cuts(root / "pan" / "pan.mp4", SceneRule(detector))[1] == []


def test_a_video_without_a_cut_is_one_scene_split_by_max_scene_seconds(videos):
    pytest.importorskip("scenedetect")
    root = videos
    rule = SegmentRule(scenes=SceneRule(max_scene_seconds=3))
    assert rule.windows(str(root / "pan" / "pan.mp4"), DecodeConfig()) == [(0, 3), (3, 6), (6, 8)]


def test_scene_cutting_runs_in_the_decode_helper_under_the_decode_time_limit(videos, tiny, tmp_path, monkeypatch):
    """Cut in the decode helper (where a decoder that hangs is killed) under ``decode.timeout`` plus a budget per
    frame: the windows of a cut without a limit; over its budget, the cut is one error naming the video, and
    ``score`` gives the video that error row (not one whole-video row among scene rows)."""
    pytest.importorskip("scenedetect")
    path = str(videos / "cuts" / "cuts.mp4")
    rule = SegmentRule(scenes=SceneRule())
    assert rule.windows(path, DecodeConfig(timeout=60)) == rule.windows(path, DecodeConfig(timeout=None))
    monkeypatch.setattr(segments, "cut_budget", lambda *args: 0.01)
    reason = r"cuts\.mp4: scene detection timed out after \d+ s \(budget 0 s\)"
    with pytest.raises(VideoDecodeError, match=reason):
        rule.windows(path, DecodeConfig())
    with pytest.raises(NothingSucceeded, match="1 x scene detection timed out"):  # the one video failed
        run(videos / "cuts", tmp_path / "s.parquet", tiny, "segment_by=scenes")
    rows = pq.read_table(tmp_path / "s.parquet").to_pylist()
    assert [(row["path"], row["status"]) for row in rows] == [(path, "error")]
    assert re.fullmatch(reason, rows[0]["error"].split("/")[-1])


def test_a_shard_members_scenes_are_those_of_its_file(videos, tmp_path):
    """A video inside a tar shard (read in place) is cut where the same video as a file is."""
    pytest.importorskip("scenedetect")
    with tarfile.open(tmp_path / "00000.tar", "w") as tar:
        tar.add(videos / "cuts" / "cuts.mp4", arcname="000000000.mp4")
    rule = SegmentRule(scenes=SceneRule())
    member = segments.WindowsOf([f"{tmp_path / '00000.tar'}#000000000.mp4"], rule, DecodeConfig())[0]
    assert [round(start * FPS) for start, _ in member] == [0, *CUTS]
    assert member == rule.windows(str(videos / "cuts" / "cuts.mp4"), DecodeConfig())


def run(folder, out, model, *extra):
    """Embeddings only (no labels: no text to encode), fp32 (no precision to measure)."""
    return score.run(load_config(score.ScoreConfig, None, [
        f"videos={folder}", f"out={out}", "decode.num_frames=4", "decode.workers=0", f"model.name={model}",
        "model.precision=fp32", *extra]))


def test_scene_rows_equal_the_same_windows_scored_as_fixed_segments(videos, tiny, tmp_path):
    """Cut in a decoding worker at 2, 4 and 6 s, the scenes are the 2 s windows: the same rows, the same
    embeddings as segment_seconds=2."""
    pytest.importorskip("scenedetect")
    root = videos
    scenes = run(root / "even", tmp_path / "scenes.parquet", tiny, "segment_by=scenes", "decode.workers=1")
    fixed = run(root / "even", tmp_path / "fixed.parquet", tiny, "segment_seconds=2")
    assert scenes["scored_now"] == fixed["scored_now"] == 4
    got, want = (pq.read_table(embeddings_path(tmp_path / f"{name}.parquet")).to_pandas()
                 for name in ("scenes", "fixed"))
    assert list(got.segment_start) == list(want.segment_start) == [0, 2, 4, 6]
    assert list(got.segment_end) == list(want.segment_end) == [2, 4, 6, 8]
    np.testing.assert_allclose(np.stack(got.video_embedding), np.stack(want.video_embedding), atol=1e-6)


def test_a_rerun_skips_done_scenes_and_does_not_cut_a_finished_video_again(videos, tiny, tmp_path, monkeypatch):
    """Interrupted after its first scene, the rerun scores the other three (the video cut again); a third run
    finds the video's rows covering it and neither cuts nor scores anything."""
    pytest.importorskip("scenedetect")
    root = videos
    out = tmp_path / "s.parquet"
    calls, score_batch = [], score.VideoScorer.__call__

    def interrupt_second_scene(self, frames):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return score_batch(self, frames)

    with monkeypatch.context() as patch:
        patch.setattr(score.VideoScorer, "__call__", interrupt_second_scene)
        with pytest.raises(KeyboardInterrupt):
            run(root / "cuts", out, tiny, "segment_by=scenes", "decode.batch_size=1")
    assert len(pd.read_parquet(out)) == 1
    cut, detect = [], segments.bounded_cuts
    monkeypatch.setattr(segments, "bounded_cuts", lambda *a: cut.append(a) or detect(*a))
    resumed = run(root / "cuts", out, tiny, "segment_by=scenes", "decode.batch_size=1")
    assert (resumed["scored_now"], resumed["already_scored"], len(cut)) == (3, 0, 1)
    table = pd.read_parquet(out)
    assert [round(t * FPS) for t in table.segment_start] == [0, *CUTS]
    assert list(table.segment_end)[-1] == pytest.approx(FRAMES / FPS)
    finished = run(root / "cuts", out, tiny, "segment_by=scenes")
    assert (finished["scored_now"], finished["already_scored"], len(cut)) == (0, 1, 1)


def test_scene_keys_are_checked_and_a_missing_extra_is_one_line(videos, tmp_path, monkeypatch, capsys):
    root = videos
    with pytest.raises(ConfigError, match="segment_seconds"):
        load_config(score.ScoreConfig, None, ["segment_by=scenes", "segment_seconds=10"])
    with pytest.raises(ConfigError, match="scene_detector"):
        load_config(score.ScoreConfig, None, ["scene_detector=histogram"])
    monkeypatch.setitem(sys.modules, "scenedetect", None)  # import scenedetect raises ImportError
    code = main(["score", str(root / "cuts"), "--out", str(tmp_path / "s.parquet"), "segment_by=scenes"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "coca-video[scenes]" in lines[0], lines
    assert not (tmp_path / "s.parquet").exists()


@pytest.mark.slow  # the built-in model (the tiny one's random embeddings do not tell scenes apart)
def test_two_videos_sharing_a_scene_dedup_to_one_scene_row(tmp_path):
    """a.mp4 = shot X then shot S, b.mp4 = shot Y then the same S: four scene rows, of which S's second copy goes."""
    pytest.importorskip("scenedetect")
    pytest.importorskip("sklearn")
    first, second = shots_video([100], FRAMES, 64, seed=3), shots_video([100], FRAMES, 64, seed=4)
    folder = tmp_path / "videos"
    folder.mkdir()
    write_video(folder / "a.mp4", first, fps=FPS)
    write_video(folder / "b.mp4", np.concatenate([second[:100], first[100:]]), fps=FPS)
    run(folder, tmp_path / "s.parquet", "default", "segment_by=scenes")  # embeddings that tell scenes apart
    summary = dedup.run(load_config(dedup.DedupConfig, None, [
        f"embeddings={embeddings_path(tmp_path / 's.parquet')}", f"out={tmp_path / 'dedup.parquet'}", "eps=0.02"]))
    table = pd.read_parquet(tmp_path / "dedup.parquet")
    assert (summary["rows"], summary["removed"]) == (4, 1)
    gone = table[~table.keep].iloc[0]
    assert (gone.segment_start, gone.segment_end) == (4, 8)
    assert {gone.path.rsplit("/", 1)[-1], gone.duplicate_of.rsplit("/", 1)[-1]} == {"a.mp4", "b.mp4"}


@pytest.mark.slow
@pytest.mark.needs("ray")
def test_scenes_cut_on_ray_decode_actors_give_the_local_engines_rows(videos, tiny, tmp_path):
    """engine=ray: the videos are cut by the cluster's decode actors (one local cluster for cutting and scoring);
    the same scene rows and embeddings as the local engine's."""
    pytest.importorskip("scenedetect")
    root = videos
    local = run(root / "cuts", tmp_path / "local.parquet", tiny, "segment_by=scenes")
    on_ray = run(root / "cuts", tmp_path / "ray.parquet", tiny, "segment_by=scenes", "engine=ray",
                 "ray.decode_actors=1", "ray.encode_actors=1")
    assert local["scored_now"] == on_ray["scored_now"] == len(CUTS) + 1
    got, want = (pq.read_table(embeddings_path(tmp_path / f"{name}.parquet")).to_pandas() for name in ("ray", "local"))
    assert list(got.segment_start) == list(want.segment_start) and list(got.segment_end) == list(want.segment_end)
    np.testing.assert_allclose(np.stack(got.video_embedding), np.stack(want.video_embedding), atol=1e-6)
