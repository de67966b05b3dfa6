"""The linear-probe baseline (``mode: linear``): scikit-learn's logistic regression carried into our LinearProbe,
our metrics against scikit-learn's on the same probabilities, the C sweep, bad values, and ``score --probe``
applying a linear probe as the probe's own evaluation did."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")
from helpers import score_with_probe  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import balanced_accuracy_score, top_k_accuracy_score  # noqa: E402

from coca_video.cli import main  # noqa: E402
from coca_video.config import load_config  # noqa: E402
from coca_video.errors import ConfigError  # noqa: E402
from coca_video.metrics import mean_class_accuracy, topk_accuracy  # noqa: E402
from coca_video.model import load_probe, save_probe  # noqa: E402
from coca_video.model.linear_probe import LinearProbeConfig, linear_probe_from_sklearn  # noqa: E402
from coca_video.tasks import probe, score  # noqa: E402
from coca_video.tasks.probe.linear import LinearFitConfig, fit_linear_probe, holdout_split  # noqa: E402


def clusters(n: int, classes: int, dim: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around one random centre per class: (n, dim) float64 and (n,) labels, every class present."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    labels = np.arange(n) % classes
    points = centres[labels] + noise * rng.normal(size=(n, dim))
    return points / np.linalg.norm(points, axis=1, keepdims=True), labels


def test_linear_probe_computes_sklearns_probabilities_and_our_metrics_equal_sklearns():
    x, y = clusters(240, 7, 16, noise=1.2, seed=0)  # overlapping clusters: accuracy well below 100%
    train, test = slice(0, 160), slice(160, None)
    cfg = LinearProbeConfig(16, 7, num_frames=8)
    fit = LinearFitConfig(c_grid=[0.01, 1.0, 100.0], holdout=0.25)
    linear, sweep = fit_linear_probe(x[train], y[train], cfg, fit, seed=0)
    reference = LogisticRegression(C=sweep.chosen_c, max_iter=1000).fit(x[train], y[train])
    with torch.no_grad():
        probs = linear(torch.from_numpy(x[test])).softmax(-1)
    np.testing.assert_allclose(probs.numpy(), reference.predict_proba(x[test]), atol=1e-5)
    labels = torch.from_numpy(y[test])
    ours = topk_accuracy(probs, labels, (1, 5))
    assert 30 < ours["top1"] < 95, ours  # neither trivial nor perfect, so the comparison means something
    for k in (1, 5):
        assert ours[f"top{k}"] == pytest.approx(100 * top_k_accuracy_score(y[test], probs.numpy(), k=k,
                                                                          labels=range(7)), abs=1e-4)
    assert mean_class_accuracy(probs.argmax(-1), labels) == pytest.approx(
        100 * balanced_accuracy_score(y[test], probs.argmax(-1).numpy()), abs=1e-4)


def test_the_sweep_scores_each_c_on_the_held_out_share_and_refits_on_everything():
    x, y = clusters(120, 4, 8, noise=1.5, seed=1)
    fit = LinearFitConfig(c_grid=[1e-4, 0.1, 10.0], holdout=0.3)
    linear, sweep = fit_linear_probe(x, y, LinearProbeConfig(8, 4), fit, seed=3)
    kept, held = holdout_split(y, 0.3, seed=3)
    assert len(held) == 36 and not set(kept) & set(held) and np.bincount(y[held]).tolist() == [9, 9, 9, 9]
    for point in sweep.points:  # each held-out accuracy is sklearn's own score of a fit on the rest
        model = LogisticRegression(C=point["C"], max_iter=1000).fit(x[kept], y[kept])
        assert point["holdout_top1"] == pytest.approx(100 * model.score(x[held], y[held]), abs=1e-4)
    assert sweep.chosen_c == max(sweep.points, key=lambda p: (p["holdout_top1"], -p["holdout_loss"]))["C"]
    full = LogisticRegression(C=sweep.chosen_c, max_iter=1000).fit(x, y)  # the refit: on all 120 clips
    np.testing.assert_allclose(linear.weight.numpy(), full.coef_, atol=1e-5)
    assert linear.cfg.C == sweep.chosen_c


def test_a_binary_fit_and_a_class_never_seen_in_training_keep_sklearns_probabilities():
    x, y = clusters(60, 2, 6, noise=0.8, seed=2)
    binary = LogisticRegression(C=1.0).fit(x, y)
    probe_cfg = LinearProbeConfig(6, 3)  # class 2 has no training clip
    linear = linear_probe_from_sklearn(binary.coef_, binary.intercept_, binary.classes_, probe_cfg)
    with torch.no_grad():
        probs = linear(torch.from_numpy(x)).softmax(-1).numpy()
    np.testing.assert_allclose(probs[:, :2], binary.predict_proba(x), atol=1e-6)
    assert (probs[:, 2] == 0).all()


@pytest.mark.parametrize("override, message", [
    ("linear.c_grid=[]", "linear.c_grid must list at least one value of C"),
    ("linear.c_grid=[1.0,-0.5]", "linear.c_grid must hold finite values > 0"),
    ("linear.holdout=1.0", "linear.holdout must be in (0, 1)"),
    ("probe.cache=int8", "probe.cache must be fp16 or none in linear mode"),
])
def test_bad_linear_settings_are_one_line_errors(tmp_path, override, message, capsys):
    config = tmp_path / "linear.yaml"
    config.write_text("mode: linear\n")
    with pytest.raises(ConfigError, match=f"{re.escape(str(config))}.*: {re.escape(message)}"):
        load_config(probe.ProbeConfig, config, [override])
    assert main(["probe", "--config", str(config), override]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0]


@pytest.fixture(scope="module")
def linear_run(tmp_path_factory) -> Path:
    """A linear probe trained end to end on the default model's colour clips (the module's one expensive step)."""
    root = tmp_path_factory.mktemp("linear")
    overrides = {"mode": "linear", "data.format": "synthetic", "data.video_root": str(root / "videos"),
                 "data.synthetic.task": "colour", "data.synthetic.train_videos": 36, "data.synthetic.val_videos": 18,
                 "decode.num_frames": 4, "decode.workers": 0, "output_dir": str(root / "run"),
                 "eval.spatial_crops": 3, "linear.c_grid": "[0.1,10.0,1000.0]"}
    probe.run(load_config(probe.ProbeConfig, None, [f"{k}={v}" for k, v in overrides.items()]))
    return root


@pytest.mark.slow
def test_linear_mode_writes_the_probe_outputs_with_its_protocol(linear_run):
    metrics = json.loads((linear_run / "run" / "metrics.json").read_text())
    assert metrics["top1"] >= 80.0, metrics  # colour is linear in the mean embedding (chance 1/6)
    proto = metrics["protocol"]
    assert proto["mode"] == "linear" and proto["feature_cache"] == "embedding" and proto["views"] == "1x3"
    linear = proto["linear"]
    assert linear["c_grid"] == [0.1, 10.0, 1000.0] and linear["chosen_c"] in linear["c_grid"]
    assert linear["holdout_share"] == 0.2 and linear["fit_videos"] + linear["holdout_videos"] == 36
    assert [p["C"] for p in linear["sweep"]] == linear["c_grid"]
    for name in ("predictions.csv", "per_class.csv", "confusion.png", "c_sweep.png", "probe/probe.json",
                 "probe/classifier.safetensors"):
        assert (linear_run / "run" / name).is_file(), name
    loaded, info = load_probe(linear_run / "run" / "probe")  # strict load of the plain arrays
    assert info.kind == "linear" and loaded.cfg.C == linear["chosen_c"] and loaded.cfg.num_frames == 4
    assert not list((linear_run / "run" / "probe").glob("*.pkl"))


@pytest.mark.slow
def test_score_with_a_linear_probe_gives_the_probes_own_predictions(linear_run, tmp_path):
    predictions, scored, linked = score_with_probe(linear_run / "run", tmp_path, top_k=3)
    expected = dict(zip(predictions.path.map(linked.get), predictions.prediction))
    assert {path: scored.top1_label[path] for path in expected} == expected
    top3 = {linked[p]: t.split("|")[:3] for p, t in zip(predictions.path, predictions.top5)}
    assert {p: [scored.top1_label[p], scored.top2_label[p], scored.top3_label[p]] for p in top3} == top3


def test_a_saved_linear_probe_with_other_shapes_is_refused(tmp_path):
    from safetensors.torch import save_file

    from coca_video.errors import CheckpointError

    x, y = clusters(20, 2, 4, noise=0.5, seed=0)
    fitted = LogisticRegression().fit(x, y)
    folder = save_probe(tmp_path / "p", linear_probe_from_sklearn(fitted.coef_, fitted.intercept_, fitted.classes_,
                                                                  LinearProbeConfig(4, 2)), ["a", "b"], "default", None)
    save_file({"weight": torch.zeros(2, 5), "bias": torch.zeros(2)}, str(folder / "classifier.safetensors"))
    with pytest.raises(CheckpointError, match="classifier.safetensors: does not fit .*weight"):
        load_probe(folder)


@pytest.mark.slow
@pytest.mark.distributed
def test_two_processes_without_a_cache_fit_the_same_linear_probe(linear_run, tmp_path):
    """torchrun, 2 ranks, probe.cache=none: each rank decodes and encodes its share of the clips, the shares are
    united in clip order, and the fit, its C and its predictions are the single cached run's (fp16 storage apart)."""
    import os
    import subprocess
    import sys

    from helpers import REPO, free_port

    saved = json.loads((linear_run / "run" / "config.json").read_text())
    overrides = {"mode": "linear", "data.format": "synthetic", "data.video_root": saved["data"]["video_root"],
                 "data.synthetic.task": "colour", "data.synthetic.train_videos": 36, "data.synthetic.val_videos": 18,
                 "decode.num_frames": 4, "decode.workers": 0, "output_dir": str(tmp_path / "two"),
                 "eval.spatial_crops": 3, "linear.c_grid": "[0.1,10.0,1000.0]", "probe.cache": "none"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(REPO / "pipelines" / "kinetics_probe.py"),
           *[f"{k}={v}" for k, v in overrides.items()]]
    result = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = (json.loads((folder / "metrics.json").read_text()) for folder in (linear_run / "run", tmp_path / "two"))
    assert two["protocol"]["feature_cache"] == "none" and two["protocol"]["val_videos_evaluated"] == 18
    assert two["protocol"]["linear"]["chosen_c"] == one["protocol"]["linear"]["chosen_c"]
    import pandas as pd

    columns = ["path", "label", "prediction"]
    assert pd.read_csv(tmp_path / "two" / "predictions.csv")[columns].equals(
        pd.read_csv(linear_run / "run" / "predictions.csv")[columns])


