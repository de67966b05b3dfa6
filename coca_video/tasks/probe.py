"""Action recognition, the CoCa paper's video recipe: every frame through the shared image encoder, ONE learned
query attending over all spatio-temporal tokens, softmax cross-entropy.

    python pipelines/kinetics_probe.py --config configs/probe/kinetics400_frozen.yaml data.video_root=/data/k400

``mode: frozen`` trains only the pooler and classifier on tokens from a feature cache (fp16, memory-mapped, keyed
by model, video list, sampling and views): the first epoch decodes and encodes, later epochs read the cache.
Frozen training therefore uses the evaluation sampling (segment centres), the usual practice for frozen features.
``mode: finetune`` trains the encoder too, on fresh TSN-sampled clips every epoch.
Under torchrun (either mode) every rank takes its share of the same global batches and the loss is the global
batch's mean, so N processes take the same steps as one; each validation video is scored by exactly one rank.
Outputs in ``output_dir``: metrics.json (top1, top5, mean_class_accuracy in percent, plus the protocol),
predictions.csv, per_class.csv, confusion.png (<= 50 classes; top confusions in metrics.json otherwise), curves.png,
and ``probe/``, the trained probe that ``coca-video score --probe`` applies to any folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..config import to_dict
from ..data.actions import ActionSet, load_actions
from ..data.labels import read_class_names
from ..data.results import atomic_write_table, atomic_write_text
from ..data.video import ClipSampling, VideoClipDataset, video_loader
from ..distributed import barrier, batch_shards, get_info, init_distributed, is_distributed, print0
from ..metrics import mean_class_accuracy, per_class_accuracy, topk_accuracy
from ..model import CoCa, VideoClassifier, create_model, save_probe
from ..training import CheckpointManager, MetricLogger, OptimConfig, build_optimizer, build_scheduler, set_rng_state
from ..transforms import image_transform


@dataclass
class SyntheticActionsConfig:
    """For ``format: synthetic``: a Kinetics-layout dataset written from the synthetic world into ``video_root``
    (train.csv, validate.csv, mp4 clips), labelled by the main object's ``task`` (motion, colour or shape)."""

    task: Literal["motion", "colour", "shape"] = "motion"
    train_videos: int = 200
    val_videos: int = 100
    size: int = 64
    seed: int = 0


@dataclass
class ProbeDataConfig:
    format: Literal["kinetics", "mit", "list", "csv", "synthetic"] = "kinetics"
    train: str = ""  # annotation file of the training split
    val: str = ""  # annotation file of the evaluation split
    video_root: str = ""  # folder of the training videos
    val_video_root: str | None = None  # default: video_root
    classes: str | None = None  # class list file or shipped list name (default: sorted labels of the training file)
    num_frames: int = 16
    workers: int = 2
    backend: Literal["auto", "decord", "pyav"] = "auto"
    timeout: float | None = 120.0
    synthetic: SyntheticActionsConfig = field(default_factory=SyntheticActionsConfig)


@dataclass
class ProbeHeadConfig:
    heads: int = 8
    temporal_pos_embed: bool = False  # learned per-frame embedding on the tokens (not in the paper)
    spatial_pos_embed: bool = False  # learned per-position embedding, shared by frames (not in the paper)
    label_smoothing: float = 0.0


@dataclass
class ProbeEvalConfig:
    temporal_views: int = 1
    spatial_crops: Literal[1, 3] = 1


@dataclass
class ProbeConfig:
    model: str = "default"
    pretrained: str | None = None
    mode: Literal["frozen", "finetune"] = "frozen"
    output_dir: str = "runs/probe"
    resume: str | None = None  # "auto" or a checkpoint file
    epochs: int = 10
    batch_size: int = 128
    precision: Literal["fp32", "bf16"] = "fp32"
    grad_checkpointing: bool = False
    seed: int = 0
    device: str = "cpu"
    data: ProbeDataConfig = field(default_factory=ProbeDataConfig)
    probe: ProbeHeadConfig = field(default_factory=ProbeHeadConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=5e-4, weight_decay=0.0, warmup_steps=100))
    eval: ProbeEvalConfig = field(default_factory=ProbeEvalConfig)


