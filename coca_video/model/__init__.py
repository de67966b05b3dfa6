"""The CoCa model: one module per box of the paper's figure (vit, pooler, text_decoder, loss) wired in coca."""

from .checkpoint import (
    CheckpointError,
    checkpoint_folder,
    create_model,
    get_model_config,
    get_tokenizer,
    list_models,
    load_probe,
    load_weights,
    prompt_templates,
    save_pretrained,
    save_probe,
)
from .coca import CoCa, CoCaOutput, VideoEncoding
from .config import CoCaConfig, DecoderConfig, PoolerConfig, PreprocessConfig, TextConfig, VisionConfig
from .loss import CoCaLoss, caption_loss, contrastive_loss
from .video_classifier import VideoClassifier

__all__ = [
    "CheckpointError", "CoCa", "CoCaConfig", "CoCaLoss", "CoCaOutput", "DecoderConfig", "PoolerConfig",
    "PreprocessConfig", "TextConfig", "VideoClassifier", "VideoEncoding", "VisionConfig", "caption_loss",
    "checkpoint_folder", "contrastive_loss", "create_model", "get_model_config", "get_tokenizer", "list_models",
    "load_probe", "load_weights", "prompt_templates", "save_pretrained", "save_probe",
]
