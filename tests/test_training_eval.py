"""What a user watches while the shared loop trains: validation every ``train.eval_every`` epochs (steps, in a run
by steps: pretraining) in the log and metrics.jsonl, the best epoch's checkpoint kept as checkpoints/best.pt (the
same after a resume as in a straight run), curves.png, and TensorBoard's event file holding the same scalars as
metrics.jsonl. A two-weight regression whose training target differs from its validation target, so the validation
loss falls, then rises: its best epoch is in the middle and can be recomputed from the kept weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import interrupt_at_step

from coca_video.training import Batch, CheckpointManager, OptimConfig, TrainLoop, TrainTask, best_validation, fit
from coca_video.training.curves import plot_curves

INPUTS = torch.eye(2).repeat(4, 1)  # (8, 2): four copies of each unit vector
TRAIN_TARGETS = INPUTS @ torch.tensor([[2.0], [2.0]])  # (8, 1): the training data pulls both weights to 2
VAL_TARGETS = INPUTS @ torch.tensor([[0.3], [0.3]])  # (8, 1): validation is best where the weights pass 0.3


def val_loss(layer: torch.nn.Linear) -> float:
    with torch.no_grad():
        return torch.nn.functional.mse_loss(layer(INPUTS), VAL_TARGETS).item()


def regression_task() -> TrainTask:
    layer = torch.nn.Linear(2, 1, bias=False)
    torch.nn.init.zeros_(layer.weight)

    def epoch_batches(epoch: int, steps: int):
        return [Batch((INPUTS[i::2],), TRAIN_TARGETS[i::2]) for i in range(steps)]  # 2 steps of 4 rows

    return TrainTask(layer, lambda module, x: module(x), lambda out, y: ((out - y) ** 2).sum(),
                     epoch_batches=epoch_batches, steps_per_epoch=2,
                     validate=lambda: {"val_loss": val_loss(layer)}, best="-val_loss")


def streamed_regression_task() -> TrainTask:
    """The same regression as a run by steps over an endless stream (pretraining's kind of run)."""
    task = regression_task()

    def stream(step: int):
        while True:
            yield Batch((INPUTS[step % 2::2],), TRAIN_TARGETS[step % 2::2])
            step += 1

    task.epoch_batches, task.steps_per_epoch, task.stream = None, 0, stream
    return task


def train(folder: Path, resume: str | None = None, streamed: bool = False,
          **loop) -> tuple[TrainTask, list[dict[str, float]]]:
    task = streamed_regression_task() if streamed else regression_task()
    history = fit(task, TrainLoop(**{"epochs": 8, "batch_size": 4, **loop}),
                  OptimConfig(lr=0.1, weight_decay=0.0, warmup_steps=0, schedule="linear"), folder, resume)
    return task, history


def records(folder: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").open()]


def best_weights(folder: Path) -> torch.Tensor:
    return CheckpointManager.load(folder / "checkpoints" / "best.pt")["model"]["weight"]


def test_validation_every_eval_every_epochs_and_the_best_epoch_is_kept(tmp_path, capsys):
    _, history = train(tmp_path, eval_every=3)
    validated = [r["epoch"] for r in records(tmp_path) if "val_loss" in r]
    assert validated == [3, 6, 8]  # every third epoch and the last
    assert [h["epoch"] for h in history if "val_loss" in h] == validated
    assert "val_loss" in capsys.readouterr().err  # the epoch's log line shows it
    losses = {r["epoch"]: r["val_loss"] for r in records(tmp_path) if "val_loss" in r}
    assert losses[3] < losses[8]  # the run overshoots: the last epoch is not the best
    layer = torch.nn.Linear(2, 1, bias=False)
    layer.load_state_dict({"weight": best_weights(tmp_path)})
    assert val_loss(layer) == pytest.approx(min(losses.values()))  # best.pt holds the best validated weights


def test_eval_every_zero_validates_nothing_and_keeps_no_best(tmp_path):
    train(tmp_path, eval_every=0)
    assert not any("val_loss" in r for r in records(tmp_path))
    assert not (tmp_path / "checkpoints" / "best.pt").exists()


def test_a_resumed_run_keeps_the_straight_runs_best(tmp_path, monkeypatch):
    _, straight = train(tmp_path / "a")
    interrupt_at_step(monkeypatch, 7)  # Ctrl-C in epoch 4, after the best epoch (epochs 1-3 are checkpointed)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "b")
    monkeypatch.undo()
    _, resumed = train(tmp_path / "b", resume="auto")
    assert resumed == straight
    torch.testing.assert_close(best_weights(tmp_path / "b"), best_weights(tmp_path / "a"), rtol=0, atol=0)


def test_tensorboard_event_file_holds_the_scalars_of_metrics_jsonl(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(tmp_path, epochs=4, eval_every=2)
    accumulator = EventAccumulator(str(tmp_path / "tensorboard"))
    accumulator.Reload()
    expected: dict[str, list[tuple[int, float]]] = {}
    for record in records(tmp_path):
        for key, value in record.items():
            if key != "step":
                expected.setdefault(key, []).append((record["step"], value))
    assert sorted(accumulator.Tags()["scalars"]) == sorted(expected)
    for key, points in expected.items():
        logged = [(event.step, event.value) for event in accumulator.Scalars(key)]
        assert logged == [(step, pytest.approx(value, rel=1e-6)) for step, value in points], key


def test_a_run_by_steps_validates_every_eval_every_steps_and_keeps_the_best_step(tmp_path, monkeypatch):
    _, straight = train(tmp_path / "a", streamed=True, epochs=None, max_steps=16, eval_every=3)
    validated = [r["step"] for r in records(tmp_path / "a") if "val_loss" in r]
    assert validated == [3, 6, 9, 12, 15, 16]  # every third step and the last
    losses = {r["step"]: r["val_loss"] for r in records(tmp_path / "a") if "val_loss" in r}
    assert min(losses, key=losses.get) not in (15, 16)  # it overshoots: the best step is not the last
    layer = torch.nn.Linear(2, 1, bias=False)
    layer.load_state_dict({"weight": best_weights(tmp_path / "a")})
    assert val_loss(layer) == pytest.approx(min(losses.values()))  # best.pt holds the best validated step's weights
    best = best_validation(straight, "-val_loss")
    assert best == {"best_step": min(losses, key=losses.get), "best_val_loss": min(losses.values())}
    interrupt_at_step(monkeypatch, 14)  # Ctrl-C after the best step (checkpointed at each validation)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "b", streamed=True, epochs=None, max_steps=16, eval_every=3)
    monkeypatch.undo()
    _, resumed = train(tmp_path / "b", resume="auto", streamed=True, epochs=None, max_steps=16, eval_every=3)
    assert resumed == straight
    torch.testing.assert_close(best_weights(tmp_path / "b"), best_weights(tmp_path / "a"), rtol=0, atol=0)


def test_best_validation_names_the_best_epoch_of_the_history():
    history = [{"epoch": 1, "train_loss": 3.0}, {"epoch": 2, "train_loss": 2.0, "val_top1": 40.0},
               {"epoch": 3, "train_loss": 1.0}, {"epoch": 4, "train_loss": 0.5, "val_top1": 40.0}]
    assert best_validation(history, "val_top1") == {"best_epoch": 2, "best_val_top1": 40.0}  # the first of equals
    assert best_validation(history, "-train_loss") == {"best_epoch": 4, "best_train_loss": 0.5}
    assert best_validation(history[:1], "val_top1") == {}


def test_curves_plot_the_training_loss_and_the_validated_figure(tmp_path, monkeypatch):
    import matplotlib.axes

    plotted: list[list[float]] = []
    real_plot = matplotlib.axes.Axes.plot
    monkeypatch.setattr(matplotlib.axes.Axes, "plot", lambda ax, x, y, *a, **k: plotted.append([list(x), list(y)])
                        or real_plot(ax, x, y, *a, **k))
    _, history = train(tmp_path, epochs=4, eval_every=2)
    plot_curves(tmp_path, history, "val_loss", "validation loss")
    assert (tmp_path / "curves.png").stat().st_size > 0
    assert plotted == [[[1, 2, 3, 4], [h["train_loss"] for h in history]],
                       [[2, 4], [history[1]["val_loss"], history[3]["val_loss"]]]]
