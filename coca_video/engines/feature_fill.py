"""The feature-cache fill of ``probe`` and ``finetune-captions`` through the one encoding pass (:mod:`.cached`): the
cache (:class:`~coca_video.data.feature_cache.CacheStore`) is the pass's store, and :class:`TokenScorer`'s rows carry
each clip's encoder tokens, so the fill runs on either engine (``engine: local|ray``, the same ``ray.*`` block as
every other command), resumes where it stopped, and keeps a clip that fails to decode as the cache's failed row."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch

from ..config import DecodeConfig, ModelConfig, RayConfig
from ..data.feature_cache import CacheStore, FeatureCache, StoredFormat, encode_clips, open_cache
from ..data.results import input_key
from ..data.video import ClipSampling, VideoItem
from ..distributed import get_info
from ..model import CoCa
from ..model.video_classifier import pool_patch_tokens
from ..scoring import ScoreItem, VideoScorer
from .cached import Encoder, Engine, encode, loaded


class TokenScorer(VideoScorer):
    """A scorer whose rows carry each clip's encoder tokens for the feature cache: ``tokens`` (V, T*N, C) float32 on
    the CPU, patch tokens pooled over ``pool`` x ``pool`` squares (1: as they are), or for ``fmt="embedding"`` each
    view's (1, D) normalised mean frame embedding (:func:`~coca_video.data.feature_cache.encode_clips`)."""

    def __init__(self, model: CoCa, model_cfg: ModelConfig, num_frames: int, fmt: StoredFormat, pool: int) -> None:
        super().__init__(model.eval(), None, model_cfg)
        self.num_frames, self.fmt, self.pool = num_frames, fmt, pool

    @torch.no_grad()
    def __call__(self, clips: torch.Tensor) -> list[dict[str, Any]]:
        """(B, V, T, 3, S, S) uint8 -> one partial row per clip, its ``tokens`` (V, T*N', C)."""
        tokens = encode_clips(self.model, self.transform, clips, self.model_cfg, self.fmt)  # (B, V, T*N, C)
        return [{"tokens": values} for values in pool_patch_tokens(tokens, self.num_frames, self.pool).cpu()]

    def empty_row(self) -> dict[str, Any]:
        return {"tokens": None}


def token_scorer(model_cfg: ModelConfig, num_frames: int, fmt: StoredFormat, pool: int,
                 encoder_state: dict[str, torch.Tensor] | None = None, model: CoCa | None = None,
                 tokenizer: Any = None) -> TokenScorer:
    """The fill's scorer, with the driver's ``model``, or (a Ray encode actor) ``model_cfg``'s loaded here, its image
    encoder set to ``encoder_state`` when given (a finetuned encoder's weights, which ``model_cfg`` does not load)."""
    model, _ = loaded(model_cfg, model, tokenizer)
    if encoder_state is not None:
        model.image_encoder.load_state_dict(encoder_state)
    return TokenScorer(model, model_cfg, num_frames, fmt, pool)


def fill_cache(folder: Path, items: list[VideoItem], model: CoCa, model_cfg: ModelConfig, sampling: ClipSampling,
               decode: DecodeConfig, name: str, weights_digest: str | None = None, fmt: StoredFormat = "fp16",
               token_pool: int = 2, check_space: bool = True, engine: Engine = "local",
               ray: RayConfig | None = None) -> FeatureCache:
    """The cache of ``items`` under ``sampling`` in format ``fmt`` (:func:`~coca_video.data.feature_cache.
    open_cache`: planned against the free space when new, rows verified), encoding on ``engine`` only the items
    not in it yet (under torchrun each rank its share); every rank's rows, reloaded. ``weights_digest``: set for an
    encoder finetuned in this process, whose tokens are valid for its weights only (Ray's actors get its weights)."""
    if sampling.mode == "train":
        raise ValueError("a feature cache holds deterministic clips: sampling mode eval or linspace")
    cache = open_cache(folder, items, model, model_cfg, sampling, decode, weights_digest, fmt, token_pool,
                       check_space)
    wanted = [ScoreItem(input_key(item.path), item.start_sec, item.end_sec) for item in items]
    store = CacheStore(cache, [item.stored() for item in wanted])
    todo = list(dict.fromkeys(wanted))  # a video listed twice is encoded once, its tokens stored in both rows
    info, done = get_info(), store.done_keys()
    share = [item for item in todo[info.rank::info.world_size] if item.stored() not in done]  # as the pass shares
    if share:
        print(f"encoding {len(share)} {name} videos into the feature cache {cache.tokens_path}")
    state = None if weights_digest is None or engine != "ray" else \
        {key: value.cpu() for key, value in model.image_encoder.state_dict().items()}
    make_scorer = functools.partial(token_scorer, model_cfg, sampling.num_frames, fmt,
                                    token_pool if fmt == "pooled" else 1, state)
    encode(todo, store, cache.key, Encoder(make_scorer, model, None, decode, engine, ray or RayConfig(), sampling))
    cache.reload()
    return cache
