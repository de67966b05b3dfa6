"""The command line explains itself: --help lists every config key of a command (type, default, description) and
valid examples, --print-config prints YAML that --config reads back, and a mistyped flag gets a "did you mean"."""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import subprocess
import sys

import pytest
import yaml
from helpers import REPO

from coca_video.cli import TASKS, main
from coca_video.config import CaptionConfig, auto_device_deferred, load_config, to_dict
from coca_video.tasks.score import ScoreConfig


def leaf_defaults(config: object, prefix: str = "") -> dict[str, object]:
    """Every leaf key of a dataclass instance, dotted, with its value (tuples as lists, as YAML gives them)."""
    leaves: dict[str, object] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            leaves.update(leaf_defaults(value, f"{prefix}{f.name}."))
        else:
            leaves[f"{prefix}{f.name}"] = list(value) if isinstance(value, tuple) else value
    return leaves


def help_text(command: str, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_help_lists_every_score_config_key_with_its_type_default_and_description(capsys):
    text = help_text("score", capsys)
    listed = {m["key"]: (m["type"], m["default"], m["help"]) for m in re.finditer(
        r"^  (?P<key>[\w.]+): (?P<type>.+?) = (?P<default>.*)\n      (?P<help>.+)$", text, re.MULTILINE)}
    with auto_device_deferred():  # help shows model.device's default as written: auto (found when a run starts)
        expected = leaf_defaults(ScoreConfig()) | leaf_defaults(CaptionConfig(), "caption.")
    assert expected["model.device"] == "auto"
    expected["caption"] = False  # a block that is off by default: its switch, then its keys as they are when on
    assert sorted(listed) == sorted(expected)
    for key, value in expected.items():
        _, default, description = listed[key]
        assert yaml.safe_load(default) == value, key
        assert description.strip(), key
    assert listed["top_k"][0] == "int" and listed["labels"][0] == "str | null"
    assert listed["video_pooling"][0] == "mean|attentional"
    assert listed["decode.timeout"][2] == (  # the field's own comment
        "decode time limit, s: this + 1 s per frame + 0.1 s per video second (null: none)")


@pytest.mark.parametrize("command", list(TASKS))
def test_every_config_key_of_every_command_has_a_description(command, capsys):
    text = help_text(command, capsys)
    keys = re.findall(r"^  ([\w.]+): .+ = .*$", text, re.MULTILINE)
    described = re.findall(r"^  ([\w.]+): .+ = .*\n      \S", text, re.MULTILINE)
    assert keys and keys == described


@pytest.mark.parametrize("command", list(TASKS))
def test_the_help_examples_are_valid_invocations(command, capsys, monkeypatch):
    monkeypatch.chdir(REPO)  # examples name the shipped configs/ files
    text = help_text(command, capsys)
    examples = re.findall(rf"^  coca-video {command} (.*)$", text, re.MULTILINE)
    assert examples
    for example in examples:
        assert main([command, *shlex.split(example), "--print-config"]) == 0, example
        assert yaml.safe_load(capsys.readouterr().out)


def test_print_config_is_yaml_that_config_reads_back_to_an_equal_config(tmp_path, capsys):
    overrides = ["top_k=3", "decode.num_frames=4", "decode.timeout=null", "segment_seconds=2.5", "labels=x.txt"]
    assert main(["score", "videos/", "--caption", *overrides, "--print-config"]) == 0
    printed = tmp_path / "resolved.yaml"
    printed.write_text(capsys.readouterr().out)
    expected = load_config(ScoreConfig, None, ["videos=videos/", "caption=true", *overrides])
    assert load_config(ScoreConfig, printed) == expected
    assert yaml.safe_load(printed.read_text()) == to_dict(expected)


@pytest.mark.parametrize("command", ["pretrain", "probe", "retrieval", "captioning"])
def test_print_config_round_trips_the_other_commands(command, tmp_path, capsys):
    assert main([command, "--print-config"]) == 0
    printed = tmp_path / "resolved.yaml"
    printed.write_text(capsys.readouterr().out)
    schema = TASKS[command].config_class()
    assert load_config(schema, printed) == schema()


def test_a_mistyped_flag_shows_the_commands_usage_and_the_closest_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["score", "videos/", "--lables", "classes.txt"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: coca-video score ")
    assert "--lables: did you mean --labels?" in err.splitlines()[-1]


def test_a_mistyped_flag_of_a_plain_command_gets_a_suggestion_too(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["search", "e.parquet", "red", "--kk", "3"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: coca-video search ") and "did you mean -k?" in err


def test_models_lists_every_architecture_with_its_size_and_pretrained_tags(capsys):
    """`coca-video models --json`: the names of list_models(), each tag of list_pretrained() under its architecture,
    and parameter counts equal to the built models' (open_clip's own count for coca_ViT-B-32 where installed)."""
    import torch

    from coca_video.model import create_model, list_models, list_pretrained

    assert main(["models", "--json"]) == 0
    records = {r["model"]: r for r in json.loads(capsys.readouterr().out)}
    assert sorted(records) == list_models()
    assert sorted((name, tag) for name, r in records.items() for tag in r["pretrained"]) == list_pretrained()
    for name in ("default", "tiny"):
        assert records[name]["parameters"] == sum(p.numel() for p in create_model(name).parameters())
    assert records["default"]["built_in_weights"] and not records["coca_ViT-B-32"]["built_in_weights"]
    open_clip = pytest.importorskip("open_clip")
    with torch.device("meta"):
        reference = open_clip.create_model("coca_ViT-B-32", device="meta")
    assert records["coca_ViT-B-32"]["parameters"] == sum(p.numel() for p in reference.parameters())
    assert main(["models"]) == 0 and "laion2b_s13b_b90k" in capsys.readouterr().out


HELPS = [[command, "--help"] for command in ("probe", "score", "retrieval", "captioning", "dedup", "finetune-captions",
                                              "pretrain", "zeroshot", "serve", "videoqa")]
CONFIG_ERRORS = [["score", "x.mp4", "decode.num_frame=8"], ["probe", "train.epoch=3"],
                 ["score", "x.mp4", "decode.num_frames=0"], ["pretrain", "train.max_step=3"],
                 ["finetune-captions", "train.freeze=[bogus]"], ["zeroshot", "out=x.txt"],
                 ["serve", "e.parquet", "port=70000"], ["videoqa", "qa.num_answer=10"]]
HEAVY = ("torch", "fastapi", "uvicorn")  # what --help and a config error must answer without


def test_a_commands_help_and_a_config_error_do_not_import_torch():
    """``coca-video probe --help`` and a mistyped or bad key answer before torch (or serve's FastAPI) loads (seconds
    on a small machine): each argv runs through ``main`` in a fresh interpreter, which then reports what of
    :data:`HEAVY` was imported."""
    probe = ("import json, sys\nfrom coca_video.cli import main\nseen = []\n"
             f"for argv in {HELPS + CONFIG_ERRORS!r}:\n"
             "    try:\n        code = main(argv)\n    except SystemExit as stop:\n        code = stop.code\n"
             f"    seen.append([argv, code, [m for m in {HEAVY!r} if m in sys.modules]])\n"
             "print(json.dumps(seen))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert [code for _, code, _ in seen] == [0] * len(HELPS) + [2] * len(CONFIG_ERRORS)  # one-line config errors
    assert [heavy for _, _, heavy in seen] == [[]] * len(seen), seen
    assert "decode.num_frames must be >= 1, got 0" in done.stderr and "Did you mean: train.epochs" in done.stderr
    assert "Did you mean: train.max_steps" in done.stderr and "port must be 0-65535, got 70000" in done.stderr
    assert "Did you mean: qa.num_answers" in done.stderr
