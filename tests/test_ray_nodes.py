"""`score --engine ray` losing a node mid-run, on a cluster of three nodes on this machine (``ray.cluster_utils``:
a head without CPUs for the driver, two worker nodes): the node running the encode actor is killed after its first
part; the run still finishes with every row exactly once, equal to the local engine's, and the rows already written
are not scored again. A module of its own: the other Ray tests share a plain local cluster."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ray_cluster import WORKER_PATH

from coca_video.data.results import PartStore, row_key
from coca_video.engines.ray_engine import environment
from coca_video.tasks import score
from test_ray_engine import CLIPS, assert_same_rows, run_score, world  # noqa: F401 -- the clips fixture, shared

pytestmark = [pytest.mark.needs("ray"), pytest.mark.slow]  # a Ray cluster of two nodes


@pytest.fixture(scope="module")
def nodes():
    """The three-node cluster, connected; its workers import this checkout and this test folder."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster()
    with environment({"PYTHONPATH": WORKER_PATH}):  # inherited by each node's workers
        # the head: the driver's node, no actor lands on it; a node missing 2 health checks a second apart is dead
        cluster.add_node(num_cpus=0, include_dashboard=False, _system_config={
            "health_check_initial_delay_ms": 0, "health_check_period_ms": 1000, "health_check_failure_threshold": 2})
        workers = [cluster.add_node(num_cpus=3) for _ in range(2)]
    ray.init(address=cluster.address, logging_level="ERROR")
    try:
        yield cluster, workers
    finally:
        ray.shutdown()
        cluster.shutdown()


class SlowScorer:
    """The real scorer, a second slower per batch (so the run is still going when the node goes), writing the id of
    the node it runs on to ``<out>.encoder-node`` at its first batch."""

    def __init__(self, cfg) -> None:
        self.scorer, self.marker = real_actor_scorer(cfg), Path(str(cfg.out) + ".encoder-node")

    def __call__(self, clips):
        import ray

        if not self.marker.exists():
            temporary = self.marker.with_suffix(f".tmp{os.getpid()}")
            temporary.write_text(ray.get_runtime_context().get_node_id())
            temporary.rename(self.marker)
        time.sleep(1.0)
        return self.scorer(clips)

    def __getattr__(self, name):
        return getattr(self.scorer, name)


real_actor_scorer = score.build_scorer


def stored_keys(parts: list[Path]) -> list[tuple]:
    """Every row's key in ``parts``, a row written twice listed twice."""
    if not parts:
        return []
    table = pa.concat_tables([pq.read_table(p, columns=["path", "size", "mtime"] + (
        ["segment_start"] if "segment_start" in pq.read_schema(p).names else [])) for p in parts])
    return [row_key(row) for row in table.to_pylist()]


def test_a_node_removed_mid_run_still_leaves_every_row_exactly_once(nodes, world, tmp_path, monkeypatch):
    cluster, workers = nodes
    root, labels, local = world
    out = tmp_path / "scores.parquet"
    marker = Path(str(out) + ".encoder-node")
    removed: dict = {}

    def remove_the_encoders_node() -> None:  # once the first part is written
        deadline = time.monotonic() + 300
        while not (PartStore(out).parts() and marker.exists()) and time.monotonic() < deadline:
            time.sleep(0.05)
        node = next(n for n in workers if n.node_id == marker.read_text())
        removed["parts"] = PartStore(out).parts()
        cluster.remove_node(node, allow_graceful=False)  # its raylet, workers and object store, killed at once
        removed["node"] = node.node_id

    monkeypatch.setattr(score, "build_scorer", SlowScorer)
    remover = threading.Thread(target=remove_the_encoders_node, daemon=True)
    remover.start()
    summary = run_score(root, out, labels, "engine=ray", "ray.decode_actors=1", "ray.encode_actors=1",
                        "ray.max_retries=3", "decode.batch_size=2")
    remover.join(60)
    assert "node" in removed, "the node was not removed during the run"
    assert summary["ok_total"] == CLIPS
    assert_same_rows(out, local)
    before = stored_keys(removed["parts"])
    after = stored_keys(PartStore(out).parts())
    assert 0 < len(before) < CLIPS + 1  # the node went mid-run
    assert all(after.count(key) == 1 for key in before)  # rows written before the loss were not scored again
    assert set(after) == set(stored_keys(PartStore(local).parts()))
