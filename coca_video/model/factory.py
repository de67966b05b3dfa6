"""Models by name: architectures, pretrained tags, checkpoint folders, and the tokenizer that goes with each.

Sources ``create_model`` understands:
  - a named architecture (``list_models()``; YAML files in ``configs/``), optionally with ``pretrained=``:
    an open_clip checkpoint file (``open_clip_pytorch_model.bin`` read with ``torch.load(weights_only=True)``,
    ``open_clip_model.safetensors``, a ``{"state_dict": ...}`` wrapper, ``module.`` prefixes), a folder holding one,
    a coca-video checkpoint folder, ``hf-hub:<repo>``, or an open_clip pretrained tag (``laion2b_s13b_b90k``,
    ``list_pretrained()``);
  - a coca-video checkpoint folder (``config.json`` + ``model.safetensors`` + tokenizer files) or ``hf-hub:<repo>``;
  - ``default``: the tiny model shipped with the package, trained on the synthetic world.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable

import torch

from ..config import from_dict, read_yaml
from ..errors import CheckpointError, ConfigError
from .coca import CoCa
from .config import CoCaConfig
from .precision import Precision, apply_precision
from .state_dict import CONFIG_FILE, OPEN_CLIP_FILES, WEIGHTS_FILE, load_weights

CONFIG_DIR = Path(__file__).parent / "configs"
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "default"
TEMPLATES_FILE = "prompt_templates.txt"
HF_PREFIX = "hf-hub:"
logger = logging.getLogger(__name__)
OPEN_CLIP_PRETRAINED = {  # open_clip 3.3.0 pretrained tags -> Hugging Face repos
    ("coca_ViT-B-32", "laion2b_s13b_b90k"): "laion/CoCa-ViT-B-32-laion2B-s13B-b90k",
    ("coca_ViT-B-32", "mscoco_finetuned_laion2b_s13b_b90k"): "laion/mscoco_finetuned_CoCa-ViT-B-32-laion2B-s13B-b90k",
    ("coca_ViT-L-14", "laion2b_s13b_b90k"): "laion/CoCa-ViT-L-14-laion2B-s13B-b90k",
    ("coca_ViT-L-14", "mscoco_finetuned_laion2b_s13b_b90k"): "laion/mscoco_finetuned_CoCa-ViT-L-14-laion2B-s13B-b90k",
}


PAPER_SIZES = {  # Yu et al. 2022, Table 1: image encoder / text decoder / total parameters (the poolers in neither)
    "coca_base": {"encoder": 86_000_000, "decoder": 297_000_000, "total": 383_000_000},
    "coca_large": {"encoder": 303_000_000, "decoder": 484_000_000, "total": 787_000_000},
}


def list_models() -> list[str]:
    """Named architectures (``create_model(name)``), plus ``default``, the shipped pretrained tiny model."""
    return sorted([p.stem for p in CONFIG_DIR.glob("*.yaml")] + ["default"])


def list_pretrained() -> list[tuple[str, str]]:
    """(architecture, pretrained tag) pairs ``create_model(name, pretrained=tag)`` knows, as open_clip's function."""
    return sorted(OPEN_CLIP_PRETRAINED)


def parameter_counts(cfg: CoCaConfig) -> dict[str, int]:
    """Parameters of the model ``cfg`` builds, counted on the meta device (nothing allocated), split as the paper's
    Table 1 splits them: ``encoder`` (the ViT), ``decoder`` (unimodal + multimodal text layers, token and position
    embeddings, output head), ``poolers`` (the attentional poolers, in neither of Table 1's columns) and ``total``.
    A pure function of the config, so remembered per config (initialising a large model on meta takes seconds)."""
    return dict(_parameter_counts(json.dumps(dataclasses.asdict(cfg), sort_keys=True)))


