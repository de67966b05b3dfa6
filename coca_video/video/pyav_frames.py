"""Frames of a file's first video stream through PyAV, in presentation order, from the start or from the keyframe
before a time: the seeking that never goes backwards past decoded frames (see :class:`PyavSource`)."""

from __future__ import annotations

import itertools
from typing import Any, Iterator

import numpy as np

SEEK_AHEAD_SECONDS = 3.0  # decode forward through smaller gaps; seek to a keyframe across larger ones


class PyavSource:
    """Decoded frames of a file's first video stream as (seconds from the stream start, frame), in presentation
    order, from the start or from a keyframe.

    ``wanted_until`` (seconds; the caller moves it forward) is the time whose frame the caller looks for next: the
    last frame at or before it. A frame that cannot be that one, because a packet already read is shown after it and
    still at or before ``wanted_until``, is not decoded when nothing refers to it (FFmpeg's ``skip_frame=NONREF``:
    x264's non-reference B-frames); the frames left are the same, bit for bit, as nothing depends on a skipped one.
    16 frames of the benchmark's x264-default 60 s clip: 721 frames decoded instead of 1,322; bikes.mp4 139 instead
    of 212; the 2-hour clip 1,344 instead of 1,832."""

    def __init__(self, container) -> None:
        self.container, self.stream = container, container.streams.video[0]
        self.stream.thread_type = "SLICE"
        self.wanted_until = -np.inf
        self.time_base = float(self.stream.time_base)
        self.start = self.stream.start_time or 0
        # The container's index (MP4/MOV, MKV cues, ...), searched per seek decision: listing its keyframes up front
        # cost 7 ms on a 2-hour 5 fps clip (36,000 entries), a sixth of decoding its 16 frames.
        self.index = self.stream.index_entries

    def frames_from_start(self) -> Iterator[tuple[float, Any]]:
        """Every frame, decoded from the first packet."""
        return self._decoded(self.container.demux(self.stream), drop_leading=False)

    def worth_seeking(self, decoded_to: float, limit: float) -> bool:
        """Whether a seek skips work on the way to the frame wanted at ``limit`` from the decoded position
        ``decoded_to``: by the container's index, where there is one, whenever the keyframe at or before ``limit``
        lies beyond that position, however close (the frames before it need not be decoded: on the benchmark's
        bikes.mp4, 16 frames 0.6 s apart with keyframes about 1.6 s apart, 212 frames are decoded instead of 244);
        without an index, when the frame is more than ``SEEK_AHEAD_SECONDS`` ahead (the seek lands at most one
        keyframe interval back)."""
        if not len(self.index):
            return limit - decoded_to > SEEK_AHEAD_SECONDS
        position = self.index.search_timestamp(self.start + int(limit / self.time_base), backward=True)
        return position >= 0 and (self.index[position].timestamp - self.start) * self.time_base > decoded_to

    def frames_from_keyframe_before(self, limit: float) -> Iterator[tuple[float, Any]]:
        """Frames from a keyframe whose first frame is at or before ``limit``: seek there; if the seek lands past
        ``limit`` (an index keyed by decode time, open GOPs), seek further back, doubling the step, down to the
        start of the stream, so this ends."""
        point, step = limit, SEEK_AHEAD_SECONDS
        while point > 0:
            self.container.seek(self.start + int(point / self.time_base), stream=self.stream, backward=True)
            frames = self._decoded(self._from_first_keyframe(), drop_leading=True)
            first = next(frames, None)
            if first is not None and first[0] <= limit:
                return itertools.chain([first], frames)
            point, step = min(point, first[0] if first else point) - step, 2 * step
        self.container.seek(self.start, stream=self.stream, backward=True)
        return self._decoded(self.container.demux(self.stream), drop_leading=False)

    def _from_first_keyframe(self) -> Iterator[Any]:
        packets = self.container.demux(self.stream)
        for packet in packets:
            if packet.is_keyframe:
                yield packet
                yield from packets
                return

    def _decoded(self, packets: Iterator[Any], drop_leading: bool) -> Iterator[tuple[float, Any]]:
        """Frames of ``packets``; with ``drop_leading``, frames shown before the first packet (the keyframe) are
        dropped: after a seek those are leading pictures of an open GOP whose references were skipped."""
        import av

        earliest, newest, context = None, -np.inf, self.stream.codec_context
        for packet in packets:
            if drop_leading and earliest is None:
                stamp = packet.pts if packet.pts is not None else packet.dts
                earliest = (stamp - self.start) * self.time_base if stamp is not None else -np.inf
            shown = (packet.pts - self.start) * self.time_base if packet.pts is not None else None
            # skip it when a packet decoded before is shown after it, still in time
            context.skip_frame = "NONREF" if shown is not None and shown < newest <= self.wanted_until else "DEFAULT"
            try:
                decoded = packet.decode()
            except av.error.InvalidDataError:  # a damaged packet (often the cut-off last one): skip it
                continue
            if shown is not None:
                newest = max(newest, shown)
            for frame in decoded:
                if frame.pts is None:
                    continue
                time = (frame.pts - self.start) * self.time_base
                if earliest is None or time >= earliest:
                    yield time, frame


class RgbConverter:
    """Decoded frames to uint8 RGB arrays at a given size, one swscale pass each (bilinear when resizing: decord's
    scaler, bit for bit), through one scaling context kept for every frame of a call, on the calling thread.
    ``frame.to_ndarray(format=..., width=...)`` sets up a new context per frame, with swscale's own threads: 16
    frames took 5 ms longer that way on the 10-minute, 2-hour and carphone benchmark clips (10 vs 5 ms in all on
    carphone_distorted.mp4), 5-10 ms longer on the others, at stored size and at short side 224."""

    def __init__(self) -> None:
        from av.video.reformatter import VideoReformatter

        self.reformatter = VideoReformatter()

    def __call__(self, frame, height: int, width: int) -> np.ndarray:
        return self.reformatter.reformat(frame, width=width, height=height, format="rgb24", interpolation="BILINEAR",
                                         threads=1).to_ndarray()
