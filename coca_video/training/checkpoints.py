"""Checkpoints that resume exactly (one restore path, RNG states included), what a checkpoint was written for, and
the check that a resumed run keeps the settings it started with."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..errors import CheckpointError, ConfigError, InputError
from ..io import atomic_path



def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as plain types and tensors (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                   "has_gauss": int(has_gauss), "gauss": float(gauss)}
    return {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])


class CheckpointManager:
    """``output_dir/checkpoints/step_{N:08d}.pt``, written atomically (temp file + rename), newest ``keep_last`` kept.

    A checkpoint holds everything a run needs to continue exactly: model, optimiser, scheduler, step, the data
    position (a step count: data streams are deterministic functions of it) and RNG states. Only rank 0 writes.
    Everything is stored as tensors and plain Python values, so resuming reads it with ``weights_only=True``.
    """

    def __init__(self, output_dir: str | Path, keep_last: int = 3, architecture: str | None = None) -> None:
        self.folder = Path(output_dir) / "checkpoints"
        self.keep_last, self.architecture = keep_last, architecture  # architecture: see architecture_id

    def save(self, step: int, state: dict[str, Any]) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"step_{step:08d}.pt"
        with atomic_path(path) as tmp:
            extra = {"architecture": self.architecture} if self.architecture else {}
            torch.save({**state, **extra, "step": step, "rng": rng_state()}, tmp)
        for old in self.all()[: -self.keep_last]:
            old.unlink(missing_ok=True)
        return path

    @property
    def best(self) -> Path:
        """``checkpoints/best.pt``: the checkpoint of the epoch whose validation was best (beside the newest)."""
        return self.folder / "best.pt"

    def keep_as_best(self, path: Path) -> None:
        """Copy checkpoint ``path`` to :attr:`best` (atomically: a crash leaves the previous best whole)."""
        with atomic_path(self.best) as tmp:
            shutil.copyfile(path, tmp)

    def all(self) -> list[Path]:
        return sorted(self.folder.glob("step_*.pt"))

    def resolve(self, resume: str | None) -> list[Path]:
        """The checkpoints to try, best first: ``auto`` -> every checkpoint, newest first (none yet: empty); a path
        -> that file."""
        if resume is None:
            return []
        if resume == "auto":
            return self.all()[::-1]
        path = Path(resume)
        if not path.is_file():
            raise InputError(f"resume={resume}: no such checkpoint file")
        return [path]

    @staticmethod
    def load(path: Path) -> dict[str, Any]:
        """A checkpoint's contents (tensors and plain values only); a damaged file raises CheckpointError naming it."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 -- truncated, empty or foreign: the file is named in one line
            raise CheckpointError(f"{path}: unreadable or truncated checkpoint ({type(err).__name__})") from None
        if not isinstance(state, dict) or not {"step", "rng"} <= set(state):
            raise CheckpointError(f"{path}: not a coca-video training checkpoint (no step/rng entries)")
        return state

    def restore(self, resume: str | None, load_states: Callable[[dict[str, Any]], None]) -> dict[str, Any] | None:
        """Load the checkpoint ``resume`` names, hand it to ``load_states`` (model, optimiser, schedule), then
        restore the RNG states. Returns the checkpoint, or None when starting fresh. With ``auto`` a damaged newest
        checkpoint is skipped with a warning naming it, for the previous good one. A checkpoint written for another
        architecture than this manager's (or whose tensors do not fit) is a CheckpointError naming both."""
        for path in self.resolve(resume):
            try:
                state = self.load(path)
            except CheckpointError as err:
                if resume != "auto":
                    raise
                print(f"warning: {err}; resuming from the previous checkpoint instead", file=sys.stderr)
                continue
            written_for = state.get("architecture")
            if self.architecture and written_for and written_for.split()[-1] != self.architecture.split()[-1]:
                raise CheckpointError(f"{path}: written for model {written_for}, but this run builds "
                                      f"{self.architecture}; "
                                      "use another output_dir or resume=null to start fresh")
            try:
                load_states(state)
            except (RuntimeError, KeyError, ValueError) as err:
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise CheckpointError(f"{path}: does not fit this run ({first})") from None
            set_rng_state(state["rng"])
            return state
        if resume == "auto" and self.all():
            print(f"warning: no readable checkpoint in {self.folder}; starting from step 0", file=sys.stderr)
        return None


def architecture_id(name: str, config: Any) -> str:
    """``name [digest]``: what a checkpoint was written for; two ids match when their config digests do."""
    from ..config import to_dict

    digest = hashlib.sha1(json.dumps(to_dict(config), sort_keys=True).encode()).hexdigest()[:10]
    return f"{name} [{digest}]"


RESUMABLE_CHANGES = ("log_every", "keep_last", "checkpoint_every", "grad_checkpointing", "distributed")  # train.*


def check_resumable(output_dir: str | Path, resume: str | None, config: Any) -> None:
    """Before a run writes anything: ``resume=auto`` into an ``output_dir`` that holds a run's checkpoints continues
    that run only with its settings, the ``train.*`` and ``optim.*`` keys of its config.json (all but
    :data:`RESUMABLE_CHANGES`, which change no step). Other settings would restart the schedule mid-run and
    overwrite its results, so they are a ConfigError naming the keys that differ and how to start a new run."""
    from ..config import to_dict

    folder = Path(output_dir)
    saved = folder / "config.json"
    if resume != "auto" or not CheckpointManager(folder).all() or not saved.is_file():
        return
    earlier, now = json.loads(saved.read_text()), json.loads(json.dumps(to_dict(config)))
    differ = [f"{block}.{key} {json.dumps(earlier.get(block, {}).get(key, '(unset)'))} -> {json.dumps(value)}"
              for block in ("train", "optim") for key, value in now[block].items()
              if key not in RESUMABLE_CHANGES and earlier.get(block, {}).get(key, "(unset)") != value]
    if differ:
        raise ConfigError(f"output_dir={folder} holds a run with other settings ({', '.join(differ)}); nothing "
                          "was changed: rerun with its settings to resume it, or start a new run with another "
                          "output_dir (or resume=null, which overwrites this one)")
