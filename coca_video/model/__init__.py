"""The CoCa model: one module per box of the paper's figure (vit, pooler, text_decoder, loss) wired in coca; the
factory names models, state_dict reads and writes weights, open_clip converts open_clip's checkpoints."""

from .coca import CoCa, CoCaOutput, VideoEncoding
from .config import CoCaConfig, DecoderConfig, PoolerConfig, PreprocessConfig, TextConfig, VisionConfig
from .factory import (
    checkpoint_folder,
    create_model,
    describe_models,
    get_model_config,
    get_tokenizer,
    list_models,
    list_pretrained,
    tokenizer_files,
)
from .loss import CoCaLoss, caption_loss, contrastive_loss
from .probe_folder import ProbeInfo, load_probe, read_probe_info, save_probe
from .state_dict import load_weights, save_pretrained
from .video_classifier import VideoClassifier, VideoClassifierConfig

__all__ = [
    "CoCa", "CoCaConfig", "CoCaLoss", "CoCaOutput", "DecoderConfig", "PoolerConfig", "PreprocessConfig", "ProbeInfo",
    "TextConfig", "VideoClassifier", "VideoClassifierConfig", "VideoEncoding", "VisionConfig", "caption_loss",
    "checkpoint_folder", "contrastive_loss", "create_model", "describe_models", "get_model_config", "get_tokenizer",
    "list_models", "list_pretrained", "load_probe", "load_weights", "read_probe_info", "save_pretrained", "save_probe",
    "tokenizer_files",
]
