"""The README's first command: `coca-video demo` from a relative output folder, as `make demo` runs it."""

from __future__ import annotations

import pytest

from coca_video.cli import main


@pytest.mark.slow
def test_demo_runs_from_a_relative_folder_and_scores_above_chance(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--output", "demo_output", "--videos", "6"]) == 0
    out = capsys.readouterr().out
    assert "corrupt.mp4      error:" in out and "zero-shot colour+shape top-1:" in out
    assert (tmp_path / "demo_output" / "report.html").is_file()


def test_the_demo_search_line_uses_the_right_article():
    from coca_video.tasks.demo import with_article

    assert with_article("orange triangle") == "an orange triangle"
    assert with_article("red square") == "a red square"
