"""Small pieces the trainers stand on, each against a hand-worked or closed-form answer: the LR schedule, the
per-rank batch shares, row gathering across processes, the feature cache's resume state, config inheritance."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import REPO, free_port

from coca_video.config import ModelConfig, load_config
from coca_video.data.feature_cache import FeatureCache
from coca_video.distributed import batch_shards
from coca_video.errors import CheckpointError, ConfigError
from coca_video.tasks.probe import ProbeConfig
from coca_video.training import CheckpointManager, OptimConfig, architecture_id, build_scheduler


def lr_factors(cfg: OptimConfig, max_steps: int) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_scheduler(optimizer, cfg, max_steps)
    factors = []
    for _ in range(max_steps):
        factors.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return factors


def test_warmup_then_cosine_to_the_floor_closed_form():
    factors = lr_factors(OptimConfig(warmup_steps=4, min_lr_ratio=0.1), max_steps=14)
    assert factors[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])  # linear warmup: (step + 1) / warmup
    for step in range(4, 14):  # cosine over the 10 steps after warmup, from 1 down to the floor 0.1
        progress = (step - 4) / 10
        assert factors[step] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def test_warmup_then_linear_decay_to_the_floor_closed_form():
    factors = lr_factors(OptimConfig(warmup_steps=2, min_lr_ratio=0.2, schedule="linear"), max_steps=7)
    assert factors[:2] == pytest.approx([0.5, 1.0])
    # 5 steps after warmup, from 1 down by (1 - 0.2) / 5 each step: 1, 0.84, 0.68, 0.52, 0.36 (0.2 at step 7)
    assert factors[2:] == pytest.approx([1.0, 0.84, 0.68, 0.52, 0.36])


def test_batch_shards_split_one_global_permutation_among_ranks(monkeypatch):
    from coca_video import distributed

    order = torch.randperm(10, generator=torch.Generator().manual_seed(3)).tolist()
    assert batch_shards(10, 4, seed=3) == [order[0:4], order[4:8], order[8:10]]  # one process: whole batches
    shares = []
    for rank in range(3):
        monkeypatch.setattr(distributed, "get_info", lambda rank=rank: distributed.DistInfo(rank, 3))
        shares.append(batch_shards(10, 4, seed=3))
    for b, (start, stop) in enumerate([(0, 4), (4, 8), (8, 10)]):
        merged = sorted(i for rank in range(3) for i in shares[rank][b])
        assert merged == sorted(order[start:stop])  # the ranks' shares of batch b are exactly global batch b
    assert shares[2][2] == []  # a batch of 2 leaves rank 2 an empty share


GATHER = """
import torch, torch.distributed as dist
from coca_video.distributed import gather_rows, init_distributed
info = init_distributed()
total = 7
mine = torch.tensor([[float(i), 10.0 * i] for i in range(total)][info.rank::info.world_size]).reshape(-1, 2)
out = gather_rows(mine, total)
if info.rank == 0:
    print(out[:, 0].tolist())
