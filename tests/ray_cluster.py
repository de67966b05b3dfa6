"""The Ray clusters of the tests. Each pytest process starts one local cluster the first time a test needs Ray (the
``needs("ray")`` probe starts it: a cluster that starts and runs a task is the proof that Ray works here) and ends
it with the session; the Ray test modules join it, each as a job of its own (:func:`joined`), instead of each
starting and stopping a cluster of its own (about 10 CPU-s a start on 2 cores, and as much again for the probe's).

Its workers import this checkout and the tests folder (the crashing scorers of the engine tests live there) through
``PYTHONPATH`` in the environment they inherit, as the engine's own local cluster gives its workers the package. A
module whose workers need more in their environment (the S3 server's address and keys) starts a cluster of its own
(:func:`local_cluster`). The cluster runs no autoscaler monitor and no log monitor: it has a fixed size, and the
tests read their actors' errors from the tasks, not from the log files."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parents[1]
WORKER_PATH = os.pathsep.join([str(REPO), str(REPO / "tests")])
CPUS = 4  # logical CPUs, more than the 2 cores: no actor pool waits for a CPU

_session: Any = None  # this process's ray.cluster_utils.Cluster, once started


def session_cluster() -> Any:
    """This pytest process's cluster, started on the first call."""
    global _session
    if _session is None:
        from ray.cluster_utils import Cluster

        from coca_video.engines.ray_engine import environment

        with environment({"PYTHONPATH": WORKER_PATH}):
            _session = Cluster(initialize_head=True, head_node_args={
                "num_cpus": CPUS, "include_dashboard": False, "include_log_monitor": False, "no_monitor": True})
    return _session


def end_session_cluster() -> None:
    """End this process's cluster, if it started one (at the end of the session)."""
    if _session is not None:
        _session.shutdown()


@contextlib.contextmanager
def joined() -> Iterator[Any]:
    """``ray``, connected to this process's cluster for the block as a job of its own."""
    import ray

    ray.init(address=session_cluster().address, logging_level="ERROR")
    try:
        yield ray
    finally:
        ray.shutdown()


@contextlib.contextmanager
def local_cluster(**environment: str) -> Iterator[Any]:
    """``ray``, connected to a local cluster of its own for the block, whose workers inherit ``environment`` too."""
    import ray

    from coca_video.engines.ray_engine import environment as environ

    with environ({"PYTHONPATH": WORKER_PATH, **environment}):
        ray.init(address="local", num_cpus=CPUS, include_dashboard=False, logging_level="ERROR")
    try:
        yield ray
    finally:
        ray.shutdown()
