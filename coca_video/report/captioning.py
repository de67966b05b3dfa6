"""The captioning report: the metrics and their protocol, then each video's thumbnails with its generated caption
beside its references, worst CIDEr-D first (where the captioner fails is what a reader came to see)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from ..caption_metrics import CaptionScores
from .page import THUMBNAILS_PER_PAGE, THUMBNAILS_PER_ROW, file_link, thumbnail_strip, write_html

METRIC_LABELS = {"bleu_1": "BLEU-1", "bleu_2": "BLEU-2", "bleu_3": "BLEU-3", "bleu_4": "BLEU-4", "meteor": "METEOR",
                 "rouge_l": "ROUGE-L", "cider": "CIDEr-D"}


def worst_first(per_video_cider: dict[str, float]) -> list[str]:
    """Videos by ascending CIDEr-D (ties in path order)."""
    return sorted(per_video_cider, key=lambda video: (per_video_cider[video], video))


def write_captioning_report(path: str | Path, predictions: dict[str, str], references: dict[str, list[str]],
                            scores: CaptionScores, protocol: dict[str, Any], max_videos: int) -> Path:
    """Write the page: the metrics, the protocol's main lines and warnings, then the ``max_videos`` videos with the
    lowest CIDEr-D, each with thumbnails (the page's 400-thumbnail budget shared out), its caption, its per-video
    CIDEr-D and ROUGE-L, and its references."""
    metrics = "".join(f"<tr><th>{label}</th><td>{scores.metrics[key]:.1f}</td></tr>"
                      for key, label in METRIC_LABELS.items() if key in scores.metrics)
    facts = ["split", "videos", "videos_in_split", "references", "model", "checkpoint", "frames_per_video",
             "caption_source", "decoding", "beam_size", "caption_tokenizer", "meteor"]
    protocol_rows = "".join(f"<tr><th>{html.escape(key)}</th><td>{html.escape(str(protocol.get(key)))}</td></tr>"
                            for key in facts)
    notes = [f"<p class='warning'>{html.escape(w)}</p>" for w in scores.warnings]
    if protocol.get("failed_videos"):
        notes.append(f"<p class='warning'>{len(protocol['failed_videos'])} videos could not be read and are not "
                     "scored (see failed_videos in the metrics JSON)</p>")
    shown = worst_first(scores.per_video_cider)[:max_videos]
    per_row = max(1, min(THUMBNAILS_PER_ROW, THUMBNAILS_PER_PAGE // max(1, len(shown))))
    rows = []
    for video in shown:
        refs = "".join(f"<li>{html.escape(r)}</li>" for r in references[video])
        rows.append(f"<tr><td>{thumbnail_strip(video, count=per_row)}<br>{file_link(video)}</td>"
                    f"<td>{html.escape(predictions[video]) or '<i>(empty)</i>'}<br><span class='score'>CIDEr-D "
                    f"{scores.per_video_cider[video]:.1f} &middot; ROUGE-L {scores.per_video_rouge_l[video]:.1f}"
                    f"</span></td><td><ul>{refs}</ul></td></tr>")
    sections = [*notes, f"<table style='width:auto'>{metrics}</table>",
                f"<table style='width:auto'>{protocol_rows}</table>",
                f"<h2>{len(shown)} of {len(predictions)} videos, worst CIDEr-D first</h2>",
                "<table><tr><th>video</th><th>generated caption</th><th>references</th></tr>" + "".join(rows)
                + "</table>"]
    return write_html(path, f"coca-video captioning report: {protocol.get('split')}", sections)
