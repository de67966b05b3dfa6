"""Video question answering through CoCa's multimodal decoder (paper Appendix B, VQA; VideoCoCa on MSRVTT-QA and
MSVD-QA):

    coca-video videoqa --videos MSRVTT/videos --qa-dir MSRVTT-QA --output-dir runs/qa
    coca-video videoqa --config configs/videoqa/synthetic.yaml --qa-dir SYN --videos SYN/videos temporal_embedding=true
    coca-video videoqa --videos clips/ --qa-csv qa.csv mode=zeroshot

Every frame of a video goes through the image encoder (frozen: its tokens come from the feature cache, one entry
per video however many questions it has), all frames' tokens through the generative pooler (after the model's
temporal embedding: ``temporal_embedding: true`` adds one, zero at the start, trained with the task and saved with
the model; ``spatial_embedding: true`` likewise adds one vector per token position of a frame and one scaled by the
frame's time, for an encoder whose tokens barely say where they are), the question into the multimodal decoder, a
new single-query attentional pooler over the decoder's outputs of the question and a linear classifier over the
``qa.num_answers`` commonest training answers (:mod:`coca_video.model.answer_head`). The captioning loss on "question
answer" is co-trained with weight ``qa.caption_weight``: the paper co-trains it but gives no weight, so the default is
1.0. The loss is the mean over the global batch's questions of (answer cross-entropy + caption_weight x the mean
next-token cross-entropy of the question's "question answer" text). Learning rates as Table 10: the new parameters
(the head, and the position tables this run adds, at ``temporal_lr_scale`` times it) at ``optim.lr`` (5e-4), the
pretrained parts at ``qa.model_lr`` (2e-5), 1k warmup steps, weight decay 0.1. Schedule, EMA, DDP and exact resume
are the shared loop's (:func:`coca_video.training.fit`).

Modes: ``train`` (above, then the evaluation split answered by the head); ``zeroshot`` (no training: each answer of
the vocabulary ranked by the decoder's likelihood of "question answer", LAVIS's rank inference: the baseline);
``generate`` (no training: the answer greedily decoded after the question, for a model trained with the captioning
loss on "question answer", e.g. this task's folder). Training questions whose answer is outside the vocabulary are
dropped (counted); evaluation questions whose answer is outside it stay and count as wrong.

Outputs in ``output_dir``: metrics.json (accuracy %, per question type, the protocol), predictions.csv, report.html,
and in train mode ``model/``, a checkpoint folder with the answer head and vocabulary that
``score --qa-model`` loads, plus config.json, metrics.jsonl and checkpoints/.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import to_dict
from ..data.feature_cache import FeatureCache, plan_cache
from ..data.video import ClipSampling, VideoItem
from ..data.videoqa import QASet, Question, accuracy, answer_vocabulary, load_qa_csv, load_qa_dir
from ..distributed import barrier, batch_shards, init_distributed, print0
from ..engines.feature_fill import fill_cache
from ..errors import ConfigError, DataError
from ..io import atomic_path, atomic_write_text, check_output_dir
from ..model import CoCa, get_tokenizer, save_pretrained, tokenizer_files
from ..model.answer_head import AnswerHead, AnswerHeadConfig, save_answer_head
from ..model.question_answering import QAOutput, answer_and_caption_logits, answer_logits, generate_answers, \
    question_ids, rank_answers
from ..runtime import autocast, load_model
from ..training import Batch, TrainTask, check_resumable, fit
from .finetune_captions import freeze_groups
from .videoqa_config import VideoQAConfig

MSRVTT_QA_SCALE = {"videos": 10_000, "train_questions": 158_581, "questions": 243_680}  # Xu et al., 2017


def run(cfg: VideoQAConfig) -> dict[str, Any]:
    """Answer the evaluation split's questions (training the head first in ``train`` mode); write the outputs."""
    output = check_output_dir(cfg.output_dir)
    check_resumable(output, cfg.resume, cfg)
    info = init_distributed()
    torch.manual_seed(cfg.train.seed)
    data = QAData(cfg)
    print0(data.describe())
    model = load_model(cfg.model, training=cfg.mode == "train")
    new_tables = add_position_tables(cfg, model)
    output.mkdir(parents=True, exist_ok=True)
    if info.is_main:
        atomic_write_text(output / "config.json", json.dumps(to_dict(cfg), indent=2) + "\n")
    data.fill(cfg, model, output)
    tokenizer = get_tokenizer(cfg.model.name)
    head, history = None, []
    if cfg.mode == "train":
        head = AnswerHead(AnswerHeadConfig(model.cfg.text.width, len(data.answers), model.cfg.decoder.heads))
        head.to(next(model.parameters()).device)
        print_scale_plan(cfg, model, data)
        task = qa_task(cfg, model, head, data, tokenizer, new_tables)
        history = fit(task, cfg.train, cfg.optim, output, cfg.resume)
    model.eval()
    predictions = answer_split(cfg, model, head, data, tokenizer)
    result = {}
    if info.is_main:
        result = write_outputs(cfg, output, model, head, data, predictions, history)
    barrier()
    return result