def run(cfg: ProbeConfig) -> dict[str, Any]:
    """Train the probe (resuming if asked), evaluate with multi-view testing, write every output."""
    info = init_distributed()
    torch.manual_seed(cfg.seed)
    output = Path(cfg.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    if info.is_main:  # rank 0 writes a synthetic dataset; the others wait for it
        train_set, val_set = load_sets(cfg)
    barrier()
    if not info.is_main:
        train_set, val_set = load_sets(cfg)
    print0(train_set.summary("train"), val_set.summary("val"), sep="\n")
    model = create_model(cfg.model, pretrained=cfg.pretrained, device=cfg.device)
    classifier = VideoClassifier(model.cfg.vision.width, len(train_set.classes), cfg.probe.heads,
                                 cfg.data.num_frames, model.image_encoder.num_tokens,
                                 temporal_pos_embed=cfg.probe.temporal_pos_embed,
                                 spatial_pos_embed=cfg.probe.spatial_pos_embed).to(cfg.device)
    if info.is_main:
        atomic_write_text(output / "config.json", json.dumps(to_dict(cfg), indent=2) + "\n")
    trainer = FrozenTrainer(cfg, model, classifier, train_set) if cfg.mode == "frozen" else \
        FinetuneTrainer(cfg, model, classifier, train_set)
    history = trainer.fit()
    result = evaluate(cfg, model, classifier, val_set)
    if get_info().is_main:
        write_outputs(output, result, train_set.classes, history, protocol(cfg, train_set, val_set, result))
        save_probe(output / "probe", classifier, train_set.classes, cfg.model, cfg.pretrained, cfg.data.num_frames,
                   finetuned=model if cfg.mode == "finetune" else None)
    barrier()
    return {k: result[k] for k in ("top1", "top5", "mean_class_accuracy")}


def load_sets(cfg: ProbeConfig) -> tuple[ActionSet, ActionSet]:
    """The training and evaluation sets (unlabelled training rows dropped); the evaluation set uses the training
    set's class order."""
    data, fmt = cfg.data, cfg.data.format
    if fmt == "synthetic":
        from ..data.synthetic import write_kinetics_format

        s = data.synthetic
        train_csv, val_csv = write_kinetics_format(data.video_root, s.train_videos, s.val_videos, s.task, s.size,
                                                   data.num_frames, s.seed)
        data = ProbeDataConfig(**{**vars(data), "format": "kinetics", "train": str(train_csv), "val": str(val_csv)})
        fmt = "kinetics"
    classes = read_class_names(data.classes) if data.classes else None
    train = load_actions(fmt, data.train, data.video_root, classes)
    train.items = [item for item in train.items if item.label >= 0]
    val = load_actions(fmt, data.val, data.val_video_root or data.video_root, train.classes)
    return train, val


# -- frozen features -----------------------------------------------------------------------------------------------
class FeatureCache:
    """Encoder tokens of every (video, view) as fp16 in a memory-mapped ``.npy``, filled once. Each rank records
    the rows it finished (and failures with their reason) in its own state file, so an interrupted fill resumes and
    ranks never write the same file; :meth:`reload` unites them."""

    def __init__(self, folder: Path, key: dict[str, Any], shape: tuple[int, ...], rank: int = 0) -> None:
        digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        folder.mkdir(parents=True, exist_ok=True)
        self.tokens_path = folder / f"{digest}.tokens.npy"
        self.state_pattern = f"{digest}.state.rank*.json"
        self.state_path = folder / f"{digest}.state.rank{rank}.json"
        if rank == 0 and not self.tokens_path.exists():
            np.lib.format.open_memmap(self.tokens_path, mode="w+", dtype=np.float16, shape=shape).flush()
        barrier()
        self.tokens = np.lib.format.open_memmap(self.tokens_path, mode="r+")
        self.reload()

    def reload(self) -> None:
        """Rows done and failed according to every rank's state file."""
        self.done, self.failed = set(), {}
        for path in sorted(self.tokens_path.parent.glob(self.state_pattern)):
            state = json.loads(path.read_text())
            self.done.update(state["done"])
            self.failed.update({int(k): v for k, v in state["failed"].items()})
        self.mine: dict[str, Any] = json.loads(self.state_path.read_text()) if self.state_path.exists() else \
            {"done": [], "failed": {}}

    def todo(self) -> list[int]:
        return [i for i in range(self.tokens.shape[0]) if i not in self.done and i not in self.failed]

    def store(self, indices: list[int], tokens: torch.Tensor, errors: list[tuple[int, str, str]]) -> None:
        for row, index in enumerate(indices):
            self.tokens[index] = tokens[row].to(torch.float16).numpy()
        self.tokens.flush()
        self.done.update(indices)
        self.failed.update({index: reason for index, _, reason in errors})
        self.mine["done"] = sorted({*self.mine["done"], *indices})
        self.mine["failed"].update({str(index): reason for index, _, reason in errors})
        atomic_write_text(self.state_path, json.dumps(self.mine))


@torch.no_grad()
def encode_clips(model: CoCa, frames: torch.Tensor, precision: str) -> torch.Tensor:
    """(B, V, T, 3, S, S) -> encoder tokens (B, V, T*N, C)."""
    with autocast(frames.device, precision):
        tokens = model.encode_video(frames.flatten(0, 1)).tokens
    return tokens.float().unflatten(0, frames.shape[:2])


def fill_cache(cfg: ProbeConfig, model: CoCa, action_set: ActionSet, sampling: ClipSampling,
               name: str) -> FeatureCache:
    """The cache of ``action_set`` under ``sampling``, encoding only what is not in it yet."""
    views = sampling.temporal_views * sampling.spatial_crops
    key = {"model": cfg.model, "pretrained": cfg.pretrained, "videos": [i.path for i in action_set.items],
           "windows": [(i.start_sec, i.end_sec) for i in action_set.items], "sampling": to_dict(sampling),
           "precision": cfg.precision,
           "finetuned": weights_digest(model.image_encoder) if cfg.mode == "finetune" else None}
    shape = (len(action_set.items), views, sampling.num_frames * model.image_encoder.num_tokens, model.cfg.vision.width)
    info = get_info()
    cache = FeatureCache(Path(cfg.output_dir) / "feature_cache", key, shape, info.rank)
    todo = cache.todo()[info.rank::info.world_size]  # under torchrun each rank encodes its share
    if todo:
        print(f"encoding {len(todo)} {name} videos into the feature cache {cache.tokens_path}")
        dataset = VideoClipDataset([action_set.items[i] for i in todo], image_transform(model), sampling,
                                   seed=cfg.seed, backend=cfg.data.backend, timeout=cfg.data.timeout)
        model.eval()
        for batch in video_loader(dataset, batch_size=max(1, cfg.batch_size // 8), workers=cfg.data.workers):
            tokens = encode_clips(model, batch["frames"].to(cfg.device), cfg.precision) \
                if batch["frames"] is not None else torch.empty(0)
            cache.store([todo[i] for i in batch["indices"]], tokens.cpu(),
                        [(todo[i], p, r) for i, p, r in batch["errors"]])
    barrier()
    cache.reload()
    return cache


def weights_digest(module: nn.Module) -> str:
    """A hash of ``module``'s weights: a finetuned encoder's cached tokens are valid for those weights only."""
    digest = hashlib.sha1()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class Trainer:
    """Epoch loop shared by both modes: optimiser, schedule, atomic per-epoch checkpoints, exact resume."""

    def __init__(self, cfg: ProbeConfig, model: CoCa, classifier: VideoClassifier, train_set: ActionSet) -> None:
        self.cfg, self.model, self.classifier, self.train_set = cfg, model, classifier, train_set
        self.info = get_info()
        self.checkpoints = CheckpointManager(cfg.output_dir, keep_last=2)
        self.logger = MetricLogger(cfg.output_dir, enabled=self.info.is_main)

    def trainable(self) -> nn.Module:
        raise NotImplementedError

    def steps_per_epoch(self) -> int:
        raise NotImplementedError

    def train_epoch(self, epoch: int) -> float:
        raise NotImplementedError

    def fit(self) -> list[dict[str, float]]:
        module = self.trainable()
        self.optimizer = build_optimizer(module, self.cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, self.cfg.optim, self.cfg.epochs * self.steps_per_epoch())
        start, history = self.restore(module)
        self.wrapped = nn.parallel.DistributedDataParallel(module) if is_distributed() else module
        for epoch in range(start, self.cfg.epochs):
            loss = self.train_epoch(epoch)
            history.append({"epoch": epoch + 1, "train_loss": loss})
            self.logger.log(epoch + 1, {"train_loss": loss, "lr": self.scheduler.get_last_lr()[0]})
            if self.info.is_main:
                self.checkpoints.save(epoch + 1, {"trainable": module.state_dict(),
                                                  "optimizer": self.optimizer.state_dict(),
                                                  "scheduler": self.scheduler.state_dict(),
                                                  "history": json.dumps(history)})
            barrier()
        self.logger.close()
        return history

    def restore(self, module: nn.Module) -> tuple[int, list[dict[str, float]]]:
        path = self.checkpoints.resolve(self.cfg.resume)
        if path is None:
            return 0, []
        state = self.checkpoints.load(path)
        module.load_state_dict(state["trainable"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        return int(state["step"]), json.loads(state["history"])

    def step(self, logits: torch.Tensor, labels: torch.Tensor) -> float:
        """One optimiser step on this rank's share of a global batch. The loss is the mean over the whole global
        batch whatever the shares' sizes (an empty share, ``labels`` of length 0, contributes zero), so any number
        of processes takes the same step; a global batch with no video at all takes none. Returns that mean."""
        if len(labels):
            loss_sum = F.cross_entropy(logits.float(), labels, label_smoothing=self.cfg.probe.label_smoothing,
                                       reduction="sum")
        else:
            loss_sum = logits.float().sum() * 0.0  # still runs backward: every rank joins DDP's gradient reduction
        totals = torch.tensor([float(len(labels)), loss_sum.item()])
        if is_distributed():
            dist.all_reduce(totals)
        count = max(totals[0].item(), 1.0)
        self.optimizer.zero_grad(set_to_none=True)
        (loss_sum * (self.info.world_size / count)).backward()  # DDP then averages the gradients over ranks
        if totals[0] == 0:
            return float("nan")
        torch.nn.utils.clip_grad_norm_(self.trainable().parameters(), self.cfg.optim.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return totals[1].item() / count


class FrozenTrainer(Trainer):
    """Pooler + classifier on cached tokens (view 0 of the evaluation sampling)."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.model.requires_grad_(False)
        self.cache = fill_cache(self.cfg, self.model, self.train_set, ClipSampling(self.cfg.data.num_frames), "train")
        self.rows = np.array(sorted(self.cache.done))
        self.labels = torch.tensor([self.train_set.items[i].label for i in self.rows])
        if len(self.rows) == 0:
            raise FileNotFoundError(f"{self.cfg.data.train}: no training video could be decoded")

    def trainable(self) -> nn.Module:
        return self.classifier

    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.rows) / self.cfg.batch_size)

    def train_epoch(self, epoch: int) -> float:
        self.classifier.train()
        losses = []
        for batch in batch_shards(len(self.rows), self.cfg.batch_size, seed=self.cfg.seed * 1000 + epoch):
            rows = self.rows[batch]
            tokens = torch.from_numpy(self.cache.tokens[rows, 0]).float()  # memmap rows in batch order
            logits = self.wrapped(tokens.to(self.cfg.device))
            losses.append(self.step(logits, self.labels[batch].to(self.cfg.device)))
        return float(np.mean(losses))


class FinetuneTrainer(Trainer):
    """Encoder + pooler + classifier on fresh TSN-sampled clips each epoch; under torchrun each rank decodes its
    share of every global batch."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.model.set_grad_checkpointing(self.cfg.grad_checkpointing)
        self.dataset = VideoClipDataset(self.train_set.items, image_transform(self.model, train=False),
                                        ClipSampling(self.cfg.data.num_frames, mode="train"), seed=self.cfg.seed,
                                        backend=self.cfg.data.backend, timeout=self.cfg.data.timeout)
        self.both = EncoderAndClassifier({"encoder": self.model.image_encoder, "classifier": self.classifier})

    def trainable(self) -> nn.Module:
        return self.both

    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.dataset) / self.cfg.batch_size)

    def train_epoch(self, epoch: int) -> float:
        self.both.train()
        self.dataset.set_epoch(epoch)
        batches = batch_shards(len(self.dataset), self.cfg.batch_size, seed=self.cfg.seed * 1000 + epoch)
        losses = []
        for batch in video_loader(self.dataset, self.cfg.batch_size, self.cfg.data.workers, batches=batches):
            frames, labels = batch["frames"], batch["labels"]
            if frames is None:  # nothing decoded in this rank's share: a stand-in clip that contributes zero
                size = self.model.cfg.vision.image_size
                frames = torch.zeros(1, 1, self.cfg.data.num_frames, 3, size, size)
            with autocast(torch.device(self.cfg.device), self.cfg.precision):
                logits = self.wrapped(frames[:, 0].to(self.cfg.device))
            loss = self.step(logits, labels.to(self.cfg.device))
            if not math.isnan(loss):
                losses.append(loss)
        return float(np.mean(losses)) if losses else float("nan")


class EncoderAndClassifier(nn.ModuleDict):
    """The finetuned modules in one ``nn.Module`` whose forward maps frames to logits, as DDP needs."""

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, S, S) preprocessed frames -> (B, classes) logits."""
        frame_tokens = self["encoder"](frames.flatten(0, 1))  # (B*T, N, C)
        return self["classifier"](frame_tokens.unflatten(0, frames.shape[:2]).flatten(1, 2))


def autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()


# -- evaluation ----------------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(cfg: ProbeConfig, model: CoCa, classifier: VideoClassifier, val_set: ActionSet) -> dict[str, Any]:
    """Multi-view testing: softmax probabilities averaged over temporal views x spatial crops. Videos that fail
    to decode are excluded and listed, never replaced."""
    sampling = ClipSampling(cfg.data.num_frames, temporal_views=cfg.eval.temporal_views,
                            spatial_crops=cfg.eval.spatial_crops)
    model.eval()
    classifier.eval()
    cache = fill_cache(cfg, model, val_set, sampling, "val")
    info = get_info()
    rows = sorted(cache.done)
    mine = rows[info.rank::info.world_size]  # each video scored by exactly one rank, gathered in row order
    probabilities = [torch.empty(0, len(val_set.classes))]
    for start in range(0, len(mine), cfg.batch_size):
        tokens = torch.from_numpy(cache.tokens[mine[start:start + cfg.batch_size]]).float().to(cfg.device)
        logits = classifier(tokens.flatten(0, 1)).unflatten(0, tokens.shape[:2])  # (B, V, classes)
        probabilities.append(logits.float().softmax(-1).mean(1).cpu())
    probs = gather_rows(torch.cat(probabilities), len(rows))
    labels = torch.tensor([val_set.items[i].label for i in rows])
    predictions = probs.argmax(-1)
    return {**topk_accuracy(probs, labels, (1, 5)), "mean_class_accuracy": mean_class_accuracy(predictions, labels),
            "per_class": per_class_accuracy(predictions, labels, len(val_set.classes)), "probs": probs,
            "labels": labels, "paths": [val_set.items[i].path for i in rows],
            "failed": [(val_set.items[i].path, reason) for i, reason in sorted(cache.failed.items())]}


def gather_rows(local: torch.Tensor, total: int) -> torch.Tensor:
    """Rows that rank r computed for positions r, r+W, r+2W, ... back in position order (identity on one process)."""
    if not is_distributed():
        return local
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, local)
    out = torch.empty(total, local.shape[1])
    for rank, part in enumerate(parts):
        out[rank::len(parts)] = part
    return out


def protocol(cfg: ProbeConfig, train_set: ActionSet, val_set: ActionSet, result: dict[str, Any]) -> dict[str, Any]:
    return {"mode": cfg.mode, "model": cfg.model, "checkpoint": cfg.pretrained or cfg.model,
            "frames": cfg.data.num_frames, "views": f"{cfg.eval.temporal_views}x{cfg.eval.spatial_crops}",
            "temporal_pos_embed": cfg.probe.temporal_pos_embed, "spatial_pos_embed": cfg.probe.spatial_pos_embed,
            "train_videos": len(train_set.items),
            "val_videos_evaluated": len(result["paths"]), "val_videos_missing": len(val_set.missing),
            "val_videos_failed": result["failed"]}


def write_outputs(output: Path, result: dict[str, Any], classes: list[str], history: list[dict[str, float]],
                  proto: dict[str, Any]) -> None:
    """metrics.json, predictions.csv, per_class.csv, confusion.png (or top confusions), curves.png."""
    probs, labels = result["probs"], result["labels"]
    predictions = probs.argmax(-1) if len(probs) else torch.empty(0, dtype=torch.long)
    confusion = torch.zeros(len(classes), len(classes), dtype=torch.long)
    confusion.index_put_((labels, predictions), torch.ones_like(labels), accumulate=True)
    metrics = {k: result[k] for k in ("top1", "top5", "mean_class_accuracy")} | {"protocol": proto}
    if len(classes) > 50:
        off = confusion.clone().fill_diagonal_(0)
        top = off.flatten().topk(min(20, off.numel())).indices
        metrics["top_confusions"] = [{"true": classes[i // len(classes)], "predicted": classes[i % len(classes)],
                                      "count": int(off.flatten()[i])} for i in top.tolist() if off.flatten()[i] > 0]
    atomic_write_text(output / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    top5 = probs.topk(min(5, len(classes)), dim=-1).indices.tolist() if len(probs) else []
    predictions_table = {"path": result["paths"], "label": [classes[i] for i in labels.tolist()],
                         "prediction": [classes[i] for i in predictions.tolist()],
                         "top5": ["|".join(classes[i] for i in row) for row in top5]}
    atomic_write_table(pa.table(predictions_table), output / "predictions.csv")
    per_class = {"class": classes, "accuracy": result["per_class"],
                 "videos": [int((labels == c).sum()) for c in range(len(classes))]}
    atomic_write_table(pa.table(per_class), output / "per_class.csv")
    plot_outputs(output, confusion, classes, history)
    print(f"top-1 {result['top1']:.1f}  top-5 {result['top5']:.1f}  mean class {result['mean_class_accuracy']:.1f}  "
          f"({proto['val_videos_evaluated']} videos evaluated) -> {output / 'metrics.json'}")


def plot_outputs(output: Path, confusion: torch.Tensor, classes: list[str], history: list[dict[str, float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if len(classes) <= 50:
        fig, ax = plt.subplots(figsize=(2 + 0.3 * len(classes), 2 + 0.3 * len(classes)))
        ax.imshow(confusion.numpy(), cmap="Blues")
        ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        fig.tight_layout()
        fig.savefig(output / "confusion.png", dpi=100)
        plt.close(fig)
    if history:
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.plot([h["epoch"] for h in history], [h["train_loss"] for h in history], marker="o")
        ax.set_xlabel("epoch")
        ax.set_ylabel("training loss")
        fig.tight_layout()
        fig.savefig(output / "curves.png", dpi=100)
        plt.close(fig)

