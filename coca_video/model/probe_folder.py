"""A trained action-recognition probe on disk, as ``coca-video score --probe`` reads it.

    probe/probe.json               {"classes": [...], "backbone": NAME, "pretrained": FILE|null,
                                    "image_size": PX|null, "eval": {"temporal_views", "spatial_crops", "sampling"},
                                    "kind": "attentional" | "linear",
                                    "classifier": VideoClassifierConfig | LinearProbeConfig}
    probe/classifier.safetensors   the classifier's weights (a linear probe's: its weight and bias arrays)
    probe/model/                   for a finetuned encoder: the whole CoCa as a checkpoint folder (backbone "model")
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, ConfigError
from ..io import atomic_path, atomic_write_text
from .coca import CoCa
from .factory import tokenizer_files
from .state_dict import load_strict, save_pretrained, save_safetensors
from .linear_probe import LinearProbe, LinearProbeConfig
from .video_classifier import VideoClassifier, VideoClassifierConfig

PROBE_FILE, PROBE_WEIGHTS, FINETUNED_MODEL = "probe.json", "classifier.safetensors", "model"
PROBE_KINDS: dict[str, tuple[type, type]] = {"attentional": (VideoClassifier, VideoClassifierConfig),
                                             "linear": (LinearProbe, LinearProbeConfig)}


@dataclass
class ProbeViews:
    """The multi-view testing a probe was evaluated with, which ``score --probe`` repeats by default."""

    temporal_views: int = 1
    spatial_crops: int = 1
    sampling: str = "eval"  # decode.sampling


@dataclass
class ProbeInfo:
    """What ``probe.json`` says: class names in index order, the backbone to encode with, the classifier's shape."""

    classes: list[str]
    backbone: str  # a model name or checkpoint folder for create_model (a finetuned probe: its own model/)
    pretrained: str | None
    classifier: VideoClassifierConfig | LinearProbeConfig
    image_size: int | None = None  # the resolution the backbone ran at (None: its own)
    eval_views: ProbeViews = field(default_factory=ProbeViews)  # how the probe was evaluated
    kind: str = "attentional"  # attentional (VideoClassifier over tokens) or linear (LinearProbe over embeddings)


def save_probe(folder: str | os.PathLike, classifier: VideoClassifier | LinearProbe, classes: list[str], backbone: str,
               pretrained: str | None, finetuned: CoCa | None = None, image_size: int | None = None,
               eval_views: ProbeViews | None = None) -> Path:
    """Write a trained probe (see the module docstring); ``finetuned``: the encoder trained with it, saved whole."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if finetuned is not None:
        save_pretrained(finetuned, folder / FINETUNED_MODEL, tokenizer_files(backbone))
        backbone, pretrained = FINETUNED_MODEL, None
    with atomic_path(folder / PROBE_WEIGHTS) as tmp:
        save_safetensors(classifier, tmp)
    meta = {"classes": classes, "backbone": backbone, "pretrained": pretrained, "image_size": image_size,
            "eval": asdict(eval_views or ProbeViews()), "kind": probe_kind(classifier),
            "classifier": classifier.cfg.to_dict()}
    atomic_write_text(folder / PROBE_FILE, json.dumps(meta, indent=2) + "\n")
    return folder


def read_probe_info(folder: str | os.PathLike) -> ProbeInfo:
    """``probe.json`` of a probe folder, checked; ``backbone`` resolved to a name or folder for create_model."""
    folder = Path(folder)
    path = folder / PROBE_FILE
    if not path.is_file():
        raise CheckpointError(f"{folder}: not a probe folder (no {PROBE_FILE}; the probe writes output_dir/probe)")
    try:
        meta = json.loads(path.read_text())
        if not isinstance(meta, dict):
            raise ValueError(f"expected a JSON object, got {type(meta).__name__}")
        kind = str(meta.get("kind", "attentional"))  # probes written before linear ones existed are attentional
        if kind not in PROBE_KINDS:
            raise ValueError(f"kind {kind!r} is not one of {', '.join(PROBE_KINDS)}")
        config = PROBE_KINDS[kind][1].from_dict(meta.get("classifier") or _legacy_classifier(meta), str(path))
        info = ProbeInfo([str(c) for c in meta["classes"]], str(meta["backbone"]), meta.get("pretrained"), config,
                         meta.get("image_size"), ProbeViews(**meta.get("eval", {})), kind)
    except (ValueError, KeyError, TypeError, ConfigError) as err:
        raise CheckpointError(f"{path}: not a valid probe description ({type(err).__name__}: {err})") from None
    if info.classifier.num_classes != len(info.classes):
        raise CheckpointError(f"{path}: {len(info.classes)} classes but a classifier for {info.classifier.num_classes}")
    if info.backbone == FINETUNED_MODEL:
        info.backbone = str(folder / FINETUNED_MODEL)
    return info


def probe_kind(classifier: VideoClassifier | LinearProbe) -> str:
    """``attentional`` or ``linear``: which module a probe folder holds."""
    return next(kind for kind, (module, _) in PROBE_KINDS.items() if isinstance(classifier, module))


def load_probe(folder: str | os.PathLike) -> tuple[VideoClassifier | LinearProbe, ProbeInfo]:
    """The classifier of a probe folder (strictly loaded, eval mode; a :class:`LinearProbe` for a linear one) and
    its :class:`ProbeInfo`."""
    from safetensors.torch import load_file

    info = read_probe_info(folder)
    classifier = PROBE_KINDS[info.kind][0](info.classifier)
    weights = Path(folder) / PROBE_WEIGHTS
    try:
        state = load_file(str(weights))
    except Exception as err:  # noqa: BLE001 -- missing, truncated or foreign file: the user's file, one line
        raise CheckpointError(f"{weights}: unreadable or truncated ({type(err).__name__}: {err})") from None
    load_strict(classifier, state, weights)
    return classifier.eval(), info


def _legacy_classifier(meta: dict[str, Any]) -> dict[str, Any]:
    """The classifier config of a probe.json written before it was stored as one block (flat keys)."""
    return {"width": meta["width"], "num_classes": len(meta["classes"]), "heads": meta["heads"],
            "num_frames": meta["num_frames"], "tokens_per_frame": meta.get("tokens_per_frame", 0),
            "temporal_pos_embed": meta["temporal_pos_embed"], "spatial_pos_embed": meta.get("spatial_pos_embed", False)}
