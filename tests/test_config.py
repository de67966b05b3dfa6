"""Strict config loading: unknown keys, typos, bad types and values all name the file and the key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pytest

from coca_video.config import ConfigError, load_config


@dataclass
class Optim:
    lr: float = 1e-3
    steps: int = 10


@dataclass
class Job:
    name: str = "job"
    mode: Literal["frozen", "finetune"] = "frozen"
    resume: str | None = None
    crops: tuple[int, ...] = (1,)
    optim: Optim = field(default_factory=Optim)


def write(tmp_path, text):
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


def test_yaml_then_overrides(tmp_path):
    path = write(tmp_path, "mode: finetune\noptim:\n  lr: 5.0e-4\n")
    cfg = load_config(Job, path, ["optim.steps=20", "resume=auto", "crops=[1, 3]"])
    assert cfg == Job(mode="finetune", resume="auto", crops=(1, 3), optim=Optim(lr=5e-4, steps=20))


def test_unknown_key_in_file_names_file_and_suggests(tmp_path):
    path = write(tmp_path, "optim:\n  stps: 3\n")
    with pytest.raises(ConfigError, match=r"job\.yaml: unknown key 'optim\.stps' for Optim\. Did you mean: optim\.steps"):
        load_config(Job, path)


def test_typo_on_command_line():
    with pytest.raises(ConfigError, match=r"command line: unknown key 'optim\.lrr'"):
        load_config(Job, None, ["optim.lrr=1"])


def test_bad_types_and_literals():
    with pytest.raises(ConfigError, match=r"optim\.steps must be int, got 'abc'"):
        load_config(Job, None, ["optim.steps=abc"])
    with pytest.raises(ConfigError, match=r"mode must be one of \['frozen', 'finetune'\]"):
        load_config(Job, None, ["mode=linear"])
    with pytest.raises(ConfigError, match="not of the form key=value"):
        load_config(Job, None, ["mode"])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="absent.yaml: config file not found"):
        load_config(Job, tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(Job, write(tmp_path, "- 1\n- 2\n"))


def test_value_checks_of_the_shared_blocks_name_the_dotted_path_and_file(tmp_path):
    from coca_video.config import DecodeConfig, ModelConfig
    from coca_video.tasks.probe import ProbeConfig
    from coca_video.tasks.score import ScoreConfig

    path = tmp_path / "probe.yaml"
    path.write_text("decode:\n  num_frames: 0\n")
    with pytest.raises(ConfigError, match=r"^.*probe\.yaml: decode\.num_frames must be >= 1, got 0$"):
        load_config(ProbeConfig, path)
    with pytest.raises(ConfigError, match=r"probe\.yaml \+ command line: train\.epochs must be >= 1 or null .*, got 0"):
        load_config(ProbeConfig, path, ["decode.num_frames=4", "train.epochs=0"])
    with pytest.raises(ConfigError, match=r"drop_path must be 0 unless mode=finetune .*, got 0\.1$"):
        load_config(ProbeConfig, None, ["drop_path=0.1"])
    with pytest.raises(ConfigError, match=r"drop_path must be in \[0, 1\), got 1\.0$"):
        load_config(ProbeConfig, None, ["mode=finetune", "drop_path=1"])
    with pytest.raises(ConfigError, match=r"^defaults \+ command line: report must be a path ending in \.html"):
        load_config(ScoreConfig, None, ["report=r.htm"])
    # the Python API checks the same values (the key relative to the block), and defaults stay valid
    with pytest.raises(ConfigError, match=r"^timeout must be > 0 seconds, or null for no limit, got -1$"):
        DecodeConfig(timeout=-1)
    with pytest.raises(ConfigError, match=r"^device must be one of cpu, cuda, cuda:N, mps, auto, got 'gpu'$"):
        ModelConfig(device="gpu")
    assert DecodeConfig(timeout=None, workers=0).timeout is None and ScoreConfig().top_k == 5


def test_device_auto_resolves_to_the_best_device_here_which_is_cpu(monkeypatch):
    import torch

    from coca_video.config import ModelConfig, resolve_device
    from coca_video.runtime import load_model
    from coca_video.tasks.score import ScoreConfig

    assert not torch.cuda.is_available() and not torch.backends.mps.is_available()  # this machine: CPU only
    assert load_config(ScoreConfig, None, ["model.device=auto"]).model.device == "cpu"
    assert next(load_model(ModelConfig(device="auto")).parameters()).device.type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda" and resolve_device("cuda:1") == "cuda:1"


def test_decode_device_is_checked_where_the_config_is_read():
    """decode.device: cpu or cuda[:N], with a backend that can decode on a GPU, a CUDA device that exists, and the
    time-limited helper when workers decode (a forked worker cannot start CUDA); each mistake is one ConfigError."""
    import torch

    from coca_video.config import DecodeConfig, load_config
    from coca_video.errors import ConfigError
    from coca_video.tasks.score import ScoreConfig

    assert DecodeConfig().device == "cpu"
    with pytest.raises(ConfigError, match="decode.device must be cpu, cuda or cuda:N, got 'gpu'"):
        load_config(ScoreConfig, None, ["decode.device=gpu"])
    with pytest.raises(ConfigError, match="decode.backend must be auto or torchcodec to decode on cuda"):
        load_config(ScoreConfig, None, ["decode.device=cuda", "decode.backend=decord"])
    with pytest.raises(ConfigError, match="decode.timeout must be set to decode on a GPU with workers"):
        load_config(ScoreConfig, None, ["decode.device=cuda", "decode.timeout=null"])
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device on this machine"):
            load_config(ScoreConfig, None, ["decode.device=cuda:0"])


def test_torchcodec_without_ffmpeg_is_refused_in_one_line_when_the_config_is_read(monkeypatch):
    """torchcodec imports without FFmpeg and fails only when it decodes: the decode block asks its core library
    (faked absent here) and refuses in one line naming the fix, before any row could carry a loader traceback."""
    from coca_video.config import load_config
    from coca_video.errors import ConfigError
    from coca_video.tasks import score
    from coca_video.video import torchcodec_frames

    missing = "torchcodec cannot load FFmpeg's shared libraries (it needs FFmpeg 4-9: apt-get install ffmpeg)"
    monkeypatch.setattr(torchcodec_frames, "torchcodec_problem", lambda: missing)
    with pytest.raises(ConfigError, match="decode.backend=torchcodec: torchcodec cannot load FFmpeg") as err:
        load_config(score.ScoreConfig, None, ["decode.backend=torchcodec"])
    assert "\n" not in str(err.value) and "apt-get install ffmpeg" in str(err.value)
    load_config(score.ScoreConfig, None, ["decode.backend=pyav"])  # other backends never ask


def test_the_torchcodec_probe_agrees_with_a_real_decode(tmp_path):
    """The package's check is the truth: when it says torchcodec works, a clip decodes through it; when it names a
    problem, decoding fails (both checked on whatever this machine has)."""
    from coca_video.video import VideoDecodeError, VideoReader, write_video
    from coca_video.video.torchcodec_frames import torchcodec_problem

    pytest.importorskip("torchcodec")  # installed by make test; the question is whether FFmpeg loads
    clip = tmp_path / "c.mp4"
    write_video(clip, np.zeros((4, 32, 32, 3), np.uint8), fps=4)
    if torchcodec_problem() is None:
        assert VideoReader(clip, backend="pyav").get_frames([0]).shape == (1, 32, 32, 3)
        assert VideoReader(clip, backend="torchcodec").get_frames([0]).shape == (1, 32, 32, 3)
    else:
        with pytest.raises((ValueError, VideoDecodeError), match="FFmpeg"):
            VideoReader(clip, backend="torchcodec").get_frames([0])


def test_the_model_runs_on_a_gpu_when_there_is_one_unless_told():
    import torch

    from coca_video.config import ModelConfig

    gpu = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert ModelConfig().device == gpu  # auto, resolved once when the config is read
    assert ModelConfig(device="cpu").device == "cpu"
    assert load_config(ModelConfig, None, ["device=auto"]).device == gpu
