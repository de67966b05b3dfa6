"""Print the command lines of a marked block of a Markdown file: the fenced code between ``<!-- NAME:begin -->`` and
``<!-- NAME:end -->``, without the fences, comments or blank lines (a line ending in a backslash is joined with the
next). scripts/newcomer.sh runs the README's quickstart this way, so the README cannot drift from what is tested.

    python3 scripts/readme_block.py README.md newcomer
"""

from __future__ import annotations

import sys
from pathlib import Path


def block_lines(text: str, name: str) -> list[str]:
    """The commands of block ``name`` in ``text``, one per entry (continued lines joined)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if begin not in text or end not in text.split(begin, 1)[1]:
        raise SystemExit(f"readme_block: no block {begin} ... {end}")
    body = text.split(begin, 1)[1].split(end, 1)[0]
    commands, pending = [], ""
    for line in body.splitlines():
        if line.startswith("```") or not line.strip() or line.lstrip().startswith("#"):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        commands.append(pending.strip())
        pending = ""
    return commands


if __name__ == "__main__":
    path, name = sys.argv[1], sys.argv[2]
    print("\n".join(block_lines(Path(path).read_text(encoding="utf-8"), name)))
