"""Caption finetuning on the synthetic colour-change clips ("a small red square that turns blue"): after a short
finetune of the default model (encoder frozen, tokens cached) the held-out clips' captions name both colours, are
not one caption for every clip, and score a higher CIDEr-D than the zero-shot captions; the saved folder is what
``captioning --model`` and ``score --model`` load (their captions against ones generated here from the folder); a
resumed run ends with the straight run's weights; ``train.freeze`` decides what changes; ``temporal_embedding``
adds a table that starts at zero (no caption changes while it stays so), trains, resumes and captions from the folder
through ``captioning`` as here."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from coca_video import CoCa, create_model, get_tokenizer, image_transform
from coca_video.cli import main
from coca_video.config import load_config
from coca_video.data.synthetic import COLOURS, ColourChangeClips, write_colour_change_set
from coca_video.errors import ConfigError
from coca_video.tasks import captioning, finetune_captions, score
from coca_video.video import VideoReader, sample_indices
from coca_video.training import OptimConfig
from coca_video.training.optim import build_optimizer
from helpers import free_port, interrupt_at_step, tiny_config, without_key_bias

FRAMES = 4
TRAIN, TEST = 32, 10
FINETUNE = ["train.epochs=15", "train.batch_size=4", "optim.lr=1e-3", "optim.warmup_steps=4", "decode.workers=0",
            f"decode.num_frames={FRAMES}", "caption.source=all_frames"]


def finetune(tmp: Path, captions: Path, *overrides: str) -> dict:
    cfg = load_config(finetune_captions.FinetuneCaptionsConfig, None,
                      [f"source.captions={captions}", f"output_dir={tmp}", *FINETUNE, *overrides])
    return finetune_captions.run(cfg)


@contextlib.contextmanager
def without_java(folder: Path) -> Iterator[None]:
    """PATH without Java while captioning: METEOR's jar loads its paraphrase tables for ~14 CPU-seconds a run, and
    these tests compare captions and CIDEr-D, which then come from the PTB tokenizer's Python equal
    (tests/test_caption_metrics.py checks both against coco-caption)."""
    with pytest.MonkeyPatch.context() as patch:
        folder.mkdir(parents=True, exist_ok=True)
        patch.setenv("PATH", str(folder))
        yield


def caption_test_set(out: Path, test_csv: Path, model: str) -> dict:
    cfg = load_config(captioning.CaptioningConfig, None, [
        f"source.captions={test_csv}", f"out={out}", f"model.name={model}", "caption.source=all_frames",
        "caption.method=greedy", f"decode.num_frames={FRAMES}", "decode.workers=0", "report_videos=0"])
    with without_java(out.parent / "no_java"):
        return captioning.run(cfg)


def predictions(out: Path) -> dict[str, str]:
    with out.with_name(out.stem + "_predictions.csv").open(encoding="utf-8") as handle:
        return {row["video"]: row["caption"] for row in csv.DictReader(handle)}


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict:
    """The training and held-out colour-change clips and their captions CSVs."""
    root = tmp_path_factory.mktemp("caption_finetune")
    train_csv = write_colour_change_set(root / "train", TRAIN, "train", num_frames=FRAMES)
    test_csv = write_colour_change_set(root / "test", TEST, "test", num_frames=FRAMES)
    return {"root": root, "train_csv": train_csv, "test_csv": test_csv}


@pytest.fixture(scope="module")
def runs(clips) -> dict:
    """The clips, the zero-shot captions of the held-out ones, the finetune and its captions of them."""
    root, train_csv, test_csv = clips["root"], clips["train_csv"], clips["test_csv"]
    before = caption_test_set(root / "before" / "metrics.json", test_csv, "default")
    trained = finetune(root / "ft", train_csv, f"val.captions={test_csv}")  # all 32 train, the held-out validate
    after = caption_test_set(root / "after" / "metrics.json", test_csv, trained["model"])
    return {**clips, "before": before, "after": after, "trained": trained}


@pytest.mark.slow
def test_finetuned_captions_name_both_colours_differ_and_beat_zero_shot(runs):
    clips = ColourChangeClips(TEST, num_frames=FRAMES, split="test")
    captions = predictions(runs["root"] / "after" / "metrics.json")
    named = 0
    for i in range(TEST):
        scene, words = clips.scene(i), captions[str(runs["root"] / "test" / f"test{i:05d}.mp4")].split()
        named += scene.main.colour in words and scene.turns in words
    assert named >= 0.7 * TEST, captions
    assert len(set(captions.values())) >= TEST // 2, captions  # not one caption for every clip
    assert runs["after"]["cider"] > runs["before"]["cider"], (runs["before"]["cider"], runs["after"]["cider"])
    before = predictions(runs["root"] / "before" / "metrics.json")
    assert not any("turns" in text for text in before.values())  # zero-shot knows no colour change


def independent_caption(model_dir: str, video: Path, num_frames: int | None = FRAMES) -> str:
    """The greedy caption of a clip from all its frames' tokens, decoded and encoded here, from the folder (after
    its temporal embedding when it has one, unless ``num_frames`` is None)."""
    model, tokenizer = create_model(model_dir).eval(), get_tokenizer(model_dir)
    transform = image_transform(model)
    reader = VideoReader(str(video), short_side=transform.image_size)
    frames = transform.frames(reader.get_frames(sample_indices(reader.num_frames, FRAMES)))  # (T, 3, S, S)
    with torch.no_grad():
        tokens = model.image_encoder(frames).flatten(0, 1)[None]  # (1, T*N, C)
        ids = model.generate_from_tokens(tokens, method="greedy", max_len=30, num_frames=num_frames)
        return tokenizer.batch_decode(ids)[0]


@pytest.mark.slow
def test_captioning_and_score_load_the_saved_folder(runs, tmp_path):
    model_dir = runs["trained"]["model"]
    videos = [runs["root"] / "test" / f"test{i:05d}.mp4" for i in (0, 1)]
    captioned = predictions(runs["root"] / "after" / "metrics.json")
    cfg = load_config(score.ScoreConfig, None, [
        f"videos={runs['root'] / 'test'}", f"out={tmp_path / 'scores.parquet'}", f"model.name={model_dir}",
        "caption=true", "caption.method=greedy", "caption.source=all_frames", f"decode.num_frames={FRAMES}",
        "decode.workers=0"])
    score.run(cfg)
    table = pq.read_table(tmp_path / "scores.parquet", columns=["path", "caption"]).to_pylist()
    scored = {Path(row["path"]).name: row["caption"] for row in table}
    for video in videos:
        expected = independent_caption(model_dir, video)
        assert captioned[str(video)] == expected
        assert scored[video.name] == expected
    protocol = json.loads((Path(model_dir).parent / "metrics.json").read_text())["protocol"]
    assert protocol["frozen"] == ["image_encoder"] and protocol["encoder_tokens"] == "feature cache"


def first_pairs(runs: dict, path: Path, count: int, split: str = "train") -> Path:
    """A captions CSV of the first ``count`` training (or held-out: ``split="test"``) clips (absolute paths)."""
    with runs[f"{split}_csv"].open(encoding="utf-8") as handle:
        rows = list(csv.reader(handle))[:count + 1]
    path.write_text("\n".join(",".join([str(runs["root"] / split / r[0]) if i else r[0], r[1]])
                               for i, r in enumerate(rows)) + "\n")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("temporal", [False, True])
def test_resumed_run_ends_with_the_straight_runs_weights(clips, tmp_path, monkeypatch, temporal):
    subset = first_pairs(clips, tmp_path / "pairs.csv", 6)
    quick = ["train.epochs=2", "train.batch_size=4", "optim.ema=0.9", "train.accum_steps=2",  # batches of 4 and 2
             f"temporal_embedding={str(temporal).lower()}"]
    finetune(tmp_path / "straight", subset, *quick)
    interrupt_at_step(monkeypatch, 3)  # Ctrl-C in the second epoch: the first is checkpointed
    with pytest.raises(KeyboardInterrupt):
        finetune(tmp_path / "resumed", subset, *quick)
    monkeypatch.undo()
    finetune(tmp_path / "resumed", subset, "resume=auto", *quick)
    straight = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    resumed = load_file(tmp_path / "resumed" / "model" / "model.safetensors")
    assert straight.keys() == resumed.keys()
    assert ("frame_time.embedding" in straight) == temporal
    if temporal:  # it trained (with the poolers), and resumed with them
        assert straight["frame_time.embedding"].abs().max() > 0
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=0, msg=key)


def changed_groups(model_dir: str) -> set[str]:
    """Which of the model's top-level parts differ from the default model's weights."""
    trained = create_model(model_dir).state_dict()
    return {key.split(".")[0] for key, value in create_model("default").state_dict().items()
            if not torch.equal(value, trained[key])}


@pytest.mark.slow
def test_freeze_groups_decide_what_trains(runs, tmp_path):
    subset = first_pairs(runs, tmp_path / "pairs.csv", 4)
    assert changed_groups(runs["trained"]["model"]) == {"image_pooling", "text", "decoder"}
    frozen_text = finetune(tmp_path / "no_text", subset, "train.epochs=1", "train.freeze=[image_encoder,text]")
    assert changed_groups(frozen_text["model"]) == {"image_pooling", "decoder"}
    everything = finetune(tmp_path / "all", subset, "train.epochs=1", "train.freeze=[]")
    assert changed_groups(everything["model"]) == {"image_encoder", "image_pooling", "text", "decoder"}
    default = create_model("default").state_dict()
    trained = create_model(everything["model"]).state_dict()
    # the captioning loss alone: the contrastive pooler and the text CLS head are left as they were
    for key in [k for k in default if k.startswith(("image_pooling.contrastive_pool", "image_pooling.proj",
                                                   "text.cls_token", "text.proj", "logit_scale"))]:
        assert torch.equal(default[key], trained[key]), key


@pytest.mark.distributed
def test_two_processes_take_the_steps_of_one(runs, tmp_path):
    """Global batches of 5 split 3/2 between two ranks; the loss is the mean over the global batch's tokens, so the
    two-process run ends with the one-process run's weights."""
    subset = first_pairs(runs, tmp_path / "pairs.csv", 6)
    overrides = [f"source.captions={subset}", *FINETUNE, "train.epochs=2", "train.batch_size=5"]
    finetune(tmp_path / "one", subset, "train.epochs=2", "train.batch_size=5")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), "-m", "coca_video.cli", "finetune-captions",
           f"output_dir={tmp_path / 'two'}", *overrides]
    result = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    one = load_file(tmp_path / "one" / "model" / "model.safetensors")
    two = load_file(tmp_path / "two" / "model" / "model.safetensors")
    for key in one:
        torch.testing.assert_close(without_key_bias(key, two[key]), without_key_bias(key, one[key]), rtol=1e-4,
                                   atol=1e-5, msg=key)
    losses = [[json.loads(line)["train_loss"] for line in (tmp_path / run / "metrics.jsonl").open()]
              for run in ("one", "two")]
    assert len(losses[0]) == 2 and losses[0] == pytest.approx(losses[1], rel=1e-4)