@functools.lru_cache(maxsize=32)
def _parameter_counts(cfg_json: str) -> tuple[tuple[str, int], ...]:
    cfg = from_dict(CoCaConfig, json.loads(cfg_json), "parameter_counts")
    with torch.device("meta"):
        model = CoCa(cfg)

    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    decoder = count(model.text) + count(model.decoder) + (count(model.caption_head) if model.caption_head else 0)
    return (("encoder", count(model.image_encoder)), ("decoder", decoder), ("poolers", count(model.image_pooling)),
            ("total", count(model)))


def describe_models() -> list[dict]:
    """One record per :func:`list_models` name: parameter counts (:func:`parameter_counts`) and, for the paper's
    models, Table 1's (``paper``), image size, embedding width, and the pretrained tags ``--pretrained`` accepts with
    the Hub repo behind each (``default`` carries its own weights)."""
    tags: dict[str, dict[str, str]] = {}
    for (name, tag), repo in sorted(OPEN_CLIP_PRETRAINED.items()):
        tags.setdefault(name, {})[tag] = f"{HF_PREFIX}{repo}"
    records = []
    for name in list_models():
        cfg = get_model_config(name)
        counts = parameter_counts(cfg)
        records.append({"model": name, "parameters": counts["total"], "counts": counts,
                        "paper": PAPER_SIZES.get(name), "image_size": cfg.vision.image_size,
                        "embed_dim": cfg.embed_dim, "pretrained": tags.get(name, {}),
                        "built_in_weights": checkpoint_folder(name) is not None})
    return records


def get_model_config(name: str) -> CoCaConfig:
    """The :class:`CoCaConfig` of a named architecture, a checkpoint folder, or ``default``."""
    folder = checkpoint_folder(name)
    if folder is not None:
        return read_config_json(folder / CONFIG_FILE)
    path = CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        raise CheckpointError(f"unknown model {name!r}: not a checkpoint folder, and not one of "
                              f"{', '.join(list_models())}")
    return from_dict(CoCaConfig, read_yaml(path), str(path))


def runs_with(name: str) -> dict[str, dict[str, Any]]:
    """The settings a checkpoint folder's model was trained to run with (``save_pretrained(runs_with=...)``: e.g.
    caption finetuning's ``caption`` and ``decode`` blocks); empty for other models and older folders."""
    folder = checkpoint_folder(name) if not name.startswith(HF_PREFIX) else None
    path = folder / CONFIG_FILE if folder is not None else None
    if path is None or not path.is_file():
        return {}
    try:
        settings = json.loads(path.read_text()).get("runs_with", {})
    except (ValueError, UnicodeDecodeError, AttributeError):
        return {}  # read_config_json names a malformed file when the model loads
    return {block: keys for block, keys in settings.items() if isinstance(keys, dict)} \
        if isinstance(settings, dict) else {}


def read_config_json(path: Path) -> CoCaConfig:
    """The model config of a checkpoint folder's ``config.json``; a missing or malformed file names itself."""
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (a coca-video checkpoint folder holds {CONFIG_FILE} and "
                              f"{WEIGHTS_FILE})")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object with a 'model' entry, got {type(data).__name__}")
    try:
        return from_dict(CoCaConfig, data.get("model", data), str(path))
    except ConfigError as err:
        raise CheckpointError(str(err)) from None


def checkpoint_folder(name: str) -> Path | None:
    """The local folder behind ``name`` if it names a coca-video checkpoint (``default``, a path, ``hf-hub:``)."""
    if name == "default":
        return DEFAULT_MODEL_DIR
    if name.startswith(HF_PREFIX):
        return download_hf_snapshot(name[len(HF_PREFIX):])
    path = Path(name).expanduser()
    return path if path.is_dir() else None


def download_hf_snapshot(repo_id: str) -> Path:
    """A local snapshot of a Hugging Face Hub repo (from the cache when offline), weights and configs only."""
    from huggingface_hub import snapshot_download

    patterns = [*OPEN_CLIP_FILES, CONFIG_FILE, WEIGHTS_FILE, "tokenizer.json", "*.txt.gz", "open_clip_config.json",
                TEMPLATES_FILE]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as err:  # noqa: BLE001 -- network, auth, missing repo: say which repo and why
        raise CheckpointError(f"hf-hub:{repo_id}: could not fetch the snapshot ({type(err).__name__}: {err})") from err


