"""Creating models by name or path, and reading/writing weights.

Sources ``create_model`` understands:
  - a named architecture (``list_models()``; YAML files in ``configs/``), optionally with ``pretrained=``:
    an open_clip checkpoint file (``open_clip_pytorch_model.bin`` read with ``torch.load(weights_only=True)``,
    ``open_clip_model.safetensors``, a ``{"state_dict": ...}`` wrapper, ``module.`` prefixes), a folder holding one,
    a coca-video checkpoint folder, ``hf-hub:<repo>``, or an open_clip pretrained tag (``laion2b_s13b_b90k``);
  - a coca-video checkpoint folder (``config.json`` + ``model.safetensors`` + tokenizer files) or ``hf-hub:<repo>``;
  - ``default``: the tiny model shipped with the package, trained on the synthetic world.
Weights always load strictly; a mismatch names the file and the first differing keys and shapes. Nothing unpickles
arbitrary objects.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from ..config import ConfigError, from_dict, read_yaml, to_dict
from .coca import CoCa
from .video_classifier import VideoClassifier
from .config import CoCaConfig

CONFIG_DIR = Path(__file__).parent / "configs"
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "default"
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
TEMPLATES_FILE = "prompt_templates.txt"
OPEN_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
HF_PREFIX = "hf-hub:"
OPEN_CLIP_PRETRAINED = {  # open_clip 3.3.0 pretrained tags -> Hugging Face repos
    ("coca_ViT-B-32", "laion2b_s13b_b90k"): "laion/CoCa-ViT-B-32-laion2B-s13B-b90k",
    ("coca_ViT-B-32", "mscoco_finetuned_laion2b_s13b_b90k"): "laion/mscoco_finetuned_CoCa-ViT-B-32-laion2B-s13B-b90k",
    ("coca_ViT-L-14", "laion2b_s13b_b90k"): "laion/CoCa-ViT-L-14-laion2B-s13B-b90k",
    ("coca_ViT-L-14", "mscoco_finetuned_laion2b_s13b_b90k"): "laion/mscoco_finetuned_CoCa-ViT-L-14-laion2B-s13B-b90k",
}


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, or does not fit the model; the message names the file."""


# -- names and configs ------------------------------------------------------------------------------------------------
def list_models() -> list[str]:
    """Named architectures (``create_model(name)``), plus ``default``, the shipped pretrained tiny model."""
    return sorted([p.stem for p in CONFIG_DIR.glob("*.yaml")] + ["default"])


def get_model_config(name: str) -> CoCaConfig:
    """The :class:`CoCaConfig` of a named architecture, a checkpoint folder, or ``default``."""
    folder = checkpoint_folder(name)
    if folder is not None:
        return read_config_json(folder / CONFIG_FILE)
    path = CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown model {name!r}: not a checkpoint folder, and not one of {', '.join(list_models())}")
    return from_dict(CoCaConfig, read_yaml(path), str(path))


def read_config_json(path: Path) -> CoCaConfig:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (a coca-video checkpoint folder holds {CONFIG_FILE} and "
                              f"{WEIGHTS_FILE})")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: not valid JSON: {err}") from None
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
    except Exception as err:  # network, auth, missing repo: say which repo and why
        raise CheckpointError(f"hf-hub:{repo_id}: could not fetch the snapshot ({type(err).__name__}: {err})") from err


# -- create ----------------------------------------------------------------------------------------------------------
def create_model(
    name: str = "default", pretrained: str | os.PathLike | None = None, device: str | torch.device | None = None
) -> CoCa:
    """Build a CoCa model by architecture name or checkpoint folder, optionally loading ``pretrained`` weights.

    Returns the model in eval mode. See the module docstring for the accepted sources.
    """
    folder = checkpoint_folder(name)
    model = CoCa(get_model_config(name))
    if folder is not None and pretrained is None:
        load_weights(model, folder)
    elif pretrained is not None:
        load_weights(model, resolve_pretrained(name, str(pretrained)))
    return model.to(device).eval() if device is not None else model.eval()


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


