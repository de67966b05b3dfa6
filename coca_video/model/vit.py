"""Image encoder: a ViT trunk that returns every output token of an image.

CLIP-style ViT: patch conv without bias, class token, learned positions, a LayerNorm before the blocks (``norm_pre``),
pre-LN blocks with exact GELU and LayerNorm eps 1e-5, and no final norm (the poolers normalise their keys). The
parameter names and the initialisation (draw for draw) are timm's ``VisionTransformer`` with ``pre_norm=True``,
``final_norm=False``, no head, so checkpoints of either load into the other; it is written here because importing
timm imports torchvision and ``torch._dynamo``, about 3 s of every process that only needs a ViT.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .config import VisionConfig
from .layers import ResidualBlock, layer_norm


@torch.no_grad()
def truncated_normal_(tensor: Tensor, std: float, low: float = -2.0, high: float = 2.0) -> Tensor:
    """Fill ``tensor`` from N(0, std^2) cut to [low, high] by the inverse CDF of a uniform draw (timm's
    ``trunc_normal_``; PyTorch's own now redraws out-of-range values instead, another sequence of numbers)."""
    def cdf(x: float) -> float:
        return (1.0 + math.erf(x / math.sqrt(2.0))) / 2.0

    tensor.uniform_(2 * cdf(low / std) - 1, 2 * cdf(high / std) - 1).erfinv_()
    return tensor.mul_(std * math.sqrt(2.0)).clamp_(min=low, max=high)


class PatchEmbed(nn.Module):
    """(B, 3, S, S) images -> (B, N, width): one token per non-overlapping ``patch_size`` patch, row by row."""

    def __init__(self, image_size: int, patch_size: int, width: int) -> None:
        super().__init__()
        self.image_size, self.patch_size = image_size, patch_size
        self.proj = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)

    @property
    def grid(self) -> int:
        """Patches along each side."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid**2

    def forward(self, images: Tensor) -> Tensor:
        if images.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"the image encoder takes {self.image_size}x{self.image_size} images, got "
                             f"{images.shape[-2]}x{images.shape[-1]}")
        return rearrange(self.proj(images), "b c h w -> b (h w) c")


class DropPath(nn.Module):
    """Stochastic depth: in training, each sample's branch is zeroed with probability ``rate`` and scaled by
    1 / (1 - rate) otherwise; the identity in evaluation."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep).div_(keep)  # (B, 1, ...)
        return x * mask

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


class VisionTransformer(nn.Module):
    """The trunk: patches, the class token in front, positions added, ``norm_pre``, the blocks (pre-LN, full
    attention: not causal)."""

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(cfg.image_size, cfg.patch_size, cfg.width)
        self.cls_token = nn.Parameter(torch.empty(1, 1, cfg.width))
        self.pos_embed = nn.Parameter(torch.empty(1, 1 + self.patch_embed.num_patches, cfg.width))
        self.norm_pre = layer_norm(cfg.width)
        self.blocks = nn.Sequential(*[ResidualBlock(cfg.width, cfg.heads, cfg.mlp_ratio, causal=False)
                                      for _ in range(cfg.layers)])
        self.grad_checkpointing = False
        # timm's init ('' mode), in its order: positions, class token, then every Linear (the convolution keeps
        # PyTorch's default)
        truncated_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                truncated_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def with_positions(self, patches: Tensor) -> Tensor:
        """(B, N, C) patch tokens -> (B, 1 + N, C): the class token prepended, then the positions added."""
        tokens = torch.cat([self.cls_token.expand(patches.shape[0], -1, -1), patches], dim=1)
        return tokens + self.pos_embed

    def forward(self, images: Tensor) -> Tensor:
        x = self.norm_pre(self.with_positions(self.patch_embed(images)))
        for block in self.blocks:
            x = checkpoint(block, x, use_reentrant=False) if self.grad_checkpointing and self.training else block(x)
        return x


def resample_positions(pos_embed: Tensor, old_grid: int, new_grid: int) -> Tensor:
    """(1, 1 + old_grid^2, C) positions -> (1, 1 + new_grid^2, C): the class token's kept, the patch grid resampled
    bicubically with antialiasing in float32 (timm's ``resample_abs_pos_embed``)."""
    prefix, grid = pos_embed[:, :1], pos_embed[:, 1:].float()
    grid = rearrange(grid, "1 (h w) c -> 1 c h w", h=old_grid)
    grid = F.interpolate(grid, size=(new_grid, new_grid), mode="bicubic", align_corners=False, antialias=True)
    return torch.cat([prefix, rearrange(grid, "1 c h w -> 1 (h w) c").to(pos_embed.dtype)], dim=1)


class ImageEncoder(nn.Module):
    """(B, 3, H, W) images -> (B, 1 + N, width) tokens: the class token then one token per patch."""

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.vit = VisionTransformer(cfg)
        scale = cfg.width**-0.5  # CLIP's init for the class token and positions (timm's cls std 1e-6 is a no-op)
        nn.init.normal_(self.vit.cls_token, std=scale)
        nn.init.normal_(self.vit.pos_embed, std=scale)

    @property
    def num_tokens(self) -> int:
        """Tokens per image: class token + patches."""
        return 1 + self.vit.patch_embed.num_patches

    def set_image_size(self, image_size: int) -> None:
        """Take ``image_size`` images from now on: the learned positions are resampled bicubically on the patch
        grid, the class token's kept (:func:`resample_positions`)."""
        if image_size % self.cfg.patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of the patch size {self.cfg.patch_size}")
        patches, old_grid = self.vit.patch_embed, self.vit.patch_embed.grid
        patches.image_size = image_size
        if patches.grid != old_grid:
            positions = self.vit.pos_embed
            self.vit.pos_embed = nn.Parameter(resample_positions(positions.data, old_grid, patches.grid),
                                              requires_grad=positions.requires_grad)
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
        self.vit.grad_checkpointing = enable

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) preprocessed images (any float dtype: cast to the weights') -> (B, 1 + N, width) tokens."""
        return self.vit(images.to(self.vit.cls_token.dtype))
