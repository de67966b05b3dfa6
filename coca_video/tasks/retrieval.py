"""Zero-shot video-text retrieval (the CoCa paper's MSR-VTT protocol): each video is the normalised mean of its
``num_frames`` uniformly sampled frame embeddings, each caption its unimodal text embedding, ranked by cosine.

    coca-video retrieval --videos DIR --msrvtt-data MSRVTT_data.json --msrvtt-split MSRVTT_JSFUSION_test.csv
    coca-video retrieval --videos DIR --captions pairs.csv --out runs/retrieval/metrics.json
    coca-video retrieval --videos DIR --captions pairs.csv --engine ray     # embed on Ray (as score --engine ray)

Video embeddings are cached on disk (keyed by file, size and mtime, in one store per model, weights, resolution,
precision, frames rule and pooling: :func:`cache_store`), so a second run with other captions decodes nothing and a
run with another model, or a checkpoint folder finetuned again, embeds again.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from ..data.results import PartStore, encoding_settings
from ..data.retrieval import RetrievalSet, load_set, source_files
from ..distributed import init_distributed
from ..engines import Encoder, check_engine, encode_files, keyed_store, loaded
from ..errors import InputError
from ..io import atomic_write_table, atomic_write_text, check_output_file, is_our_metrics
from ..metrics import retrieval_convention, retrieval_metrics_from_embeddings
from ..model import CoCa, get_tokenizer
from ..prompts import encode_texts
from ..runtime import load_model
from ..scoring import VideoScorer
from .retrieval_config import RetrievalConfig


VIDEO_EMBEDDINGS = {"mean": "normalised mean of normalised frame embeddings (the CoCa paper's)",
                    "attentional": "the model's contrastive pooler over all frames' tokens (VideoCoCa's)"}
SAMPLING_RULES = {"eval": "uniform segment centres", "linspace": "linspace from the first to the last frame, truncated"}


def run(cfg: RetrievalConfig) -> dict[str, Any]:
    """Embed videos (cached) and captions, compute both directions' recall, write metrics, ranks and report."""
    check_engine(cfg.engine)
    info = init_distributed()
    dataset = load_set(cfg.source, "retrieval")
    check_outputs(cfg, dataset)
    model = load_model(cfg.model)
    tokenizer = get_tokenizer(cfg.model.name)
    video_embeddings, failed = embed_videos(cfg, dataset, model, tokenizer)
    if not info.is_main:
        return {}
    full_size = (len(dataset.videos), len(dataset.captions))
    dataset, video_embeddings = without_failed(dataset, video_embeddings, failed)
    text_embeddings = encode_texts(model, tokenizer, [cfg.prompt_prefix + c for c in dataset.captions],
                                 cfg.decode.batch_size * 16).cpu()
    caption_video = torch.tensor(dataset.caption_video)
    metrics = retrieval_metrics_from_embeddings(text_embeddings, video_embeddings, caption_video, v2t="both",
                                                median=cfg.median, rerank=cfg.rerank)
    result = {**metrics, "protocol": protocol(cfg, dataset, failed, full_size)}
    paths = output_paths(cfg)
    write_json(paths["out"], result)
    ranks = write_query_ranks(paths["ranks"], dataset, text_embeddings, video_embeddings)
    if cfg.report_queries:
        from ..report import write_retrieval_report

        result["report"] = str(write_retrieval_report(paths["report"], dataset, ranks, text_embeddings,
                                                      video_embeddings, cfg.report_queries))
    print(format_metrics(result))
    return result


def output_paths(cfg: RetrievalConfig) -> dict[str, Path]:
    """What a run writes: the metrics JSON, and beside it the per-query ranks CSV and the HTML report."""
    out = Path(cfg.out)
    return {"out": out, "ranks": out.with_name(out.stem + "_t2v_ranks.csv"),
            "report": out.with_name(out.stem + "_report.html")}


def check_outputs(cfg: RetrievalConfig, dataset: RetrievalSet) -> None:
    """Refuse (before any work) outputs that are inputs (videos, caption and annotation files) or existing files we
    did not write: metrics JSON with our protocol block, our ranks CSV header, our report marker."""
    from ..report import is_our_report

    inputs = [Path(v) for v in dataset.videos] + source_files(cfg.source)
    paths = output_paths(cfg)
    check_output_file(paths["out"], inputs, is_our_metrics(paths["out"], "convention"), "out")
    check_output_file(paths["ranks"], inputs, is_our_ranks(paths["ranks"]), "out (its ranks CSV)")
    if cfg.report_queries:
        check_output_file(paths["report"], inputs, is_our_report(paths["report"]), "out (its report)")


