"""What score accepts as input: a folder, one file, a path list, a table; keys that resume from any working
directory; links that never walk out of the folder; file names that are not UTF-8."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from coca_video.config import load_config
from coca_video.data.video import list_inputs
from coca_video.errors import InputError
from coca_video.tasks import score
from coca_video.video import write_video


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    for name in ("a.mp4", "b.mp4", "sub/c.mp4"):
        (root / name).parent.mkdir(exist_ok=True)
        write_video(root / name, rng.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8), fps=4)
    return root


def run_score(videos: str | Path, out: Path, *overrides: str) -> dict:
    return score.run(load_config(score.ScoreConfig, None, [f"videos={videos}", f"out={out}", "decode.num_frames=2",
                                                           "decode.workers=0", *overrides]))


def test_every_kind_of_input_names_the_same_absolute_files(videos, tmp_path, monkeypatch):
    expected = [videos / "a.mp4", videos / "b.mp4", videos / "sub" / "c.mp4"]
    assert list_inputs(videos) == expected
    assert list_inputs(videos / "b.mp4") == [videos / "b.mp4"]
    listing = tmp_path / "list.txt"  # relative entries resolve against the list's folder, not the working dir
    listing.write_text(f"# my videos\n{os.path.relpath(videos / 'a.mp4', tmp_path)}\n{videos / 'sub' / 'c.mp4'}\n")
    monkeypatch.chdir("/")
    assert list_inputs(listing) == [videos / "a.mp4", videos / "sub" / "c.mp4"]
    pd.DataFrame({"path": [str(p) for p in expected], "label": ["x", "y", "z"]}).to_csv(tmp_path / "t.csv")
    pd.DataFrame({"path": [str(p) for p in expected]}).to_parquet(tmp_path / "t.parquet")
    assert list_inputs(tmp_path / "t.csv") == list_inputs(tmp_path / "t.parquet") == expected
    with pytest.raises(InputError, match="needs a 'path' column"):
        (tmp_path / "bad.csv").write_text("video\nx.mp4\n")
        list_inputs(tmp_path / "bad.csv")
    with pytest.raises(InputError, match="nowhere: no such file or folder"):
        list_inputs(tmp_path / "nowhere")


@pytest.mark.slow
def test_rerun_from_another_working_directory_resumes(videos, tmp_path, monkeypatch):
    monkeypatch.chdir(videos)
    first = run_score(".", tmp_path / "s.parquet")
    monkeypatch.chdir(tmp_path)
    second = run_score(videos, tmp_path / "s.parquet")
    assert first["scored_now"] == 3 and second["scored_now"] == 0 and second["already_scored"] == 3
    paths = pd.read_parquet(tmp_path / "s.parquet").path.tolist()
    assert paths == [str(videos / "a.mp4"), str(videos / "b.mp4"), str(videos / "sub" / "c.mp4")]


@pytest.mark.slow
def test_missing_listed_file_gets_an_error_row(videos, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"{videos / 'a.mp4'}\n{tmp_path / 'gone.mp4'}\n")
    run_score(listing, tmp_path / "s.csv")
    table = pd.read_csv(tmp_path / "s.csv").set_index("path")
    assert table.loc[str(videos / "a.mp4"), "status"] == "ok"
    assert table.loc[str(tmp_path / "gone.mp4"), "status"] == "error"
    assert "file not found" in table.loc[str(tmp_path / "gone.mp4"), "error"]


def test_a_link_to_the_root_of_the_filesystem_is_not_walked(videos, tmp_path):
    root = tmp_path / "scan"
    root.mkdir()
    (root / "a.mp4").symlink_to(videos / "a.mp4")  # a link to one video elsewhere: that video is wanted
    (root / "everything").symlink_to("/")
    (root / "inner").symlink_to(root)  # a loop back into the folder: entered once
    (root / "same.mp4").symlink_to(root / "a.mp4")  # the same real file twice: listed once
    (root / "elsewhere").symlink_to(videos)  # a folder outside: entered only when asked
    (root / "b.mp4").symlink_to(videos / "b.mp4")
    assert list_inputs(root) == [root / "a.mp4", root / "b.mp4"]
    (root / "everything").unlink()  # asked to follow folders outside, it enters `elsewhere` (the videos once each)
    assert list_inputs(root, follow_symlinks="outside") == [root / "a.mp4", root / "b.mp4",
                                                            root / "elsewhere" / "sub" / "c.mp4"]


@pytest.mark.slow
def test_a_file_name_that_is_not_utf8_gets_its_row_and_the_rest_are_scored(videos, tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    os.link(videos / "a.mp4", folder / "good.mp4")
    os.link(videos / "b.mp4", os.fsencode(folder) + b"/bad_\xff\xfe.mp4")
    summary = run_score(folder, tmp_path / "s.parquet")
    table = pd.read_parquet(tmp_path / "s.parquet")
    assert summary["scored_now"] == 2 and (table.status == "ok").all()
    assert sorted(Path(p).name for p in table.path) == ["bad_\\xff\\xfe.mp4", "good.mp4"]
    assert run_score(folder, tmp_path / "s.parquet")["scored_now"] == 0  # and it resumes
