"""coca-video: CoCa (Contrastive Captioners) as a video understanding pipeline.

    import coca_video
    model = coca_video.create_model("coca_ViT-B-32", pretrained="open_clip_pytorch_model.bin")
    tokenizer = coca_video.get_tokenizer("coca_ViT-B-32")
    preprocess = coca_video.image_transform(model)

The names below load on first use (PEP 562), so ``import coca_video`` (and ``coca-video --help``) does not import
torch; ``coca_video.create_model`` does.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"  # the one home of the version: pyproject.toml reads it from here

_HOMES = {  # public name -> the submodule that defines it
    "create_model_and_transforms": "api", "encode_video_file": "api", "encode_video_frames": "api",
    "CoCa": "model", "CoCaConfig": "model", "create_model": "model", "get_model_config": "model",
    "get_tokenizer": "model", "list_models": "model", "list_pretrained": "model", "load_weights": "model",
    "save_pretrained": "model", "image_transform": "transforms", "zero_shot_classify": "zero_shot",
}

__all__ = sorted([*_HOMES, "__version__"])


def __getattr__(name: str) -> object:
    """``coca_video.NAME`` for the public names: import their submodule on first use and keep the name here."""
    if name not in _HOMES:
        raise AttributeError(f"module 'coca_video' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
