"""Scenes: a video cut at its shot boundaries, found by PySceneDetect (its PyAV backend) with its content or adaptive
detector, and each scene as a [start, end) window in seconds, a long one split into windows of at most
``max_scene_seconds``. PySceneDetect is the optional extra ``scenes`` (``pip install 'coca-video[scenes]'``); this
module imports it only when a video is cut.

    rule = SceneRule(detector="adaptive", threshold=3.0, min_scene_seconds=0.6, max_scene_seconds=30)
    scene_windows(rule, duration=80.0, cuts=[12.4, 50.0])  # [(0, 12.4), (12.4, 42.4), (42.4, 50), (50, 80)]
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal

from .frame_info import VideoDecodeError
from .sampling import segment_windows

SceneDetectorName = Literal["content", "adaptive"]
DEFAULT_THRESHOLDS: dict[str, float] = {"content": 27.0, "adaptive": 3.0}  # PySceneDetect's own defaults
SCENE_SECONDS_PER_FRAME = 0.04  # cutting time allowed per frame of 1080p (it decodes and compares every frame)
INSTALL_HINT = "segment_by=scenes needs PySceneDetect, which is not installed; pip install 'coca-video[scenes]'"


@dataclass(frozen=True)
class SceneRule:
    """How a video is cut into scenes: the detector and its threshold (None: the detector's default: content's
    mean HSV change 27, adaptive's ratio to its neighbours' 3.0), no cut closer than ``min_scene_seconds`` to the
    last (or to the end), and scenes longer than ``max_scene_seconds`` split into windows of that length (0: not
    split)."""

    detector: SceneDetectorName = "adaptive"
    threshold: float | None = None
    min_scene_seconds: float = 0.6
    max_scene_seconds: float = 30.0


class CutTimeout(VideoDecodeError):
    """Cutting a video ran past its time limit: the video's error row says so (scored whole instead, it would be one
    row unlike its neighbours' scenes)."""

    def __reduce__(self):
        return CutTimeout, (self.path, self.problem)


def require_scenedetect() -> Any:
    """The ``scenedetect`` module, or the one-line error naming the extra."""
    from ..errors import MissingExtraError

    try:
        import scenedetect
    except ImportError:
        raise MissingExtraError(INSTALL_HINT) from None
    return scenedetect


def detect_cuts(path: str | os.PathLike, rule: SceneRule) -> tuple[float, list[float]]:
    """The video's duration and the times (seconds, ascending) where a new shot starts, by ``rule``'s detector
    over every frame, decoded with PyAV. A video with no cut gives an empty list."""
    scenedetect = require_scenedetect()
    from scenedetect import AdaptiveDetector, ContentDetector, SceneManager

    video = scenedetect.open_video(str(path), backend="pyav")
    threshold = DEFAULT_THRESHOLDS[rule.detector] if rule.threshold is None else rule.threshold
    if rule.detector == "content":
        detector = ContentDetector(threshold=threshold, min_scene_len=float(rule.min_scene_seconds))
    else:
        detector = AdaptiveDetector(adaptive_threshold=threshold, min_scene_len=float(rule.min_scene_seconds))
    manager = SceneManager()
    manager.add_detector(detector)
    manager.detect_scenes(video)
    frames = video.frame_number  # frames read: the duration that the cut times are counted in
    duration = frames / float(video.frame_rate) if frames else float(video.duration.seconds)
    return duration, [float(cut.seconds) for cut in manager.get_cut_list()]


def cut_budget(timeout: float | None, num_frames: int, width: int, height: int) -> float | None:
    """Seconds cutting a video of ``num_frames`` frames of ``width`` x ``height`` may take (None: no limit, as with
    ``decode.timeout`` null): ``timeout`` plus :data:`SCENE_SECONDS_PER_FRAME` per frame, scaled up for frames larger
    than 1080p, as a decode's budget grows with the video it decodes through."""
    if timeout is None:
        return None
    return timeout + SCENE_SECONDS_PER_FRAME * num_frames * max(1.0, width * height / (1920 * 1080))


def bounded_cuts(path: str | os.PathLike, rule: SceneRule, budget: float | None) -> tuple[float, list[float]]:
    """:func:`detect_cuts` in the decode helper process under ``budget`` seconds (:mod:`.isolate`, where a decoder
    that hangs is killed; here when ``budget`` is None); running over it is a :class:`CutTimeout` naming the file and
    the time waited."""
    from .isolate import DecodeTimeout, call_with_timeout

    if budget is None:
        return detect_cuts(path, rule)
    try:
        return call_with_timeout(detect_cuts, budget, str(path), rule)
    except DecodeTimeout as err:
        raise CutTimeout(str(path), f"scene detection timed out after {err.waited:.0f} s (budget {budget:.0f} s)"
                         ) from None


def scene_windows(rule: SceneRule, duration: float, cuts: list[float]) -> list[tuple[float, float]]:
    """The [start, end) seconds of each scene of a video of ``duration`` cut at ``cuts``: a cut closer than
    ``min_scene_seconds`` to the previous kept boundary or to the end is dropped (its short scene joins its
    neighbour), then each scene longer than ``max_scene_seconds`` is split into windows of that length (the last
    shorter). No cut: one scene, the whole video (split the same way)."""
    bounds = [0.0]
    for cut in sorted(cuts):
        if cut - bounds[-1] >= rule.min_scene_seconds and duration - cut >= rule.min_scene_seconds:
            bounds.append(float(cut))
    bounds.append(float(duration))
    windows = []
    for start, end in zip(bounds, bounds[1:]):
        if rule.max_scene_seconds > 0:
            split = segment_windows(end - start, rule.max_scene_seconds)
            windows += [(round(start + a, 6), round(start + b, 6)) for a, b in split]
        else:
            windows.append((round(start, 6), round(end, 6)))
    return windows