def add_position_tables(cfg: VideoQAConfig, model: CoCa) -> tuple[str, ...]:
    """In place: the temporal and spatial embeddings the config asks for and the model lacks, zero (the model is
    unchanged until it trains); returns the attributes of those this run added (they train at
    ``temporal_lr_scale`` x ``optim.lr``)."""
    added = []
    if cfg.temporal_embedding and model.frame_time is None:
        added.append("frame_time")
    if cfg.spatial_embedding and model.frame_space is None:
        added.append("frame_space")
    if cfg.temporal_embedding:
        model.add_frame_time(cfg.decode.num_frames)
    if cfg.spatial_embedding:
        model.add_frame_space()
    return tuple(added)


class QAData:
    """The question set, its answer vocabulary, the training questions kept, the evaluation questions, and (once
    :meth:`fill` ran) the feature cache of their videos."""

    def __init__(self, cfg: VideoQAConfig) -> None:
        source = cfg.source
        if (source.qa_dir is None) == (source.qa_csv is None):
            raise ConfigError("source.qa_dir (--qa-dir): set it, or source.qa_csv (--qa-csv) instead: one of them")
        self.set: QASet = load_qa_dir(source.qa_dir, source.videos) if source.qa_dir else \
            load_qa_csv(source.qa_csv, source.videos)
        train, self.evaluated = self.set.split("train"), self.set.split(cfg.qa.eval_split)
        if cfg.mode == "train" and not train:
            raise DataError(f"{source.qa_dir or source.qa_csv}: no training questions (mode=train needs a train "
                            "split; mode=zeroshot answers without one)")
        if not self.evaluated:
            raise DataError(f"{source.qa_dir or source.qa_csv}: no {cfg.qa.eval_split} questions to answer")
        self.vocabulary_from = "train" if train else cfg.qa.eval_split
        self.answers = answer_vocabulary(train or self.evaluated, cfg.qa.num_answers)
        index = {a: k for k, a in enumerate(self.answers)}
        self.train = [q for q in train if q.answer in index] if cfg.mode == "train" else []
        self.dropped = len(train) - len(self.train) if cfg.mode == "train" else 0
        self.labels = np.array([index[q.answer] for q in self.train], dtype=np.int64)
        self.oov = sum(q.answer not in index for q in self.evaluated)
        self.videos = list(dict.fromkeys(q.video for q in [*self.train, *self.evaluated]))  # one cache row each
        self.row = {video: i for i, video in enumerate(self.videos)}
        self.cache: FeatureCache | None = None

    def describe(self) -> str:
        return (f"{self.set.source}: {len(self.videos)} videos; {len(self.train)} training questions kept, "
                f"{self.dropped} dropped (answer outside the {len(self.answers)}-answer vocabulary); "
                f"{len(self.evaluated)} to answer, {self.oov} of them with an answer outside it")

    def fill(self, cfg: VideoQAConfig, model: CoCa, output: Path) -> None:
        """Encode every video once into the feature cache (on ``cfg.engine``, as the probe fills its own), leaving
        the random state as it was, so a run that fills the cache trains as one that finds it filled; drop training
        questions on videos that failed."""
        sampling = ClipSampling(cfg.decode.num_frames, mode=cfg.decode.sampling)
        folder = Path(cfg.cache_dir) if cfg.cache_dir else output / "feature_cache"
        with torch.random.fork_rng(devices=[]):  # a fill draws (its loader's seed): the head starts alike either way
            self.cache = fill_cache(folder, [VideoItem(v) for v in self.videos], model, cfg.model, sampling,
                                    cfg.decode, "videoqa", engine=cfg.engine, ray=cfg.ray)
        keep = [i for i, q in enumerate(self.train) if self.row[q.video] in self.cache.done]
        self.unreadable_train = len(self.train) - len(keep)
        self.train, self.labels = [self.train[i] for i in keep], self.labels[keep]
        if cfg.mode == "train" and not self.train:
            raise DataError("no training question's video could be decoded")

    def failed_videos(self) -> list[tuple[str, str]]:
        return [(self.videos[i], reason) for i, reason in sorted(self.cache.failed.items())]

    def tokens(self, questions: list[Question]) -> torch.Tensor:
        """Cached encoder tokens (b, T*N, C) of the questions' videos (each video read once per question)."""
        return self.cache.read(np.array([self.row[q.video] for q in questions], dtype=np.int64), 0)


