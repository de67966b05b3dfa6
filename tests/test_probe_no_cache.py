"""``probe.cache: none``: a frozen probe that decodes and encodes its clips every epoch feeds the head the tokens the
feature cache would have fed it (within fp16 rounding), in the same batches, and keeps no cache on disk."""

from __future__ import annotations

import json

import torch

from coca_video.config import load_config
from coca_video.model import VideoClassifier
from coca_video.tasks import probe
from coca_video.tasks.probe import features


def test_cache_none_feeds_the_head_the_cached_tokens_and_decodes_every_epoch(tmp_path, monkeypatch):
    fed: dict[str, list[torch.Tensor]] = {"fp16": [], "none": []}
    encoded: dict[str, int] = {"fp16": 0, "none": 0}
    run_cache = ["fp16"]
    forward, encode = VideoClassifier.forward, features.encode_clips

    def recording_forward(self, tokens):
        fed[run_cache[0]].append(tokens.detach().clone())
        return forward(self, tokens)

    def counting_encode(model, transform, clips, *args, **kwargs):
        encoded[run_cache[0]] += len(clips)
        return encode(model, transform, clips, *args, **kwargs)

    monkeypatch.setattr(VideoClassifier, "forward", recording_forward)
    monkeypatch.setattr(features, "encode_clips", counting_encode)
    results = {}
    for cache, workers in (("fp16", 0), ("none", 1)):  # the uncached run decodes in a worker process
        run_cache[0] = cache
        overrides = {"model.name": "tiny", "data.format": "synthetic", "data.video_root": str(tmp_path / "videos"),
                     "data.synthetic.task": "colour", "data.synthetic.train_videos": 12,
                     "data.synthetic.val_videos": 6, "decode.num_frames": 4, "decode.workers": workers,
                     "decode.batch_size": 5, "output_dir": str(tmp_path / cache), "train.epochs": 2, "train.batch_size": 5,
                     "train.eval_every": 0,
                     "probe.cache": cache, "probe.temporal_pos_embed": True, "eval.temporal_views": 2}
        results[cache] = probe.run(load_config(probe.ProbeConfig, None, [f"{k}={v}" for k, v in overrides.items()]))
    # training: 2 epochs x 3 batches (5 + 5 + 2 clips, the same shuffle); evaluation: 5 + 1 clips x 2 views each
    assert [len(t) for t in fed["none"]] == [len(t) for t in fed["fp16"]] == [5, 5, 2] * 2 + [5, 5, 1, 1]
    for cached, live in zip(fed["fp16"], fed["none"]):
        torch.testing.assert_close(cached, live, rtol=2e-3, atol=2e-3)  # fp16 storage is the only difference
    assert encoded["none"] == 12 * 2 + 6 * 2 and encoded["fp16"] == 0  # every epoch and view encoded anew
    assert not (tmp_path / "none" / "feature_cache").exists() and (tmp_path / "fp16" / "feature_cache").is_dir()
    losses = {cache: [json.loads(line)["train_loss"] for line in (tmp_path / cache / "metrics.jsonl").open()]
              for cache in fed}
    assert all(abs(a - b) < 2e-3 for a, b in zip(losses["none"], losses["fp16"])), losses
    metrics = json.loads((tmp_path / "none" / "metrics.json").read_text())
    assert metrics["protocol"]["feature_cache"] == "none" and metrics["protocol"]["val_videos_evaluated"] == 6
    assert set(results["none"]) == set(results["fp16"])
