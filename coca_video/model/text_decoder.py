"""The decoupled text decoder: unimodal layers (text only, CLS appended last) then multimodal layers.

Unimodal: token + position embeddings -> causal self-attention layers; the CLS token's output, after LayerNorm and a
projection, is the text embedding; the other outputs (no LayerNorm) feed the multimodal decoder.
Multimodal: per layer, causal self-attention then cross-attention to the image tokens; then LayerNorm and the vocab
head, which lives in :class:`~coca_video.model.coca.CoCa` because it may be tied to the token embedding.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .config import DecoderConfig, TextConfig
from .layers import CrossAttentionBlock, KVCache, ResidualBlock, causal_mask, init_transformer_block, layer_norm


class EncodedText(NamedTuple):
    embedding: Tensor  # (B, embed_dim): projected CLS output (not normalised)
    token_states: Tensor  # (B, L, width): per-token outputs for the multimodal decoder


class UnimodalTextDecoder(nn.Module):
    """Text ids (B, L <= context_length) -> :class:`EncodedText`."""

    def __init__(self, cfg: TextConfig, embed_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.pos_embed = nn.Parameter(torch.empty(cfg.context_length + 1, cfg.width))  # +1: the CLS position
        self.cls_token = nn.Parameter(torch.empty(cfg.width))
        self.layers = nn.ModuleList(ResidualBlock(cfg.width, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.layers))
        self.norm = layer_norm(cfg.width)
        self.proj = nn.Linear(cfg.width, embed_dim, bias=False)
        self.grad_checkpointing = False
        self.init_weights()

    def init_weights(self) -> None:
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.pos_embed, std=0.01)
        nn.init.normal_(self.cls_token, std=0.01)
        for block in self.layers:
            init_transformer_block(block, self.cfg.width, self.cfg.layers)
        nn.init.normal_(self.proj.weight, std=self.cfg.width**-0.5)

    def forward(self, text_ids: Tensor) -> EncodedText:
        batch, length = text_ids.shape
        if length > self.cfg.context_length:
            raise ValueError(f"text has {length} tokens; this model takes at most {self.cfg.context_length}")
        cls = self.cls_token.expand(batch, 1, -1).to(self.token_embedding.weight.dtype)
        x = torch.cat([self.token_embedding(text_ids), cls], dim=1)  # (B, L+1, W): CLS appended last
        x = x + self.pos_embed[: length + 1]
        mask = self.attention_mask(text_ids)
        for block in self.layers:
            if self.grad_checkpointing and self.training:
                x = checkpoint(block, x, mask, use_reentrant=False)
            else:
                x = block(x, mask)
        return EncodedText(self.proj(self.norm(x[:, -1])), x[:, :-1])

    def attention_mask(self, text_ids: Tensor) -> Tensor:
        """Bool (B, 1, L+1, L+1), True = attend: causal, and no attention to pad keys.

        With ``pad_mask="shifted"`` (open_clip 3.3.0) the key-valid vector is ``[True] + (ids != pad)``, i.e. shifted
        right by one: key k is valid iff k == 0 or ids[k-1] is not pad. ``aligned`` uses ``(ids != pad) + [True]``.
        """
        not_pad = text_ids != self.cfg.pad_id
        always = torch.ones_like(not_pad[:, :1])
        parts = [always, not_pad] if self.cfg.pad_mask == "shifted" else [not_pad, always]
        key_valid = torch.cat(parts, dim=1)  # (B, L+1)
        length = key_valid.shape[1]
        return causal_mask(length, length, text_ids.device) & key_valid[:, None, None, :]

    def decode_step(self, text_ids: Tensor, caches: list[KVCache]) -> Tensor:
        """Incremental path for generation: token states of ``text_ids`` (B, s) at positions after the cache.

        No CLS and no pad mask: a generated prefix has no pad, and causal attention never sees the CLS.
        """
        start = caches[0].length
        x = self.token_embedding(text_ids) + self.pos_embed[start : start + text_ids.shape[1]]
        for block, cache in zip(self.layers, caches):
            x = block(x, None, cache)
        return x


class MultimodalLayer(nn.Module):
    """Causal self-attention over the text, then cross-attention to the image tokens; ``feed_forwards=2`` puts an
    MLP after each (open_clip), 1 only after the cross-attention (a Transformer decoder layer, the paper's sizes)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, feed_forwards: int = 2) -> None:
        super().__init__()
        self.self_block = ResidualBlock(width, heads, mlp_ratio, with_mlp=feed_forwards == 2)
        self.cross_block = CrossAttentionBlock(width, width, heads, mlp_ratio)

    def forward(self, x: Tensor, image_kv: tuple[Tensor, Tensor], cache: KVCache | None = None) -> Tensor:
        return self.cross_block(self.self_block(x, None, cache), image_kv)


class MultimodalTextDecoder(nn.Module):
    """Token states (B, L, W) + image tokens (B, Q, W) -> final hidden states (B, L, W), LayerNormed."""

    def __init__(self, cfg: DecoderConfig, width: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.layers = nn.ModuleList(MultimodalLayer(width, cfg.heads, cfg.mlp_ratio, cfg.feed_forwards)
                                    for _ in range(cfg.layers))
        self.norm = layer_norm(width)
        self.grad_checkpointing = False
        for layer in self.layers:
            init_transformer_block(layer, width, cfg.layers)

    def image_kv(self, image_tokens: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Per-layer cross-attention keys/values of the image tokens (computed once per image)."""
        return [layer.cross_block.project_context(image_tokens) for layer in self.layers]

    def forward(self, token_states: Tensor, image_tokens: Tensor) -> Tensor:
        x = token_states
        for layer in self.layers:
            if self.grad_checkpointing and self.training:
                x = checkpoint(self._layer_forward, layer, x, image_tokens, use_reentrant=False)
            else:
                x = self._layer_forward(layer, x, image_tokens)
        return self.norm(x)

    @staticmethod
    def _layer_forward(layer: MultimodalLayer, x: Tensor, image_tokens: Tensor) -> Tensor:
        return layer(x, layer.cross_block.project_context(image_tokens))

    def decode_step(
        self, token_states: Tensor, image_kv: list[tuple[Tensor, Tensor]], caches: list[KVCache]
    ) -> Tensor:
        """Incremental path for generation; same result as :meth:`forward` on the whole prefix."""
        x = token_states
        for layer, kv, cache in zip(self.layers, image_kv, caches):
            x = layer(x, kv, cache)
        return self.norm(x)
