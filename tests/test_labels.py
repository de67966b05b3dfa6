"""Class lists in the formats datasets ship them in; templates; clear errors naming the file."""

import pytest

from coca_video.data.labels import LabelsError, read_class_names, read_templates, video_templates


def test_formats(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("# comment\nabseiling\n\nair drumming\n")
    assert read_class_names(plain) == ["abseiling", "air drumming"]
    named = tmp_path / "named.csv"
    named.write_text("id,name\n0,abseiling\n1,air drumming\n")
    assert read_class_names(named) == ["abseiling", "air drumming"]
    indexed = tmp_path / "moments_categories.txt"
    indexed.write_text("bathing,1\naiming,0\n")
    assert read_class_names(indexed) == ["aiming", "bathing"]
    annotations = tmp_path / "validate.csv"
    annotations.write_text("label,youtube_id,time_start,time_end,split\n"
                           "zumba,a,0,10,val\nabseiling,b,5,15,val\nzumba,c,1,11,val\n")
    assert read_class_names(annotations) == ["abseiling", "zumba"]


def test_errors_name_the_file(tmp_path):
    with pytest.raises(LabelsError, match="missing.txt: class list not found"):
        read_class_names(tmp_path / "missing.txt")
    duplicated = tmp_path / "dup.txt"
    duplicated.write_text("a\nb\na\n")
    with pytest.raises(LabelsError, match="dup.txt: duplicate"):
        read_class_names(duplicated)
    templates = tmp_path / "templates.txt"
    templates.write_text("a video of {}\nno placeholder\n")
    with pytest.raises(LabelsError, match="templates.txt"):
        read_templates(templates)


def test_shipped_video_templates():
    templates = video_templates()
    assert len(templates) >= 3 and all(t.count("{}") == 1 for t in templates)
