"""The feature cache's formats and planning, each against a hand-computed answer: the planned size, the refusal when
the disk is too small, each format's round trip (fp16 exact to fp16, int8 within half a step, pooled equal to 2x2
means worked out by hand), and a truncated array file rebuilt rather than read as zeros."""

from __future__ import annotations

import json
import shutil
from collections import namedtuple

import numpy as np
import pytest
import torch

from coca_video.data import feature_cache
from coca_video.data.feature_cache import FeatureCache, check_free_space, plan_cache
from coca_video.errors import OutputError
from coca_video.model.video_classifier import pool_patch_tokens

KEY = {"model": "default", "videos": ["a.mp4", "b.mp4", "c.mp4"]}


def test_plan_matches_the_hand_computed_size():
    # coca_ViT-B-32 at 224 px: 7x7 patches + class token = 50 tokens of width 768; K400 val, 16 frames, 4x3 views
    fp16 = plan_cache(20_000, 12, 16, 50, 768, "fp16")
    assert fp16.total_bytes == 20_000 * 12 * 16 * 50 * 768 * 2 == 294_912_000_000
    int8 = plan_cache(20_000, 12, 16, 50, 768, "int8")
    assert int8.total_bytes == 20_000 * 12 * 16 * 50 * (768 + 2)  # a byte a value, an fp16 scale a token
    pooled = plan_cache(20_000, 12, 16, 50, 768, "pooled", token_pool=2)
    assert pooled.tokens == 16 * (1 + 4 * 4)  # 7x7 -> 4x4 (edge squares partly filled) + class token
    assert plan_cache(10, 1, 8, 65, 160, "pooled").tokens == 8 * (1 + 16)  # default model: 8x8 -> 4x4


def test_a_cache_the_disk_cannot_hold_is_refused_naming_the_options(tmp_path, monkeypatch):
    plan = plan_cache(1000, 12, 16, 50, 768)  # 14.7 GB
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**12, 0, 15 * 10**9))  # fits, not with margin
    with pytest.raises(OutputError) as err:
        check_free_space(tmp_path / "cache", plan)
    message = str(err.value)
    assert str(tmp_path / "cache") in message and "14.7 GB" in message and "15.0 GB" in message
    for option in ("probe.cache=int8", "probe.token_pool=2", "bigger disk", "probe.cache_check=false"):
        assert option in message
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**12, 0, 17 * 10**9))
    check_free_space(tmp_path / "cache", plan)  # 14.7 * 1.05 + 1.07 = 16.5 GB needed
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**12, 0, 10**9))
    check_free_space(tmp_path / "cache", plan, enforce=False)  # probe.cache_check=false: printed, not refused


def test_the_probe_head_follows_the_pooled_token_count():
    from coca_video.config import load_config
    from coca_video.model import create_model
    from coca_video.tasks.probe import ProbeConfig, classifier_config

    model = create_model("default")  # 64 px, patch 8: 1 + 8x8 tokens per frame
    pooled = classifier_config(load_config(ProbeConfig, None, ["probe.cache=pooled"]), model, 5)
    assert (pooled.tokens_per_frame, pooled.token_pool) == (1 + 4 * 4, 2)
    full = classifier_config(load_config(ProbeConfig, None, ["probe.cache=int8"]), model, 5)
    assert (full.tokens_per_frame, full.token_pool) == (1 + 8 * 8, 1)


def test_fp16_and_int8_round_trips(tmp_path):
    tokens = torch.randn(3, 2, 6, 5) * torch.tensor([0.01, 1.0, 30.0, 0.0, 2.0, 5.0])[None, None, :, None]
    fp16 = FeatureCache(tmp_path, KEY, (3, 2, 6, 5))
    fp16.store([0, 1, 2], tokens, [])
    torch.testing.assert_close(fp16.read([2, 0]), tokens[[2, 0]].half().float(), rtol=0, atol=0)
    int8 = FeatureCache(tmp_path, {**KEY, "format": "int8"}, (3, 2, 6, 5), dtype="int8")
    int8.store([0, 1, 2], tokens, [])
    assert int8.tokens.dtype == np.int8 and int8.scales.shape == (3, 2, 6)
    scale = tokens.abs().amax(-1, keepdim=True) / 127  # per token
    error = (int8.read([0, 1, 2]) - tokens).abs()
    assert (error <= scale / 2 * 1.002 + 1e-12).all()  # fp16 rounding of the scale: at most 1 part in 1024 up
    assert (int8.read([0, 1, 2])[:, :, 3] == 0).all()  # an all-zero token stays zero
    torch.testing.assert_close(int8.read([1], 1), int8.read([0, 1, 2])[1:2, 1])