def test_without_sklearn_linear_mode_stops_at_once_naming_the_extra(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn now raises ImportError
    assert main(["probe", "mode=linear", f"output_dir={tmp_path / 'run'}", "data.format=synthetic",
                 f"data.video_root={tmp_path / 'videos'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'coca-video[linear]'" in err[0]
    assert not (tmp_path / "videos").exists()  # nothing decoded or written first


def test_a_linear_probe_cannot_start_an_attentional_head(tmp_path):
    x, y = clusters(20, 3, 160, noise=0.5, seed=0)
    fitted = LogisticRegression().fit(x, y)
    folder = save_probe(tmp_path / "p", linear_probe_from_sklearn(fitted.coef_, fitted.intercept_, fitted.classes_,
                                                                  LinearProbeConfig(160, 3, num_frames=4)),
                        ["a", "b", "c"], "default", None)
    cfg = load_config(probe.ProbeConfig, None, [f"probe.init={folder}", "decode.num_frames=4"])
    from coca_video.model import VideoClassifier, VideoClassifierConfig

    head = VideoClassifier(VideoClassifierConfig(160, 3, num_frames=4))
    with pytest.raises(ConfigError, match="a linear probe .* cannot start an attentional head"):
        probe.init_classifier(cfg, head, ["a", "b", "c"])
