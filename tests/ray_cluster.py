"""The local Ray clusters of the tests: one per Ray test module (:func:`local_cluster`), whose workers import this
checkout and the tests folder (the crashing scorers of the engine tests live there) through ``PYTHONPATH`` in the
environment they inherit, as the engine's own local cluster gives its workers the package; a module whose workers
need more in their environment (the S3 server's address and keys) passes it too.

A cluster a module: one pytest process joining a cluster it started earlier, after it had run Ray Data on another
cluster, had its decode actors cancelled before they started (Ray Data 2.60 keeps state per process), so the
modules do not share one."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parents[1]
WORKER_PATH = os.pathsep.join([str(REPO), str(REPO / "tests")])
CPUS = 4  # logical CPUs, more than the 2 cores: no actor pool waits for a CPU


@contextlib.contextmanager
def local_cluster(**variables: str) -> Iterator[Any]:
    """``ray``, connected to a local cluster of its own for the block, whose workers inherit ``variables`` too."""
    import ray

    from coca_video.engines.ray_engine import environment

    with environment({"PYTHONPATH": WORKER_PATH, **variables}):
        ray.init(address="local", num_cpus=CPUS, include_dashboard=False, logging_level="ERROR")
    try:
        yield ray
    finally:
        ray.shutdown()