class QATrainee(nn.Module):
    """The trained modules (the model's poolers, text decoders, temporal embedding and the answer head) as one
    module DDP can wrap. Forward: cached encoder tokens (B, T*N, C), "question answer" ids (B, L), question prefix
    lengths (B,) -> :class:`QAOutput`."""

    def __init__(self, model: CoCa, head: AnswerHead, num_frames: int) -> None:
        super().__init__()
        self.parts = nn.ModuleDict({name: module for name, module in (
            ("image_pooling", model.image_pooling), ("text", model.text), ("decoder", model.decoder),
            ("frame_time", model.frame_time), ("frame_space", model.frame_space), ("caption_head", model.caption_head))
            if module is not None})
        self.answer_head = head
        object.__setattr__(self, "coca", model)  # not a submodule: its trained parameters are registered above
        self.num_frames = num_frames

    def forward(self, tokens: torch.Tensor, ids: torch.Tensor, prefix: torch.Tensor) -> QAOutput:
        return answer_and_caption_logits(self.coca, self.answer_head, tokens, ids, prefix, self.num_frames)


def qa_task(cfg: VideoQAConfig, model: CoCa, head: AnswerHead, data: QAData, tokenizer: Callable,
            new_tables: tuple[str, ...] = ()) -> TrainTask:
    """What the shared loop trains: the answer cross-entropy plus ``qa.caption_weight`` x the captioning loss on
    "question answer", per question; a micro-batch's terms are its questions. New parameters (the head, and the
    position tables this run added, at ``temporal_lr_scale`` times it: ``new_tables``) train at ``optim.lr``, the
    pretrained ones at ``qa.model_lr``."""
    device, frames, pad = cfg.model.device, cfg.decode.num_frames, model.cfg.text.pad_id
    freeze_groups(model, cfg.train.freeze)
    model.set_grad_checkpointing(cfg.train.grad_checkpointing)
    trainee = QATrainee(model, head, frames)
    width, count = model.cfg.vision.width, frames * model.image_encoder.num_tokens
    sot_eot = torch.tensor([[model.cfg.text.sot_id, model.cfg.text.eot_id]])  # the shortest text: (1, 2)
    stand_in = lambda: (torch.zeros(1, count, width), sot_eot, torch.ones(1, dtype=torch.long))  # noqa: E731
    stop_unreached(trainee, stand_in())
    model_scale = cfg.qa.model_lr / cfg.optim.lr
    new = tuple(f"parts.{table}." for table in new_tables)

    def lr_scale(name: str) -> float:
        if name.startswith(new):
            return cfg.temporal_lr_scale
        return 1.0 if name.startswith("answer_head.") else model_scale

    def epoch_batches(epoch: int, steps: int) -> Iterator[Batch]:
        for batch in batch_shards(len(data.train), cfg.train.batch_size, seed=cfg.train.seed * 1000 + epoch)[:steps]:
            questions = [data.train[i] for i in batch]
            ids, prefix = question_ids(tokenizer, [q.question for q in questions], [q.answer for q in questions], pad)
            labels = torch.from_numpy(data.labels[batch]) if batch else torch.zeros(0, dtype=torch.long)
            targets = torch.cat([labels[:, None], ids[:, 1:]], dim=1)  # (b, 1 + L-1): answer, then caption labels
            yield Batch((data.tokens(questions), ids, prefix), targets.to(device))

    def forward(wrapped: nn.Module, tokens: torch.Tensor, ids: torch.Tensor, prefix: torch.Tensor) -> QAOutput:
        with autocast(device, cfg.model.precision):
            return wrapped(tokens.to(device), ids.to(device), prefix.to(device))

    def loss_sum(outputs: QAOutput, targets: torch.Tensor) -> torch.Tensor:
        return qa_loss_sum(outputs, targets, pad, cfg.qa.caption_weight)

    return TrainTask(trainee, forward, loss_sum, stand_in=stand_in, epoch_batches=epoch_batches,
                     steps_per_epoch=math.ceil(len(data.train) / cfg.train.batch_size),
                     lr_scale=lr_scale, lr_figures={"model_lr": cfg.qa.model_lr})


