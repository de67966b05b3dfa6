"""Model configuration: plain dataclasses, one per box of the CoCa figure.

Named architectures live as YAML next to this file (``configs/*.yaml``) and hold only what differs from these
defaults. The defaults are open_clip 3.3.0's ``coca_ViT-B-32``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal


@dataclass
class VisionConfig:
    """ViT image encoder (timm ``VisionTransformer`` trunk, CLIP-style pre-norm, no final norm)."""

    image_size: int = 224
    patch_size: int = 32
    width: int = 768
    layers: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0


@dataclass
class PoolerConfig:
    """Attentional poolers between the image encoder and the text side.

    ``layout``:
      - ``openclip``: one pooler with ``n_queries`` queries; output 0 is the contrastive embedding, outputs
        1..n-1 are the decoder's image tokens (what open_clip's released CoCa weights use).
      - ``cascade`` (the paper's): a ``n_queries`` generative pooler over the encoder tokens, then a 1-query
        contrastive pooler over its outputs.
      - ``parallel``: both poolers read the encoder tokens.
    """

    layout: Literal["openclip", "cascade", "parallel"] = "openclip"
    n_queries: int = 256
    heads: int = 8


@dataclass
class TextConfig:
    """Unimodal text decoder: causal transformer with a learnable CLS token appended at the end of the text.

    ``pad_mask``: ``shifted`` reproduces open_clip 3.3.0, whose key-padding mask is shifted right by one position
    (the CLS query sees the first pad and not itself; the released weights were trained with it). ``aligned`` masks
    exactly the pad positions.
    """

    vocab_size: int = 49408
    context_length: int = 76
    width: int = 512
    heads: int = 8
    layers: int = 12
    mlp_ratio: float = 4.0
    pad_id: int = 0
    sot_id: int = 49406
    eot_id: int = 49407
    pad_mask: Literal["shifted", "aligned"] = "shifted"


@dataclass
class DecoderConfig:
    """Multimodal text decoder: causal self-attention + cross-attention to image tokens, then the vocabulary head.

    Its width is the text width. ``tied_head`` reuses the text token embedding as the output projection.
    ``feed_forwards``: MLPs per layer, 2 (open_clip: one after the self-attention, one after the cross-attention)
    or 1 (after the cross-attention only, a Transformer decoder layer: the layout of the paper's Table 1 counts).
    """

    layers: int = 12
    heads: int = 8
    mlp_ratio: float = 4.0
    tied_head: bool = False
    feed_forwards: Literal[1, 2] = 2


@dataclass
class PreprocessConfig:
    """Image preprocessing the model was trained with (eval: resize shortest side, centre crop, normalise)."""

    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    interpolation: Literal["bicubic", "bilinear"] = "bicubic"


@dataclass
class CoCaConfig:
    """A whole CoCa model. ``tokenizer`` names the tokenizer: ``clip_bpe`` (open_clip's) or ``tokenizer.json``
    (a HuggingFace tokenizers file that ships beside the weights)."""

    embed_dim: int = 512
    vision: VisionConfig = field(default_factory=VisionConfig)
    pooler: PoolerConfig = field(default_factory=PoolerConfig)
    text: TextConfig = field(default_factory=TextConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0
    tokenizer: Literal["clip_bpe", "tokenizer.json"] = "clip_bpe"
    # frames of the multimodal path's temporal position embedding (model/frame_time.py), added to each frame's
    # tokens before the generative pooler; 0: none (the pooler reads all frames' tokens as an unordered set)
    temporal_frames: int = 0
    # tokens per frame of the multimodal path's spatial position embedding (model/frame_time.py: FrameSpace), one
    # vector per token position shared by all frames and one scaled by the frame's time (its motion table), added with
    # the temporal one; 0: none
    spatial_tokens: int = 0

    @property
    def init_logit_scale(self) -> float:
        """log(1 / temperature): the stored value of the learnable logit scale at init."""
        return math.log(1.0 / self.init_temperature)
