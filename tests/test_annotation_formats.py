"""An annotation file's format is read from its first line when not given: the same videos and labels as naming the
format, and a one-line error naming the formats for a file that is none of them."""

from __future__ import annotations

import pytest

from coca_video.data.actions import detect_format, load_actions
from coca_video.errors import DataError

FILES = {  # format -> (file name, text); every layout lists a.mp4 (class "jump") and b/c.mp4 (class "run")
    "kinetics": ("k.csv", "label,youtube_id,time_start,time_end,split\njump,a,0,10,val\nrun,c,5,15,val\n"),
    "csv": ("p.csv", "path,label\na.mp4,jump\nb/c.mp4,run\n"),
    "mit": ("mit.csv", "a.mp4,jump,3,3\nb/c.mp4,run,3,3\n"),
    "list": ("l.txt", "a.mp4 0\nb/c.mp4 1\n"),
}


@pytest.fixture
def root(tmp_path):
    (tmp_path / "b").mkdir()
    for name in ("a.mp4", "b/c.mp4", "a_000000_000010.mp4", "c_000005_000015.mp4"):
        (tmp_path / name).write_bytes(b"x")
    return tmp_path


@pytest.mark.parametrize("fmt", list(FILES))
def test_auto_reads_each_format_as_naming_it_would(root, fmt):
    name, text = FILES[fmt]
    (root / name).write_text(text)
    assert detect_format(root / name) == fmt
    auto, named = load_actions("auto", root / name, root), load_actions(fmt, root / name, root)
    assert [(i.path, i.label) for i in auto.items] == [(i.path, i.label) for i in named.items]
    assert len(auto.items) == 2 and auto.classes == named.classes


def test_a_file_of_no_known_format_is_one_line_naming_the_formats(tmp_path):
    (tmp_path / "notes.csv").write_text("video,class\nx,y\n")
    with pytest.raises(DataError, match=r"notes\.csv: cannot tell the annotation format .* set format=") as err:
        load_actions("auto", tmp_path / "notes.csv", tmp_path)
    assert "\n" not in str(err.value)
