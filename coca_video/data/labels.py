"""Class-name lists and prompt templates: user files in the common formats, and the ones shipped with the package.

Formats a class list may come in (one class per line in every case):
  - plain names: ``abseiling``;
  - a CSV with a header that has a ``name`` column (``kinetics_400_labels.csv``: ``id,name``);
  - ``name,index`` lines (Moments in Time's ``moments_categories.txt``), put in index order;
  - a dataset annotation CSV with a ``label`` column (Kinetics' ``label,youtube_id,time_start,time_end,split``):
    its distinct labels in sorted order, which is the usual class indexing for Kinetics.
No class list is shipped: the official files come with the datasets, and a list that silently differs from them
(spelling, order) would corrupt every index.
"""

from __future__ import annotations

import csv
from pathlib import Path

ASSETS = Path(__file__).resolve().parents[1] / "assets"


class LabelsError(ValueError):
    """A class list or template file that cannot be used; the message names the file."""


def read_class_names(source: str | Path) -> list[str]:
    """Class names in index order from a file in one of the formats above."""
    path = Path(source)
    if not path.is_file():
        raise LabelsError(f"{path}: class list not found")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if not lines:
        raise LabelsError(f"{path}: class list is empty")
    names = _parse_lines(path, lines)
    if _is_annotation_table(lines):
        return names
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise LabelsError(f"{path}: duplicate class names {duplicates[:5]}")
    return names


def _parse_lines(path: Path, lines: list[str]) -> list[str]:
    if "," not in lines[0]:
        return lines
    rows = list(csv.reader(lines))
    header = [cell.strip().lower() for cell in rows[0]]
    if "name" in header:
        column = header.index("name")
        return [row[column].strip() for row in rows[1:]]
    if "label" in header:
        column = header.index("label")
        return sorted({row[column].strip() for row in rows[1:] if len(row) > column and row[column].strip()})
    indexed = [(row[0].strip(), row[-1].strip()) for row in rows]
    if all(len(row) >= 2 and row[-1].strip().isdigit() for row in rows):
        return [name for name, _ in sorted(indexed, key=lambda pair: int(pair[1]))]
    if all(len(row) == len(rows[0]) for row in rows) and len(rows[0]) > 1:
        raise LabelsError(f"{path}: a CSV class list needs a 'name' column in its header or 'name,index' lines")
    return lines  # names that contain commas


def _is_annotation_table(lines: list[str]) -> bool:
    header = [cell.strip().lower() for cell in next(csv.reader(lines[:1]))]
    return "label" in header and "name" not in header


def read_templates(path: str | Path) -> list[str]:
    """Prompt templates, one per line with ``{}`` where the class name goes; ``#`` lines are comments."""
    path = Path(path)
    if not path.is_file():
        raise LabelsError(f"{path}: template file not found")
    lines = path.read_text(encoding="utf-8").splitlines()
    templates = [t.strip() for t in lines if t.strip() and not t.startswith("#")]
    bad = [t for t in templates if t.count("{}") != 1]
    if not templates or bad:
        raise LabelsError(f"{path}: every template needs exactly one '{{}}' (bad: {bad[:3]})")
    return templates


def video_templates() -> list[str]:
    """The usual prompt templates for zero-shot video action classification (shipped with the package)."""
    return read_templates(ASSETS / "video_templates.txt")
