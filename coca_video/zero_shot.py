"""Zero-shot classification with text prompts: class embeddings as the normalised mean of their prompt templates'
normalised embeddings (CLIP's prompt ensembling), probabilities as softmax of logit-scaled cosine similarities."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .model import CoCa
from .prompts import encode_texts, prompt_templates

DEFAULT_TEMPLATES = ("a photo of {}.",)


@torch.no_grad()
def class_embeddings(model: CoCa, tokenizer: Callable[[Sequence[str]], Tensor], class_names: Sequence[str],
                     templates: Sequence[str] = DEFAULT_TEMPLATES, batch_size: int = 256) -> Tensor:
    """(C, D) L2-normalised class embeddings: for each class, the normalised mean over ``templates`` (``{}`` is
    replaced by the class name) of the normalised text embeddings."""
    prompts = [template.format(name) for name in class_names for template in templates]
    embeddings = encode_texts(model, tokenizer, prompts, batch_size)  # (C*T, D)
    per_class = embeddings.view(len(class_names), len(templates), -1).mean(dim=1)
    return F.normalize(per_class, dim=-1)


def class_probabilities(model: CoCa, embeddings: Tensor, classes: Tensor) -> Tensor:
    """(N, D) normalised image/video embeddings x (C, D) class embeddings -> (N, C) softmax probabilities."""
    return (model.scaled_logit_scale().float() * embeddings.float() @ classes.float().T).softmax(dim=-1)


@torch.no_grad()
def zero_shot_accuracy(model: CoCa, tokenizer: Callable, images: Tensor, labels: Tensor, class_names: Sequence[str],
                       templates: Sequence[str] = DEFAULT_TEMPLATES, batch_size: int = 256) -> float:
    """Top-1 accuracy (percent) of zero-shot classification of preprocessed ``images`` (N, 3, H, W)."""
    classes = class_embeddings(model, tokenizer, class_names, templates)
    device = classes.device
    predictions = torch.cat([(model.encode_image(images[i:i + batch_size].to(device)) @ classes.T).argmax(-1).cpu()
                             for i in range(0, len(images), batch_size)])
    return 100.0 * (predictions == labels.cpu()).float().mean().item()


@torch.no_grad()
def zero_shot_classify(model: CoCa, tokenizer: Callable[[Sequence[str]], Tensor], video_embeddings: Tensor,
                       class_names: Sequence[str], templates: Sequence[str] | None = None) -> Tensor:
    """(N, D) normalised video (or image) embeddings -> (N, C) probabilities over ``class_names``.

    Classes are prompt ensembles over ``templates`` (``{}`` takes the class name; default: the model's own, as every
    command chooses them: :func:`coca_video.prompts.prompt_templates`); probabilities are the softmax of the model's
    logit-scaled cosines.
    """
    classes = class_embeddings(model, tokenizer, class_names, templates or prompt_templates(model))
    return class_probabilities(model, video_embeddings.to(classes.device, classes.dtype), classes)