def load_weights(model: CoCa, source: str | os.PathLike) -> CoCa:
    """Strictly load a checkpoint file or folder (ours or open_clip's) into ``model``."""
    path = weights_file(Path(source))
    state_dict = read_state_dict(path)
    if is_open_clip_state_dict(state_dict):
        state_dict = convert_open_clip_state_dict(state_dict, model.cfg, path)
    load_strict(model, state_dict, path)
    return model


def weights_file(path: Path) -> Path:
    """The weights file inside a checkpoint folder (ours first, then open_clip's), or ``path`` itself."""
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    if path.is_file():
        return path
    for candidate in (WEIGHTS_FILE, *OPEN_CLIP_FILES):
        if (path / candidate).is_file():
            return path / candidate
    raise CheckpointError(f"{path}: folder holds none of {WEIGHTS_FILE}, {', '.join(OPEN_CLIP_FILES)}")


# -- reading and writing -----------------------------------------------------------------------------------------------
def read_state_dict(path: Path) -> dict[str, Tensor]:
    """Tensors of a ``.safetensors`` or torch file (``weights_only``), unwrapped and without DDP/compile prefixes."""
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: file is empty")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path}: unreadable or truncated checkpoint ({type(err).__name__}: {err})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors")
    return {re.sub(r"^(module\.|_orig_mod\.)+", "", key): value for key, value in state.items()}


def load_strict(model: CoCa, state_dict: dict[str, Tensor], path: Path) -> None:
    """``load_state_dict(strict=True)`` with an error naming ``path`` and the first mismatched keys and shapes."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
             for k, v in expected.items() if k in state_dict and state_dict[k].shape != v.shape]
    if missing or unexpected or wrong:
        groups = (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
        parts = [f"{label} ({len(items)}): {', '.join(items[:5])}{' ...' if len(items) > 5 else ''}"
                 for label, items in groups if items]
        raise CheckpointError(f"{path}: does not fit this architecture; " + "; ".join(parts))
    model.load_state_dict(state_dict, strict=True)


def save_pretrained(model: CoCa, folder: str | os.PathLike, extra_files: list[Path] | None = None) -> Path:
    """Write a coca-video checkpoint folder atomically: config.json, model.safetensors, and ``extra_files`` copied
    beside them (the tokenizer's files; optionally ``prompt_templates.txt``, the model's own zero-shot prompts)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(staging / WEIGHTS_FILE), metadata={"format": "pt"})
    (staging / CONFIG_FILE).write_text(json.dumps({"model": to_dict(model.cfg)}, indent=2) + "\n")
    for file in extra_files or []:
        shutil.copy2(file, staging / Path(file).name)
    if folder.exists():
        shutil.rmtree(folder)
    staging.rename(folder)
    return folder


# -- action-recognition probes ----------------------------------------------------------------------------------------
PROBE_FILE, PROBE_WEIGHTS = "probe.json", "classifier.safetensors"


def save_probe(folder: str | os.PathLike, classifier: VideoClassifier, classes: list[str], backbone: str,
               pretrained: str | None, num_frames: int, finetuned: CoCa | None = None) -> Path:
    """A trained probe: ``probe.json`` (classes, backbone, sampling), ``classifier.safetensors``, and for a finetuned
    encoder the whole model as a checkpoint folder ``model/`` (with the backbone's tokenizer files)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if finetuned is not None:
        source = checkpoint_folder(backbone)
        keep = ("tokenizer.json", TEMPLATES_FILE)
        tokenizer_files = [p for p in (source.iterdir() if source else [])
                           if p.name in keep or p.name.endswith(".txt.gz")]
        save_pretrained(finetuned, folder / "model", tokenizer_files)
        backbone, pretrained = "model", None
    state = {k: v.detach().cpu().contiguous() for k, v in classifier.state_dict().items()}
    save_file(state, str(folder / PROBE_WEIGHTS))
    meta = {"classes": classes, "backbone": backbone, "pretrained": pretrained, "num_frames": num_frames,
            "heads": classifier.pool.attn.heads, "temporal_pos_embed": classifier.temporal_pos is not None,
            "spatial_pos_embed": classifier.spatial_pos is not None, "tokens_per_frame": classifier.tokens_per_frame,
            "width": classifier.head.in_features}
    from ..data.results import atomic_write_text

    atomic_write_text(folder / PROBE_FILE, json.dumps(meta, indent=2) + "\n")
    return folder


def load_probe(folder: str | os.PathLike) -> tuple[VideoClassifier, dict]:
    """The classifier of a probe folder (strictly loaded) and its ``probe.json``; ``meta["backbone"]`` is resolved
    to a model name or folder usable with :func:`create_model`."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / PROBE_FILE).is_file():
        raise CheckpointError(f"{folder}: not a probe folder (no {PROBE_FILE}; the probe writes output_dir/probe)")
    meta = json.loads((folder / PROBE_FILE).read_text())
    classifier = VideoClassifier(meta["width"], len(meta["classes"]), meta["heads"], meta["num_frames"],
                                 tokens_per_frame=meta.get("tokens_per_frame", 0),
                                 temporal_pos_embed=meta["temporal_pos_embed"],
                                 spatial_pos_embed=meta.get("spatial_pos_embed", False))
    load_strict(classifier, load_file(str(folder / PROBE_WEIGHTS)), folder / PROBE_WEIGHTS)
    if meta["backbone"] == "model":
        meta["backbone"] = str(folder / "model")
    return classifier.eval(), meta


