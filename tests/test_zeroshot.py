"""Zero-shot action recognition on a Kinetics-format set: the command's top-1/top-5 against the same classification
done by hand, video by video, with the public API."""

from __future__ import annotations

import json

import pytest

import coca_video
from coca_video.cli import main
from coca_video.data.actions import load_actions
from coca_video.data.labels import model_templates
from coca_video.data.synthetic import COLOURS, write_kinetics_format


@pytest.mark.slow
def test_zeroshot_accuracy_matches_a_classification_by_hand(tmp_path, capsys):
    folder = tmp_path / "k"
    _, val_csv = write_kinetics_format(folder, 1, 12, task="colour", size=64, num_frames=8, seed=4)
    classes = tmp_path / "colours.txt"
    classes.write_text("\n".join(COLOURS) + "\n")
    out = tmp_path / "metrics.json"
    code = main(["zeroshot", "--annotations", str(val_csv), "--video-root", str(folder), "--labels", str(classes),
                 "--out", str(out), "--frames", "4", "decode.workers=0"])
    assert code == 0
    result = json.loads(out.read_text())
    model, tokenizer = coca_video.create_model("default"), coca_video.get_tokenizer("default")
    actions = load_actions("kinetics", val_csv, folder, list(COLOURS))
    hits1 = hits5 = 0
    for item in actions.items:
        video = coca_video.encode_video_file(model, item.path, num_frames=4)
        probs = coca_video.zero_shot_classify(model, tokenizer, video.video_embedding, list(COLOURS),
                                              model_templates("default"))[0]
        top = probs.topk(5).indices.tolist()
        hits1 += top[0] == item.label
        hits5 += item.label in top
    assert result["top1"] == pytest.approx(100 * hits1 / 12) and result["top5"] == pytest.approx(100 * hits5 / 12)
    assert result["protocol"]["videos_evaluated"] == 12 and result["top1"] > 100 / len(COLOURS)
    again = main(["zeroshot", "--annotations", str(val_csv), "--video-root", str(folder), "--labels", str(classes),
                  "--out", str(out), "--frames", "4", "decode.workers=0"])  # resumes: nothing decoded again
    assert again == 0 and json.loads(out.read_text())["top1"] == result["top1"]


def test_out_never_overwrites_a_file_we_did_not_write(tmp_path, capsys):
    folder = tmp_path / "k"
    _, val_csv = write_kinetics_format(folder, 1, 2, task="colour", size=64, num_frames=4, seed=4)
    precious = tmp_path / "notes.json"
    precious.write_text('{"mine": true}')
    code = main(["zeroshot", "--annotations", str(val_csv), "--video-root", str(folder), "--out", str(precious)])
    assert code == 2 and "file exists and was not written by coca-video" in capsys.readouterr().err
    assert precious.read_text() == '{"mine": true}'


def test_a_rerun_with_other_templates_is_refused_instead_of_reusing_the_old_labels(tmp_path, capsys):
    """The per-video store keeps top-5 labels; a rerun with other prompts used to take them as done and report the
    first run's accuracy as the second's."""
    folder = tmp_path / "k"
    _, val_csv = write_kinetics_format(folder, 1, 3, task="colour", size=32, num_frames=4, seed=4)
    out = tmp_path / "metrics.json"
    run = ["zeroshot", "--annotations", str(val_csv), "--video-root", str(folder), "--out", str(out), "--frames", "2",
           "decode.workers=0"]
    assert main(run) == 0
    templates = tmp_path / "t.txt"
    templates.write_text("a photo of a {}.\n")
    capsys.readouterr()
    assert main([*run, f"templates={templates}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "other settings (templates:" in err, err
