"""The model side of a server: a text or an uploaded image in, one normalised embedding out, from the model loaded
once for the server's life. One encode at a time (a lock): concurrent requests on a few cores would otherwise split
the cores between them and all finish late."""

from __future__ import annotations

import io
import threading
from typing import Callable

import numpy as np
import torch
from PIL import Image

from ..config import ModelConfig
from ..errors import DataError
from ..model import CoCa
from ..model.precision import compute_dtype
from ..runtime import autocast
from ..transforms import as_uint8_hwc, image_transform

MAX_IMAGE_PIXELS = 40_000_000  # an upload decoding to more pixels than this is refused (a decompression bomb)


class QueryEncoder:
    """Text and image queries as (D,) float32 unit vectors, from ``model`` (on ``model_cfg.device``)."""

    def __init__(self, model: CoCa, tokenizer: Callable, model_cfg: ModelConfig) -> None:
        self.model, self.tokenizer, self.model_cfg = model, tokenizer, model_cfg
        self.transform, self.dtype = image_transform(model), compute_dtype(model)
        self.lock = threading.Lock()

    def text(self, query: str) -> np.ndarray:
        """A text query's embedding (D,)."""
        return self.texts([query])[0]

    @torch.no_grad()
    def texts(self, queries: list[str]) -> list[np.ndarray]:
        """Text queries' embeddings, one (D,) each, in one model call."""
        ids = self.tokenizer(queries).to(self.model_cfg.device)  # (B, L)
        with self.lock, autocast(self.model_cfg.device, self.model_cfg.precision):
            embeddings = self.model.encode_text(ids)  # (B, D), normalised
        return list(embeddings.float().cpu().numpy())

    @torch.no_grad()
    def image(self, content: bytes) -> np.ndarray:
        """An image file's embedding (D,) through the image encoder; bytes that are not a decodable image (or
        decode to more than ``MAX_IMAGE_PIXELS``) raise :class:`~coca_video.errors.DataError`."""
        pixels = decode_image(content)  # (H, W, 3) uint8
        crops = self.transform.crops(pixels[None])[0]  # (1, 3, S, S) uint8
        frames = self.transform.normalise(crops, self.model_cfg.device, self.dtype)
        with self.lock, autocast(self.model_cfg.device, self.model_cfg.precision):
            embedding = self.model.encode_image(frames)  # (1, D), normalised
        return embedding[0].float().cpu().numpy()


def decode_image(content: bytes) -> torch.Tensor:
    """An uploaded image file as (H, W, 3) uint8 RGB; a one-line :class:`DataError` for anything else."""
    try:
        with Image.open(io.BytesIO(content)) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise DataError(f"image of {image.width}x{image.height} pixels is larger than "
                                f"{MAX_IMAGE_PIXELS:,} pixels")
            image.load()
            return as_uint8_hwc(image.convert("RGB"))
    except DataError:
        raise
    except Exception as err:  # noqa: BLE001 -- PIL raises many kinds for bad bytes; all mean "not an image"
        raise DataError(f"not a decodable image ({err.__class__.__name__})") from None

