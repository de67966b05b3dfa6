"""The retrieval report: recall metrics, the R@K curve, and a few queries with their top videos."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np

from .page import thumbnail_strip, write_html


def recall_curve_uri(ranks: np.ndarray, max_k: int = 50) -> str:
    """R@K for K = 1..max_k as an inline PNG line plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = np.arange(1, max_k + 1)
    recall = [(ranks < k).mean() * 100 for k in ks]
    figure, axis = plt.subplots(figsize=(5, 3.2), dpi=100)
    axis.plot(ks, recall)
    axis.set(xlabel="K", ylabel="text-to-video R@K (%)", ylim=(0, 100), xscale="log")
    axis.grid(alpha=0.3)
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def write_retrieval_report(path: str | Path, dataset: Any, ranks: np.ndarray, text: Any, video: Any,
                           num_queries: int) -> Path:
    """The retrieval report: the R@K curve, then for the first ``num_queries`` captions the top-5 videos (one
    middle-frame thumbnail each, the correct one marked) beside the ground-truth video."""
    rows = []
    for query in range(min(num_queries, len(dataset.captions))):
        truth = dataset.videos[dataset.caption_video[query]]
        top5 = (text[query] @ video.T).topk(min(5, len(dataset.videos))).indices.tolist()
        cells = "".join(f"<td>{thumbnail_strip(dataset.videos[i], count=1)}<br>"
                        f"{'&#10003; ' if dataset.videos[i] == truth else ''}"
                        f"{html.escape(Path(dataset.videos[i]).name)}</td>" for i in top5)
        rows.append(f"<tr><td>{html.escape(dataset.captions[query])}<br><span class='score'>rank "
                    f"{ranks[query] + 1}</span></td><td>{thumbnail_strip(truth, count=1)}</td>{cells}</tr>")
    sections = [f"<img src='{recall_curve_uri(ranks)}'>",
                "<table><tr><th>query</th><th>ground truth</th><th colspan=5>top-5 videos</th></tr>"
                + "".join(rows) + "</table>"]
    return write_html(path, f"coca-video retrieval report: {dataset.split}", sections)
