"""coca-video: CoCa (Contrastive Captioners) as a video understanding pipeline.

    import coca_video
    model = coca_video.create_model("coca_ViT-B-32", pretrained="open_clip_pytorch_model.bin")
    tokenizer = coca_video.get_tokenizer("coca_ViT-B-32")
    preprocess = coca_video.image_transform(model)
"""

from .api import create_model_and_transforms, encode_video_file, encode_video_frames
from .model import CoCa, CoCaConfig, create_model, get_model_config, get_tokenizer, list_models, list_pretrained
from .model import load_weights, save_pretrained
from .transforms import image_transform
from .zero_shot import zero_shot_classify

__version__ = "0.1.0"

__all__ = [
    "CoCa", "CoCaConfig", "__version__", "create_model", "create_model_and_transforms", "encode_video_file",
    "encode_video_frames", "get_model_config", "get_tokenizer", "image_transform", "list_models", "list_pretrained",
    "load_weights", "save_pretrained", "zero_shot_classify",
]
