"""Video captioning measured the field's way: a caption for every video of a split, scored against its reference
captions with BLEU-1..4, METEOR, ROUGE-L and CIDEr-D as coco-caption computes them (:mod:`coca_video.caption_metrics`).

    coca-video captioning --videos MSRVTT/videos --msrvtt-data MSRVTT_data.json --msrvtt-split full
    coca-video captioning --videos clips/ --captions captions.csv --out runs/captioning/metrics.json

Inputs are retrieval's (:mod:`coca_video.data.retrieval`), each MSR-VTT video with all its sentences of
``MSRVTT_data.json`` as references, as captioning papers count them: the full test split (2,990 videos, 20 references
each), a video-id list of it (``test_list_full.txt``; a list named as an official split with another size is warned
about and the warning kept in the protocol), or the 1k-A CSV's 1,000 videos (without the JSON: the CSV's one sentence
a video, warned about and kept in the protocol's warnings); or any (video, caption) CSV, several rows a video being
several references.
Captions are the ones ``score --caption`` writes (:class:`coca_video.scoring.VideoScorer`), kept in a result store
beside the output (keyed by file, size and mtime, one store per model, weights, resolution, precision, frames rule and
decoding: :func:`cache_store`), so a rerun decodes only what is new or failed. Outputs: the metrics JSON with its protocol block, ``<stem>_predictions.csv`` (video, caption,
references as a JSON list, the video's CIDEr-D) and ``<stem>_report.html`` (thumbnails, prediction beside references,
worst CIDEr-D first). Videos that cannot be read are excluded and listed, never scored as empty captions.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..caption_metrics import CaptionScores, caption_scores
from ..data.results import PartStore, encoding_settings
from ..data.retrieval import RetrievalSet, load_set, source_files
from ..distributed import init_distributed
from ..engines import Encoder, check_engine, encode_files, keyed_store, loaded
from ..errors import InputError
from ..io import atomic_write_table, atomic_write_text, check_output_file, first_line, is_our_metrics
from ..model import CoCa, get_tokenizer
from ..runtime import load_model, with_trained_settings
from ..scoring import VideoScorer
from .captioning_config import CaptioningConfig
from .retrieval import SAMPLING_RULES

CAPTION_SOURCES = {"middle_frame": "the middle frame's image tokens (the decoder was trained on single images)",
                   "all_frames": "all frames' image tokens through the generative pooler (VideoCoCa's input)"}


def run(cfg: CaptioningConfig) -> dict[str, Any]:
    """Caption every video of the split (kept for reruns), score against the references, write the metrics JSON,
    the predictions CSV and the report."""
    check_engine(cfg.engine)
    cfg = with_trained_settings(cfg, "captioning")  # a caption-finetuned folder's frames and caption source
    info = init_distributed()
    dataset = load_set(cfg.source, "captioning", every_sentence=True)
    check_outputs(cfg, dataset)
    model = load_model(cfg.model)
    predictions, failed = caption_videos(cfg, dataset, model, get_tokenizer(cfg.model.name))
    if not info.is_main:
        return {}
    references = references_by_video(dataset)
    evaluated = {video: predictions[video] for video in dataset.videos if video in predictions}
    if not evaluated:
        raise InputError(f"{dataset.split}: no video could be captioned ({failed[0][0]}: {failed[0][1]})")
    scores = caption_scores(evaluated, {video: references[video] for video in evaluated})
    result = {**scores.metrics, "protocol": protocol(cfg, dataset, evaluated, references, scores, failed)}
    paths = output_paths(cfg)
    atomic_write_text(paths["out"], json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    write_predictions(paths["predictions"], evaluated, references, scores)
    if cfg.report_videos:
        from ..report import write_captioning_report

        result["report"] = str(write_captioning_report(paths["report"], evaluated, references, scores,
                                                       result["protocol"], cfg.report_videos))
    print(format_metrics(result))
    return result


def output_paths(cfg: CaptioningConfig) -> dict[str, Path]:
    """What a run writes: the metrics JSON, and beside it the predictions CSV and the HTML report."""
    out = Path(cfg.out)
    return {"out": out, "predictions": out.with_name(out.stem + "_predictions.csv"),
            "report": out.with_name(out.stem + "_report.html")}


PREDICTIONS_HEADER = "video,caption,references,cider"


def check_outputs(cfg: CaptioningConfig, dataset: RetrievalSet) -> None:
    """Refuse (before any work) outputs that are inputs or existing files we did not write."""
    from ..report import is_our_report

    inputs = [Path(v) for v in dataset.videos] + source_files(cfg.source)
    paths = output_paths(cfg)
    check_output_file(paths["out"], inputs, is_our_metrics(paths["out"], "caption_tokenizer"), "out")
    check_output_file(paths["predictions"], inputs, first_line(paths["predictions"]) == PREDICTIONS_HEADER,
                      "out (its predictions CSV)")
    if cfg.report_videos:
        check_output_file(paths["report"], inputs, is_our_report(paths["report"]), "out (its report)")


def cache_settings(cfg: CaptioningConfig) -> dict[str, Any]:
    """What decides a stored caption (``model.precision`` as it runs, so after ``load_model``)."""
    return encoding_settings(cfg.model, cfg.decode) | {"caption": list(dataclasses.astuple(cfg.caption))}


def cache_store(cfg: CaptioningConfig) -> PartStore:
    """The caption store of ``cfg``'s settings: another split reuses it; another model, weights file, resolution,
    precision, frames rule or decoding gets a store of its own."""
    folder = Path(cfg.cache_dir) if cfg.cache_dir else Path(cfg.out).parent / "caption_cache"
    return keyed_store(folder, "captions", cache_settings(cfg))


def caption_videos(cfg: CaptioningConfig, dataset: RetrievalSet, model, tokenizer) -> tuple[dict[str, str], list]:
    """Each readable video's caption (video path -> caption) and ``failed``: (path, reason) of the others. Captions
    are generated by ``score``'s scorer into a result store keyed by (path, size, mtime): a rerun captions only what
    is new or failed."""
    encoder = Encoder(functools.partial(caption_scorer, cfg), model, tokenizer, cfg.decode, cfg.engine, cfg.ray)
    found, failed = encode_files(dataset.videos, cfg.source.videos or dataset.split, cache_store(cfg),
                                 cache_settings(cfg), encoder, ["caption"], "not captioned")
    return {video: row["caption"] for video, row in found.items()}, failed


def caption_scorer(cfg: CaptioningConfig, model: CoCa | None = None, tokenizer: Any = None) -> VideoScorer:
    """The scorer of the caption pass (captions only); without ``model``, one loading its own (``cfg.model``,
    precision already resolved): what each Ray encode actor holds."""
    model, tokenizer = loaded(cfg.model, model, tokenizer)
    return VideoScorer(model, tokenizer, cfg.model, captions=cfg.caption)


def references_by_video(dataset: RetrievalSet) -> dict[str, list[str]]:
    """Each video's reference captions, in file order."""
    references: dict[str, list[str]] = {video: [] for video in dataset.videos}
    for caption, index in zip(dataset.captions, dataset.caption_video):
        references[dataset.videos[index]].append(caption)
    return references


