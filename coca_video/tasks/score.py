"""Batch scoring of a folder of videos: zero-shot labels, embeddings and captions, one row per file, resumable.

    coca-video score VIDEO_DIR --labels kinetics400_val.csv --caption --out scores.parquet
    torchrun --nproc_per_node 2 -m coca_video.cli score VIDEO_DIR ...     # each rank scores its shard

Each video: ``num_frames`` frames by uniform segment sampling -> the image encoder frame by frame -> the video
embedding (normalised mean of the frame embeddings, the paper's zero-shot video representation). Labels are the
softmax over logit-scaled cosine similarities to prompt-ensembled class embeddings. Captions come from the
multimodal decoder over the middle frame's image tokens: the decoder was trained on single images, so one frame's
tokens are what it knows how to read (pooling tokens across frames feeds it averages it never saw).
Results are flushed per batch (see :mod:`coca_video.data.results`); a rerun skips files already scored ok.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import torch
import torch.distributed as dist
from tqdm import tqdm

from ..data.labels import read_class_names, read_templates, video_templates
from ..data.results import PartStore, embeddings_path, file_key, merge
from ..data.video import VIDEO_EXTENSIONS, ClipSampling, VideoClipDataset, VideoItem, find_videos, video_loader
from ..config import ConfigError
from ..distributed import init_distributed, is_distributed
from ..model import CoCa, create_model, get_tokenizer, prompt_templates
from ..transforms import image_transform
from ..zero_shot import class_embeddings, class_probabilities


@dataclass
class ScoreConfig:
    videos: str = ""  # folder, searched recursively
    out: str = "scores.parquet"  # .parquet or .csv; embeddings go to <stem>.embeddings.parquet
    model: str = "default"
    pretrained: str | None = None  # weights for an architecture name (open_clip file, folder, hf-hub:)
    labels: str | None = None  # class list file (formats: data/labels.py) or kinetics400|600|700|moments_in_time
    probe: str | None = None  # a trained probe folder (output_dir/probe of the probe task): its classes and scores
    templates: str | None = None  # prompt file; default: the model's own prompts, else the video templates
    top_k: int = 5
    caption: bool = False
    caption_method: Literal["greedy", "beam", "top_p"] = "beam"
    caption_max_len: int = 30
    frame_embeddings: bool = False
    report: str | None = None  # HTML report path
    num_frames: int = 16
    sampling: Literal["eval", "linspace"] = "eval"  # segment centres (TSN, the paper's) or first-to-last linspace
    batch_size: int = 8
    workers: int = 2
    precision: Literal["fp32", "bf16"] = "fp32"
    backend: Literal["auto", "decord", "pyav"] = "auto"
    timeout: float | None = 120.0  # seconds per video decode
    device: str = "cpu"


def run(cfg: ScoreConfig) -> dict[str, Any]:
    """Score every video under ``cfg.videos`` not yet scored; merge all results into ``cfg.out``."""
    root = Path(cfg.videos)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: video folder not found")
    if cfg.probe and cfg.labels:
        raise ConfigError("score takes labels= (zero-shot) or probe= (a trained probe), not both")
    if cfg.probe:  # the probe's own backbone (finetuned or named) and frame count replace model= and num_frames=
        from ..model import load_probe

        meta = load_probe(cfg.probe)[1]
        cfg = dataclasses.replace(cfg, model=meta["backbone"], pretrained=meta["pretrained"],
                                  num_frames=meta["num_frames"])
    files = find_videos(root)
    if not files:
        raise FileNotFoundError(f"{root}: no video files found (looked recursively for {', '.join(VIDEO_EXTENSIONS)})")
    model = create_model(cfg.model, pretrained=cfg.pretrained, device=cfg.device)
    summary, scores = score_paths(cfg, files, model, get_tokenizer(cfg.model))
    if scores is not None and cfg.report:
        from ..report import write_score_report

        summary["report"] = str(write_score_report(scores.to_pandas(), cfg.report, cfg))
    return summary


def score_paths(cfg: ScoreConfig, files: list[Path], model: CoCa, tokenizer: Callable) -> tuple[dict, Any]:
    """Score ``files`` (this rank's share, skipping those already scored ok into ``cfg.out``), then merge every
    rank's parts into ``cfg.out`` on rank 0. Returns a summary and the merged table (None off rank 0)."""
    info = init_distributed()
    scorer = VideoScorer(model, tokenizer, cfg)
    store = PartStore(cfg.out, rank=info.rank)
    done = store.done_keys()
    keys = [file_key(path) for path in files]
    todo = [key for key in keys[info.rank::info.world_size] if key not in done]
    started, counts = time.time(), {"ok": 0, "error": 0}
    scores = None
    try:
        score_files(scorer, todo, store, cfg, counts, show=info.is_main)
    finally:  # Ctrl-C or a crash still leaves every flushed batch merged into the output
        if is_distributed():
            dist.barrier()
        if info.is_main:
            provenance = {"model": cfg.model, "pretrained": cfg.pretrained or ""}
            scores = merge(cfg.out, paths=[str(p) for p in files], metadata=provenance)
    seconds = time.time() - started
    summary = {"videos": len(files), "scored_now": counts["ok"] + counts["error"], "errors_now": counts["error"],
               "already_scored": sum(key in done for key in keys), "seconds": round(seconds, 2),
               "videos_per_second": round((counts["ok"] + counts["error"]) / max(seconds, 1e-9), 2),
               "out": str(cfg.out), "embeddings": str(embeddings_path(cfg.out))}
    if scores is not None:
        summary["ok_total"] = int(sum(s == "ok" for s in scores.column("status").to_pylist()))
    return summary, scores


class VideoScorer:
    """Turns batches of preprocessed clips into result rows (labels, embeddings, captions)."""

    def __init__(self, model: CoCa, tokenizer: Callable, cfg: ScoreConfig) -> None:
        self.model, self.tokenizer, self.cfg = model, tokenizer, cfg
        self.class_names = read_class_names(cfg.labels) if cfg.labels else None
        self.classes, self.probe = None, None
        if cfg.probe:
            from ..model import load_probe

            self.probe, meta = load_probe(cfg.probe)
            self.probe.to(cfg.device)
            self.class_names = meta["classes"]
        elif self.class_names:
            templates = self.templates()
            self.classes = class_embeddings(model, tokenizer, self.class_names, templates)

    def templates(self) -> list[str]:
        if self.cfg.templates:
            return read_templates(self.cfg.templates)
        return prompt_templates(self.cfg.model) or video_templates()

    @torch.no_grad()
    def __call__(self, frames: torch.Tensor) -> list[dict[str, Any]]:
        """(B, T, 3, S, S) preprocessed frames -> one partial row per video."""
        frames = frames.to(self.cfg.device)
        autocast = (torch.autocast(frames.device.type, dtype=torch.bfloat16) if self.cfg.precision == "bf16"
                    else contextlib.nullcontext())
        with autocast:
            encoding = self.model.encode_video(frames)
            captions = self.captions(frames[:, frames.shape[1] // 2]) if self.cfg.caption else None
        videos = encoding.video_embedding.float()
        rows = [{"video_embedding": v.tolist()} for v in videos.cpu()]
        if self.cfg.frame_embeddings:
            for row, per_frame in zip(rows, encoding.frame_embeddings.float().cpu()):
                row["frame_embeddings"] = per_frame.tolist()
        if self.probe is not None:
            self.add_labels(rows, self.probe(encoding.tokens.float()).float().softmax(-1))
        elif self.classes is not None:
            self.add_labels(rows, class_probabilities(self.model, videos, self.classes.to(videos.device)))
        for row, text in zip(rows, captions or []):
            row["caption"] = text
        return rows

    def add_labels(self, rows: list[dict[str, Any]], probabilities: torch.Tensor) -> None:
        k = min(self.cfg.top_k, probabilities.shape[1])
        scores, indices = probabilities.float().topk(k, dim=-1)
        for row, top_scores, top_indices in zip(rows, scores.tolist(), indices.tolist()):
            for rank, (score, index) in enumerate(zip(top_scores, top_indices), start=1):
                row[f"top{rank}_label"], row[f"top{rank}_score"] = self.class_names[index], score

    def captions(self, middle_frames: torch.Tensor) -> list[str]:
        ids = self.model.generate(middle_frames, method=self.cfg.caption_method, max_len=self.cfg.caption_max_len)
        return self.tokenizer.batch_decode(ids.cpu())

    def empty_row(self) -> dict[str, Any]:
        """The columns an error row carries, so every part has the same schema."""
        row: dict[str, Any] = {"video_embedding": None}
        if self.cfg.frame_embeddings:
            row["frame_embeddings"] = None
        if self.class_names:
            for rank in range(1, min(self.cfg.top_k, len(self.class_names)) + 1):
                row[f"top{rank}_label"], row[f"top{rank}_score"] = None, None
        if self.cfg.caption:
            row["caption"] = None
        return row


def score_files(scorer: VideoScorer, todo: list[tuple[str, int, float]], store: PartStore, cfg: ScoreConfig,
                counts: dict[str, int], show: bool) -> None:
    """Decode in DataLoader workers, encode in this process, flush each batch's rows to ``store``."""
    if not todo:
        return
    items = [VideoItem(path) for path, _, _ in todo]
    dataset = VideoClipDataset(items, image_transform(scorer.model), ClipSampling(num_frames=cfg.num_frames, mode=cfg.sampling),
                               backend=cfg.backend, timeout=cfg.timeout)
    loader = video_loader(dataset, cfg.batch_size, workers=cfg.workers)
    bar = tqdm(total=len(todo), unit="video", disable=not show, dynamic_ncols=True)
    for batch in loader:
        rows = []
        if batch["frames"] is not None:
            for index, row in zip(batch["indices"], scorer(batch["frames"][:, 0])):
                rows.append(base_row(todo[index], "ok", "", batch["meta"][index]) | row)
        for index, _, reason in batch["errors"]:
            rows.append(base_row(todo[index], "error", reason, {}) | scorer.empty_row())
        store.append(rows)
        counts["ok"] += len(batch["indices"])
        counts["error"] += len(batch["errors"])
        bar.update(len(rows))
        bar.set_postfix(failed=counts["error"])
    bar.close()


def base_row(key: tuple[str, int, float], status: str, error: str, meta: dict[str, Any]) -> dict[str, Any]:
    path, size, mtime = key
    return {"path": path, "size": size, "mtime": mtime, "duration": meta.get("duration"),
            "num_frames": meta.get("num_frames"), "fps": meta.get("fps"), "status": status, "error": error}


def search(embeddings: str | os.PathLike, query: str, k: int = 10, model: str | None = None) -> list[tuple[str, float]]:
    """The ``k`` videos whose embeddings are closest to the text ``query`` (cosine similarity), best first."""
    import pyarrow.parquet as pq

    path = Path(embeddings)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: embeddings file not found (score writes <out>.embeddings.parquet)")
    table = pq.read_table(path, columns=["path", "video_embedding"])
    provenance = {k.decode(): v.decode() for k, v in (pq.read_schema(path).metadata or {}).items()}
    model_name = model or provenance.get("model", "default")
    net = create_model(model_name, pretrained=provenance.get("pretrained") or None)
    text = net.encode_text(get_tokenizer(model_name)([query]))[0]
    valid = [i for i, v in enumerate(table.column("video_embedding").to_pylist()) if v is not None]
    paths = table.column("path").to_pylist()
    matrix = torch.tensor([table.column("video_embedding")[i].as_py() for i in valid])
    similarity = matrix @ text
    top = similarity.topk(min(k, len(valid)))
    return [(paths[valid[i]], float(s)) for s, i in zip(top.values.tolist(), top.indices.tolist())]
