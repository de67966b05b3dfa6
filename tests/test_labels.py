"""Class lists in the formats datasets ship them in; templates; clear errors naming the file."""

import pytest

from coca_video.data.labels import read_class_names, read_templates, video_templates
from coca_video.errors import DataError


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
    with pytest.raises(DataError, match="missing.txt: class list not found"):
        read_class_names(tmp_path / "missing.txt")
    duplicated = tmp_path / "dup.txt"
    duplicated.write_text("a\nb\na\n")
    with pytest.raises(DataError, match="dup.txt: duplicate"):
        read_class_names(duplicated)
    templates = tmp_path / "templates.txt"
    templates.write_text("a video of {}\nno placeholder\n")
    with pytest.raises(DataError, match="templates.txt"):
        read_templates(templates)


def test_shipped_video_templates():
    templates = video_templates()
    assert len(templates) >= 3 and all(t.count("{}") == 1 for t in templates)


def test_shipped_class_lists_match_the_datasets():
    from torchvision.models._meta import _KINETICS400_CATEGORIES  # an independent copy of the official list

    lists = {name: read_class_names(name) for name in ("kinetics400", "kinetics600", "kinetics700", "moments_in_time")}
    assert {name: len(names) for name, names in lists.items()} == {
        "kinetics400": 400, "kinetics600": 600, "kinetics700": 700, "moments_in_time": 339}
    assert lists["kinetics400"] == list(_KINETICS400_CATEGORIES)
    for name in ("kinetics600", "kinetics700"):  # Kinetics indexes classes in sorted order
        assert lists[name] == sorted(lists[name])
    # The two lists come from different sources; a typo in either shows up as a class only one of them has.
    # Kinetics-700 dropped or split exactly these four Kinetics-600 classes (and capitalised "American").
    assert set(lists["kinetics600"]) - set(lists["kinetics700"]) == {
        "bull fighting", "chopping vegetables", "picking fruit", "passing american football (not in game)"}
    # index -> name pairs printed by a Kinetics-600 classifier found in the wild (an independent copy of its list)
    k600_outputs = {31: "biking through snow", 66: "capoeira", 107: "cooking egg", 213: "hitting baseball",
                    309: "passing american football (not in game)", 391: "punching person (boxing)",
                    437: "separating eggs", 509: "swinging baseball bat", 556: "using a sledge hammer", 599: "zumba"}
    assert {i: lists["kinetics600"][i] for i in k600_outputs} == k600_outputs
    assert lists["moments_in_time"][:3] == ["clapping", "praying", "dropping"]  # moments_categories.txt indices 0-2


def test_class_lookup_tolerates_case_and_underscores(tmp_path):
    from coca_video.data.labels import class_index, lookup_class

    index = class_index(read_class_names("kinetics600"))
    assert lookup_class(index, "passing American football (not in game)") == lookup_class(
        index, "passing american football (not in game)")
    assert lookup_class(index, "air_drumming") == 3
    assert lookup_class(index, "air drummin") is None
    with pytest.raises(DataError, match="class list not found .*kinetics400"):
        read_class_names(tmp_path / "kinetics4000")