def protocol(cfg: CaptioningConfig, dataset: RetrievalSet, evaluated: dict[str, str],
             references: dict[str, list[str]], scores: CaptionScores, failed: list) -> dict[str, Any]:
    """What was measured, so a number is never read without its conditions."""
    counts = [len(references[v]) for v in evaluated]
    return {"split": dataset.split, "videos": len(evaluated), "videos_in_split": len(dataset.videos),
            "references": sum(counts), "references_from": dataset.references,
            "references_per_video": {"mean": round(sum(counts) / len(counts), 2), "min": min(counts),
                                     "max": max(counts)},
            "empty_references_dropped": dataset.empty_captions_dropped,
            "model": cfg.model.name, "checkpoint": cfg.model.pretrained or cfg.model.name,
            "precision": cfg.model.precision, "frames_per_video": cfg.decode.num_frames,
            "sampling": SAMPLING_RULES[cfg.decode.sampling], "caption_source": CAPTION_SOURCES[cfg.caption.source],
            "decoding": cfg.caption.method,
            "beam_size": cfg.caption.beam_size if cfg.caption.method == "beam" else None,
            "max_len": cfg.caption.max_len, "min_len": cfg.caption.min_len,
            "repetition_penalty": cfg.caption.repetition_penalty,
            "caption_tokenizer": scores.tokenizer, "meteor": scores.meteor,
            "metrics": "coco-caption: BLEU-1..4 (closest reference length), METEOR 1.5, ROUGE-L (beta 1.2), "
                       "CIDEr-D (n=4, sigma=6, clipped, x10, IDF from the evaluated references); percent",
            "warnings": [*dataset.warnings, *scores.warnings], "failed_videos": failed}


def write_predictions(path: Path, predictions: dict[str, str], references: dict[str, list[str]],
                      scores: CaptionScores) -> None:
    """One row per evaluated video: its path, the generated caption, its references (a JSON list), its CIDEr-D."""
    videos = list(predictions)
    table = pa.table({"video": videos, "caption": [predictions[v] for v in videos],
                      "references": [json.dumps(references[v], ensure_ascii=False) for v in videos],
                      "cider": [scores.per_video_cider[v] for v in videos]})
    atomic_write_table(table, path)


def format_metrics(result: dict[str, Any]) -> str:
    p = result["protocol"]
    failed = f" ({len(p['failed_videos'])} videos failed: see protocol.failed_videos)" if p["failed_videos"] else ""
    names = [("bleu_4", "B@4"), ("meteor", "METEOR"), ("rouge_l", "ROUGE-L"), ("cider", "CIDEr")]
    values = "  ".join(f"{label} {result[key]:.1f}" for key, label in names if key in result)
    return (f"{p['split']}: {p['videos']} of {p['videos_in_split']} videos captioned, {p['references']} references"
            f"{failed}\n  {values}")
