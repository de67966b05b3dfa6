"""The video question-answering report: accuracy overall and per question type, the protocol, then questions with
their video's thumbnails, the prediction and the answer, worst question types first (and wrong answers first
within a type): where the model fails is what a reader came to see."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from ..data.videoqa import Accuracy, Question
from .page import THUMBNAILS_PER_PAGE, THUMBNAILS_PER_ROW, file_link, thumbnail_strip, write_html

FACTS = ("mode", "answering", "dataset", "split", "questions", "vocabulary_size", "oov_answers",
         "dropped_training_questions", "frames_per_video", "model", "temporal_embedding")


def shown_questions(questions: list[Question], predictions: list[str], scores: Accuracy,
                    limit: int) -> list[int]:
    """Indices of the ``limit`` questions shown: types by ascending accuracy, wrong before right within a type."""
    order = sorted(range(len(questions)), key=lambda i: (scores.per_type[questions[i].kind], questions[i].kind,
                                                         predictions[i] == questions[i].answer, i))
    return order[:limit]


def write_videoqa_report(path: str | Path, questions: list[Question], predictions: list[str], scores: Accuracy,
                         protocol: dict[str, Any], limit: int) -> Path:
    """Write the page (see the module docstring) with at most ``limit`` questions."""
    per_type = "".join(f"<tr><th>{html.escape(kind)}</th><td>{value:.1f}%</td><td>{scores.counts[kind]}</td></tr>"
                       for kind, value in sorted(scores.per_type.items(), key=lambda kv: (kv[1], kv[0])))
    facts = "".join(f"<tr><th>{html.escape(key)}</th><td>{html.escape(str(protocol.get(key)))}</td></tr>"
                    for key in FACTS)
    shown = shown_questions(questions, predictions, scores, limit)
    per_row = max(1, min(THUMBNAILS_PER_ROW, THUMBNAILS_PER_PAGE // max(1, len(shown))))
    rows = []
    for i in shown:
        q, right = questions[i], predictions[i] == questions[i].answer
        rows.append(f"<tr><td>{thumbnail_strip(q.video, count=per_row)}<br>{file_link(q.video)}</td>"
                    f"<td>{html.escape(q.kind)}</td><td>{html.escape(q.question)}</td>"
                    f"<td class='{'' if right else 'error'}'>{html.escape(predictions[i]) or '<i>(none)</i>'}</td>"
                    f"<td>{html.escape(q.answer)}</td></tr>")
    sections = [f"<p>accuracy <b>{scores.overall:.1f}%</b> over {len(questions)} questions</p>",
                f"<table style='width:auto'><tr><th>type</th><th>accuracy</th><th>questions</th></tr>{per_type}"
                "</table>", f"<table style='width:auto'>{facts}</table>",
                f"<h2>{len(shown)} of {len(questions)} questions, worst types first</h2>",
                "<table><tr><th>video</th><th>type</th><th>question</th><th>prediction</th><th>answer</th></tr>"
                + "".join(rows) + "</table>"]
    return write_html(path, f"coca-video videoqa report: {protocol.get('dataset')} {protocol.get('split')}",
                      sections)