def qa_loss_sum(outputs: QAOutput, targets: torch.Tensor, pad_id: int, caption_weight: float) -> torch.Tensor:
    """Summed over the micro-batch's questions: answer cross-entropy + ``caption_weight`` x the mean next-token
    cross-entropy of the question's "question answer" tokens. ``targets``: (b, 1 + L-1), the answer's class then the
    caption labels. No rows: a zero that still runs backward (DDP)."""
    if len(targets) == 0:
        return outputs.answer_logits.float().sum() * 0.0 + outputs.caption_logits.float().sum() * 0.0
    answer = F.cross_entropy(outputs.answer_logits.float(), targets[:, 0], reduction="sum")
    labels = targets[:, 1:]
    token_loss = F.cross_entropy(outputs.caption_logits.transpose(1, 2).float(), labels, ignore_index=pad_id,
                                 reduction="none")  # (b, L-1)
    per_question = token_loss.sum(1) / (labels != pad_id).sum(1).clamp(min=1)
    return answer + caption_weight * per_question.sum()


def stop_unreached(trainee: QATrainee, inputs: tuple[torch.Tensor, ...]) -> None:
    """In place: trainable parameters no loss term reaches (the contrastive pooler and projection, the text CLS
    token and its head) stop taking gradients, found by one backward pass on ``inputs`` (DDP needs every trained
    parameter to get a gradient; AdamW would decay the others for nothing)."""
    device = next(trainee.parameters()).device
    trainee.zero_grad(set_to_none=True)
    outputs = trainee(*(x.to(device) for x in inputs))
    (outputs.answer_logits.float().sum() + outputs.caption_logits.float().sum()).backward()
    for param in trainee.parameters():
        if param.requires_grad and param.grad is None:
            param.requires_grad_(False)
    trainee.zero_grad(set_to_none=True)


