"""Video question-answering sets as their releases ship them, and the answer vocabulary.

- MSRVTT-QA (Xu et al., 2017): ``train_qa.json``, ``val_qa.json``, ``test_qa.json`` in one folder, each a list of
  ``{"question", "answer", "video_id", "id", "category_id"}``; videos ``video{video_id}.mp4`` in the video folder.
- MSVD-QA: the same three files without ``category_id``; its ``video_id`` N is the clip named ``vidN`` in the
  release's ``youtube_mapping.txt`` (lines ``-4wsuPCjDBc_5_15 vid1``: YouTube clip name, space, ``vidN``), whose
  video is ``{clip name}.avi`` (any video extension) in the video folder. The mapping file is looked for in the QA
  folder, then in the video folder.
- A CSV with columns ``video,question,answer[,split]`` (split train/val/test; without the column every row is a
  test row: zero-shot evaluation). ``video`` is a path, absolute or relative to the video folder.

A question's type is, in order: the name ``question_types.json`` in the QA folder gives its ``category_id``
(``{"0": "colour", ...}``: the synthetic set writes one); for a ``category_id`` without a name, the first word most
of that category's questions start with and the id (``what (0)``); without ``category_id``, the question's first
word (what, who, how, where, when, ...).
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError, InputError
from .video import VIDEO_EXTENSIONS

QA_SPLITS = ("train", "val", "test")
QA_FILES = {split: f"{split}_qa.json" for split in QA_SPLITS}
MAPPING_FILE, TYPES_FILE = "youtube_mapping.txt", "question_types.json"


@dataclass(frozen=True)
class Question:
    """One question about one video, with its reference answer and its type (see the module docstring)."""

    id: str
    video: str  # the video's path
    question: str
    answer: str
    split: str
    kind: str  # question type, for accuracy per type


@dataclass
class QASet:
    """The questions of a release (every split it has) and where they came from."""

    questions: list[Question]
    source: str  # "msrvtt-qa", "msvd-qa" or "csv"
    warnings: list[str] = field(default_factory=list)

    def split(self, name: str) -> list[Question]:
        return [q for q in self.questions if q.split == name]


def load_qa_dir(qa_dir: str | Path, videos: str | Path) -> QASet:
    """MSRVTT-QA or MSVD-QA from the release's folder (see the module docstring); a missing split file is no split."""
    folder, root = Path(qa_dir), Path(videos)
    present = {split: folder / name for split, name in QA_FILES.items() if (folder / name).is_file()}
    if not present:
        raise InputError(f"{folder}: none of {', '.join(QA_FILES.values())} found (the release's QA files)")
    records = {split: read_json_list(path) for split, path in present.items()}
    with_category = any("category_id" in r for rows in records.values() for r in rows)
    mapping = read_mapping(folder, root)
    source = "msvd-qa" if mapping is not None else "msrvtt-qa"
    locate = msvd_locator(root, mapping) if mapping is not None else lambda vid: str(root / f"video{vid}.mp4")
    kinds = category_names(folder, [r for rows in records.values() for r in rows]) if with_category else None
    questions = []
    for split, rows in records.items():
        for n, row in enumerate(rows):
            where = f"{present[split]}: entry {n}"
            missing = [k for k in ("question", "answer", "video_id") if k not in row]
            if missing:
                raise DataError(f"{where}: no {missing[0]!r} key")
            kind = kinds[str(row["category_id"])] if kinds and "category_id" in row else first_word(row["question"])
            questions.append(Question(str(row.get("id", f"{split}{n}")), locate(row["video_id"]),
                                      str(row["question"]), str(row["answer"]), split, kind))
    return QASet(questions, source)


def read_json_list(path: Path) -> list[dict]:
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not readable JSON ({type(err).__name__})") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise DataError(f"{path}: expected a list of {{question, answer, video_id, id}} objects")
    return rows