def test_pooled_tokens_are_the_2x2_means_by_hand(tmp_path):
    frames, grid, width = 2, 4, 3
    tokens = torch.randn(1, 1, frames * (1 + grid * grid), width)
    cache = FeatureCache(tmp_path, {**KEY, "format": "pooled"}, (1, 1, frames * 5, width))
    cache.store([0], pool_patch_tokens(tokens, frames, 2), [])
    read = cache.read([0])[0, 0].reshape(frames, 5, width)
    per_frame = tokens[0, 0].reshape(frames, 1 + grid * grid, width)
    for t in range(frames):
        patches = per_frame[t, 1:].reshape(grid, grid, width)
        expected = [per_frame[t, 0]] + [(patches[r, c] + patches[r, c + 1] + patches[r + 1, c]
                                         + patches[r + 1, c + 1]) / 4 for r in (0, 2) for c in (0, 2)]
        torch.testing.assert_close(read[t], torch.stack(expected).half().float())


def test_a_truncated_tokens_file_is_rebuilt_not_read_as_zeros(tmp_path):
    cache = FeatureCache(tmp_path, KEY, (3, 1, 4, 2))
    cache.store([0, 1, 2], torch.ones(3, 1, 4, 2), [])
    meta = json.loads(cache.meta_path.read_text())
    assert meta["shape"] == [3, 1, 4, 2] and meta["dtype"] == "fp16" and meta["digest"] in cache.tokens_path.name
    size = cache.tokens_path.stat().st_size
    del cache
    with open(tmp_path / f"{meta['digest']}.tokens.npy", "r+b") as handle:
        handle.truncate(size - 8)
    with pytest.warns(UserWarning, match=rf"{meta['digest']}\.tokens\.npy: feature cache file truncated"):
        again = FeatureCache(tmp_path, KEY, (3, 1, 4, 2))
    assert again.todo() == [0, 1, 2]  # every row to encode again
    assert feature_cache.npy_size_ok(again.tokens_path)
    again.store([0], torch.ones(1, 1, 4, 2), [])
    again.meta_path.write_text("{not json")  # a damaged meta.json: the cache is rebuilt, not trusted
    with pytest.warns(UserWarning, match=r"meta\.json: feature cache file does not match"):
        assert FeatureCache(tmp_path, KEY, (3, 1, 4, 2)).todo() == [0, 1, 2]


def test_view_by_view_evaluation_equals_one_pass_over_all_views():
    from coca_video.model import VideoClassifier, VideoClassifierConfig
    from coca_video.model.video_classifier import view_averaged_probabilities

    torch.manual_seed(0)
    classifier = VideoClassifier(VideoClassifierConfig(width=16, num_classes=5, heads=2, num_frames=2)).eval()
    tokens = torch.randn(3, 12, 2 * 5, 16)  # (videos, views 4x3, T*N, C)
    with torch.no_grad():
        one_pass = classifier(tokens.flatten(0, 1)).unflatten(0, (3, 12)).softmax(-1).mean(1)  # the old evaluate()
        for views_per_pass in (1, 5, 12):
            chunked = view_averaged_probabilities(classifier, lambda views: tokens[:, views], 12, views_per_pass)
            torch.testing.assert_close(chunked, one_pass, rtol=0, atol=1e-6)


def test_the_docs_cache_table_is_what_plan_cache_gives():
    import importlib.util

    from helpers import REPO

    spec = importlib.util.spec_from_file_location("plan_probe_cache", REPO / "pipelines" / "plan_probe_cache.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    table = script.table(frames=16)
    assert "| K400 | coca_ViT-B-32 | 50 | 295 + 295 GB |" in table  # 240k x 1 view and 20k x 12 views, as above
    assert table in (REPO / "docs" / "probe.md").read_text()  # the docs print what the script prints


def test_rows_whose_bytes_changed_are_encoded_again_and_a_damaged_state_is_not_a_traceback(tmp_path):
    cache = FeatureCache(tmp_path, KEY, (3, 1, 4, 2))
    cache.store([0, 1, 2], torch.arange(24.0).reshape(3, 1, 4, 2), [])
    assert cache.verify() == []  # untouched: every row checks out
    rng = np.random.default_rng(0)
    cache.tokens[1] = rng.standard_normal((1, 4, 2)).astype(np.float16)  # same size, other values: no zeros to see
    cache.tokens.flush()
    again = FeatureCache(tmp_path, KEY, (3, 1, 4, 2))
    with pytest.warns(UserWarning, match=r"tokens\.npy: 1 cached rows do not match their checksums \(e\.g\. row 1\)"):
        assert again.verify() == [1]
    assert again.todo() == [1]
    again.store([1], torch.arange(8.0).reshape(1, 1, 4, 2), [])
    assert FeatureCache(tmp_path, KEY, (3, 1, 4, 2)).verify() == []  # the re-encoded row is trusted again
    again.state_path.write_text("{garbage")
    with pytest.warns(UserWarning, match=r"state\.rank0\.json: feature cache state unreadable"):
        assert FeatureCache(tmp_path, KEY, (3, 1, 4, 2)).todo() == [0, 1, 2]