def test_bad_freeze_group_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(ConfigError, match="freeze must name groups among"):
        load_config(finetune_captions.FinetuneCaptionsConfig, None, ["train.freeze=[encoder]"])
    code = main(["finetune-captions", "--captions", str(tmp_path / "none.csv"), "train.freeze=[poolers,text,decoder]"])
    assert code == 2
    assert "leave one of poolers, text, decoder to train" in capsys.readouterr().err


def test_colour_change_clip_takes_its_second_colour_from_the_middle_frame():
    clips = ColourChangeClips(4, size=64, num_frames=8, seed=1, split="test")
    for i in range(len(clips)):
        frames, text = clips[i]
        scene = clips.scene(i)
        assert scene.turns != scene.main.colour and scene.motion == "still" and scene.reference is None
        assert text == f"a {scene.main.size} {scene.main.colour} {scene.main.shape} that turns {scene.turns}"
        centre = frames[:, int(scene.main.y * 64), int(scene.main.x * 64)]  # (T, 3): the object's centre pixel
        expected = [COLOURS[scene.main.colour]] * 4 + [COLOURS[scene.turns]] * 4
        assert [tuple(int(v) for v in pixel) for pixel in centre] == expected


@pytest.mark.slow
def test_the_model_folder_captions_as_it_was_trained_unless_told_otherwise(runs, tmp_path, capsys):
    """The finetuned folder records its caption source, frames and sampling; captioning with none of them given
    uses them (the same captions as naming them), and an override that differs from training says so."""
    model = runs["trained"]["model"]
    recorded = json.loads((Path(model) / "config.json").read_text())["runs_with"]
    assert recorded["caption"]["source"] == "all_frames" and recorded["decode"]["num_frames"] == FRAMES
    capsys.readouterr()
    out = tmp_path / "plain" / "metrics.json"
    with without_java(tmp_path / "no_java"):
        captioning.run(load_config(captioning.CaptioningConfig, None, [
            f"source.captions={runs['test_csv']}", f"out={out}", f"model.name={model}", "caption.method=greedy",
            "decode.workers=0", "report_videos=0"]))
    err = capsys.readouterr().err
    assert "runs as its folder says (as it was trained): caption.source=all_frames, decode.num_frames=4" in err
    assert "warning: caption.method=greedy (its own: beam): set here" in err
    assert predictions(out) == predictions(runs["root"] / "after" / "metrics.json")
    with without_java(tmp_path / "no_java"):
        captioning.run(load_config(captioning.CaptioningConfig, None, [
            f"source.captions={runs['test_csv']}", f"out={tmp_path / 'other' / 'm.json'}", f"model.name={model}",
            "caption.method=greedy", "decode.num_frames=2", "decode.workers=0", "report_videos=0"]))
    assert "decode.num_frames=2 (its own: 4)" in capsys.readouterr().err


