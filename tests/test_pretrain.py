"""Pretraining through the real entry point: DDP equals one process, resume equals a straight run, data errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPO, free_port, without_key_bias
from PIL import Image

from coca_video.config import load_config
from coca_video.data.image_text import expand_braces
from coca_video.errors import DataError
from coca_video.tasks import pretrain

WORDS = ["red", "green", "blue", "circle", "square", "small", "big", "dog", "cat", "tree"]


def make_table(folder: Path, count: int = 16, bad: int | None = None) -> Path:
    """A CSV of random PNGs and captions; row ``bad`` points at a file that is not an image."""
    rng = np.random.default_rng(0)
    rows = ["filepath,title"]
    for i in range(count):
        path = folder / f"img{i}.png"
        if i == bad:
            path.write_text("not an image")
        else:
            Image.fromarray(rng.integers(0, 255, (40 + i, 48, 3), dtype=np.uint8)).save(path)
        rows.append(f"{path.name},a {' '.join(rng.choice(WORDS, 3))}")
    table = folder / "pairs.csv"
    table.write_text("\n".join(rows) + "\n")
    return table


def overrides(table: Path, output: Path, **extra) -> list[str]:
    """The run's keys: the default model's small architecture, whose 512-token BPE each run trains from the table's
    captions (rank 0 trains it, every rank reads it); CLIP's 49,408-way softmax took most of these tests' time."""
    base = {"model.name": "synthetic_tiny", "data.kind": "table", "data.path": str(table), "data.workers": 0,
            "train.batch_size": 8, "train.max_steps": 4, "train.log_every": 1, "train.checkpoint_every": 2,
            "optim.warmup_steps": 1, "optim.grad_clip": 1000.0, "output_dir": str(output)}
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def read_metrics(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]


def final_weights(output: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(output / "model" / "model.safetensors"))


@pytest.mark.slow
@pytest.mark.distributed
def test_two_processes_match_one_process_on_the_same_global_batch(tmp_path):
    table = make_table(tmp_path)
    single, double = tmp_path / "one", tmp_path / "two"
    pretrain.run(load_config(pretrain.PretrainConfig, None, overrides(table, single, **{"train.max_steps": 3})))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(REPO / "pipelines" / "pretrain.py"),
           *overrides(table, double, **{"train.max_steps": 3})]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = read_metrics(single), read_metrics(double)
    assert [m["step"] for m in one] == [m["step"] for m in two] == [1, 2, 3]
    for a, b in zip(one, two):
        for key in ("loss", "contrastive_loss", "caption_loss", "grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), key
    w1, w2 = final_weights(single), final_weights(double)
    for key in w1:
        torch.testing.assert_close(without_key_bias(key, w1[key]), without_key_bias(key, w2[key]),
                                   atol=2e-5, rtol=1e-4, msg=key)


@pytest.mark.slow
def test_resumed_run_equals_straight_run(tmp_path, monkeypatch):
    table = make_table(tmp_path)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    pretrain.run(load_config(pretrain.PretrainConfig, None, overrides(table, straight)))

    real_build_loader = pretrain.build_loader

    def interrupted_loader(*args, **kwargs):  # Ctrl-C after two steps (the step-2 checkpoint is written)
        loader = real_build_loader(*args, **kwargs)

        def batches():
            for i, batch in enumerate(loader):
                if i == 2:
                    raise KeyboardInterrupt
                yield batch

        return batches()

    monkeypatch.setattr(pretrain, "build_loader", interrupted_loader)
    with pytest.raises(KeyboardInterrupt):
        pretrain.run(load_config(pretrain.PretrainConfig, None, overrides(table, resumed)))
    monkeypatch.setattr(pretrain, "build_loader", real_build_loader)
    assert [m["step"] for m in read_metrics(resumed)] == [1, 2]
    pretrain.run(load_config(pretrain.PretrainConfig, None, overrides(table, resumed, resume="auto")))
    a, b = read_metrics(straight), read_metrics(resumed)
    assert [m["step"] for m in b] == [1, 2, 3, 4]
    for x, y in zip(a, b):
        assert x["loss"] == y["loss"] and x["lr"] == y["lr"]
    for key, value in final_weights(straight).items():
        assert torch.equal(value, final_weights(resumed)[key]), key


@pytest.mark.slow
def test_checkpoints_keep_last_and_are_complete(tmp_path):
    table = make_table(tmp_path)
    output = tmp_path / "run"
    pretrain.run(load_config(pretrain.PretrainConfig, None, overrides(
        table, output, **{"train.max_steps": 6, "train.checkpoint_every": 1, "train.keep_last": 2})))
    names = sorted(p.name for p in (output / "checkpoints").iterdir())
    assert names == ["step_00000005.pt", "step_00000006.pt"]
    state = torch.load(output / "checkpoints" / names[-1], weights_only=True)
    assert state["step"] == 6 and {"model", "optimizer", "scheduler", "rng"} <= set(state)


@pytest.mark.slow
def test_bad_image_is_skipped_counted_and_named(tmp_path):
    table = make_table(tmp_path, bad=3)
    output = tmp_path / "run"
    cfg = load_config(pretrain.PretrainConfig, None, overrides(table, output, **{"data.kind": "table"}))
    with pytest.warns(UserWarning, match="img3.png: unreadable image"):
        pretrain.run(cfg)
    assert read_metrics(output)[-1]["skipped"] >= 1


def test_clear_errors_for_bad_data_and_config(tmp_path):
    with pytest.raises(DataError, match="nowhere.csv: table not found"):
        pretrain.run(load_config(pretrain.PretrainConfig, None, overrides(tmp_path / "nowhere.csv", tmp_path / "o")))
    empty = tmp_path / "empty.csv"
    empty.write_text("filepath,title\n")
    with pytest.raises(DataError, match="no rows"):
        pretrain.run(load_config(pretrain.PretrainConfig, None, overrides(empty, tmp_path / "o")))
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("path,caption\nx.png,a\n")
    with pytest.raises(DataError, match="needs columns 'filepath' and 'title'"):
        pretrain.run(load_config(pretrain.PretrainConfig, None, overrides(wrong, tmp_path / "o")))


@pytest.mark.slow
def test_webdataset_shards_stream_and_skip_corrupt_samples(tmp_path):
    rng = np.random.default_rng(1)
    for shard in range(2):
        with tarfile.open(tmp_path / f"{shard:06d}.tar", "w") as archive:
            for i in range(6):
                key = f"{shard:03d}{i:04d}"
                image = Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
                payload = {"jpg": _jpeg(image) if (shard, i) != (1, 2) else b"garbage",
                           "txt": f"a red circle number {i}".encode()}
                if (shard, i) == (0, 4):
                    payload = {"jpg": payload["jpg"], "json": json.dumps({"caption": "from json"}).encode()}
                for ext, data in payload.items():
                    _add(archive, f"{key}.{ext}", data)
    pattern = str(tmp_path / "{000000..000001}.tar")
    assert len(expand_braces(pattern)) == 2
    output = tmp_path / "run"
    cfg = load_config(pretrain.PretrainConfig, None, overrides(
        tmp_path / "unused", output, **{"model.name": "tiny", "data.kind": "webdataset", "data.path": pattern,
                                        "data.workers": 0,
                                        "train.batch_size": 4, "train.max_steps": 3}))
    with pytest.warns(UserWarning, match=r"000001.tar:0010002: undecodable image"):
        pretrain.run(cfg)
    metrics = read_metrics(output)
    assert [m["step"] for m in metrics] == [1, 2, 3] and metrics[-1]["skipped"] == 1


def test_expand_braces():
    assert expand_braces("s{00..02}.tar") == ["s00.tar", "s01.tar", "s02.tar"]
    assert expand_braces("{a,b}/x{1..2}") == ["a/x1", "a/x2", "b/x1", "b/x2"]
    assert expand_braces("one.tar::two.tar") == ["one.tar", "two.tar"]


def _jpeg(image: Image.Image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    return buffer.getvalue()


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    import io

    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


@pytest.mark.slow
def test_resume_with_other_settings_is_refused_and_the_same_settings_resume(tmp_path, capfd):
    """resume=auto into a pretraining run's output_dir: another optim.lr is a ConfigError naming it (nothing
    written); the same settings resume where the run stopped."""
    from coca_video.errors import ConfigError

    table = make_table(tmp_path)
    output = tmp_path / "run"
    pretrain.run(load_config(pretrain.PretrainConfig, None, overrides(table, output, **{"train.max_steps": 2})))
    before = (output / "config.json").read_text()
    with pytest.raises(ConfigError, match=r"optim\.lr 0\.0005 -> 0\.001.*another output_dir"):
        pretrain.run(load_config(pretrain.PretrainConfig, None, overrides(
            table, output, resume="auto", **{"train.max_steps": 2, "optim.lr": 1e-3})))
    assert (output / "config.json").read_text() == before
    capfd.readouterr()
    pretrain.run(load_config(pretrain.PretrainConfig, None, overrides(table, output, resume="auto",
                                                                      **{"train.max_steps": 2, "train.log_every": 2})))
    assert "resuming from step 2 of 2" in capfd.readouterr().err


@pytest.mark.slow
def test_validation_every_eval_every_steps_reads_held_out_pairs_as_training_reads_its_own(tmp_path):
    """data.val_path = the training table and one batch of it: the validation loss of the model as built is the
    first step's training loss (one batch through two paths); steps 2 and 4 validate; best.pt is the best step."""
    table = make_table(tmp_path)
    output = tmp_path / "run"
    result = pretrain.run(load_config(pretrain.PretrainConfig, None, overrides(table, output, **{
        "data.val_path": str(table), "eval.val_pairs": 8, "train.eval_every": 2})))
    records = read_metrics(output)
    assert result["val_loss_before"] == pytest.approx(records[0]["loss"], rel=1e-5)
    validated = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in validated] == [2, 4]
    best = min(validated, key=lambda r: r["val_loss"])
    assert (result["best_step"], result["best_val_loss"]) == (best["step"], best["val_loss"])
    assert torch.load(output / "checkpoints" / "best.pt", weights_only=True)["step"] == best["step"]
    assert "zero_shot_colour" not in best  # zero-shot reads the synthetic world: only for data.kind=synthetic