# -- open_clip ---------------------------------------------------------------------------------------------------------
def is_open_clip_state_dict(state_dict: dict[str, Tensor]) -> bool:
    return "visual.proj" in state_dict or any(k.startswith("text_decoder.") for k in state_dict)


_BLOCK_RENAMES = [  # open_clip ResidualAttentionBlock -> ours
    (r"\.ln_1_kv\.", ".norm_context."), (r"\.ln_1\.", ".norm1."), (r"\.ln_2\.", ".norm2."),
    (r"\.attn\.in_proj_weight$", ".attn.qkv.weight"), (r"\.attn\.in_proj_bias$", ".attn.qkv.bias"),
    (r"\.attn\.out_proj\.", ".attn.proj."), (r"\.mlp\.c_fc\.", ".mlp.fc1."), (r"\.mlp\.c_proj\.", ".mlp.fc2."),
]
_PREFIX_RENAMES = [  # whole-key prefixes, first match wins
    (r"^visual\.transformer\.resblocks\.", "image_encoder.vit.blocks."),
    (r"^visual\.conv1\.", "image_encoder.vit.patch_embed.proj."),
    (r"^visual\.class_embedding$", "image_encoder.vit.cls_token"),
    (r"^visual\.positional_embedding$", "image_encoder.vit.pos_embed"),
    (r"^visual\.ln_pre\.", "image_encoder.vit.norm_pre."),
    (r"^visual\.attn_pool\.query$", "image_pooling.generative_pool.query"),
    (r"^visual\.attn_pool\.ln_q\.", "image_pooling.generative_pool.norm_query."),
    (r"^visual\.attn_pool\.ln_k\.", "image_pooling.generative_pool.norm_context."),
    (r"^visual\.attn_pool\.attn\.out_proj\.", "image_pooling.generative_pool.attn.proj."),
    (r"^visual\.ln_post\.", "image_pooling.norm."),
    (r"^visual\.proj$", "image_pooling.proj.weight"),
    (r"^text\.transformer\.resblocks\.", "text.layers."),
    (r"^text\.positional_embedding$", "text.pos_embed"),
    (r"^text\.cls_emb$", "text.cls_token"),
    (r"^text\.ln_final\.", "text.norm."),
    (r"^text\.text_projection$", "text.proj.weight"),
    (r"^text_decoder\.resblocks\.(\d+)\.", r"decoder.layers.\1.self_block."),
    (r"^text_decoder\.cross_attn\.(\d+)\.", r"decoder.layers.\1.cross_block."),
    (r"^text_decoder\.ln_final\.", "decoder.norm."),
    (r"^text_decoder\.text_projection$", "caption_head.weight"),
]
_TRANSPOSED = ("image_pooling.proj.weight", "text.proj.weight", "caption_head.weight")  # open_clip stores (in, out)


