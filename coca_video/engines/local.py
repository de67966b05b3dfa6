"""The local engine: decode in this process's workers (the decode gate keeps them off the encoder's cores), encode
in this process, flush each batch's rows to the pass's store (:class:`~.store.RowStore`)."""

from __future__ import annotations

from tqdm import tqdm

from ..config import DecodeConfig
from ..data.video import ClipSampling, VideoItem, decode_loader
from ..scoring import Counts, ScoreItem, VideoScorer, batch_rows
from .store import RowStore, Stored


def score_files(scorer: VideoScorer, todo: list[ScoreItem], store: RowStore, decode: DecodeConfig,
                show: bool = True, sampling: ClipSampling | None = None, on_stored: Stored | None = None) -> Counts:
    """Decode ``todo`` in workers (``sampling``: several views, for a probe; default one clip as ``decode`` says),
    score in this process, flush each batch's rows (errors too) to ``store``, then tell ``on_stored`` the batch's
    items. With ``decode.sampling=fps`` each item is a chunk of frames and every frame gets its own row
    (``frame_rows``)."""
    counts = Counts()
    if not todo:
        return counts
    items = [VideoItem(item.key[0], start_sec=item.start, end_sec=item.end) for item in todo]
    loader = decode_loader(items, scorer.transform, decode, sampling, model_device=scorer.model_cfg.device)
    per_frame = (sampling.mode if sampling else decode.sampling) == "fps"
    unit = "video" if todo[0].start is None else "window"  # a segment, or a chunk of frames with sampling=fps
    with tqdm(total=len(todo), unit=unit, disable=not show, dynamic_ncols=True) as bar:
        for batch in loader:
            rows = batch_rows(scorer, batch, todo, per_frame)
            store.append(rows)
            if on_stored is not None:
                on_stored([todo[index] for index in [*batch.indices, *(error[0] for error in batch.errors)]])
            counts.ok += sum(row["status"] == "ok" for row in rows)
            counts.error += len(batch.errors)
            bar.update(len(batch.indices) + len(batch.errors))
            bar.set_postfix(failed=counts.error)
    return counts
