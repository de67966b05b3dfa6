"""Transformer building blocks shared by the poolers and the text decoders.

All blocks are pre-LayerNorm and batch-first, and attend with ``F.scaled_dot_product_attention``. Self-attention
keeps an optional :class:`KVCache` for incremental decoding; cross-attention takes its keys/values precomputed, so an
image's keys are projected once per caption, not once per token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

LN_EPS = 1e-5  # open_clip's LayerNorm eps (timm's ViT default would be 1e-6)


def layer_norm(dim: int) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=LN_EPS)


class Mlp(nn.Module):
    """Two-layer MLP with exact (erf) GELU: ``fc2(gelu(fc1(x)))`` (timm's ``Mlp`` keys: ``fc1``, ``fc2``)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


def mlp(dim: int, mlp_ratio: float) -> Mlp:
    """The blocks' MLP: ``dim`` -> ``dim * mlp_ratio`` -> ``dim``."""
    return Mlp(dim, int(dim * mlp_ratio))


class KVCache:
    """Keys and values of the positions seen so far, per layer, for incremental decoding."""

    def __init__(self) -> None:
        self.keys: Tensor | None = None  # (B, heads, S, head_dim)
        self.values: Tensor | None = None

    @property
    def length(self) -> int:
        return 0 if self.keys is None else self.keys.shape[2]

    def append(self, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        if self.keys is not None:
            keys = torch.cat([self.keys, keys], dim=2)
            values = torch.cat([self.values, values], dim=2)
        self.keys, self.values = keys, values
        return keys, values

    def reorder(self, batch_index: Tensor) -> None:
        """Keep the rows ``batch_index`` (beam search reselects hypotheses every step)."""
        if self.keys is not None:
            self.keys, self.values = self.keys[batch_index], self.values[batch_index]


class SelfAttention(nn.Module):
    """Multi-head self-attention with a packed q|k|v projection; causal (a text tower) unless ``causal=False`` (an
    image encoder: every token sees every token)."""

    def __init__(self, dim: int, heads: int, causal: bool = True) -> None:
        super().__init__()
        assert dim % heads == 0, f"width {dim} is not divisible by {heads} heads"
        self.heads = heads
        self.causal = causal
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, cache: KVCache | None = None) -> Tensor:
        """x: (B, S, D). ``attn_mask``: bool (B, 1, S, S_total), True = attend; None means causal (or, built with
        ``causal=False``, no mask)."""
        q, k, v = rearrange(self.qkv(x), "b s (three h d) -> three b h s d", three=3, h=self.heads)
        past = 0
        if cache is not None:
            past = cache.length
            k, v = cache.append(k, v)
        if attn_mask is None and past and q.shape[2] > 1 and self.causal:
            attn_mask = causal_mask(q.shape[2], k.shape[2], x.device)
        is_causal = self.causal and attn_mask is None and past == 0 and q.shape[2] > 1
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)
        return self.proj(rearrange(out, "b h s d -> b s (h d)"))


class CrossAttention(nn.Module):
    """Multi-head attention from queries of width ``dim`` to a context of width ``context_dim``."""

    def __init__(self, dim: int, context_dim: int, heads: int) -> None:
        super().__init__()
        assert dim % heads == 0, f"width {dim} is not divisible by {heads} heads"
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(context_dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def project_context(self, context: Tensor) -> tuple[Tensor, Tensor]:
        """context (B, N, C) -> keys, values (B, heads, N, head_dim)."""
        k, v = rearrange(self.kv(context), "b n (two h d) -> two b h n d", two=2, h=self.heads)
        return k, v

    def forward(self, x: Tensor, context_kv: tuple[Tensor, Tensor], context_mask: Tensor | None = None) -> Tensor:
        """``context_mask``: optional bool (B, N), True where a context token may be attended to."""
        q = rearrange(self.q(x), "b s (h d) -> b h s d", h=self.heads)
        k, v = context_kv
        if k.shape[0] != q.shape[0]:  # one set of queries (a pooler) shared by the whole batch
            q = q.expand(k.shape[0], -1, -1, -1)
        mask = None if context_mask is None else context_mask[:, None, None, :]  # (B, 1, 1, N)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(rearrange(out, "b h s d -> b s (h d)"))


class ResidualBlock(nn.Module):
    """Pre-LN transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))`` (``with_mlp=False``: attention
    only, as the self-attention of a decoder layer whose one feed-forward follows its cross-attention). Each residual
    branch passes its drop path, the identity unless an image encoder's finetuning sets stochastic depth
    (:meth:`~coca_video.model.vit.ImageEncoder.set_drop_path`)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, with_mlp: bool = True,
                 causal: bool = True) -> None:
        super().__init__()
        self.norm1 = layer_norm(dim)
        self.attn = SelfAttention(dim, heads, causal)
        self.norm2 = layer_norm(dim) if with_mlp else None
        self.mlp = mlp(dim, mlp_ratio) if with_mlp else None
        self.drop_path1: nn.Module = nn.Identity()
        self.drop_path2: nn.Module = nn.Identity()

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, cache: KVCache | None = None) -> Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x), attn_mask, cache))
        return x if self.mlp is None else x + self.drop_path2(self.mlp(self.norm2(x)))


class CrossAttentionBlock(nn.Module):
    """Pre-LN cross-attention block: ``x + attn(norm1(x), norm_context(context))``, then the MLP."""

    def __init__(self, dim: int, context_dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = layer_norm(dim)
        self.norm_context = layer_norm(context_dim)
        self.attn = CrossAttention(dim, context_dim, heads)
        self.norm2 = layer_norm(dim)
        self.mlp = mlp(dim, mlp_ratio)

    def project_context(self, context: Tensor) -> tuple[Tensor, Tensor]:
        return self.attn.project_context(self.norm_context(context))

    def forward(self, x: Tensor, context_kv: tuple[Tensor, Tensor]) -> Tensor:
        x = x + self.attn(self.norm1(x), context_kv)
        return x + self.mlp(self.norm2(x))


def causal_mask(num_queries: int, num_keys: int, device: torch.device | None = None) -> Tensor:
    """Bool (1, 1, Q, K), True = attend: query i (the last Q of K positions) sees keys <= its own position."""
    offset = num_keys - num_queries
    rows = torch.arange(num_queries, device=device)[:, None] + offset
    return (torch.arange(num_keys, device=device)[None, :] <= rows)[None, None]


def init_transformer_block(block: nn.Module, width: int, depth: int) -> None:
    """CLIP's text-tower init: attention in N(0, w^-0.5); output projections scaled by (2 * depth)^-0.5."""
    attn_std = width**-0.5
    proj_std = attn_std * (2 * depth) ** -0.5
    fc_std = (2 * width) ** -0.5
    for name, param in block.named_parameters():
        if name.endswith("bias"):
            nn.init.zeros_(param)
        elif "norm" in name:
            nn.init.ones_(param)
        elif name.endswith(("attn.proj.weight", "mlp.fc2.weight")):
            nn.init.normal_(param, std=proj_std)
        elif name.endswith("mlp.fc1.weight"):
            nn.init.normal_(param, std=fc_std)
        else:
            nn.init.normal_(param, std=attn_std)
