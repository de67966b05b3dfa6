"""The row rule: what one result row holds and how it is computed from a batch of decoded clips, one row per file
(errors included). The engines (:mod:`coca_video.engines`) run it, here or on Ray, for ``score`` (labels, captions,
embeddings), ``retrieval`` (embeddings), ``captioning`` (captions) and ``zeroshot`` (labels).

Each video: ``num_frames`` frames -> the image encoder frame by frame -> the video embedding (``video_pooling``: the
normalised mean of the frame embeddings, the paper's zero-shot video representation, or the model's pooler over all
frames' tokens). Labels are the softmax over logit-scaled cosine similarities to prompt-ensembled class embeddings,
or a trained probe's (averaged over the probe's evaluation views, e.g. 4 temporal x 3 spatial, when score decodes
them; the other columns then come from the first view). Captions come from the multimodal decoder over the middle
frame's image tokens (``caption_source=middle_frame``: the decoder was trained on single images) or over all frames'
tokens at once (``all_frames``, VideoCoCa's captioning input). Answers to questions come from a videoqa model's
answer head over the multimodal decoder's outputs of each question, all frames' tokens as the image side
(:mod:`coca_video.model.question_answering`): one question gives an ``answer`` column, several ``answer_1``,
``answer_2``, ... in the order given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import numpy as np
import torch
from einops import rearrange

from .config import CaptionConfig, EmbeddingDtype, ModelConfig
from .data.results import FileKey, stored_key
from .data.video import VideoBatch
from .model import CoCa, VideoClassifier
from .model.answer_head import AnswerHead
from .model.coca import VideoEncoding, VideoPooling
from .model.linear_probe import LinearProbe
from .model.precision import compute_dtype
from .model.question_answering import answer_logits, question_ids
from .model.video_classifier import view_averaged_probabilities
from .runtime import autocast
from .transforms import image_transform
from .zero_shot import class_embeddings, class_probabilities


@dataclass
class Counts:
    """Videos scored in one call: ``ok`` and ``error`` rows written; ``stage_seconds``: an engine's busy seconds per
    stage and ``pools``: its actor pools as sized (the Ray engine's; None for the local engine)."""

    ok: int = 0
    error: int = 0
    stage_seconds: dict[str, float] | None = None
    pools: dict[str, float | None] | None = None

    @property
    def total(self) -> int:
        return self.ok + self.error


class ScoreItem(NamedTuple):
    """One row to compute: a file, and for a segmented run the [start, end) window in seconds."""

    key: FileKey
    start: float | None = None
    end: float | None = None

    def stored(self) -> tuple:
        """The key as :meth:`PartStore.done_keys` reports it once scored ok."""
        return stored_key(self.key) if self.start is None else (*stored_key(self.key), self.start)


@dataclass
class QuestionOptions:
    """Questions to answer about every video with a trained answer head and its answer vocabulary."""

    questions: list[str]
    head: AnswerHead
    answers: list[str]

    def columns(self) -> list[str]:
        """``answer`` for one question; ``answer_1``, ``answer_2``, ... for several, in their order."""
        return ["answer"] if len(self.questions) == 1 else [f"answer_{i}" for i in range(1, len(self.questions) + 1)]


class VideoScorer:
    """Turns batches of preprocessed clips into result rows: the video embedding always; top-k labels when given
    class names (zero-shot, with prompt ``templates``) or a trained ``probe``; captions when given options.
    Embeddings come as numpy arrays of ``embedding_dtype``, which the part store keeps as they are."""

    def __init__(self, model: CoCa, tokenizer: Callable, model_cfg: ModelConfig, class_names: list[str] | None = None,
                 templates: list[str] | None = None, probe: VideoClassifier | LinearProbe | None = None,
                 top_k: int = 5, captions: CaptionConfig | None = None, frame_embeddings: bool = False,
                 video_pooling: VideoPooling = "mean", embedding_dtype: EmbeddingDtype = "float32",
                 questions: QuestionOptions | None = None) -> None:
        self.model, self.tokenizer, self.model_cfg, self.video_pooling = model, tokenizer, model_cfg, video_pooling
        self.question_options = questions
        if questions is not None:
            questions.head.to(next(model.parameters()).device).eval()
        self.embedding_dtype = np.dtype(embedding_dtype)
        self.class_names, self.probe, self.top_k = class_names, probe, top_k
        self.caption_options, self.frame_embeddings = captions, frame_embeddings
        self.transform, self.dtype = image_transform(model), compute_dtype(model)
        self.classes = None
        if probe is not None:
            probe.to(model_cfg.device)
        elif class_names:
            self.classes = class_embeddings(model, tokenizer, class_names, templates)

    @torch.no_grad()
    def __call__(self, clips: torch.Tensor) -> list[dict[str, Any]]:
        """(B, V, T, 3, S, S) uint8 cropped views of each video -> one partial row per video: a probe's labels from
        all V views, everything else from the first."""
        frames = self.pixels(clips[:, 0])
        with autocast(frames.device, self.model_cfg.precision):
            encoding = self.model.encode_video(frames, pooling=self.video_pooling)
            captions = self.captions(encoding.tokens, frames.shape[1]) if self.caption_options else None
            answers = self.answers(encoding.tokens, frames.shape[1]) if self.question_options else {}
        videos = encoding.video_embedding.float()
        rows = [{"video_embedding": v} for v in self.stored(videos)]  # (D,) each
        if self.frame_embeddings:
            for row, per_frame in zip(rows, self.stored(encoding.frame_embeddings.float())):
                row["frame_embeddings"] = list(per_frame)  # T arrays (D,): a list<list<float>> cell
        if self.probe is not None:
            self.add_labels(rows, self.probe_probabilities(encoding, clips[:, 1:]))
        elif self.classes is not None:
            self.add_labels(rows, class_probabilities(self.model, videos, self.classes.to(videos.device)))
        for row, text in zip(rows, captions or []):
            row["caption"] = text
        for column, texts in answers.items():
            for row, text in zip(rows, texts):
                row[column] = text
        return rows

    def stored(self, embeddings: torch.Tensor) -> np.ndarray:
        """float32 embeddings (B, ...) as stored: a numpy array in ``embedding_dtype`` (float16 rounds to nearest)."""
        return embeddings.cpu().numpy().astype(self.embedding_dtype, copy=False)

    def probe_probabilities(self, first_view: VideoEncoding, other_views: torch.Tensor) -> torch.Tensor:
        """The probe's softmax (B, classes) averaged over the first view's encoding and the ``other_views``
        (B, V-1, T, 3, S, S) uint8, encoded one view at a time. The probe picks what it reads from each encoding
        (an attentional probe the tokens, a linear one the mean frame embedding)."""

        def view_features(views: slice) -> torch.Tensor:  # (B, 1, ...): what the probe was trained on
            if views.start == 0:
                encoding = first_view
            else:
                frames = self.pixels(other_views[:, views.start - 1])
                with autocast(frames.device, self.model_cfg.precision):
                    encoding = self.model.encode_video(frames)
            return self.probe.features(encoding)[:, None]

        return view_averaged_probabilities(self.probe, view_features, 1 + other_views.shape[1])

    def pixels(self, clips: torch.Tensor) -> torch.Tensor:
        """uint8 (B, T, 3, S, S) -> the encoder's input, normalised on the model's device in its dtype."""
        return self.transform.normalise(clips, self.model_cfg.device, self.dtype)

    def add_labels(self, rows: list[dict[str, Any]], probabilities: torch.Tensor) -> None:
        k = min(self.top_k, probabilities.shape[1])
        scores, indices = probabilities.float().topk(k, dim=-1)
        for row, top_scores, top_indices in zip(rows, scores.tolist(), indices.tolist()):
            for rank, (score, index) in enumerate(zip(top_scores, top_indices), start=1):
                row[f"top{rank}_label"], row[f"top{rank}_score"] = self.class_names[index], score

    def captions(self, tokens: torch.Tensor, num_frames: int) -> list[str]:
        """Captions from the clip's encoder tokens (B, T*N, C): the middle frame's, or all of them."""
        options = self.caption_options
        source_tokens, source_frames = caption_source_tokens(tokens, num_frames, options.source)
        ids = self.model.generate_from_tokens(source_tokens, num_frames=source_frames,
                                              method=options.method, max_len=options.max_len,
                                              num_beams=options.beam_size, min_len=options.min_len,
                                              repetition_penalty=options.repetition_penalty)
        return self.tokenizer.batch_decode(ids.cpu())

    def answers(self, tokens: torch.Tensor, num_frames: int) -> dict[str, list[str]]:
        """Each question's answer per clip of encoder tokens (B, T*N, C), by column name."""
        options, pad = self.question_options, self.model.cfg.text.pad_id
        answered = {}
        for column, question in zip(options.columns(), options.questions):
            ids, prefix = question_ids(self.tokenizer, [question] * len(tokens), pad_id=pad)
            logits = answer_logits(self.model, options.head, tokens, ids.to(tokens.device), prefix, num_frames)
            answered[column] = [options.answers[k] for k in logits.argmax(1).tolist()]
        return answered

    def empty_row(self) -> dict[str, Any]:
        """The columns an error row carries, so every part has the same schema."""
        row: dict[str, Any] = {"video_embedding": None}
        if self.frame_embeddings:
            row["frame_embeddings"] = None
        if self.class_names:
            for rank in range(1, min(self.top_k, len(self.class_names)) + 1):
                row[f"top{rank}_label"], row[f"top{rank}_score"] = None, None
        if self.caption_options:
            row["caption"] = None
        for column in self.question_options.columns() if self.question_options else []:
            row[column] = None
        return row


def caption_source_tokens(tokens: torch.Tensor, num_frames: int, source: str) -> tuple[torch.Tensor, int | None]:
    """What the generative pooler reads for a caption, from a clip's encoder tokens (B, T*N, C), and over how many
    frames (for the model's temporal embedding): all of them (``all_frames``), or the middle frame's (B, N, C), an
    image (``middle_frame``: None). Caption finetuning trains on the same."""
    if source == "all_frames":
        return tokens, num_frames
    if source != "middle_frame":
        raise ValueError(f"caption source must be middle_frame or all_frames, got {source!r}")
    return rearrange(tokens, "b (t n) c -> b t n c", t=num_frames)[:, num_frames // 2], None


def batch_rows(scorer: VideoScorer, batch: VideoBatch, todo: list[ScoreItem],
               per_frame: bool = False) -> list[dict[str, Any]]:
    """One row per video of ``batch`` (per sampled frame when ``per_frame``): key columns, status and error, then
    the scorer's columns."""
    rows = []
    if batch.frames is not None and per_frame:
        rows += frame_rows(scorer, batch, todo)
    elif batch.frames is not None:
        for index, row in zip(batch.indices, scorer(batch.frames)):
            rows.append(base_row(todo[index], "ok", "", batch.meta[index]) | row)
    for index, _, reason in batch.errors:
        rows.append(base_row(todo[index], "error", reason, {}) | scorer.empty_row())
    return rows


def frame_rows(scorer: VideoScorer, batch: VideoBatch, todo: list[ScoreItem]) -> list[dict[str, Any]]:
    """sampling=fps: every frame of each decoded chunk scored as a one-frame clip; one row per real frame (the
    padding of a chunk's tail is dropped), keyed by the frame's interval (``meta["frame_windows"]``)."""
    t = batch.frames.shape[2]
    scored = scorer(rearrange(batch.frames[:, :1], "b v t c h w -> (b t) v 1 c h w"))
    rows = []
    for position, index in enumerate(batch.indices):
        meta = batch.meta[index]
        for j, (start, end) in enumerate(meta["frame_windows"]):
            frame = todo[index]._replace(start=start, end=end)
            rows.append(base_row(frame, "ok", "", meta) | scored[position * t + j])
    return rows


def base_row(item: ScoreItem, status: str, error: str, meta: dict[str, Any]) -> dict[str, Any]:
    path, size, mtime = stored_key(item.key)
    row = {"path": path, "size": size, "mtime": mtime}
    if item.start is not None:
        row |= {"segment_start": item.start, "segment_end": item.end}
    return row | {"duration": meta.get("duration"), "num_frames": meta.get("num_frames"), "fps": meta.get("fps"),
                  "status": status, "error": error}
