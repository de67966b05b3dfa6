"""curves.png, what a training run looks like: the training loss and, on its own axis, the validation figure of the
records that validated; by epochs for a run by epochs, by steps for a run by steps (pretraining)."""

from __future__ import annotations

from pathlib import Path


def plot_curves(output: Path, history: list[dict[str, float]], validation: str, label: str) -> None:
    """``output/curves.png`` from a :func:`~coca_video.training.fit` history: the training loss per epoch
    (``train_loss``) or per logged step (``loss``), and ``validation`` (``val_top1``, ``val_loss``) of the records
    that have it, on a second axis labelled ``label``. Nothing without a history (a linear probe)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    x, loss = ("epoch", "train_loss") if "epoch" in history[0] else ("step", "loss")
    trained = [h for h in history if loss in h]
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot([h[x] for h in trained], [h[loss] for h in trained], marker="o" if x == "epoch" else None)
    ax.set_xlabel(x)
    ax.set_ylabel("training loss")
    validated = [h for h in history if validation in h]
    if validated:
        other = ax.twinx()
        other.plot([h[x] for h in validated], [h[validation] for h in validated], color="tab:green", marker=".")
        other.set_ylabel(label, color="tab:green")
    fig.tight_layout()
    fig.savefig(output / "curves.png", dpi=100)
    plt.close(fig)
