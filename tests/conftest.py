"""Shared fixtures; shared plain helpers live in helpers.py."""

from __future__ import annotations

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


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "needs(*names): skip unless each named thing works here (tests/probes.py)")


def pytest_runtest_setup(item) -> None:
    from probes import skip_unless_works

    for mark in item.iter_markers(name="needs"):
        skip_unless_works(*mark.args)
