"""MSR-VTT video-id lists (``train_list_full.txt`` / ``val_list_full.txt`` / ``test_list_full.txt``): the videos
they name with all their JSON captions, the official split sizes (6,513 / 497 / 2,990) checked on lists named as
those splits, and the captioning command on an MSR-VTT-layout folder through such a list, its warning kept in the
protocol; captioning reads the 1k-A list's videos with every JSON sentence of each (retrieval: the list's one)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coca_video.config import VideoTextSource, load_config
from coca_video.data.retrieval import OFFICIAL_SPLIT_SIZES, load_msrvtt, load_set
from coca_video.data.synthetic import write_msrvtt_format
from coca_video.errors import DataError
from coca_video.tasks import captioning
from coca_video.tasks.captioning import references_by_video

SPLIT_RANGES = {"train": range(0, 6513), "val": range(6513, 7010), "test": range(7010, 10000)}


@pytest.fixture(scope="module")
def data_json(tmp_path_factory) -> Path:
    """An MSR-VTT annotation file of all 10,000 ids, two captions each (no video files: loading only)."""
    path = tmp_path_factory.mktemp("msrvtt") / "MSRVTT_data.json"
    videos = [{"video_id": f"video{i}", "split": split} for split, ids in SPLIT_RANGES.items() for i in ids]
    sentences = [{"video_id": f"video{i}", "caption": f"clip {i} caption {k}"} for i in range(10000) for k in (0, 1)]
    path.write_text(json.dumps({"videos": videos, "sentences": sentences}))
    return path


def write_list(path: Path, ids) -> Path:
    path.write_text("".join(f"video{i}\n" for i in ids))
    return path


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_official_list_of_the_right_size_loads_quietly_with_all_captions(split, data_json, tmp_path, capsys):
    listed = write_list(tmp_path / f"{split}_list_full.txt", SPLIT_RANGES[split])
    loaded = load_msrvtt(data_json, str(listed), tmp_path)
    assert len(loaded.videos) == OFFICIAL_SPLIT_SIZES[split] == len(SPLIT_RANGES[split])
    assert loaded.warnings == [] and "warning" not in capsys.readouterr().err
    first = SPLIT_RANGES[split][0]
    assert loaded.videos[0] == str(tmp_path / f"video{first}.mp4")
    assert [c for c, v in zip(loaded.captions, loaded.caption_video) if v == 0] == \
        [f"clip {first} caption 0", f"clip {first} caption 1"]


def test_official_name_with_another_size_warns_and_a_custom_name_does_not(data_json, tmp_path, capsys):
    short = write_list(tmp_path / "test_list_full.txt", range(7010, 9999))  # 2,989: one short
    loaded = load_msrvtt(data_json, str(short), tmp_path)
    assert len(loaded.videos) == 2989
    assert len(loaded.warnings) == 1
    assert "test_list_full.txt" in loaded.warnings[0] and "2,990" in loaded.warnings[0] and "2,989" in \
        loaded.warnings[0]
    assert loaded.warnings[0] in capsys.readouterr().err
    val = load_msrvtt(data_json, str(write_list(tmp_path / "val.txt", range(6513, 6520))), tmp_path)
    assert "497" in val.warnings[0]
    subset = load_msrvtt(data_json, str(write_list(tmp_path / "my_subset.txt", range(7010, 7020))), tmp_path)
    assert subset.warnings == [] and len(subset.videos) == 10


def test_list_naming_a_video_without_captions_is_an_error_naming_the_list(data_json, tmp_path):
    bad = write_list(tmp_path / "test_list_full.txt", [7010, 12345])
    with pytest.raises(DataError, match=r"test_list_full.txt: 1 of its 2 videos have no caption .*video12345"):
        load_msrvtt(data_json, str(bad), tmp_path)
    twice = write_list(tmp_path / "twice.txt", [7010, 7010])
    with pytest.raises(DataError, match="twice.txt: 1 video ids appear more than once"):
        load_msrvtt(data_json, str(twice), tmp_path)


def test_captioning_through_a_short_official_list_records_the_warning(tmp_path, monkeypatch):
    folder = tmp_path / "msrvtt"
    data, _ = write_msrvtt_format(folder, num_videos=3, num_frames=4, seed=5)
    listed = write_list(folder / "test_list_full.txt", range(7010, 7013))
    monkeypatch.setenv("PATH", str(tmp_path))  # no java: the Python tokenizer, METEOR left out
    cfg = load_config(captioning.CaptioningConfig, None, [
        f"source.videos={folder}", f"source.msrvtt_data={data}", f"source.msrvtt_split={listed}", f"out={tmp_path / 'out' / 'm.json'}",
        "decode.num_frames=4", "decode.workers=0", "caption.method=greedy", "report_videos=0"])
    result = captioning.run(cfg)
    protocol = result["protocol"]
    assert protocol["split"] == "msrvtt-test_list_full" and protocol["videos"] == 3
    assert protocol["references"] == 6  # both captions of each listed video
    assert any("2,990" in w and "lists 3" in w for w in protocol["warnings"])
    assert 0 <= result["cider"]


def test_captioning_reads_the_1k_a_videos_with_every_json_sentence(tmp_path, capsys):
    """Hand-made: video9770 has three sentences (one blank, dropped) and video7020 two in the JSON; the 1k-A list
    names them in that order with one sentence each; video8000 is in the JSON but not the list."""
    data = {"sentences": [{"video_id": "video7020", "caption": "a cartoon"},
                          {"video_id": "video9770", "caption": "a person is cooking"},
                          {"video_id": "video8000", "caption": "not listed"},
                          {"video_id": "video9770", "caption": "  "},
                          {"video_id": "video9770", "caption": "someone makes food "},
                          {"video_id": "video7020", "caption": "an animated dog"},
                          {"video_id": "video9770", "caption": "a chef in a kitchen"}]}
    (tmp_path / "MSRVTT_data.json").write_text(json.dumps(data))
    jsfusion = tmp_path / "MSRVTT_JSFUSION_test.csv"
    jsfusion.write_text("key,vid_key,video_id,sentence\nret0,msr9770,video9770,a person is cooking\n"
                        "ret1,msr7020,video7020,a cartoon\n")
    source = VideoTextSource(videos=str(tmp_path), msrvtt_data=str(tmp_path / "MSRVTT_data.json"),
                             msrvtt_split=str(jsfusion))
    every = load_set(source, "captioning", every_sentence=True)
    assert every.videos == [str(tmp_path / "video9770.mp4"), str(tmp_path / "video7020.mp4")]
    assert references_by_video(every) == {
        str(tmp_path / "video9770.mp4"): ["a person is cooking", "someone makes food", "a chef in a kitchen"],
        str(tmp_path / "video7020.mp4"): ["a cartoon", "an animated dog"]}
    assert every.split == "msrvtt-1k-A" and every.empty_captions_dropped == 1 and every.warnings == []
    assert every.references.startswith("MSRVTT_data.json: every sentence")
    retrieval = load_set(source, "retrieval")  # retrieval's 1k-A protocol: the list's one sentence a video
    assert retrieval.captions == ["a person is cooking", "a cartoon"] and retrieval.caption_video == [0, 1]
    capsys.readouterr()

    alone = load_set(VideoTextSource(videos=str(tmp_path), msrvtt_split=str(jsfusion)), "captioning",
                     every_sentence=True)
    assert alone.captions == retrieval.captions and alone.caption_video == [0, 1]
    assert len(alone.warnings) == 1 and "MSRVTT_data.json" in alone.warnings[0] and "--msrvtt-data" in \
        alone.warnings[0]
    assert alone.warnings[0] in capsys.readouterr().err

    jsfusion.write_text("key,vid_key,video_id,sentence\nret0,msr9771,video9771,a video the JSON lacks\n")
    with pytest.raises(DataError, match=r"MSRVTT_JSFUSION_test.csv: 1 of its 1 videos have no caption .*video9771"):
        load_set(source, "captioning", every_sentence=True)
