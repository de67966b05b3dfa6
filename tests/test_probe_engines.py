"""The feature-cache fill through the one encoding pass: a fill stopped after its first batch and run again
encodes only the clips it had not stored and leaves the cache a straight fill leaves; and ``probe engine=ray`` and
``videoqa engine=ray`` fill the same cache rows as the local engine (tokens within fp16 rounding, the same failed
row for a corrupt clip), from the Ray encode actors, with the same probe metrics and the same answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import clips_and_labels

from coca_video.config import DecodeConfig, ModelConfig, load_config
from coca_video.data.synthetic import label_names, write_kinetics_format, write_qa_format
from coca_video.data.video import ClipSampling, VideoItem
from coca_video.engines.feature_fill import TokenScorer, fill_cache
from coca_video.runtime import load_model
from coca_video.tasks import probe, videoqa

FRAMES = 4
REAL_CALL = TokenScorer.__call__  # before any test wraps it


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[VideoItem]:
    """Three small clips and, last, a file that is no video."""
    root, _ = clips_and_labels(tmp_path_factory.mktemp("clips"), 3, size=32, num_frames=FRAMES, seed=3, fps=4)
    (root / "broken.mp4").write_bytes(b"not a video at all")
    return [VideoItem(str(path)) for path in sorted(root.glob("clip*.mp4"))] + [VideoItem(str(root / "broken.mp4"))]


def counting_scorer(monkeypatch, stop_after: int | None = None) -> list[int]:
    """Count the clips each :class:`TokenScorer` call encodes; with ``stop_after``, Ctrl-C on the call after that
    many (the batches before it are stored)."""
    calls = []

    def counted(self, clips):
        if stop_after is not None and len(calls) == stop_after:
            raise KeyboardInterrupt
        calls.append(len(clips))
        return REAL_CALL(self, clips)

    monkeypatch.setattr(TokenScorer, "__call__", counted)
    return calls


def test_a_resumed_fill_encodes_only_the_missing_clips_and_equals_a_straight_fill(clips, tmp_path, monkeypatch):
    cfg = ModelConfig(name="tiny", device="cpu")
    model = load_model(cfg)
    sampling = ClipSampling(FRAMES, temporal_views=2)  # two views a clip, as a probe's evaluation takes
    decode = DecodeConfig(num_frames=FRAMES, workers=0, batch_size=2)

    def fill(folder: Path):
        return fill_cache(tmp_path / folder, clips, model, cfg, sampling, decode, "val", fmt="int8")

    straight_calls = counting_scorer(monkeypatch)
    straight = fill(Path("straight"))
    assert straight_calls == [2, 1]  # the broken file never reaches the encoder
    assert straight.done == {0, 1, 2} and list(straight.failed) == [3]
    assert "broken.mp4" in straight.failed[3]

    counting_scorer(monkeypatch, stop_after=1)
    with pytest.raises(KeyboardInterrupt):
        fill(Path("resumed"))
    resumed_calls = counting_scorer(monkeypatch)
    resumed = fill(Path("resumed"))
    assert resumed_calls == [1]  # clip 2 (with the broken file's error): 0 and 1 were stored
    assert resumed.done == straight.done and resumed.failed == straight.failed
    rows = sorted(straight.done)
    np.testing.assert_array_equal(resumed.read(rows).numpy(), straight.read(rows).numpy())

    again = counting_scorer(monkeypatch)
    fill(Path("resumed"))
    assert again == []  # done and failed rows alike are not tried again


def cache_rows(folder: Path) -> dict[str, tuple[np.ndarray, set[int], dict[int, str], set[int]]]:
    """Each cache in ``folder`` by digest: its token array, rows done, failed rows and the ranks whose state files
    recorded them."""
    found = {}
    for tokens in sorted(folder.glob("*.tokens.npy")):
        digest = tokens.name.split(".")[0]
        done, failed, ranks = set(), {}, set()
        for state_path in folder.glob(f"{digest}.state.rank*.json"):
            state = json.loads(state_path.read_text())
            done.update(state["done"])
            failed.update({int(row): reason for row, reason in state["failed"].items()})
            ranks.add(int(state_path.name.rsplit(".rank", 1)[1].removesuffix(".json")))
        found[digest] = (np.load(tokens), done, failed, ranks)
    return found


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray cluster for the module's Ray fills (the probe's two, videoqa's one): starting it costs more
    than a fill of these clips."""
    from ray_cluster import local_cluster

    with local_cluster() as ray:
        yield ray


