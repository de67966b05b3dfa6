"""Action-recognition annotation files as lists of labelled videos.

Formats (``format``):
  - ``kinetics``: the official CSVs ``label,youtube_id,time_start,time_end,split[,is_cc]``; clips named
    ``{youtube_id}_{time_start:06d}_{time_end:06d}.mp4`` flat or in per-class folders (spaces in class folder names
    may be ``_``); an untrimmed ``{youtube_id}.mp4`` is read within [time_start, time_end);
  - ``mit``: Moments in Time's ``trainingSet.csv`` / ``validationSet.csv`` (no header: ``class/file.mp4,label,...``);
  - ``list``: ``relative/path.mp4 <int label>`` lines (mmaction2 / PySlowFast); a path alone means label -1;
  - ``csv``: a CSV with ``path`` and ``label`` columns (label a class name or an integer index);
  - ``auto``: whichever of these the file's first line says (:func:`detect_format`).
Classes come from ``classes`` (any class-list format, see :mod:`labels`) or, for named labels, from the sorted
distinct labels of the training file. Missing files are reported once, with a count, and left out.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from ..config import ActionsFormat as Format  # noqa: F401 -- its home is coca_video.config (torch-free)
from ..errors import DataError
from .labels import class_index, lookup_class
from .video import VideoItem

VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".avi")
SPLIT_FOLDERS = (("train", "val"), ("videos_train", "videos_val"))  # common download layouts, tried in order


def split_video_roots(video_root: str | Path, val_video_root: str | Path | None) -> tuple[Path, Path]:
    """The (training, evaluation) video folders: ``val_video_root`` when given (training: ``video_root``), else
    ``video_root``'s ``train/`` + ``val/`` or ``videos_train/`` + ``videos_val/`` when both exist, else
    ``video_root`` for both."""
    root = Path(video_root)
    if val_video_root is not None:
        return root, Path(val_video_root)
    for train, val in SPLIT_FOLDERS:
        if (root / train).is_dir() and (root / val).is_dir():
            return root / train, root / val
    return root, root


@dataclass
class ActionSet:
    """Labelled videos that exist on disk, the class names, and the annotated videos that were not found."""

    items: list[VideoItem]
    classes: list[str]
    missing: list[str]

    def summary(self, name: str) -> str:
        missing = f"; {len(self.missing)} annotated videos not found (e.g. {self.missing[0]})" if self.missing else ""
        return f"{name}: {len(self.items)} videos, {len(self.classes)} classes{missing}"


def load_actions(fmt: Format, annotations: str | Path, video_root: str | Path,
                 classes: list[str] | None = None) -> ActionSet:
    """Read one annotation file; ``classes`` fixes the label order (pass the training set's for validation)."""
    path, root = Path(annotations), Path(video_root)
    if not path.is_file():
        raise DataError(f"{path}: annotation file not found")
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt == "kinetics":
        rows = _kinetics_rows(path)
    elif fmt == "mit":
        rows = [(row[0], row[1], None, None) for row in _csv_rows(path, header=False)]
    elif fmt == "list":
        rows = [_list_row(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    elif fmt == "csv":
        rows = [(r["path"], r["label"], None, None) for r in _csv_rows(path, header=True, required=("path", "label"))]
    else:
        raise DataError(f"{path}: unknown format {fmt!r} (auto, kinetics, mit, list or csv)")
    if not rows:
        raise DataError(f"{path}: no videos listed")
    named = fmt in ("kinetics", "mit") or any(not str(label).lstrip("-").isdigit() for _, label, *_ in rows)
    if classes is None:
        classes = sorted({label for _, label, *_ in rows if label != ""}) if named else None
    index = class_index(classes) if classes is not None else None
    items, missing = [], []
    for video, label, start, end in rows:
        found = _locate(root, video, label, fmt)
        if found is None:
            missing.append(str(root / video))
            continue
        items.append(VideoItem(str(found[0]), _label_index(path, label, index, named),
                               start if found[1] else None, end if found[1] else None))
    if not items:
        raise DataError(f"{path}: none of the {len(rows)} annotated videos were found under {root}")
    return ActionSet(items, classes or [str(i) for i in range(max(i.label for i in items) + 1)], missing)


def detect_format(path: Path) -> Format:
    """The format an annotation file's first line shows: a header with ``youtube_id`` (Kinetics), one with ``path``
    and ``label`` (csv), a headerless ``folder/file.ext,label,...`` row (Moments in Time) or a ``path [index]``
    line (list); anything else is a one-line error naming the formats."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            first = handle.readline().strip()
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 annotation file") from None
    cells = [cell.strip().lower() for cell in next(csv.reader([first]), [])]
    if "youtube_id" in cells:
        return "kinetics"
    if {"path", "label"} <= set(cells):
        return "csv"
    if len(cells) >= 2 and cells[0].endswith(VIDEO_SUFFIXES):
        return "mit"
    if first and len(cells) == 1 and first.split()[0].lower().endswith(VIDEO_SUFFIXES):
        return "list"
    raise DataError(f"{path}: cannot tell the annotation format from its first line {first[:60]!r}: set format= "
                    "kinetics (label,youtube_id,time_start,time_end), csv (path,label), mit or list")


def _kinetics_rows(path: Path) -> list[tuple[str, str, float, float]]:
    rows = []
    for row in _csv_rows(path, header=True, required=("youtube_id", "time_start", "time_end")):
        start, end = float(row["time_start"]), float(row["time_end"])
        rows.append((f"{row['youtube_id']}_{int(start):06d}_{int(end):06d}", row.get("label", ""), start, end))
    return rows


def _list_row(line: str) -> tuple[str, str, None, None]:
    parts = line.rsplit(maxsplit=1)
    if len(parts) == 2 and parts[1].lstrip("-").isdigit():
        return parts[0], parts[1], None, None
    return line.strip(), "-1", None, None


def _csv_rows(path: Path, header: bool, required: tuple[str, ...] = ()) -> list:
    with path.open(newline="", encoding="utf-8") as handle:
        if not header:
            return [row for row in csv.reader(handle) if row]
        reader = csv.DictReader(handle)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: missing columns {missing} (found {reader.fieldnames})")
        return list(reader)


def _locate(root: Path, video: str, label: str, fmt: Format) -> tuple[Path, bool] | None:
    """(file, is_untrimmed) for an annotated video, trying the layouts each format is distributed in."""
    if fmt != "kinetics":
        candidate = root / video
        return (candidate, False) if candidate.is_file() else None
    for folder in (root, root / label, root / label.replace(" ", "_")):
        for suffix in VIDEO_SUFFIXES:
            if (folder / f"{video}{suffix}").is_file():
                return folder / f"{video}{suffix}", False
    youtube_id = video.rsplit("_", 2)[0]
    for suffix in VIDEO_SUFFIXES:
        if (root / f"{youtube_id}{suffix}").is_file():
            return root / f"{youtube_id}{suffix}", True
    return None


def _label_index(path: Path, label: str, index: dict[str, int] | None, named: bool) -> int:
    if not named:
        return int(label)
    if label == "":
        return -1
    found = lookup_class(index, label) if index is not None else None
    if found is None:
        raise DataError(f"{path}: label {label!r} is not in the class list")
    return found
