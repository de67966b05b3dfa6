"""The captioning command end to end on an MSR-VTT-layout folder made from the synthetic world, with the built-in
default model: its captions against ones generated here frame by frame, its references against the JSON, its
metrics against the metric function on those, the report worst CIDEr-D first, unreadable videos excluded,
and a rerun reusing the stored captions; several references a video (every JSON sentence of a 1k-A video, every
row of a CSV's video) scored as pycocoevalcap scores those sets."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import torch

from coca_video import create_model, get_tokenizer, image_transform
from coca_video.caption_metrics import caption_scores
from coca_video.config import load_config
from coca_video.data.synthetic import write_msrvtt_format
from coca_video.ptb_tokenize import PYTHON_TOKENIZER, python_ptb_tokenize
from coca_video.tasks import captioning
from coca_video.video import VideoReader, sample_indices
from helpers import coco_scores, needs_coco_caption

FRAMES = 4


def independent_captions(videos: list[str]) -> dict[str, str]:
    """Each video's beam-search caption from its middle sampled frame, decoded and encoded here one at a time."""
    model, tokenizer = create_model("default").eval(), get_tokenizer("default")
    transform = image_transform(model)
    captions = {}
    with torch.no_grad():
        for video in videos:
            reader = VideoReader(video, short_side=transform.image_size)
            frames = reader.get_frames(sample_indices(reader.num_frames, FRAMES))
            middle = transform.frames(frames[FRAMES // 2:FRAMES // 2 + 1])  # (1, 3, S, S)
            ids = model.generate_from_tokens(model.image_encoder(middle), method="beam", max_len=30)
            captions[video] = tokenizer.batch_decode(ids)[0]
    return captions


def read_predictions(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_msrvtt_layout_captions_metrics_predictions_and_report(tmp_path, monkeypatch):
    folder = tmp_path / "msrvtt"
    data_json, _ = write_msrvtt_format(folder, num_videos=5, num_frames=8, seed=3)
    monkeypatch.setenv("PATH", str(tmp_path))  # no java: the tokenizer's Python equal, METEOR left out (one line)
    cfg = load_config(captioning.CaptioningConfig, None, [
        f"source.videos={folder}", f"source.msrvtt_data={data_json}", "source.msrvtt_split=full", f"out={tmp_path / 'out' / 'm.json'}",
        f"decode.num_frames={FRAMES}", "decode.workers=0"])
    result = captioning.run(cfg)

    rows = read_predictions(tmp_path / "out" / "m_predictions.csv")
    sentences = json.loads(data_json.read_text())["sentences"]
    expected_refs = {str(folder / f"{s['video_id']}.mp4"): [] for s in sentences}
    for s in sentences:
        expected_refs[str(folder / f"{s['video_id']}.mp4")].append(s["caption"])
    assert {row["video"]: json.loads(row["references"]) for row in rows} == expected_refs
    predictions = {row["video"]: row["caption"] for row in rows}
    assert predictions == independent_captions(list(expected_refs))

    saved = json.loads((tmp_path / "out" / "m.json").read_text())
    scores = caption_scores(predictions, expected_refs, use_java=False, warn=False)
    assert {k: saved[k] for k in scores.metrics} == pytest.approx(scores.metrics, abs=1e-9)
    assert "meteor" not in saved and saved["cider"] > 0  # the default model's zero-shot captions get a CIDEr
    p = saved["protocol"]
    assert (p["videos"], p["references"], p["frames_per_video"], p["decoding"], p["beam_size"]) == (5, 10, 4, "beam", 6)
    assert p["caption_tokenizer"] == PYTHON_TOKENIZER and p["meteor"].startswith("left out: ")
    assert p["model"] == "default" and "middle frame" in p["caption_source"]
    assert {row["video"]: float(row["cider"]) for row in rows} == pytest.approx(scores.per_video_cider)

    page = Path(result["report"]).read_text(encoding="utf-8")
    shown = re.findall(r"(video\d+)\.mp4</a>", page)
    worst_first = sorted(scores.per_video_cider, key=lambda v: (scores.per_video_cider[v], v))
    assert shown == [Path(v).stem for v in worst_first] and page.count("<img class=\"thumb\"") >= 5


@pytest.mark.slow
def test_caption_csv_with_an_unreadable_video_excludes_and_lists_it(tmp_path, monkeypatch):
    folder = tmp_path / "clips"
    write_msrvtt_format(folder, num_videos=2, num_frames=8, seed=4)
    (folder / "broken.mp4").write_bytes(b"\x00" * 100)
    captions = folder / "captions.csv"
    captions.write_text("video,caption\nvideo7010.mp4,a red square\nvideo7010.mp4,a square\n"
                        "video7011.mp4,a blue circle\nbroken.mp4,a green cross\n", encoding="utf-8")
    monkeypatch.setenv("PATH", str(tmp_path))
    cfg = load_config(captioning.CaptioningConfig, None, [
        f"source.captions={captions}", f"out={tmp_path / 'metrics.json'}", f"decode.num_frames={FRAMES}",
        "decode.workers=0", "report_videos=0"])
    result = captioning.run(cfg)
    p = result["protocol"]
    assert (p["videos"], p["videos_in_split"], p["references"]) == (2, 3, 3)
    assert [Path(path).name for path, _ in p["failed_videos"]] == ["broken.mp4"]
    assert [row["video"] for row in read_predictions(tmp_path / "metrics_predictions.csv")] == \
        [str(folder / "video7010.mp4"), str(folder / "video7011.mp4")]
    assert not (tmp_path / "metrics_report.html").exists()

    opened = []

    class RecordingReader(VideoReader):
        def __init__(self, path, *args, **kwargs):
            opened.append(Path(path).name)
            super().__init__(path, *args, **kwargs)

    monkeypatch.setattr("coca_video.video.source.VideoReader", RecordingReader)  # what open_video opens
    again = captioning.run(cfg)
    assert opened == ["broken.mp4"]  # a rerun reuses every stored caption and retries only the failure
    assert {k: again[k] for k in result if k != "protocol"} == {k: result[k] for k in result if k != "protocol"}


@pytest.mark.slow
@torch.no_grad()
def test_score_caption_options_reach_the_decoder():
    """caption.beam_size, caption.min_len and caption.repetition_penalty of score's config decode as the model's
    generate_from_tokens does with those options on the middle frame's tokens, and change the captions."""
    from coca_video.tasks.score import ScoreConfig, build_scorer

    model, tokenizer = create_model("default").eval(), get_tokenizer("default")
    clips = torch.randint(0, 256, (3, FRAMES, 3, 64, 64), generator=torch.Generator().manual_seed(0),
                          dtype=torch.uint8)
    options = ["caption.beam_size=2", "caption.min_len=12", "caption.repetition_penalty=3.0"]
    cfg = load_config(ScoreConfig, None, ["caption=true", *options])
    scorer = build_scorer(cfg, model, tokenizer)
    tokens = model.encode_video(scorer.pixels(clips)).tokens
    got = scorer.captions(tokens, FRAMES)
    middle = tokens.view(3, FRAMES, -1, tokens.shape[-1])[:, FRAMES // 2]
    ids = model.generate_from_tokens(middle, method="beam", max_len=30, num_beams=2, min_len=12,
                                     repetition_penalty=3.0)
    assert got == tokenizer.batch_decode(ids)
    assert (ids != 0).sum(1).min() >= 12 + 1  # SOT, at least 11 more tokens before EOT, then EOT
    default = build_scorer(load_config(ScoreConfig, None, ["caption=true"]), model, tokenizer)
    assert default.captions(tokens, FRAMES) != got


@pytest.mark.slow
@needs_coco_caption
def test_every_reference_of_a_video_counts_from_the_json_and_from_repeated_csv_rows(tmp_path, monkeypatch):
    """A hand-made MSRVTT_data.json with 1 to 4 sentences a video and the 1k-A list of those videos: captioning
    scores each caption against all the JSON sentences of its video, its metrics pycocoevalcap's on those sets; a
    CSV that repeats each video's row once a sentence gives the same sets and the same metrics."""
    folder = tmp_path / "msrvtt"
    data_json, jsfusion = write_msrvtt_format(folder, num_videos=4, num_frames=8, seed=6)
    extra = ["a shape on a plain background", "something sits still", "an object in the picture"]
    data = json.loads(data_json.read_text())
    sentences = {video["video_id"]: [s["caption"] for s in data["sentences"] if s["video_id"] == video["video_id"]]
                 for video in data["videos"]}
    sets = {video_id: (captions + extra)[:k] for k, (video_id, captions) in zip((1, 4, 3, 5), sentences.items())}
    data["sentences"] = [{"video_id": v, "caption": c} for v, refs in sets.items() for c in refs]
    data_json.write_text(json.dumps(data))
    expected = {str(folder / f"{v}.mp4"): refs for v, refs in sets.items()}
    monkeypatch.setenv("PATH", str(tmp_path))  # no java: the Python tokenizer (the PTB jar's equal), no METEOR
    common = [f"decode.num_frames={FRAMES}", "decode.workers=0", "caption.method=greedy", "report_videos=0",
              f"cache_dir={tmp_path / 'cache'}"]
    one_k = captioning.run(load_config(captioning.CaptioningConfig, None, [
        f"source.videos={folder}", f"source.msrvtt_data={data_json}", f"source.msrvtt_split={jsfusion}",
        f"out={tmp_path / 'a' / 'm.json'}", *common]))
    rows = read_predictions(tmp_path / "a" / "m_predictions.csv")
    assert {row["video"]: json.loads(row["references"]) for row in rows} == expected
    predictions = {row["video"]: row["caption"] for row in rows}
    res = {v: [python_ptb_tokenize(c)] for v, c in predictions.items()}
    gts = {v: [python_ptb_tokenize(r) for r in refs] for v, refs in expected.items()}
    coco = coco_scores(res, gts, with_meteor=False)
    assert {k: one_k[k] for k in coco} == pytest.approx(coco, abs=1e-9, rel=0)
    assert coco["cider"] > 0 and "meteor" not in one_k
    p = one_k["protocol"]
    assert p["references"] == 13 and p["references_per_video"] == {"mean": 3.25, "min": 1, "max": 5}
    assert p["references_from"].startswith("MSRVTT_data.json: every sentence")
    assert not [w for w in p["warnings"] if "MSRVTT" in w]  # the JSON given: no warning about the protocol

    csv_path = folder / "captions.csv"  # rows interleaved across videos: each video's rows in the JSON's order
    rounds = [[(v, refs[i]) for v, refs in sets.items() if i < len(refs)] for i in range(5)]
    csv_path.write_text("video,caption\n" + "".join(f"{v}.mp4,{c}\n" for row in rounds for v, c in row))
    from_csv = captioning.run(load_config(captioning.CaptioningConfig, None, [
        f"source.captions={csv_path}", f"out={tmp_path / 'b' / 'm.json'}", *common]))
    rows = read_predictions(tmp_path / "b" / "m_predictions.csv")
    assert {row["video"]: json.loads(row["references"]) for row in rows} == expected
    assert {k: from_csv[k] for k in coco} == pytest.approx(coco, abs=1e-9, rel=0)
    assert from_csv["protocol"]["references_per_video"] == p["references_per_video"]
