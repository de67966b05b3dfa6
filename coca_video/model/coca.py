"""CoCa: image encoder -> attentional poolers -> unimodal text decoder -> multimodal text decoder.

One forward pass gives both training signals: the contrastive pair (image embedding, text CLS embedding) and the
captioning logits of the multimodal decoder (teacher forcing).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import CoCaConfig
from .frame_time import FrameSpace, FrameTime
from .generate import SpecialTokens, from_open_clip_options, generate_captions
from .layers import KVCache
from .pooler import ImagePooling, PooledImage
from .text_decoder import MultimodalTextDecoder, UnimodalTextDecoder
from .vit import ImageEncoder


class CoCaOutput(NamedTuple):
    image_latent: Tensor  # (B, D), L2-normalised
    text_latent: Tensor  # (B, D), L2-normalised
    caption_logits: Tensor  # (B, L-1, V): position i predicts text_ids[:, i+1]
    caption_labels: Tensor  # (B, L-1): text_ids[:, 1:]
    logit_scale: Tensor  # (): exp of the learnable log-scale, clamped at max_logit_scale


VideoPooling = Literal["mean", "attentional"]


class VideoEncoding(NamedTuple):
    frame_embeddings: Tensor  # (B, T, D), each frame's contrastive embedding, L2-normalised
    video_embedding: Tensor  # (B, D), L2-normalised: mean of the frame embeddings, or the pooler over all tokens
    tokens: Tensor  # (B, T*N, C), encoder output tokens of every frame, frame-major


def mean_video_embedding(frame_embeddings: Tensor) -> Tensor:
    """(B, T, D) L2-normalised frame embeddings -> (B, D) the normalised mean over frames: the paper's zero-shot
    video embedding, what retrieval and the linear probe (``mode: linear``) read."""
    return F.normalize(frame_embeddings.mean(dim=1), dim=-1)


class CoCa(nn.Module):
    """Contrastive Captioner (Yu et al., 2022, arXiv 2205.01917)."""

    frames_per_forward = 64  # encode_video's image-encoder chunk (int8 sets its own: model/precision.py)

    def __init__(self, cfg: CoCaConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.image_encoder = ImageEncoder(cfg.vision)
        self.image_pooling = ImagePooling(cfg.pooler, cfg.vision.width, cfg.embed_dim)
        self.text = UnimodalTextDecoder(cfg.text, cfg.embed_dim)
        if cfg.text.width != cfg.embed_dim:
            raise ValueError(f"text width {cfg.text.width} must equal embed_dim {cfg.embed_dim} (decoder cross-attn)")
        self.decoder = MultimodalTextDecoder(cfg.decoder, cfg.text.width)
        self.caption_head: nn.Linear | None = None
        if not cfg.decoder.tied_head:
            self.caption_head = nn.Linear(cfg.text.width, cfg.text.vocab_size, bias=False)
            nn.init.normal_(self.caption_head.weight, std=cfg.text.width**-0.5)
        self.logit_scale = nn.Parameter(torch.tensor(cfg.init_logit_scale))
        self.frame_time = FrameTime(cfg.temporal_frames, cfg.vision.width) if cfg.temporal_frames else None
        self.frame_space = FrameSpace(cfg.spatial_tokens, cfg.vision.width) if cfg.spatial_tokens else None
        text = cfg.text
        self.special_tokens = SpecialTokens(text.sot_id, text.eot_id, text.pad_id, text.context_length)
        self.checkpoint: Path | None = None  # the checkpoint folder create_model loaded it from (its prompts)

    # -- image side ---------------------------------------------------------------------------------------------
    def image_features(self, images: Tensor) -> PooledImage:
        """(B, 3, H, W) -> contrastive embedding (B, D) (not normalised) and decoder image tokens (B, Q, D)."""
        return self.image_pooling(self.image_encoder(images))

    def encode_image(self, images: Tensor, normalize: bool = True) -> Tensor:
        """(B, 3, H, W) preprocessed images -> (B, D) embeddings, L2-normalised by default."""
        embedding = self.image_pooling.embed(self.image_encoder(images))
        return F.normalize(embedding, dim=-1) if normalize else embedding

    def encode_video(self, frames: Tensor, pooling: VideoPooling = "mean",
                     max_frames_per_forward: int | None = None) -> VideoEncoding:
        """(B, T, 3, H, W) preprocessed frames -> per-frame and per-video embeddings plus all encoder tokens.

        ``pooling``: ``mean`` (the CoCa paper's zero-shot video embedding: the normalised mean of the normalised
        frame embeddings) or ``attentional`` (VideoCoCa: the model's own contrastive pooler, untrained for video,
        over the concatenated tokens of all frames, T*N of them, then the same norm and projection as an image).
        The image encoder runs on the B*T frames in chunks of at most ``max_frames_per_forward`` (default: the
        model's ``frames_per_forward``).
        """
        batch, num_frames = frames.shape[:2]
        flat = frames.flatten(0, 1)  # (B*T, 3, H, W)
        embeddings, tokens = [], []
        for chunk in flat.split(max_frames_per_forward or self.frames_per_forward):
            encoder_tokens = self.image_encoder(chunk)  # (n, N, C)
            embeddings.append(self.image_pooling.embed(encoder_tokens))
            tokens.append(encoder_tokens)
        frame_embeddings = F.normalize(torch.cat(embeddings), dim=-1).unflatten(0, (batch, num_frames))
        all_tokens = torch.cat(tokens).unflatten(0, (batch, num_frames)).flatten(1, 2)  # (B, T*N, C)
        if pooling == "mean":
            video_embedding = mean_video_embedding(frame_embeddings)
        elif pooling == "attentional":
            video_embedding = F.normalize(self.image_pooling.embed(all_tokens), dim=-1)
        else:
            raise ValueError(f"pooling must be 'mean' or 'attentional', got {pooling!r}")
        return VideoEncoding(frame_embeddings, video_embedding, all_tokens)

    def add_frame_time(self, num_frames: int) -> FrameTime:
        """Give the multimodal path a temporal embedding of ``num_frames`` frames (zero: the model's outputs are
        unchanged until it trains), recorded in ``cfg.temporal_frames`` so a saved model folder rebuilds it; a
        model that has one keeps it."""
        if self.frame_time is None:
            reference = next(self.image_pooling.parameters())  # the device and dtype the pooler reads in
            self.frame_time = FrameTime(num_frames, self.cfg.vision.width).to(reference.device, reference.dtype)
            self.cfg.temporal_frames = num_frames
        return self.frame_time

    def add_frame_space(self) -> FrameSpace:
        """Give the multimodal path a spatial embedding, one vector per token position of a frame (zero: the
        model's outputs are unchanged until it trains), recorded in ``cfg.spatial_tokens``; a model that has one
        keeps it."""
        if self.frame_space is None:
            reference = next(self.image_pooling.parameters())
            tokens = self.image_encoder.num_tokens
            self.frame_space = FrameSpace(tokens, self.cfg.vision.width).to(reference.device, reference.dtype)
            self.cfg.spatial_tokens = tokens
        return self.frame_space

    # -- text side ----------------------------------------------------------------------------------------------
    def encode_text(self, text_ids: Tensor, normalize: bool = True) -> Tensor:
        """(B, L) token ids (tokenise to the full context length for features) -> (B, D) embeddings."""
        embedding = self.text(text_ids).embedding
        return F.normalize(embedding, dim=-1) if normalize else embedding

    def vocab_logits(self, hidden: Tensor) -> Tensor:
        """Decoder hidden states (B, L, W) -> vocabulary logits (B, L, V)."""
        weight = self.text.token_embedding.weight if self.caption_head is None else self.caption_head.weight
        return F.linear(hidden, weight)

    def caption_logits(self, image_tokens: Tensor, token_states: Tensor) -> Tensor:
        """Multimodal decoder logits for every text position: (B, L, V)."""
        return self.vocab_logits(self.decoder(token_states, image_tokens))

    def generative_tokens(self, encoder_tokens: Tensor, num_frames: int | None = None) -> Tensor:
        """The multimodal decoder's image tokens (B, Q, D) from image-encoder tokens: one image's (B, N, C), or all
        ``num_frames`` frames' of a clip (B, T*N, C), first moved by the model's temporal embedding when it has one
        (``temporal_frames``) and its spatial one (``spatial_tokens``), then read by the generative pooler as one
        set."""
        if self.frame_time is not None and num_frames is not None:
            encoder_tokens = self.frame_time(encoder_tokens, num_frames)
        if self.frame_space is not None and num_frames is not None:
            encoder_tokens = self.frame_space(encoder_tokens, num_frames)
        return self.image_pooling(encoder_tokens).tokens

    def teacher_forced_caption_logits(self, encoder_tokens: Tensor, text_ids: Tensor,
                                      num_frames: int | None = None) -> Tensor:
        """The captioning loss's logits from image-encoder tokens (see :meth:`generative_tokens`) and caption ids
        (B, L) -> (B, L-1, V), position i predicting ``text_ids[:, i+1]`` (what :meth:`forward` computes from
        images, without the contrastive side)."""
        image_tokens = self.generative_tokens(encoder_tokens, num_frames)  # (B, Q, D)
        return self.caption_logits(image_tokens, self.text(text_ids).token_states[:, :-1])

    # -- both -----------------------------------------------------------------------------------------------------
    def scaled_logit_scale(self) -> Tensor:
        """exp(logit_scale), clamped at ``max_logit_scale`` (100: temperature never below 0.01)."""
        return self.logit_scale.clamp(max=math.log(self.cfg.max_logit_scale)).exp()

    def forward(self, images: Tensor, text_ids: Tensor) -> CoCaOutput:
        """Images (B, 3, H, W) and caption ids (B, L) -> both losses' inputs from one pass."""
        pooled = self.image_features(images)
        text = self.text(text_ids)
        logits = self.caption_logits(pooled.tokens, text.token_states[:, :-1])
        return CoCaOutput(
            image_latent=F.normalize(pooled.embedding, dim=-1),
            text_latent=F.normalize(text.embedding, dim=-1),
            caption_logits=logits,
            caption_labels=text_ids[:, 1:],
            logit_scale=self.scaled_logit_scale(),
        )

    @torch.no_grad()
    def generate(self, images: Tensor, method: str = "beam", max_len: int = 30, **kwargs) -> Tensor:
        """Caption images (B, 3, H, W): token ids (B, <= max_len) starting with SOT.

        ``method``: ``beam`` (default), ``greedy`` or ``top_p``; see :mod:`coca_video.model.generate` for options.
        open_clip's spellings work too (``generation_type="beam_search"``, ``seq_len=20``, ...). Decode with
        ``tokenizer.batch_decode(ids)``.
        """
        return self.generate_from_tokens(self.image_encoder(images), method, max_len, **kwargs)

    @torch.no_grad()
    def generate_from_tokens(self, encoder_tokens: Tensor, method: str = "beam", max_len: int = 30,
                             num_frames: int | None = None, **kwargs) -> Tensor:
        """Caption from image-encoder tokens: one image's (B, N, C), or all ``num_frames`` frames' of a clip
        (B, T*N, C), which the generative pooler reads as one set (VideoCoCa's video captioning input), after the
        model's temporal embedding when it has one (:meth:`generative_tokens`)."""
        was_training = self.training
        self.eval()
        try:
            method, max_len, kwargs = from_open_clip_options(method, max_len, kwargs)
            image_tokens = self.generative_tokens(encoder_tokens, num_frames)
            return generate_captions(self, image_tokens, method=method, max_len=max_len, **kwargs)
        finally:
            self.train(was_training)

    def start_decoding(self, image_tokens: Tensor) -> "KVDecoding":
        """A fresh incremental decoding state for decoder image tokens (B, Q, D) (see ``generate.CaptionDecoder``)."""
        return KVDecoding(self, image_tokens)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute activations in the backward pass of every transformer stack (less memory, more compute)."""
        self.image_encoder.set_grad_checkpointing(enable)
        self.text.grad_checkpointing = enable
        self.decoder.grad_checkpointing = enable


class KVDecoding:
    """Caches of the unimodal and multimodal layers plus the image keys/values, for one batch of hypotheses."""

    def __init__(self, model: CoCa, image_tokens: Tensor) -> None:
        self.model = model
        self.text_caches = [KVCache() for _ in model.text.layers]
        self.decoder_caches = [KVCache() for _ in model.decoder.layers]
        self.image_kv = model.decoder.image_kv(image_tokens)

    def next_logits(self, new_ids: Tensor) -> Tensor:
        """Feed ``new_ids`` (B, s); return the vocabulary logits (B, V) of the last position."""
        token_states = self.model.text.decode_step(new_ids, self.text_caches)
        hidden = self.model.decoder.decode_step(token_states, self.image_kv, self.decoder_caches)
        return self.model.vocab_logits(hidden[:, -1]).float()

    def reorder(self, index: Tensor) -> None:
        """Keep hypotheses ``index`` in that order."""
        for cache in self.text_caches + self.decoder_caches:
            cache.reorder(index)
        self.image_kv = [(k[index], v[index]) for k, v in self.image_kv]