dist.destroy_process_group()
"""


@pytest.mark.slow
@pytest.mark.distributed
def test_gather_rows_restores_position_order_across_two_processes(tmp_path):
    script = tmp_path / "gather.py"
    script.write_text(GATHER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(script)]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == str([float(i) for i in range(7)])


def test_feature_cache_resumes_from_its_state_and_keys_on_what_it_depends_on(tmp_path):
    key = {"model": "default", "videos": ["a.mp4", "b.mp4", "c.mp4"]}
    cache = FeatureCache(tmp_path, key, shape=(3, 1, 4, 2))
    assert cache.todo() == [0, 1, 2]
    cache.store([0, 2], torch.arange(16.0).reshape(2, 1, 4, 2), [(1, "b.mp4: cannot decode")])
    again = FeatureCache(tmp_path, key, shape=(3, 1, 4, 2))  # a new process opening the same cache
    assert again.todo() == [] and again.done == {0, 2} and again.failed == {1: "b.mp4: cannot decode"}
    np.testing.assert_array_equal(again.tokens[2, 0], np.arange(8.0, 16.0).reshape(4, 2))
    other = FeatureCache(tmp_path, {**key, "model": "other"}, shape=(3, 1, 4, 2))
    assert other.todo() == [0, 1, 2] and other.tokens_path != cache.tokens_path


def test_config_base_inheritance_and_shared_blocks(tmp_path):
    (tmp_path / "base.yaml").write_text("train:\n  epochs: 3\n  batch_size: 8\nmodel:\n  name: tiny\n  precision: bf16\n"
                                        "data:\n  train: a.csv\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\ntrain:\n  epochs: 5\nmodel:\n  precision: fp32\n")
    cfg = load_config(ProbeConfig, tmp_path / "child.yaml", ["decode.num_frames=4"])
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.data.train, cfg.decode.num_frames) == (5, 8, "a.csv", 4)
    assert cfg.model == ModelConfig(name="tiny", precision="fp32")  # merged mapping by mapping, child wins
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="leads back to itself"):
        load_config(ProbeConfig, tmp_path / "loop.yaml")


def test_shipped_kinetics_configs_differ_only_where_they_say():
    k400 = load_config(ProbeConfig, REPO / "configs/probe/kinetics400_frozen.yaml")
    k700 = load_config(ProbeConfig, REPO / "configs/probe/kinetics700.yaml")
    assert (k700.data.classes, k700.optim, k700.eval, k700.decode) == ("kinetics700", k400.optim, k400.eval,
                                                                        k400.decode)


def checkpointed_linear(folder, architecture: str, steps: int = 2) -> CheckpointManager:
    manager = CheckpointManager(folder, keep_last=3, architecture=architecture)
    for step in range(1, steps + 1):
        layer = torch.nn.Linear(2, 2)
        torch.nn.init.constant_(layer.weight, float(step))
        manager.save(step, {"model": layer.state_dict()})
    return manager


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_auto_resume_skips_a_damaged_newest_checkpoint_with_a_warning(tmp_path, capsys, damage):
    manager = checkpointed_linear(tmp_path, architecture_id("tiny", ModelConfig()))
    newest = manager.all()[-1]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2] if damage == "truncated" else b"")
    layer = torch.nn.Linear(2, 2)
    state = manager.restore("auto", lambda s: layer.load_state_dict(s["model"]))
    assert state["step"] == 1 and layer.weight[0, 0].item() == 1.0  # the previous good checkpoint
    assert f"{newest}: unreadable or truncated checkpoint" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="step_00000002.pt: unreadable"):  # named explicitly: no fallback
        manager.restore(str(newest), lambda s: None)


def test_resume_into_another_architecture_names_both(tmp_path):
    checkpointed_linear(tmp_path, architecture_id("tiny", ModelConfig(name="tiny")))
    other = CheckpointManager(tmp_path, architecture=architecture_id("synthetic_tiny", ModelConfig(precision="bf16")))
    with pytest.raises(CheckpointError, match=r"written for model tiny \[\w+\], but this run builds synthetic_tiny"):
        other.restore("auto", lambda s: None)
    same = CheckpointManager(tmp_path, architecture=architecture_id("renamed", ModelConfig(name="tiny")))
    assert same.restore("auto", lambda s: None)["step"] == 2  # same config under another name: fine
    with pytest.raises(CheckpointError, match="does not fit this run"):  # tensors that do not fit: one line
        same.restore("auto", lambda s: torch.nn.Linear(3, 3).load_state_dict(s["model"]))


def test_the_shipped_finetune_config_is_table_9s_recipe():
    """The CoCa paper's Table 9 (finetuning column) and section 4.2.1, value by value."""
    cfg = load_config(ProbeConfig, REPO / "configs/probe/kinetics400_finetune.yaml")
    optim = cfg.optim
    assert (cfg.mode, cfg.train.max_steps, cfg.train.batch_size, cfg.train.accum_steps, cfg.probe.label_smoothing) == \
        ("finetune", 120_000, 128, 4, 0.1)
    assert (optim.name, optim.weight_decay, optim.grad_clip, optim.ema) == ("adafactor", 0.0, 1.0, 0.9999)
    assert (optim.schedule, optim.min_lr_ratio, optim.warmup_steps) == ("cosine", 0.0, 1000)
    assert (optim.head_lr, optim.lr) == (5e-4, 1e-4)
    assert (cfg.probe.augment.mixup, cfg.probe.augment.cutmix) == (0.0, 0.0)
    mit = load_config(ProbeConfig, REPO / "configs/probe/moments_in_time.yaml")
    assert mit.probe.label_smoothing == 0.0


def test_every_shipped_probe_config_loads_and_synthetic_finetune_is_synthetic_plus_the_recipe():
    """The README's as-shipped table compares synthetic.yaml with synthetic_finetune.yaml on the same clips: the
    two differ only in the recipe's keys."""
    for path in sorted((REPO / "configs/probe").glob("*.yaml")):
        load_config(ProbeConfig, path)  # strict: an unknown or badly valued key fails here
    frozen = load_config(ProbeConfig, REPO / "configs/probe/synthetic.yaml")
    tuned = load_config(ProbeConfig, REPO / "configs/probe/synthetic_finetune.yaml")
    assert (tuned.data, tuned.model, tuned.decode, tuned.train, tuned.eval) == \
        (frozen.data, frozen.model, frozen.decode, frozen.train, frozen.eval)
    assert (tuned.mode, tuned.drop_path, tuned.optim.lr, tuned.optim.head_lr, tuned.optim.clip_per_module) == \
        ("finetune", 0.1, 1e-4, 3e-3, True)
    assert (tuned.probe.temporal_pos_embed, tuned.probe.spatial_pos_embed) == (True, True)
    assert (tuned.probe.augment.scale, tuned.probe.augment.flip) == ((1.0, 1.0), False)