def assert_filled_alike(local: dict, ray: dict, failures: int, broken: str) -> None:
    """The Ray engine's caches (:func:`cache_rows`) hold the local engine's rows: the same rows done and failed (each
    failure naming the ``broken`` file), tokens at most an fp16 rounding step apart, written by the encode actors
    (ranks of their own)."""
    from coca_video.engines.ray_engine import PART_RANK_BASE

    assert local.keys() == ray.keys()
    for digest, (tokens, done, failed, ranks) in local.items():
        ray_tokens, ray_done, ray_failed, ray_ranks = ray[digest]
        assert ray_done == done and len(done) == len(tokens) - failures
        assert ray_failed.keys() == failed.keys() and len(failed) == failures
        assert all(broken in reason for reason in ray_failed.values())
        rows = sorted(done)
        np.testing.assert_allclose(ray_tokens[rows].astype(np.float32), tokens[rows].astype(np.float32),
                                   rtol=2e-3, atol=2e-3)  # fp16 storage: at most a rounding step apart
        assert ranks == {0} and min(ray_ranks) >= PART_RANK_BASE  # written by the encode actors


@pytest.mark.slow
@pytest.mark.needs("ray")
def test_probe_fills_the_same_cache_through_ray_and_gets_the_same_metrics(ray_cluster, tmp_path):
    videos = tmp_path / "videos"
    train_csv, val_csv = write_kinetics_format(videos, 10, 5, "colour", size=32, num_frames=FRAMES)
    label = label_names("colour")[0]
    (videos / label.replace(" ", "_") / f"broken_{0:06d}_{10:06d}.mp4").write_bytes(b"not a video at all")
    for csv_path in (train_csv, val_csv):
        csv_path.write_text(csv_path.read_text() + f"{label},broken,0,10,x\n")
    # the shipped default model: its weights load the same in every actor (tiny's are drawn at random in each)
    base = {"model.name": "default", "model.device": "cpu", "data.format": "kinetics", "data.train": str(train_csv),
            "data.val": str(val_csv), "data.video_root": str(videos), "decode.num_frames": FRAMES,
            "decode.workers": 0, "decode.batch_size": 3, "train.epochs": 2, "train.batch_size": 4,
            "probe.cache": "pooled", "eval.temporal_views": 2}
    ray_keys = {"engine": "ray", "ray.decode_actors": 1, "ray.encode_actors": 2}
    results = {}
    for engine, extra in (("local", {}), ("ray", ray_keys)):  # the module's cluster serves the run's two fills
        overrides = base | extra | {"output_dir": str(tmp_path / engine)}
        results[engine] = probe.run(load_config(probe.ProbeConfig, None, [f"{k}={v}" for k, v in overrides.items()]))
    assert results["ray"] == results["local"]
    local, ray = (cache_rows(tmp_path / engine / "feature_cache") for engine in ("local", "ray"))
    assert len(local) == 2  # the training and the evaluation cache, same settings
    assert_filled_alike(local, ray, failures=1, broken="broken")
    for engine in ("local", "ray"):
        metrics = json.loads((tmp_path / engine / "metrics.json").read_text())
        assert metrics["protocol"]["val_videos_evaluated"] == 5


@pytest.mark.slow
@pytest.mark.needs("ray")
def test_videoqa_fills_its_cache_through_ray_as_the_probe_does(ray_cluster, tmp_path):
    """``videoqa engine=ray`` fills the frozen encoder's token cache through the same pass: the local engine's rows
    (an unreadable clip failed alike, its questions answered ""), and the same answers after training on them."""
    qa_dir, videos = write_qa_format(tmp_path / "data", 4, 2, num_frames=FRAMES)
    (videos / "video5.mp4").write_bytes(b"not a video at all")  # the last test clip
    base = {"source.qa_dir": qa_dir, "source.videos": videos, "model.name": "default", "model.device": "cpu",
            "decode.num_frames": FRAMES, "decode.workers": 0, "decode.batch_size": 3, "train.epochs": 2,
            "train.batch_size": 4, "optim.warmup_steps": 2, "qa.report_questions": 0, "temporal_embedding": True}
    ray_keys = {"engine": "ray", "ray.decode_actors": 1, "ray.encode_actors": 2}
    results = {}
    for engine, extra in (("local", {}), ("ray", ray_keys)):
        overrides = base | extra | {"output_dir": str(tmp_path / engine)}
        results[engine] = videoqa.run(load_config(videoqa.VideoQAConfig, None, [f"{k}={v}" for k, v in
                                                                                 overrides.items()]))
    assert (results["ray"]["accuracy"], results["ray"]["per_type"]) == (results["local"]["accuracy"],
                                                                       results["local"]["per_type"])
    local, ray = (cache_rows(tmp_path / engine / "feature_cache") for engine in ("local", "ray"))
    assert len(local) == 1
    assert_filled_alike(local, ray, failures=1, broken="video5.mp4")
    answers = [(tmp_path / engine / "predictions.csv").read_text() for engine in ("local", "ray")]
    assert answers[0] == answers[1] and answers[0].count(",,0") == 3  # the broken clip's questions: "", wrong