def test_temporal_embedding_with_the_middle_frame_is_a_one_line_error(tmp_path, capsys):
    code = main(["finetune-captions", "--captions", str(tmp_path / "none.csv"), "caption.source=middle_frame",
                 "temporal_embedding=true"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "temporal_embedding must be false with caption.source=middle_frame" in err[0]


def test_the_temporal_table_trains_with_the_poolers_at_its_lr_without_weight_decay():
    model = CoCa(tiny_config())
    table = model.add_frame_time(FRAMES).embedding
    finetune_captions.freeze_groups(model, ("image_encoder", "poolers"))
    assert not table.requires_grad and not model.image_pooling.generative_pool.query.requires_grad
    finetune_captions.freeze_groups(model, ("image_encoder",))
    trainee = finetune_captions.CaptionTrainee(model, False, FRAMES, "all_frames")
    assert any(param is table for param in trainee.parameters())  # what DDP, the EMA and checkpoints hold
    cfg = load_config(finetune_captions.FinetuneCaptionsConfig, None, ["temporal_lr_scale=50"])
    optimizer = build_optimizer(trainee, OptimConfig(lr=2e-4, weight_decay=0.1), finetune_captions.lr_scale(cfg))
    group = next(g for g in optimizer.param_groups if any(param is table for param in g["params"]))
    assert (group["lr"], group["weight_decay"]) == (pytest.approx(1e-2), 0.0)  # a position embedding: not decayed
    assert group["params"] == [table]


def model_weights(run: dict) -> dict[str, torch.Tensor]:
    return load_file(Path(run["model"]) / "model.safetensors")


@pytest.mark.slow
def test_a_zero_temporal_embedding_changes_no_weight_and_no_caption(clips, tmp_path):
    """Through the task: with the table held at zero (frozen with the poolers) a finetune with it ends with the
    weights of one without, and captioning its folder gives the same captions; and one step with the table
    training moves every other weight exactly as without it (its zero start changes no gradient; the clip
    threshold high, so the table's gradient does not rescale the others')."""
    subset = first_pairs(clips, tmp_path / "pairs.csv", 4)
    held_out = first_pairs(clips, tmp_path / "held_out.csv", 4, "test")
    frozen = ["train.epochs=1", "train.freeze=[image_encoder,poolers]"]
    plain = finetune(tmp_path / "plain", subset, *frozen)
    timed = finetune(tmp_path / "timed", subset, *frozen, "temporal_embedding=true")
    plain_weights, timed_weights = model_weights(plain), model_weights(timed)
    assert set(timed_weights) - set(plain_weights) == {"frame_time.embedding"}
    assert not timed_weights["frame_time.embedding"].any()
    for key, value in plain_weights.items():
        assert torch.equal(timed_weights[key], value), key
    assert json.loads((Path(timed["model"]) / "config.json").read_text())["model"]["temporal_frames"] == FRAMES
    caption_test_set(tmp_path / "p" / "m.json", held_out, plain["model"])
    plain_captions = predictions(tmp_path / "p" / "m.json")
    caption_test_set(tmp_path / "t" / "m.json", held_out, timed["model"])
    assert predictions(tmp_path / "t" / "m.json") == plain_captions

    one_step = ["train.max_steps=1", "optim.grad_clip=1e9"]
    plain_weights = model_weights(finetune(tmp_path / "plain1", subset, *one_step))
    timed_weights = model_weights(finetune(tmp_path / "timed1", subset, *one_step, "temporal_embedding=true"))
    assert timed_weights["frame_time.embedding"].abs().max() > 0
    for key, value in plain_weights.items():
        assert torch.equal(timed_weights[key], value), key


@pytest.mark.slow
def test_a_temporal_folder_captions_through_captioning_as_generated_here(clips, tmp_path):
    """A finetune with the temporal embedding saves it in the folder; ``coca-video captioning --model`` captions
    with it (as generated here from the folder with the clip's frame count), and it matters: without it some
    caption differs."""
    subset = first_pairs(clips, tmp_path / "pairs.csv", 8)
    model_dir = finetune(tmp_path / "ft", subset, "train.epochs=6", "optim.lr=3e-3", "temporal_embedding=true")["model"]
    protocol = json.loads((Path(model_dir).parent / "metrics.json").read_text())["protocol"]
    assert "trained with the poolers" in protocol["temporal_embedding"]
    out = tmp_path / "c" / "metrics.json"
    with without_java(tmp_path / "no_java"):
        assert main(["captioning", "--model", model_dir, "--captions", str(clips["test_csv"]), "--out", str(out),
                     "--caption-method", "greedy", "decode.workers=0", "report_videos=0"]) == 0
    captioned = predictions(out)
    videos = [clips["root"] / "test" / f"test{i:05d}.mp4" for i in range(TEST)]
    assert {str(v): independent_caption(model_dir, v) for v in videos} == captioned
    timeless = {str(v): independent_caption(model_dir, v, num_frames=None) for v in videos}
    assert timeless != captioned


@pytest.mark.slow
def test_validation_reads_the_pairs_training_reads_and_keeps_the_best_epoch(clips, tmp_path):
    """val= the training pairs, one batch an epoch: the validation loss of the model as loaded is the first step's
    training loss (the same captions through two paths), every epoch validates, and best.pt holds the best epoch."""
    subset = first_pairs(clips, tmp_path / "pairs.csv", 6)
    output = tmp_path / "run"
    result = finetune(output, subset, f"val.captions={subset}", "train.epochs=2", "train.batch_size=6",
                      "train.log_every=1")
    records = [json.loads(line) for line in (output / "metrics.jsonl").open()]
    first_step = next(r for r in records if r["step"] == 1 and "loss" in r)
    assert result["val_loss_before"] == pytest.approx(first_step["loss"], rel=1e-4)
    epochs = [r for r in records if "epoch" in r]
    assert [r["epoch"] for r in epochs] == [1, 2] and all(r["val_loss"] < result["val_loss_before"] for r in epochs)
    best = min(epochs, key=lambda r: r["val_loss"])
    assert (result["best_epoch"], result["best_val_loss"]) == (best["epoch"], best["val_loss"])
    kept = torch.load(output / "checkpoints" / "best.pt", weights_only=True)
    assert kept["step"] == best["step"]
    assert (output / "curves.png").is_file()


@pytest.mark.slow
def test_held_out_videos_validate_and_a_rerun_with_other_settings_is_refused(clips, tmp_path):
    subset = first_pairs(clips, tmp_path / "pairs.csv", 6)
    output = tmp_path / "run"
    finetune(output, subset, "val_holdout=0.34", "train.epochs=1")
    protocol = json.loads((output / "metrics.json").read_text())["protocol"]
    assert (protocol["train_videos"], protocol["validation"]["videos"]) == (4, 2)  # round(0.34 * 6) held out
    before = (output / "metrics.json").read_text()
    with pytest.raises(ConfigError, match=r"train\.epochs 1 -> 2.*another output_dir"):
        finetune(output, subset, "val_holdout=0.34", "train.epochs=2", "resume=auto")
    assert (output / "metrics.json").read_text() == before
