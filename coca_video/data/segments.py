"""A video -> the [start, end) windows (seconds) its rows are scored on: fixed windows (``segment_seconds``), chunks
of frames (``decode.sampling=fps``) or scenes cut at its shots (``segment_by=scenes``, :mod:`coca_video.video.scenes`).
Worked out where decoding runs: in the decoding workers (``decode.workers``, at the lowest priority), one video each;
scene detection decodes every frame, so it is the costly one.

A video whose windows cannot be worked out (unreadable headers, a decode error while cutting) gets ``None``: its one
whole-file item then fails in the decode with the reason, as a row. A video whose cutting runs past its time limit
gets the reason (a string): its error row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from torch.utils.data import DataLoader, Dataset

from ..config import DecodeConfig
from ..errors import MissingExtraError
from ..storage import is_url
from ..video.scenes import CutTimeout, SceneRule, bounded_cuts, cut_budget, scene_windows
from ..video.source import local_file, open_video
from ..video.tar_members import split_member

Window = tuple[float, float]
Cut = list[Window] | str | None  # a video's windows; why it was not cut in time (its error row); None: see above


@dataclass(frozen=True)
class SegmentRule:
    """How a video is cut: scenes (``scenes`` set), else chunks of ``chunk_frames`` frames at ``fps`` (at most
    ``max_frames`` per video), else windows of ``seconds`` every ``stride``."""

    seconds: float = 0.0
    stride: float | None = None
    chunk_frames: int | None = None
    fps: float = 1.0
    max_frames: int | None = None
    scenes: SceneRule | None = None

    def windows(self, path: str, decode: DecodeConfig) -> list[Window]:
        """The windows of the video at ``path`` (a local file or an object-storage URL), by this rule."""
        if self.scenes is not None and (is_url(path) or split_member(path) is not None):
            with local_file(path, decode.timeout) as local:  # one download (or member read) for headers and cutting
                try:
                    return self.windows(str(local), decode)
                except CutTimeout as err:
                    raise CutTimeout(path, err.problem) from None
        from ..video import fps_rate, segment_windows

        with open_video(path, backend=decode.backend, timeout=decode.timeout) as reader:
            duration = reader.duration  # the headers' duration, as the decode and its rows' duration column have it
            budget = cut_budget(decode.timeout, reader.num_frames, reader.info.width, reader.info.height)
        if self.scenes is not None:  # cut in the decode helper, under the decode's time limit
            return scene_windows(self.scenes, duration, bounded_cuts(path, self.scenes, budget)[1])
        if self.chunk_frames:
            return segment_windows(duration, self.chunk_frames / fps_rate(duration, self.fps, self.max_frames))
        return segment_windows(duration, self.seconds, self.stride)


class WindowsOf(Dataset):
    """paths -> each video's windows, None where they cannot be worked out, or why cutting ran out of time (see the
    module's docstring)."""

    def __init__(self, paths: Sequence[str], rule: SegmentRule, decode: DecodeConfig) -> None:
        self.paths, self.rule, self.decode = list(paths), rule, decode

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Cut:
        try:
            return self.rule.windows(self.paths[index], self.decode)
        except MissingExtraError:  # a worker (a Ray node) without PySceneDetect: the run's error, not the file's
            raise
        except CutTimeout as err:
            return err.reason
        except Exception:  # noqa: BLE001 -- the decode of the whole-file item reports what is wrong
            return None


def _one(item: Any) -> Any:
    return item


def video_windows(paths: Sequence[str], rule: SegmentRule, decode: DecodeConfig) -> list[Cut]:
    """The windows of each of ``paths`` in order (None or a reason: see :class:`WindowsOf`), worked out in
    ``decode.workers`` decoding workers (none: here)."""
    from .video import background_priority

    if not paths:
        return []
    workers = min(decode.workers, len(paths))
    loader = DataLoader(WindowsOf(paths, rule, decode), batch_size=None, num_workers=workers, collate_fn=_one,
                        worker_init_fn=background_priority if workers else None)
    return list(loader)
