"""`score --engine ray` against the local engine on the same inputs, on one local Ray cluster for the module: the
same rows (keys, error rows, labels, embeddings), resume from the same parts, and an encode actor that dies mid-run
still leaves every row exactly once."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from coca_video.config import load_config
from coca_video.data.results import PART_NAME, embeddings_path
from coca_video.data.synthetic import COLOURS, SyntheticVideos
from coca_video.engines.ray_engine import PART_RANK_BASE
from coca_video.tasks import score
from coca_video.video import write_video

REPO = Path(__file__).resolve().parents[1]
CLIPS = 10
# one decoder and two encoders (so two actors write parts at once) of the cluster's 4 logical CPUs
RAY = ["engine=ray", "ray.decode_actors=1", "ray.encode_actors=2", "ray.max_retries=2"]

pytestmark = pytest.mark.needs("ray")


@pytest.fixture(scope="module")
def cluster():
    """One local cluster for the module (more logical CPUs than the 2 cores, so no pool waits for a CPU); its
    workers import this checkout, and this test module (for the crashing scorer below)."""
    import ray

    path = os.pathsep.join([str(REPO), str(REPO / "tests")])
    ray.init(address="local", num_cpus=4, include_dashboard=False, logging_level="ERROR",
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, Path, Path]:
    """10 small clips and a corrupt file; the colour labels; and the local engine's output on them."""
    root = tmp_path_factory.mktemp("videos")
    clips = SyntheticVideos(CLIPS, size=48, num_frames=4, seed=5, split="test", p_reference=0.0)
    for i in range(CLIPS):
        write_video(root / f"clip{i:02d}.mp4", clips[i][0], fps=4)
    (root / "broken.mp4").write_bytes(b"not a video at all")
    labels = root.parent / "colours.txt"
    labels.write_text("\n".join(COLOURS) + "\n")
    local = root.parent / "local" / "scores.parquet"
    run_score(root, local, labels)
    return root, labels, local


def run_score(root: Path, out: Path, labels: Path, *overrides: str) -> dict:
    base = [f"videos={root}", f"out={out}", f"labels={labels}", "decode.num_frames=4", "decode.batch_size=3",
            "decode.workers=0", "top_k=3"]
    return score.run(load_config(score.ScoreConfig, None, [*base, *overrides]))


def assert_same_rows(out: Path, expected: Path) -> None:
    """``out`` holds exactly ``expected``'s rows: the same keys, statuses and errors, labels, scores and
    embeddings (within 1e-6), each path once."""
    got, want = pq.read_table(out).to_pandas(), pq.read_table(expected).to_pandas()
    assert got.path.is_unique and list(got.columns) == list(want.columns)
    assert got.path.tolist() == want.path.tolist()
    for column in want.columns:
        if column.endswith("_score"):
            np.testing.assert_allclose(got[column], want[column], atol=1e-6)
        else:
            assert got[column].equals(want[column]), column
    got_e, want_e = pq.read_table(embeddings_path(out)), pq.read_table(embeddings_path(expected))
    assert got_e.schema == want_e.schema and got_e.schema.metadata == want_e.schema.metadata
    assert got_e.column("path").to_pylist() == want_e.column("path").to_pylist()
    for a, b in zip(got_e.column("video_embedding").to_pylist(), want_e.column("video_embedding").to_pylist()):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_allclose(a, b, atol=1e-6)


def part_ranks(out: Path) -> set[int]:
    folder = out.with_name(out.name + ".parts")
    return {int(m.group(1)) for p in folder.iterdir() if (m := PART_NAME.search(p.name))}


def test_workers_import_this_checkout(cluster):
    import coca_video

    where = cluster.get(cluster.remote(lambda: __import__("coca_video").__file__).remote())
    assert where == coca_video.__file__


def test_ray_rows_equal_local_rows_and_a_rerun_scores_nothing_new(cluster, world, tmp_path):
    root, labels, local = world
    out = tmp_path / "scores.parquet"
    summary = run_score(root, out, labels, *RAY)
    assert (summary["scored_now"], summary["errors_now"], summary["ok_total"]) == (CLIPS + 1, 1, CLIPS)
    assert_same_rows(out, local)
    ranks = part_ranks(out)
    # written by the encode actors, not this process; which of the two gets batches is Ray's choice (with both
    # fresh-clone suites running at once, one actor still loading its model took none)
    assert 1 <= len(ranks) <= 2 and min(ranks) >= PART_RANK_BASE
    broken = pq.read_table(out).to_pandas().set_index("path").loc[str(root / "broken.mp4")]
    assert broken.status == "error" and "broken.mp4" in broken.error

    parts = sorted(out.with_name(out.name + ".parts").iterdir())
    listed = tmp_path / "ok.txt"  # the files scored ok (an error row would be tried again, as locally)
    listed.write_text("".join(f"{p}\n" for p in sorted(root.glob("clip*.mp4"))))
    again = run_score(listed, out, labels, *RAY)
    assert (again["scored_now"], again["already_scored"]) == (0, CLIPS)
    assert sorted(out.with_name(out.name + ".parts").iterdir()) == parts
    assert_same_rows(out, local)  # the broken file's row is kept: it still exists


class DiesOnce:
    """The scorer of ``cfg`` whose first call in the whole run kills its process (os._exit, as a segfault would),
    leaving ``<out>.died`` to say it happened. Workers import it from this module (pickled by reference)."""

    def __init__(self, cfg) -> None:
        self.scorer, self.marker = real_actor_scorer(cfg), died_marker(cfg.out)

    def __call__(self, clips):
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return self.scorer(clips)
        os._exit(1)

    def __getattr__(self, name):
        return getattr(self.scorer, name)


def died_marker(out: str | Path) -> Path:
    return Path(str(out) + ".died")


real_actor_scorer = score.actor_scorer  # as imported, before any test replaces it


def test_a_killed_encode_actor_still_leaves_every_row_exactly_once(cluster, world, tmp_path, monkeypatch):
    root, labels, local = world
    out = tmp_path / "scores.parquet"
    monkeypatch.setattr(score, "actor_scorer", DiesOnce)
    summary = run_score(root, out, labels, *RAY, "ray.encode_actors=1")  # the one encoder is restarted
    assert died_marker(out).exists()  # an encode actor did die on its first batch
    assert summary["ok_total"] == CLIPS
    assert_same_rows(out, local)


class AlwaysDies(DiesOnce):
    """A scorer that kills its process on every call: a deterministic crash."""

    def __call__(self, clips):
        os._exit(1)


def test_a_deterministic_crash_stops_the_run_instead_of_retrying_forever(cluster, world, tmp_path, monkeypatch):
    root, labels, _ = world
    monkeypatch.setattr(score, "actor_scorer", AlwaysDies)
    with pytest.raises(Exception) as failure:  # Ray's default would restart the actor and retry it forever
        run_score(root, tmp_path / "scores.parquet", labels, *RAY, "ray.encode_actors=1", "ray.max_retries=0")
    assert "actor" in str(failure.value).lower(), failure.value