def create_model(
    name: str = "default", pretrained: str | os.PathLike | None = None, device: str | torch.device | None = None,
    precision: Precision = "fp32",
    image_size: int | None = None,
) -> CoCa:
    """Build a CoCa model by architecture name or checkpoint folder, optionally loading ``pretrained`` weights,
    computing in ``precision`` (``fp32``, ``bf16`` weights, ``int8`` Linear layers on the CPU, or ``auto``: the
    fastest here that passes the fidelity gates; see :mod:`coca_video.model.precision`).

    ``image_size``: run at another resolution than the model's own (its position embeddings resampled, see
    :func:`set_image_size`). Returns the model in eval mode. See the module docstring for the accepted sources.
    """
    folder = checkpoint_folder(name)
    model = CoCa(get_model_config(name))
    if folder is not None and pretrained is None:
        load_weights(model, folder)
        model.checkpoint = folder
    elif pretrained is not None:
        load_weights(model, resolve_pretrained(name, str(pretrained)))
    if image_size is not None and image_size != model.cfg.vision.image_size:
        set_image_size(model, image_size, name)
    model = model.to(device).eval() if device is not None else model.eval()
    return apply_precision(model, precision)


def set_image_size(model: CoCa, image_size: int, name: str = "model") -> None:
    """Make ``model`` take ``image_size`` images: the ViT's learned positions resampled bicubically from the
    trained patch grid to the new one (class token kept), the config (and so ``image_transform``) updated."""
    old = model.cfg.vision.image_size
    try:
        model.image_encoder.set_image_size(image_size)
    except ValueError as err:
        raise ConfigError(f"model.image_size={image_size}: {err}") from None
    model.cfg = dataclasses.replace(model.cfg, vision=model.image_encoder.cfg)
    patch = model.cfg.vision.patch_size
    logger.warning("%s: position embeddings resampled from %dx%d to %dx%d patches for %d px images (trained at %d px)",
                   name, old // patch, old // patch, image_size // patch, image_size // patch, image_size, old)


def resolve_pretrained(name: str, pretrained: str) -> Path:
    """A local file or folder for ``pretrained``: a path, ``hf-hub:<repo>`` or an open_clip tag."""
    if pretrained.startswith(HF_PREFIX):
        return download_hf_snapshot(pretrained[len(HF_PREFIX):])
    path = Path(pretrained).expanduser()
    if path.exists():
        return path
    tag = pretrained.lower().replace("-", "_")
    if (name, tag) in OPEN_CLIP_PRETRAINED:
        return download_hf_snapshot(OPEN_CLIP_PRETRAINED[(name, tag)])
    raise CheckpointError(f"{pretrained}: no such file or folder, and not a pretrained tag known for {name!r}")


def get_tokenizer(name: str = "default") -> Callable:
    """The tokenizer that goes with ``create_model(name)``: open_clip's CLIP BPE or the checkpoint's own files."""
    from ..tokenizer import ClipBpeTokenizer, load_tokenizer

    cfg = get_model_config(name)
    folder = checkpoint_folder(name)
    if folder is not None:
        return load_tokenizer(folder, cfg.text.context_length)
    if cfg.tokenizer != "clip_bpe":
        raise CheckpointError(f"model {name!r} uses a tokenizer.json that only ships inside a checkpoint folder")
    return ClipBpeTokenizer(context_length=cfg.text.context_length)


def tokenizer_files(name: str) -> list[Path]:
    """The files that carry ``name``'s tokenizer (and its own prompt templates), to ship beside its weights."""
    from ..tokenizer import default_bpe_path

    folder = checkpoint_folder(name)
    if folder is None:
        return [default_bpe_path()] if get_model_config(name).tokenizer == "clip_bpe" else []
    keep = ("tokenizer.json", TEMPLATES_FILE)
    return sorted(p for p in folder.iterdir() if p.name in keep or p.name.endswith(".txt.gz"))
