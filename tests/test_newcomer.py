"""The README's quickstart block (what scripts/newcomer.sh runs after `make demo` in a fresh clone) against the
CLI: every line is a coca-video command whose arguments the parser takes as written, so a renamed flag fails here
in seconds, not only in CI's fresh-clone run."""

from __future__ import annotations

import glob
import shlex
import sys
from pathlib import Path

import pytest

from coca_video.cli import parse

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from readme_block import block_lines  # noqa: E402 -- scripts/ is not a package

LINES = block_lines((REPO / "README.md").read_text(encoding="utf-8"), "newcomer")


def test_the_quickstart_block_holds_commands_of_the_installed_venv():
    assert len(LINES) >= 3
    assert all(line.startswith(".venv/bin/coca-video ") for line in LINES), LINES


@pytest.mark.parametrize("line", LINES)
def test_each_quickstart_line_parses_as_written(line, tmp_path, monkeypatch):
    """The shell's glob is expanded over a folder laid out as the demo's, then the CLI parses the line."""
    videos = tmp_path / "demo_output" / "videos"
    videos.mkdir(parents=True)
    for i in range(12):
        (videos / f"clip_{i:03d}.mp4").touch()
    monkeypatch.chdir(tmp_path)
    argv = [match for word in shlex.split(line)[1:] for match in (sorted(glob.glob(word)) or [word])]
    if argv == ["--version"]:
        with pytest.raises(SystemExit) as stop:
            parse(argv)
        assert stop.value.code == 0
        return
    args = parse(argv)
    if args.command == "score" and "*" in line:
        assert args.videos == [str(Path("demo_output/videos") / f"clip_{i:03d}.mp4") for i in range(10)]
