"""Zero-shot action recognition on a Kinetics-format set: the command's top-1/top-5 against the same classification
done by hand, video by video, with the public API."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import coca_video
from coca_video.cli import main
from coca_video.data.actions import load_actions
from coca_video.data.labels import read_class_names, read_templates
from coca_video.data.synthetic import COLOURS, label_names, write_kinetics_format
from coca_video.report.classification import is_our_png


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
                                              read_templates(model.checkpoint / "prompt_templates.txt"))[0]
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


def test_zeroshot_writes_the_probes_predictions_per_class_table_and_confusion(tmp_path, capsys):
    """Beside ``out``: one predictions row per evaluated video; per-class accuracy and the confusion (its plot up to
    50 classes, its largest off-diagonal cells in the metrics past that) agree with those rows counted by hand."""
    folder = tmp_path / "k"
    _, val_csv = write_kinetics_format(folder, 1, 8, task="motion", size=32, num_frames=4, seed=4)  # some missed
    few, many = tmp_path / "motions.txt", tmp_path / "many.txt"  # many: the five motions and 55 no video has
    few.write_text("\n".join(label_names("motion")) + "\n")
    many.write_text("\n".join([*label_names("motion"), *(f"class {i}" for i in range(55))]) + "\n")
    for labels, out in ((str(few), tmp_path / "few.json"), (str(many), tmp_path / "many.json")):
        assert main(["zeroshot", "--annotations", str(val_csv), "--video-root", str(folder), "--labels", labels,
                     "--out", str(out), "--frames", "2", "decode.workers=0"]) == 0
        metrics = json.loads(out.read_text())
        rows = pd.read_csv(out.with_name(f"{out.stem}_predictions.csv"))
        actions = load_actions("kinetics", val_csv, folder, read_class_names(labels))
        assert list(rows.columns) == ["path", "label", "prediction", "score", "top5"]
        assert dict(zip(rows.path, rows.label)) == {i.path: actions.classes[i.label] for i in actions.items}
        assert (rows.prediction == rows.top5.str.split("|").str[0]).all() and rows.score.between(0, 1).all()
        hits = rows.label == rows.prediction
        assert metrics["top1"] == pytest.approx(100 * hits.mean()) and metrics["protocol"]["videos_evaluated"] == 8
        per_class = pd.read_csv(out.with_name(f"{out.stem}_per_class.csv"))
        assert list(per_class["class"]) == actions.classes
        for name, accuracy, videos in zip(per_class["class"], per_class.accuracy, per_class.videos):
            own = rows[rows.label == name]
            assert videos == len(own)
            assert (pd.isna(accuracy) and not len(own)) or accuracy == pytest.approx(100 * hits[own.index].mean())
        confusions = rows[~hits].groupby(["label", "prediction"]).size().to_dict()
        if out.stem == "few":
            assert is_our_png(out.with_name("few_confusion.png")) and "top_confusions" not in metrics
        else:  # every off-diagonal cell (8 videos: fewer than 20), plus the hits on the diagonal, is every video
            cells = {(c["true"], c["predicted"]): c["count"] for c in metrics["top_confusions"]}
            assert cells == confusions and cells and sum(cells.values()) + hits.sum() == 8
            assert not out.with_name("many_confusion.png").exists()


@pytest.mark.parametrize("table", ["predictions.csv", "per_class.csv", "confusion.png"])
def test_the_tables_never_overwrite_a_file_we_did_not_write(tmp_path, capsys, table):
    folder = tmp_path / "k"
    _, val_csv = write_kinetics_format(folder, 1, 2, task="colour", size=32, num_frames=4, seed=4)
    precious = tmp_path / f"metrics_{table}"
    precious.write_text("mine\n")
    code = main(["zeroshot", "--annotations", str(val_csv), "--video-root", str(folder),
                 "--out", str(tmp_path / "metrics.json"), "--frames", "2", "decode.workers=0"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "file exists and was not written by coca-video" in err, err
    assert precious.read_text() == "mine\n" and not (tmp_path / "metrics.json").exists()
