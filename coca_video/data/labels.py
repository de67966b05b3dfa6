"""Class-name lists and prompt templates: user files in the common formats, and the ones shipped with the package.

Formats a class list may come in (one class per line in every case):
  - plain names: ``abseiling``;
  - a CSV with a header that has a ``name`` column (``kinetics_400_labels.csv``: ``id,name``);
  - ``name,index`` lines (Moments in Time's ``moments_categories.txt``), put in index order;
  - a dataset annotation CSV with a ``label`` column (Kinetics' ``label,youtube_id,time_start,time_end,split``):
    its distinct labels in sorted order, which is the usual class indexing for Kinetics.

Shipped lists, chosen by name instead of a path (``--labels kinetics400``), in the datasets' official index order:
  - ``kinetics400``, ``kinetics600``, ``kinetics700``: the sorted class names of the official annotation CSVs (the
    order every Kinetics checkpoint indexes by). kinetics400 is torchvision's list; kinetics700 is mmaction2's
    ``label_map_k700.txt``. Kinetics-600 spells one class ``passing american football (not in game)`` in lower case,
    as its CSVs do;
  - ``moments_in_time``: the 339 names of ``moments_categories.txt`` in its index order (mmaction2's ``label_map.txt``).
A dataset whose CSV spells a class with other capitalisation, or with ``_`` for spaces (class folder names), still
matches: see :func:`class_index`.
"""

from __future__ import annotations

import csv
from pathlib import Path

from ..errors import DataError

ASSETS = Path(__file__).resolve().parents[1] / "assets"
SHIPPED_LISTS = ASSETS / "labels"


def read_class_names(source: str | Path) -> list[str]:
    """Class names in index order from a file in one of the formats above, or a shipped list by name."""
    path = Path(source)
    if not path.is_file() and (SHIPPED_LISTS / f"{source}.txt").is_file():
        path = SHIPPED_LISTS / f"{source}.txt"
    if not path.is_file():
        raise DataError(f"{path}: class list not found (shipped lists: {', '.join(shipped_class_lists())})")
    lines = [line.strip() for line in read_utf8(path, "class list").splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if not lines:
        raise DataError(f"{path}: class list is empty")
    names = _parse_lines(path, lines)
    if _is_annotation_table(lines):
        return names
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DataError(f"{path}: duplicate class names {duplicates[:5]}")
    return names


def read_utf8(path: Path, what: str) -> str:
    """The text of ``path``; a file that is not UTF-8 text (binary, Latin-1) is a :class:`DataError` naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: {what} is not UTF-8 text (byte {err.object[err.start]:#04x} at offset "
                        f"{err.start}); save it as UTF-8") from None
    if "\x00" in text:
        raise DataError(f"{path}: {what} is not text (it holds NUL bytes)")
    return text


def shipped_class_lists() -> list[str]:
    """Names of the class lists that ship with the package (``kinetics400``, ..., ``moments_in_time``)."""
    return sorted(p.stem for p in SHIPPED_LISTS.glob("*.txt"))


def class_index(classes: list[str]) -> dict[str, int]:
    """Label -> index, also matching the label case-folded and with ``_`` for spaces (names stay unambiguous)."""
    index = {name: i for i, name in enumerate(classes)}
    loose = {}
    for name, i in index.items():
        loose.setdefault(_loose(name), set()).add(i)
    index.update({key: ids.pop() for key, ids in loose.items() if len(ids) == 1 and key not in index})
    return index


def lookup_class(index: dict[str, int], label: str) -> int | None:
    """The index of ``label`` in a :func:`class_index`, or None."""
    found = index.get(label)
    return found if found is not None else index.get(_loose(label))


def _loose(name: str) -> str:
    return name.replace("_", " ").casefold()


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
        raise DataError(f"{path}: a CSV class list needs a 'name' column in its header or 'name,index' lines")
    return lines  # names that contain commas


def _is_annotation_table(lines: list[str]) -> bool:
    header = [cell.strip().lower() for cell in next(csv.reader(lines[:1]))]
    return "label" in header and "name" not in header


def read_templates(path: str | Path) -> list[str]:
    """Prompt templates, one per line with ``{}`` where the class name goes; ``#`` lines are comments."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: template file not found")
    lines = read_utf8(path, "template file").splitlines()
    templates = [t.strip() for t in lines if t.strip() and not t.startswith("#")]
    bad = [t for t in templates if t.count("{}") != 1 or "{" in t.replace("{}", "") or "}" in t.replace("{}", "")]
    if not templates or bad:
        raise DataError(f"{path}: every template needs exactly one '{{}}' (bad: {bad[:3]})")
    return templates


def video_templates() -> list[str]:
    """The usual prompt templates for zero-shot video action classification (shipped with the package)."""
    return read_templates(ASSETS / "video_templates.txt")