def print_scale_plan(cfg: VideoQAConfig, model: CoCa, data: QAData) -> None:
    """Before training: the feature cache and the time per epoch this run's settings would take at MSRVTT-QA's
    scale, the cache from :func:`plan_cache` as the probe plans its own, the epoch from one timed training pass of a
    global batch here (forward and backward on stand-in tokens; no weight changes)."""
    plan = plan_cache(MSRVTT_QA_SCALE["videos"], 1, cfg.decode.num_frames, model.image_encoder.num_tokens,
                      model.cfg.vision.width)
    seconds = timed_pass(cfg, model, data)
    steps = math.ceil(MSRVTT_QA_SCALE["train_questions"] / cfg.train.batch_size)
    print0(f"at MSRVTT-QA scale ({MSRVTT_QA_SCALE['videos']:,} videos, {MSRVTT_QA_SCALE['questions']:,} questions, "
           f"{MSRVTT_QA_SCALE['train_questions']:,} to train on): feature cache {plan.describe()}; about "
           f"{steps * seconds / 60:,.1f} min an epoch here ({steps:,} steps of {cfg.train.batch_size} at "
           f"{seconds:.2f} s each), plus encoding each video once", file=sys.stderr)


def timed_pass(cfg: VideoQAConfig, model: CoCa, data: QAData) -> float:
    """Seconds of one forward and backward pass of a global batch of stand-in tokens and questions (the second of
    two, so start-up costs are not counted); gradients are cleared after, so training is unchanged."""
    device, batch = cfg.model.device, cfg.train.batch_size
    tokens = torch.zeros(batch, cfg.decode.num_frames * model.image_encoder.num_tokens, model.cfg.vision.width,
                         device=device)
    ids = torch.ones(batch, 16, dtype=torch.long, device=device)
    prefix = torch.full((batch,), 12, device=device)
    seconds = 0.0
    with torch.random.fork_rng(devices=[]):  # the stand-in head's draws leave the run's random state as it was
        head = AnswerHead(AnswerHeadConfig(model.cfg.text.width, len(data.answers), model.cfg.decoder.heads))
    head.to(device)
    for _ in range(2):
        started = time.perf_counter()
        with autocast(device, cfg.model.precision):
            outputs = answer_and_caption_logits(model, head, tokens, ids, prefix, cfg.decode.num_frames)
        (outputs.answer_logits.float().sum() + outputs.caption_logits.float().sum()).backward()
        seconds = time.perf_counter() - started
    model.zero_grad(set_to_none=True)
    return seconds


@torch.no_grad()
def answer_split(cfg: VideoQAConfig, model: CoCa, head: AnswerHead | None, data: QAData,
                 tokenizer: Callable) -> list[str]:
    """One prediction per evaluation question, in order: the head's (train), the best-ranked answer (zeroshot) or
    the decoded one (generate); "" for a question whose video could not be decoded (counted wrong)."""
    device, frames, pad = cfg.model.device, cfg.decode.num_frames, model.cfg.text.pad_id
    readable = [i for i, q in enumerate(data.evaluated) if data.row[q.video] in data.cache.done]
    predictions = [""] * len(data.evaluated)
    step = cfg.decode.batch_size
    for start in range(0, len(readable), step):
        chosen = [data.evaluated[i] for i in readable[start:start + step]]
        tokens, texts = data.tokens(chosen).to(device), [q.question for q in chosen]
        with autocast(device, cfg.model.precision):
            if cfg.mode == "train":
                ids, prefix = question_ids(tokenizer, texts, pad_id=pad)
                best = answer_logits(model, head, tokens, ids.to(device), prefix, frames).argmax(1).tolist()
                answered = [data.answers[k] for k in best]
            elif cfg.mode == "zeroshot":
                answered = rank_answers(model, tokens, tokenizer, texts, data.answers, frames)
            else:
                answered = generate_answers(model, tokens, tokenizer, texts, frames, cfg.qa.max_answer_tokens)
        for i, answer in zip(readable[start:start + step], answered):
            predictions[i] = answer
    return predictions


