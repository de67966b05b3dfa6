"""Weights on disk: read a state dict (ours or open_clip's), load it strictly, write a checkpoint folder.

A coca-video checkpoint folder holds ``config.json`` (``{"model": CoCaConfig, "runs_with": {...}}``), ``model.safetensors`` and the
tokenizer's files. Nothing here unpickles arbitrary objects (torch files load with ``weights_only=True``), and
every mismatch names the file and the first differing keys and shapes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..config import to_dict
from ..errors import CheckpointError
from ..io import check_publishable, publish_folder
from .frame_time import with_motion
from .open_clip import convert_open_clip_state_dict, is_open_clip_state_dict

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
OPEN_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def load_weights(model: nn.Module, source: str | os.PathLike) -> nn.Module:
    """Strictly load a checkpoint file or folder (ours or open_clip's) into a CoCa ``model``."""
    path = weights_file(Path(source))
    state_dict = read_state_dict(path)
    if is_open_clip_state_dict(state_dict):
        state_dict = convert_open_clip_state_dict(state_dict, model.cfg, path)
    load_strict(model, with_motion(state_dict), path)
    return model


def weights_file(path: Path) -> Path:
    """The weights file inside a checkpoint folder (ours first, then open_clip's), or ``path`` itself."""
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    if path.is_file():
        return path
    for candidate in (WEIGHTS_FILE, *OPEN_CLIP_FILES):
        if (path / candidate).is_file():
            return path / candidate
    raise CheckpointError(f"{path}: folder holds none of {WEIGHTS_FILE}, {', '.join(OPEN_CLIP_FILES)}")


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """Tensors of a ``.safetensors`` or torch file (``weights_only``), unwrapped and without DDP/compile prefixes."""
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: file is empty")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 -- any unreadable file is the user's file, named in one line
        raise CheckpointError(f"{path}: unreadable or truncated checkpoint ({type(err).__name__}: {err})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors")
    return {re.sub(r"^(module\.|_orig_mod\.)+", "", key): value for key, value in state.items()}


def load_strict(model: nn.Module, state_dict: dict[str, Tensor], path: Path) -> None:
    """``load_state_dict(strict=True)`` with an error naming ``path`` and the first mismatched keys and shapes."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
             for k, v in expected.items() if k in state_dict and state_dict[k].shape != v.shape]
    if missing or unexpected or wrong:
        groups = (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
        parts = [f"{label} ({len(items)}): {', '.join(items[:5])}{' ...' if len(items) > 5 else ''}"
                 for label, items in groups if items]
        raise CheckpointError(f"{path}: does not fit this architecture; " + "; ".join(parts))
    model.load_state_dict(state_dict, strict=True)


def save_safetensors(module: nn.Module, path: Path) -> None:
    """``module``'s state dict as safetensors (contiguous CPU tensors)."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(path), metadata={"format": "pt"})


def save_pretrained(model: nn.Module, folder: str | os.PathLike, extra_files: list[Path] | None = None,
                    runs_with: dict[str, Any] | None = None) -> Path:
    """Write a coca-video checkpoint folder: config.json, model.safetensors, and ``extra_files`` copied beside them
    (the tokenizer's files; optionally ``prompt_templates.txt``, the model's own zero-shot prompts). ``runs_with``:
    the settings the model was trained to run with (config blocks by path, e.g. ``{"decode": {"num_frames": 8}}``),
    kept in config.json for the commands that load it (:func:`coca_video.model.factory.runs_with`).

    The folder is built aside and moved into place whole. An existing destination is replaced only when it is a
    previous output of ours; a file, or a folder holding anything else, is refused before any work."""
    folder = check_publishable(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        save_safetensors(model, staging / WEIGHTS_FILE)
        config = {"model": to_dict(model.cfg), **({"runs_with": runs_with} if runs_with else {})}
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        for file in extra_files or []:
            shutil.copy2(file, staging / Path(file).name)
        return publish_folder(staging, folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def weights_digest(module: nn.Module) -> str:
    """A hash of ``module``'s weights (names and bytes): what was computed with them is valid for them only."""
    digest = hashlib.sha1()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())  # 0-d too
    return digest.hexdigest()