def is_our_ranks(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8") as handle:
            return handle.readline().strip() == "caption,video,rank,top1_video"
    except (OSError, UnicodeDecodeError):
        return False


def cache_settings(cfg: RetrievalConfig) -> dict[str, Any]:
    """What decides a cached embedding (``model.precision`` as it runs, so after ``load_model``)."""
    return encoding_settings(cfg.model, cfg.decode) | {"video_pooling": cfg.video_pooling}


def cache_store(cfg: RetrievalConfig) -> PartStore:
    """The embedding cache of ``cfg``'s settings: other captions reuse it; another model, weights file, resolution,
    precision, frames rule or pooling gets a store of its own."""
    folder = Path(cfg.cache_dir) if cfg.cache_dir else Path(cfg.out).parent / "embedding_cache"
    return keyed_store(folder, "videos", cache_settings(cfg))


def embed_videos(cfg: RetrievalConfig, dataset: RetrievalSet, model: CoCa, tokenizer) -> tuple[torch.Tensor, list]:
    """(num_videos, D) normalised mean-of-frames embeddings in ``dataset.videos`` order (rows of videos that could
    not be embedded are zero), and ``failed``: (path, reason) of those videos. Embeddings are kept in a result store
    keyed by (path, size, mtime): a rerun embeds only what is new or failed."""
    encoder = Encoder(functools.partial(embedding_scorer, cfg), model, tokenizer, cfg.decode, cfg.engine, cfg.ray)
    found, failed = encode_files(dataset.videos, cfg.source.videos or dataset.split, cache_store(cfg),
                                 cache_settings(cfg), encoder, ["video_embedding"], "not embedded")
    matrix = np.zeros((len(dataset.videos), model.cfg.embed_dim), dtype=np.float32)
    for i, video in enumerate(dataset.videos):
        if video in found:
            matrix[i] = found[video]["video_embedding"]
    return torch.from_numpy(matrix), failed


def embedding_scorer(cfg: RetrievalConfig, model: CoCa | None = None, tokenizer: Any = None) -> VideoScorer:
    """The scorer of the embedding pass (embeddings only); without ``model``, one loading its own (``cfg.model``,
    precision already resolved): what each Ray encode actor holds."""
    model, tokenizer = loaded(cfg.model, model, tokenizer)
    return VideoScorer(model, tokenizer, cfg.model, video_pooling=cfg.video_pooling)


def without_failed(dataset: RetrievalSet, embeddings: torch.Tensor, failed: list) -> tuple[RetrievalSet, torch.Tensor]:
    """The set minus the videos that failed and their captions: a failed video is excluded and reported, never
    replaced by a stand-in that would score as a hit or a miss."""
    bad = {path for path, _ in failed}
    keep = [i for i, video in enumerate(dataset.videos) if video not in bad]
    new_index = {old: new for new, old in enumerate(keep)}
    captions = [(c, new_index[v]) for c, v in zip(dataset.captions, dataset.caption_video) if v in new_index]
    if not captions:
        raise InputError(f"{dataset.split}: no video could be embedded ({failed[0][0]}: {failed[0][1]})")
    subset = RetrievalSet([dataset.videos[i] for i in keep], [c for c, _ in captions], [v for _, v in captions],
                          dataset.split, dataset.empty_captions_dropped)
    return subset, embeddings[keep]


def protocol(cfg: RetrievalConfig, dataset: RetrievalSet, failed: list, full_size: tuple[int, int]) -> dict[str, Any]:
    """What was measured, so a number is never read without its conditions."""
    return {"split": dataset.split, "videos": len(dataset.videos), "captions": len(dataset.captions),
            "videos_in_split": full_size[0], "captions_in_split": full_size[1],
            "empty_captions_dropped": dataset.empty_captions_dropped,
            "frames_per_video": cfg.decode.num_frames, "sampling": SAMPLING_RULES[cfg.decode.sampling],
            "video_embedding": VIDEO_EMBEDDINGS[cfg.video_pooling], "model": cfg.model.name,
            "checkpoint": cfg.model.pretrained or cfg.model.name, "prompt_prefix": cfg.prompt_prefix,
            "precision": cfg.model.precision, "convention": retrieval_convention(cfg.median), "failed_videos": failed}


def write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def write_query_ranks(path: Path, dataset: RetrievalSet, text: torch.Tensor, video: torch.Tensor,
                      chunk: int = 4096) -> np.ndarray:
    """Per caption query: its video, the 0-based rank of that video (ties count against), and the top-1 video."""
    import pandas as pd

    truth = torch.tensor(dataset.caption_video)
    ranks, top1 = [], []
    for start in range(0, len(text), chunk):
        sim = text[start:start + chunk] @ video.T
        own = sim.gather(1, truth[start:start + chunk, None])
        ranks.append(((sim >= own).sum(1) - 1).numpy())
        top1.append(sim.argmax(1).numpy())
    ranks, top1 = np.concatenate(ranks), np.concatenate(top1)
    table = pd.DataFrame({"caption": dataset.captions, "video": [dataset.videos[i] for i in dataset.caption_video],
                          "rank": ranks + 1, "top1_video": [dataset.videos[i] for i in top1]})
    atomic_write_table(pa.Table.from_pandas(table, preserve_index=False), path)
    return ranks


def format_metrics(result: dict[str, Any]) -> str:
    p = result["protocol"]
    failed = f" ({len(p['failed_videos'])} videos failed: see protocol.failed_videos)" if p["failed_videos"] else ""
    lines = [f"{p['split']}: {p['videos']} of {p['videos_in_split']} videos evaluated, {p['captions']} captions"
             + failed]
    for direction in [key for key in result if key.startswith(("t2v", "v2t"))]:
        m = result[direction]
        lines.append(f"  {direction}: R@1 {m['R1']:.1f}  R@5 {m['R5']:.1f}  R@10 {m['R10']:.1f}  "
                     f"MdR {m['MdR']:.1f}  MnR {m['MnR']:.1f}")
    return "\n".join(lines)