def rename_open_clip_key(key: str) -> str:
    """One open_clip CoCa key -> ours (a pure rename; tensor layout changes happen in the converter)."""
    for pattern, replacement in _PREFIX_RENAMES:
        if re.search(pattern, key):
            key = re.sub(pattern, replacement, key)
            break
    for pattern, replacement in _BLOCK_RENAMES:
        key = re.sub(pattern, replacement, key)
    return key


def convert_open_clip_state_dict(
    state_dict: dict[str, Tensor], cfg: CoCaConfig, path: Path | str = "<state dict>"
) -> dict[str, Tensor]:
    """An open_clip 3.3.0 CoCa state dict (``coca_vitb32_keys.txt`` layout) -> ours, same numbers."""
    if cfg.pooler.layout != "openclip":
        raise CheckpointError(f"{path}: open_clip CoCa weights need pooler.layout 'openclip', "
                              f"not {cfg.pooler.layout!r}")
    converted: dict[str, Tensor] = {}
    pool = "visual.attn_pool.attn."
    for key, value in state_dict.items():
        if key.startswith(pool) and not key.startswith(pool + "out_proj"):
            continue  # separate q/k/v projections: merged below
        if re.match(r"text_decoder\.cross_attn\.\d+\.attn\.in_proj_", key):
            _split_packed_cross_attn(converted, rename_open_clip_key(key), value)
            continue
        new_key = rename_open_clip_key(key)
        converted[new_key] = _relayout(new_key, value)
    if pool + "q_proj_weight" in state_dict:
        _merge_pooler_projections(converted, state_dict, pool)
    return converted


def _relayout(key: str, value: Tensor) -> Tensor:
    if key in _TRANSPOSED:
        return value.T.contiguous()
    if key in ("image_encoder.vit.cls_token", "image_encoder.vit.pos_embed"):
        return value.reshape(1, -1, value.shape[-1])
    return value


def _split_packed_cross_attn(out: dict[str, Tensor], key: str, value: Tensor) -> None:
    """Decoder cross-attention: packed q|k|v (3W, ...) -> q (W, ...) and k|v (2W, ...)."""
    width = value.shape[0] // 3
    kind = "weight" if key.endswith("weight") else "bias"
    base = key.rsplit(".qkv.", 1)[0]
    out[f"{base}.q.{kind}"] = value[:width]
    out[f"{base}.kv.{kind}"] = value[width:]


def _merge_pooler_projections(out: dict[str, Tensor], state_dict: dict[str, Tensor], pool: str) -> None:
    """Pooler attention: separate q/k/v weights + packed bias -> our q and k|v projections."""
    dim = state_dict[pool + "q_proj_weight"].shape[0]
    bias = state_dict[pool + "in_proj_bias"]
    ours = "image_pooling.generative_pool.attn."
    out[ours + "q.weight"] = state_dict[pool + "q_proj_weight"]
    out[ours + "q.bias"] = bias[:dim]
    out[ours + "kv.weight"] = torch.cat([state_dict[pool + "k_proj_weight"], state_dict[pool + "v_proj_weight"]])
    out[ours + "kv.bias"] = bias[dim:]


def prompt_templates(name: str) -> list[str] | None:
    """The zero-shot prompt templates a checkpoint folder ships (``prompt_templates.txt``), if any."""
    from ..data.labels import read_templates

    folder = checkpoint_folder(name)
    path = folder / TEMPLATES_FILE if folder is not None else None
    return read_templates(path) if path is not None and path.is_file() else None


# -- tokenizers --------------------------------------------------------------------------------------------------------
def get_tokenizer(name: str = "default") -> Callable:
    """The tokenizer that goes with ``create_model(name)``: open_clip's CLIP BPE or the checkpoint's own files."""
    from ..tokenizer import ClipBpeTokenizer, load_tokenizer

    cfg = get_model_config(name)
    folder = checkpoint_folder(name)
    if folder is not None:
        return load_tokenizer(folder, cfg.text.context_length)
    if cfg.tokenizer != "clip_bpe":
        raise ValueError(f"model {name!r} uses a tokenizer.json that only ships inside a checkpoint folder")
    return ClipBpeTokenizer(context_length=cfg.text.context_length)
