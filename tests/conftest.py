"""Shared fixtures; shared plain helpers live in helpers.py."""

from __future__ import annotations

import os

import pytest
import torch
from helpers import tiny_config

import coca_video


@pytest.fixture
def tiny_model() -> coca_video.CoCa:
    torch.manual_seed(0)
    return coca_video.CoCa(tiny_config()).eval()


@pytest.fixture(autouse=True)
def own_choice_cache(tmp_path_factory, monkeypatch) -> None:
    """Each test keeps precision=auto's measured choices in a folder of its own (never the user's ~/.cache)."""
    monkeypatch.setenv("COCA_VIDEO_CACHE", str(tmp_path_factory.mktemp("coca_video_cache")))


if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs a worker per core and one more: each worker, and the commands its tests start, compute on one
    # thread, so the workers share the cores instead of each spreading over all of them
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    # Ray starts its workers at niceness 15: the Ray modules' decode and encode actors then got almost no CPU while
    # the other worker ran a torchrun test, and the Ray modules, the suite's longest, ended last. At 0 they share.
    os.environ.setdefault("RAY_worker_niceness", "0")


def pytest_collection_modifyitems(items) -> None:
    """The modules with the most long tests first, each module's tests in their own order: the workers of
    `make test` take whole modules (--dist loadfile), and a long module taken last would leave the others idle."""
    long_tests: dict[str, int] = {}
    for item in items:
        long = item.get_closest_marker("slow") or item.get_closest_marker("distributed")
        long_tests[item.module.__name__] = long_tests.get(item.module.__name__, 0) + bool(long)
    items.sort(key=lambda item: -long_tests[item.module.__name__])


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "needs(*names): skip unless each named thing works here (tests/probes.py)")


def pytest_runtest_setup(item) -> None:
    from probes import skip_unless_works

    for mark in item.iter_markers(name="needs"):
        skip_unless_works(*mark.args)