def write_outputs(cfg: VideoQAConfig, output: Path, model: CoCa, head: AnswerHead | None, data: QAData,
                  predictions: list[str], history: list[dict[str, float]]) -> dict[str, Any]:
    """metrics.json, predictions.csv, report.html and (train mode) the model folder; returns the summary."""
    from ..report.videoqa import write_videoqa_report

    scores = accuracy(data.evaluated, predictions)
    result: dict[str, Any] = {"accuracy": round(scores.overall, 2), "per_type": rounded(scores.per_type),
                              "questions": len(data.evaluated), "predictions": str(output / "predictions.csv")}
    if head is not None:
        result["model"] = str(save_model(cfg, output / "model", model, head, data.answers))
    write_predictions(output / "predictions.csv", data.evaluated, predictions)
    metrics = {**result, "questions_per_type": scores.counts, "history": history,
               "protocol": protocol(cfg, data)}
    atomic_write_text(output / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    result["report"] = str(write_videoqa_report(output / "report.html", data.evaluated, predictions, scores,
                                                metrics["protocol"], cfg.qa.report_questions))
    return result


def rounded(values: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 2) for k, v in values.items()}


def save_model(cfg: VideoQAConfig, folder: Path, model: CoCa, head: AnswerHead, answers: list[str]) -> Path:
    """The CoCa checkpoint folder with the answer head and its vocabulary beside it, and the frames and sampling
    it was trained with (``runs_with``) for ``score --qa-model``."""
    staging = folder.parent / ".answer_head"
    files = save_answer_head(staging, head, answers)
    runs_with = {"decode": {"num_frames": cfg.decode.num_frames, "sampling": cfg.decode.sampling}}
    try:
        return save_pretrained(model, folder, [*tokenizer_files(cfg.model.name), *files], runs_with=runs_with)
    finally:
        for file in files:
            file.unlink(missing_ok=True)
        staging.rmdir()


def write_predictions(path: Path, questions: list[Question], predictions: list[str]) -> None:
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "video", "question", "answer", "prediction", "correct"])
        for q, p in zip(questions, predictions):
            writer.writerow([q.id, q.video, q.question, q.answer, p, int(p == q.answer)])


MODES = {"train": "answer head (single-query attentional pooler over the decoder's question outputs + linear "
                  "classifier), trained", "zeroshot": "rank: each vocabulary answer by the decoder's likelihood of "
         "'question answer' (no training)", "generate": "greedy decoding after the question (open-ended)"}


def protocol(cfg: VideoQAConfig, data: QAData) -> dict[str, Any]:
    """What was answered and how, so the accuracy is never read without its conditions."""
    trained = cfg.mode == "train"
    return {"mode": cfg.mode, "answering": MODES[cfg.mode], "dataset": data.set.source,
            "split": cfg.qa.eval_split, "questions": len(data.evaluated), "vocabulary_size": len(data.answers),
            "vocabulary_from": data.vocabulary_from, "oov_answers": data.oov,
            "dropped_training_questions": data.dropped, "training_questions": len(data.train),
            "accuracy": "exact match over all questions of the split (outside-vocabulary answers count as wrong)",
            "failed_videos": data.failed_videos(), "frames_per_video": cfg.decode.num_frames,
            "sampling": cfg.decode.sampling, "model": cfg.model.name, "checkpoint": cfg.model.pretrained or
            cfg.model.name, "temporal_embedding": cfg.temporal_embedding,
            "spatial_embedding": cfg.spatial_embedding,
            **({"epochs": cfg.train.epochs, "max_steps": cfg.train.max_steps, "batch_size": cfg.train.batch_size,
                "head_lr": cfg.optim.lr, "model_lr": cfg.qa.model_lr, "warmup_steps": cfg.optim.warmup_steps,
                "weight_decay": cfg.optim.weight_decay, "caption_weight": cfg.qa.caption_weight,
                "frozen": sorted(cfg.train.freeze), "weights": f"ema {cfg.optim.ema}" if cfg.optim.ema
                else "last step"} if trained else {})}
