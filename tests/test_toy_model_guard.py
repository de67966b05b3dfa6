"""The built-in default model knows only the synthetic world's coloured shapes: zero-shot labels from any other
class list get one clear warning on stderr and in the report's header; the synthetic class lists get none."""

from __future__ import annotations

import pandas as pd
import pytest

from coca_video.config import ModelConfig
from coca_video.data.synthetic import COLOURS, SHAPES, label_names
from coca_video.report import write_score_report
from coca_video.tasks.score import ScoreConfig, run, toy_model_warning

WARNING = "the built-in default model knows only coloured shapes; pass --model/--pretrained with a real checkpoint for"


def class_list(tmp_path, names) -> str:
    path = tmp_path / "classes.txt"
    path.write_text("\n".join(names) + "\n")
    return str(path)


@pytest.mark.parametrize("names", [list(COLOURS), list(SHAPES), label_names("motion"),
                                   [f"{c} {s}" for c in COLOURS for s in SHAPES], ["Small_Red circle", "big cross"]])
def test_the_synthetic_class_lists_get_no_warning(names, tmp_path):
    assert toy_model_warning(ScoreConfig(labels=class_list(tmp_path, names))) is None


def test_a_real_class_list_with_the_default_model_gets_the_warning_naming_the_list(tmp_path):
    labels = class_list(tmp_path, ["red", "dog", "playing guitar"])
    assert toy_model_warning(ScoreConfig(labels=labels)) == f"{WARNING} {labels} (dog, playing guitar)"
    assert toy_model_warning(ScoreConfig(labels="kinetics400")).startswith(f"{WARNING} kinetics400 (abseiling, ")


def test_the_warning_reaches_stderr_once_before_the_model_loads(tmp_path, capsys, monkeypatch):
    from coca_video.tasks import score

    (tmp_path / "v.mp4").write_bytes(b"not a video")
    labels = class_list(tmp_path, ["dog"])

    def stop(cfg):
        raise RuntimeError("model would load here")

    monkeypatch.setattr(score, "load_model", stop)
    with pytest.raises(RuntimeError, match="model would load here"):
        run(ScoreConfig(videos=str(tmp_path / "v.mp4"), labels=labels, out=str(tmp_path / "s.parquet")))
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"coca-video score: warning: {WARNING} {labels} (dog)"]


def test_no_warning_for_a_real_model_or_a_synthetic_list(tmp_path):
    labels = class_list(tmp_path, ["dog"])
    assert toy_model_warning(ScoreConfig(labels=labels, model=ModelConfig(name="coca_ViT-B-32"))) is None
    assert toy_model_warning(ScoreConfig(labels=None)) is None


def test_the_report_header_carries_the_warning(tmp_path):
    scores = pd.DataFrame({"path": ["gone.mp4"], "status": ["error"], "error": ["unreadable"], "duration": [None]})
    cfg = ScoreConfig(labels="kinetics400")
    warned = write_score_report(scores, tmp_path / "warned.html", cfg, [toy_model_warning(cfg)]).read_text()
    head = warned[:warned.index("videos scored")]
    assert "Warning: the built-in default model knows only coloured shapes" in head and "kinetics400" in head
    plain = write_score_report(scores, tmp_path / "plain.html", cfg).read_text()
    assert "Warning" not in plain
