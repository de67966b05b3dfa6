"""CoCa's objective: lambda_con * contrastive (symmetric InfoNCE) + lambda_cap * captioning (next-token CE)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


from ..distributed import all_gather_with_grad, get_info, sum_over_ranks
from .coca import CoCaOutput


def contrastive_loss(image_latent: Tensor, text_latent: Tensor, logit_scale: Tensor) -> Tensor:
    """Symmetric InfoNCE over the global batch (features are all-gathered with gradients across ranks).

    image_latent, text_latent: (B_local, D), L2-normalised; logit_scale: () = 1 / temperature.
    """
    all_images = all_gather_with_grad(image_latent)
    all_texts = all_gather_with_grad(text_latent)
    logits_per_image = logit_scale * all_images @ all_texts.T  # (B_global, B_global)
    labels = torch.arange(logits_per_image.shape[0], device=logits_per_image.device)
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_image.T, labels)) / 2


def caption_loss(caption_logits: Tensor, caption_labels: Tensor, pad_id: int) -> Tensor:
    """Mean next-token cross-entropy over the non-pad labels of the global batch: logits (B, L, V), labels (B, L).

    Across ranks each rank returns ``world * local_sum / global_count``, so DDP's gradient average equals the
    gradient of the mean over all ranks' tokens (ranks may hold different numbers of non-pad tokens).
    """
    summed = F.cross_entropy(caption_logits.transpose(1, 2).float(), caption_labels, ignore_index=pad_id,
                             reduction="sum")
    count = sum_over_ranks((caption_labels != pad_id).sum())
    return summed * get_info().world_size / count.clamp(min=1)


class CoCaLoss(nn.Module):
    """Weighted sum of both terms; returns a dict with ``loss``, ``contrastive_loss`` and ``caption_loss``."""

    def __init__(self, pad_id: int, contrastive_weight: float = 1.0, caption_weight: float = 2.0) -> None:
        super().__init__()
        self.pad_id = pad_id
        self.contrastive_weight = contrastive_weight
        self.caption_weight = caption_weight

    def forward(self, output: CoCaOutput) -> dict[str, Tensor]:
        con = contrastive_loss(output.image_latent, output.text_latent, output.logit_scale)
        cap = caption_loss(output.caption_logits, output.caption_labels, self.pad_id)
        total = self.contrastive_weight * con + self.caption_weight * cap
        return {"loss": total, "contrastive_loss": con, "caption_loss": cap}
