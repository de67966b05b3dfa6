"""Attentional poolers: learned queries attend over encoder tokens (the boxes between image and text in CoCa)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from .config import PoolerConfig
from .layers import CrossAttention, layer_norm


class AttentionalPooler(nn.Module):
    """``n_queries`` learned queries attend over ``context`` tokens, with LayerNorm on queries and keys.

    (B, N, context_dim) -> (B, n_queries, dim). No residual and no MLP: one attention layer, as in CoCa.
    """

    def __init__(self, dim: int, context_dim: int, n_queries: int, heads: int) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.empty(n_queries, dim))
        self.norm_query = layer_norm(dim)
        self.norm_context = layer_norm(context_dim)
        self.attn = CrossAttention(dim, context_dim, heads)
        nn.init.normal_(self.query, std=dim**-0.5)

    def forward(self, context: Tensor, num_queries: int | None = None, context_mask: Tensor | None = None) -> Tensor:
        """Pool with all queries, or only the first ``num_queries`` (queries do not interact); ``context_mask``:
        optional bool (B, N), True on the context tokens to pool over (the others are ignored)."""
        queries = self.norm_query(self.query[:num_queries])[None]  # (1, Q, D), shared by the batch
        return self.attn(queries, self.attn.project_context(self.norm_context(context)), context_mask)


class PooledImage(NamedTuple):
    embedding: Tensor  # (B, embed_dim): the contrastive image embedding (not normalised)
    tokens: Tensor  # (B, Q, embed_dim): the image tokens the multimodal decoder attends to


class ImagePooling(nn.Module):
    """Turns encoder tokens into the contrastive embedding and the decoder's image tokens.

    Layouts (see :class:`PoolerConfig`): ``openclip`` splits one pooler's outputs (query 0 -> embedding,
    queries 1.. -> tokens); ``cascade`` pools the generative pooler's outputs with one more query; ``parallel`` pools
    the encoder tokens twice. ``norm`` is applied to every pooled output, ``proj`` to the embedding only.
    """

    def __init__(self, cfg: PoolerConfig, encoder_width: int, embed_dim: int) -> None:
        super().__init__()
        self.layout = cfg.layout
        self.generative_pool = AttentionalPooler(embed_dim, encoder_width, cfg.n_queries, cfg.heads)
        self.contrastive_pool: AttentionalPooler | None = None
        if cfg.layout != "openclip":
            context_dim = embed_dim if cfg.layout == "cascade" else encoder_width
            self.contrastive_pool = AttentionalPooler(embed_dim, context_dim, 1, cfg.heads)
        self.norm = layer_norm(embed_dim)
        self.proj = nn.Linear(embed_dim, embed_dim, bias=False)
        nn.init.normal_(self.proj.weight, std=embed_dim**-0.5)

    def embed(self, encoder_tokens: Tensor) -> Tensor:
        """Only the contrastive embedding (B, embed_dim): in the ``openclip`` layout, query 0 alone is pooled."""
        if self.contrastive_pool is None:
            return self.proj(self.norm(self.generative_pool(encoder_tokens, num_queries=1)[:, 0]))
        return self.forward(encoder_tokens).embedding

    def forward(self, encoder_tokens: Tensor) -> PooledImage:
        pooled = self.generative_pool(encoder_tokens)  # (B, Q, E)
        if self.contrastive_pool is None:
            pooled = self.norm(pooled)
            return PooledImage(self.proj(pooled[:, 0]), pooled[:, 1:])
        context = pooled if self.layout == "cascade" else encoder_tokens
        embedding = self.norm(self.contrastive_pool(context)[:, 0])
        return PooledImage(self.proj(embedding), self.norm(pooled))
