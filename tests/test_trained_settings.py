"""A model folder carries how it runs: settings recorded by save_pretrained(runs_with=...) fill the keys a command
leaves at their defaults, and a key set otherwise is kept and named in one line."""

from __future__ import annotations

import coca_video
from coca_video.config import load_config
from coca_video.model import save_pretrained, tokenizer_files
from coca_video.runtime import with_trained_settings
from coca_video.tasks.captioning import CaptioningConfig
from coca_video.tasks.score import ScoreConfig


def folder_with(tmp_path, runs_with):
    return str(save_pretrained(coca_video.create_model("default"), tmp_path / "model", tokenizer_files("default"),
                               runs_with=runs_with))


def test_recorded_settings_fill_defaults_and_an_override_is_kept_and_named(tmp_path, capsys):
    model = folder_with(tmp_path, {"caption": {"source": "all_frames", "method": "greedy"},
                                   "decode": {"num_frames": 8, "sampling": "linspace"}})
    cfg = with_trained_settings(load_config(CaptioningConfig, None, [f"model.name={model}"]), "captioning")
    assert (cfg.caption.source, cfg.caption.method, cfg.decode.num_frames, cfg.decode.sampling) == \
        ("all_frames", "greedy", 8, "linspace")
    assert "runs as its folder says" in capsys.readouterr().err
    cfg = with_trained_settings(load_config(CaptioningConfig, None, [f"model.name={model}", "decode.num_frames=4"]),
                                "captioning")
    assert cfg.decode.num_frames == 4 and cfg.caption.source == "all_frames"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "decode.num_frames=4 (its own: 8): set here" in err[1]


def test_score_keeps_captions_off_and_other_models_run_as_configured(tmp_path, capsys):
    model = folder_with(tmp_path, {"caption": {"source": "all_frames"}, "decode": {"num_frames": 8}})
    plain = with_trained_settings(load_config(ScoreConfig, None, ["videos=x", f"model.name={model}"]), "score")
    assert plain.caption is None and plain.decode.num_frames == 8  # frames apply, captions stay off
    captioned = with_trained_settings(load_config(ScoreConfig, None, ["videos=x", f"model.name={model}",
                                                                      "caption=true"]), "score")
    assert captioned.caption.source == "all_frames"
    default = load_config(ScoreConfig, None, ["videos=x"])
    capsys.readouterr()
    assert with_trained_settings(default, "score") == default and not capsys.readouterr().err
