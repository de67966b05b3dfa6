"""open_clip 3.3.0 CoCa checkpoints -> ours: one key table and one conversion function outside the model class
(as timm's ``checkpoint_filter_fn``). Pure renames live in the table; layout changes (transposed projections, packed
or split attention projections, reshaped embeddings) happen in :func:`convert_open_clip_state_dict`.
The full open_clip key list is ``tests/data/coca_vitb32_keys.txt``.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import Tensor

from ..errors import CheckpointError
from .config import CoCaConfig


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
