"""Image encoder: a timm ``VisionTransformer`` trunk that returns every output token of an image.

CLIP-style ViT: patch conv without bias, class token, learned positions, a LayerNorm before the blocks (``norm_pre``),
pre-LN blocks with exact GELU and LayerNorm eps 1e-5, and no final norm (the poolers normalise their keys).
"""

from __future__ import annotations

import dataclasses
import functools

import torch
from timm.layers import DropPath
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from .config import VisionConfig
from .layers import LN_EPS


class ImageEncoder(nn.Module):
    """(B, 3, H, W) images -> (B, 1 + N, width) tokens: the class token then one token per patch."""

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.vit = VisionTransformer(
            img_size=cfg.image_size,
            patch_size=cfg.patch_size,
            embed_dim=cfg.width,
            depth=cfg.layers,
            num_heads=cfg.heads,
            mlp_ratio=cfg.mlp_ratio,
            pre_norm=True,
            final_norm=False,
            global_pool="",
            num_classes=0,
            norm_layer=functools.partial(nn.LayerNorm, eps=LN_EPS),
            act_layer=nn.GELU,
        )
        scale = cfg.width**-0.5  # CLIP's init for the class token and positions (timm's cls std 1e-6 is a no-op)
        nn.init.normal_(self.vit.cls_token, std=scale)
        nn.init.normal_(self.vit.pos_embed, std=scale)

    @property
    def num_tokens(self) -> int:
        """Tokens per image: class token + patches."""
        return 1 + self.vit.patch_embed.num_patches

    def set_image_size(self, image_size: int) -> None:
        """Take ``image_size`` images from now on: the learned positions are resampled bicubically on the patch
        grid, the class token's kept (timm's ``resample_abs_pos_embed``, through ``set_input_size``)."""
        if image_size % self.cfg.patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of the patch size {self.cfg.patch_size}")
        self.vit.set_input_size(img_size=(image_size, image_size))
        self.cfg = dataclasses.replace(self.cfg, image_size=image_size)

    def set_drop_path(self, rate: float) -> None:
        """Stochastic depth for finetuning: in training mode, block i's two residual branches are each skipped per
        image (frame) with probability ``rate * i / (depth - 1)`` (timm's linear rule: none at the first block,
        ``rate`` at the last) and scaled by 1 / keep otherwise; evaluation is unchanged. ``rate`` 0 turns it off."""
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"drop path rate {rate} is not in [0, 1)")
        blocks = self.vit.blocks
        for block, block_rate in zip(blocks, torch.linspace(0.0, rate, len(blocks)).tolist()):
            block.drop_path1 = DropPath(block_rate) if block_rate > 0 else nn.Identity()
            block.drop_path2 = DropPath(block_rate) if block_rate > 0 else nn.Identity()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.vit.set_grad_checkpointing(enable)

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) preprocessed images (any float dtype: cast to the weights') -> (B, 1 + N, width) tokens."""
        return self.vit.forward_features(images.to(self.vit.cls_token.dtype))