def read_mapping(folder: Path, root: Path) -> dict[str, str] | None:
    """MSVD's ``youtube_mapping.txt``: ``vidN`` -> YouTube clip name; None when neither folder has one."""
    path = next((p / MAPPING_FILE for p in (folder, root) if (p / MAPPING_FILE).is_file()), None)
    if path is None:
        return None
    mapping = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise DataError(f"{path}: line {n}: expected 'CLIP_NAME vidN', got {line!r}")
        mapping[parts[1]] = parts[0]
    return mapping


def msvd_locator(root: Path, mapping: dict[str, str]):
    """video_id N -> the path of ``vidN``'s clip in ``root`` (its first existing extension; .avi as released)."""
    def locate(video_id: int | str) -> str:
        name = mapping.get(f"vid{video_id}")
        if name is None:
            raise DataError(f"{MAPPING_FILE}: no line for vid{video_id}")
        found = [root / f"{name}{ext}" for ext in VIDEO_EXTENSIONS if (root / f"{name}{ext}").exists()]
        return str(found[0] if found else root / f"{name}.avi")
    return locate


def first_word(question: str) -> str:
    words = question.lower().split()
    return words[0].strip("?,.") if words else "(empty)"


def category_names(folder: Path, rows: list[dict]) -> dict[str, str]:
    """category_id -> its name: from ``question_types.json``, else the commonest first word and the id."""
    named: dict[str, str] = {}
    if (folder / TYPES_FILE).is_file():
        named = {str(k): str(v) for k, v in json.loads((folder / TYPES_FILE).read_text(encoding="utf-8")).items()}
    words: dict[str, Counter] = {}
    for row in rows:
        if "category_id" in row:
            words.setdefault(str(row["category_id"]), Counter())[first_word(row.get("question", ""))] += 1
    return {cat: named.get(cat) or f"{count.most_common(1)[0][0]} ({cat})" for cat, count in words.items()}


def load_qa_csv(path: str | Path, videos: str | Path) -> QASet:
    """Questions from a ``video,question,answer[,split]`` CSV (see the module docstring)."""
    path, root = Path(path), Path(videos)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in ("video", "question", "answer") if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: no {missing[0]!r} column (need video,question,answer[,split])")
        questions = []
        for n, row in enumerate(reader, start=2):
            split = (row.get("split") or "test").strip()
            if split not in QA_SPLITS:
                raise DataError(f"{path}: line {n}: split must be train, val or test, got {split!r}")
            video = Path(row["video"])
            questions.append(Question(f"q{n - 1}", str(video if video.is_absolute() else root / video),
                                      row["question"], row["answer"], split, first_word(row["question"])))
    return QASet(questions, "csv")


def answer_vocabulary(training: list[Question], size: int) -> list[str]:
    """The ``size`` commonest training answers, commonest first (ties: alphabetical)."""
    counts = Counter(q.answer for q in training)
    return [a for a, _ in sorted(counts.items(), key=lambda ac: (-ac[1], ac[0]))[:size]]


@dataclass
class Accuracy:
    """Accuracy (%) over every question evaluated, and per question type."""

    overall: float
    per_type: dict[str, float]
    counts: dict[str, int]


def accuracy(questions: list[Question], predictions: list[str]) -> Accuracy:
    """Exact-match accuracy of ``predictions`` (one per question, in order): a question whose answer is outside the
    vocabulary counts, and is wrong."""
    if len(questions) != len(predictions):
        raise ValueError(f"{len(questions)} questions but {len(predictions)} predictions")
    right: Counter = Counter()
    seen: Counter = Counter()
    for q, p in zip(questions, predictions):
        seen[q.kind] += 1
        right[q.kind] += p == q.answer
    total = sum(seen.values())
    return Accuracy(100.0 * sum(right.values()) / max(total, 1),
                    {k: 100.0 * right[k] / seen[k] for k in sorted(seen)}, dict(sorted(seen.items())))
