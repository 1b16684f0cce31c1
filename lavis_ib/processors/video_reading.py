"""A few frames of an untrusted video, read with PyAV: opened from a file object with the
allow-listed demuxers and decoders only and no other file or URL, sized from its metadata,
and each sampled frame reached by seeking to the keyframe before it, so a long video costs
a few keyframe intervals of decoding, not the whole stream.
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Any, Iterator

import numpy as np

from lavis_ib.common.errors import DataError


def _refuse_other_files(url: str, flags: int, options: dict) -> Any:
    """PyAV's `io_open`: a container that asks for another file or URL (a playlist, a
    reference) gets a refusal, whatever its demuxer."""
    raise PermissionError(f"the video asks to open another file or URL ({url!r}); refused")


def open_video(file: Any, path: str, limits: Any) -> Any:
    """The PyAV input container of the binary file object `file`, opened only with a
    demuxer of `limits.video_formats`.

    Raises:
        DataError: the detected container format is not allowed (named when FFmpeg says it).
    """
    import av

    options = {"format_whitelist": ",".join(limits.video_formats),
               "codec_whitelist": ",".join(limits.video_codecs)}
    try:
        return av.open(file, "r", container_options=options, io_open=_refuse_other_files)
    except av.error.ArgumentError:   # FFmpeg's answer to a format not on the whitelist
        found = _refused_format(file, options)
        what = f"its container format is {found}, which lavis_ib does not open" if found else \
            "its container format is not one lavis_ib opens"
        raise DataError(f"video '{path}' cannot be decoded: {what} (allowed: "
                        f"{', '.join(limits.video_formats)}); re-encode it as MP4 or MKV.") from None


def _refused_format(file: Any, options: dict) -> str | None:
    """The demuxer FFmpeg detected and refused, read from its log on a second open that
    stops at the same check (PyAV's log capture needs the log level set meanwhile)."""
    import av
    import av.logging

    previous, skip = av.logging.get_level(), av.logging.get_skip_repeated()
    found = None
    try:
        av.logging.set_level(av.logging.ERROR)
        av.logging.set_skip_repeated(False)
        with av.logging.Capture() as logs:
            try:
                file.seek(0)
                av.open(file, "r", container_options=options, io_open=_refuse_other_files).close()
            except av.error.FFmpegError:
                pass
        for _, name, message in logs:
            if "not on whitelist" in message:
                found = name
    except Exception:   # naming the format is a courtesy: the refusal stands without it
        found = None
    finally:
        av.logging.set_level(previous)
        av.logging.set_skip_repeated(skip)
    return found


def uniform_frame_indices(num_frames_in_video: int, n: int) -> list[int]:
    """Indices at the centres of `n` equal segments of the clip (repeats when the clip is
    short)."""
    if num_frames_in_video <= 0:
        raise ValueError("the video has no frames")
    edges = np.linspace(0, num_frames_in_video, n + 1)
    return [min(int((a + b) / 2), num_frames_in_video - 1) for a, b in zip(edges[:-1], edges[1:])]


class _NoTimestamps(Exception):
    """A decoded frame without a presentation time: sample by counting frames instead."""


class FrameSampler:
    """Sampled frames of one opened video.

    The frame count is the container's (else duration x frame rate, else its packets
    counted without decoding); `uniform_frame_indices` picks indices; index i is the first
    frame whose presentation time is at or after `first + i x frame duration` (half a
    frame of tolerance), which for a constant-rate video is the i-th frame, as a full
    decode would count it. Each is reached by seeking to the keyframe at or before it
    (or by decoding on, when that is shorter); a video whose header over-counts gives its
    last frame for indices past its end. Frames without timestamps are counted from the
    start instead. Counters: `decoded` frames, `seeks`.

    Raises (from the constructor and `sample`): `DataError` for no video stream, a codec,
    frame size, duration or frame count over `media_limits()`, or more than
    `max_decoded_frames` decoded.
    """

    def __init__(self, container: Any, path: str, limits: Any) -> None:
        self.container, self.path, self.limits = container, path, limits
        self.decoded = self.seeks = 0
        if not container.streams.video:
            raise DataError(f"video '{path}' has no video stream (audio only?); "
                            f"remove it from the dataset or re-encode it with its frames.")
        self.stream = stream = container.streams.video[0]
        codec = stream.codec_context.name
        if codec not in limits.video_codecs:
            raise DataError(f"video '{path}' is refused: its codec is {codec} (allowed: "
                            f"{', '.join(limits.video_codecs)}); re-encode it, e.g. as H.264.")
        width, height = stream.codec_context.width, stream.codec_context.height
        if width * height > limits.max_video_pixels:
            raise DataError(f"video '{path}' is refused: its frames are {width}x{height}, over "
                            f"{limits.max_video_pixels} pixels (media limit max_video_pixels).")
        self.time_base = Fraction(stream.time_base) if stream.time_base else None
        self.seconds = self._duration()
        if self.seconds is not None and self.seconds > limits.max_video_seconds:
            raise DataError(f"video '{path}' is refused: it lasts {float(self.seconds):.0f} s, "
                            f"over {limits.max_video_seconds:g} s (media limit max_video_seconds).")
        self.total = self._frame_count()
        self.step = self._frame_duration()
        self._run: Iterator = iter(())
        self._held: Any = None        # the last frame decoded in the current run
        self._last_key: int | None = None

    # -- metadata -------------------------------------------------------------------------
    def _duration(self) -> Fraction | None:
        stream = self.stream
        if stream.duration and stream.duration > 0 and self.time_base:
            return stream.duration * self.time_base
        if self.container.duration and self.container.duration > 0:
            return Fraction(self.container.duration, 1_000_000)   # AV_TIME_BASE
        return None   # unknown (a negative value is no duration either)

    def _frame_count(self) -> int:
        stream, limit = self.stream, self.limits.max_video_frames
        total = stream.frames
        if total <= 0:
            rate = stream.average_rate or stream.guessed_rate
            total = round(self.seconds * Fraction(rate)) if self.seconds and rate \
                else self._count_packets(limit + 1)
        if total > limit:
            raise DataError(f"video '{self.path}' is refused: it has {total} frames, over {limit} "
                            f"(media limit max_video_frames).")
        if total <= 0:
            raise DataError(f"video '{self.path}' yielded no frames.")
        return total

    def _count_packets(self, stop: int) -> int:
        """Video packets up to `stop`, demuxed without decoding; then back to the start."""
        count = 0
        for packet in self.container.demux(self.stream):
            count += packet.size > 0
            if count >= stop:
                break
        self.container.seek(0)
        return count

    def _frame_duration(self) -> Fraction | None:
        """One frame in time-base units: the stream's frame rate when frame count x rate
        matches the duration within half a frame (constant rate), else duration / count."""
        if self.time_base is None:
            return None
        rate = self.stream.guessed_rate or self.stream.average_rate
        by_rate = 1 / (Fraction(rate) * self.time_base) if rate else None
        by_duration = self.seconds / self.total / self.time_base if self.seconds else None
        if by_rate is not None and (by_duration is None
                                    or abs(by_rate - by_duration) * self.total <= by_rate / 2):
            return by_rate
        return by_duration

    # -- decoding -------------------------------------------------------------------------
    def _start(self, seek_to: int | None) -> None:
        """A new run of decoded frames: from the current position, or after a backward
        seek to the keyframe at or before `seek_to` (time-base units)."""
        if seek_to is not None:
            self.container.seek(seek_to, backward=True, any_frame=False, stream=self.stream)
            self.seeks += 1
        self._run, self._held, self._last_key = self._frames(), None, None

    def _frames(self) -> Iterator:
        limit = self.limits.max_decoded_frames
        for frame in self.container.decode(self.stream):
            self.decoded += 1
            if self.decoded > limit:
                raise DataError(f"video '{self.path}' needs more than {limit} decoded frames to "
                                f"reach its sampled frames (keyframes far apart?); re-encode it "
                                f"with a keyframe every few seconds, or raise the media limit "
                                f"max_decoded_frames.")
            yield frame

    def _next(self) -> Any:
        frame = next(self._run, None)
        if frame is not None:
            if frame.width * frame.height > self.limits.max_video_pixels:
                raise DataError(f"video '{self.path}' is refused: a frame is {frame.width}x"
                                f"{frame.height}, over {self.limits.max_video_pixels} pixels "
                                f"(media limit max_video_pixels).")
            if frame.pts is None:
                raise _NoTimestamps()
            if frame.key_frame:
                self._last_key = frame.pts
            self._held = frame
        return frame

    def _advance(self, threshold: Fraction) -> Any:
        """The first frame of the current run with pts >= `threshold`, or None at its end."""
        frame = self._held
        while frame is None or frame.pts < threshold:
            frame = self._next()
            if frame is None:
                return None
        return frame

    def _seek_before(self, threshold: Fraction, first_pts: int) -> None:
        """Seek so that the run starts at or before `threshold`: further back (1 s, then
        doubling) when the keyframe found starts after it, down to the first frame."""
        margin = Fraction(0)
        second = 1 / self.time_base
        while True:
            target = math.floor(threshold - margin)
            self._start(max(target, first_pts))
            frame = self._next()
            if frame is not None and frame.pts <= threshold or target <= first_pts:
                return
            margin = max(2 * margin, second)

    def sample(self, n_frames: int) -> list[np.ndarray]:
        """(H, W, 3) uint8 RGB arrays of the `n_frames` uniformly sampled frames."""
        wanted = uniform_frame_indices(self.total, n_frames)
        try:
            chosen = self._by_time(wanted) if self.step is not None else None
        except _NoTimestamps:
            chosen = None
        if chosen is None:
            chosen = self._by_count(wanted)
        return [chosen[i] for i in wanted]

    def _by_time(self, wanted: list[int]) -> dict[int, np.ndarray] | None:
        self._start(None)
        first = self._next()
        if first is None:
            raise DataError(f"video '{self.path}' yielded no frames.")
        first_pts, step = first.pts, self.step
        chosen: dict[int, np.ndarray] = {}
        for index in sorted(set(wanted)):
            threshold = first_pts + index * step - step / 2
            held = self._held
            gap = threshold - held.pts
            decoded_since_key = held.pts - self._last_key if self._last_key is not None else 0
            if gap > max(decoded_since_key, 16 * step):   # a seek saves decoding
                self._seek_before(threshold, first_pts)
            frame = self._advance(threshold)
            frame = frame if frame is not None else self._held   # past the end: the last frame
            if frame is None:
                raise DataError(f"video '{self.path}' yielded no frames after seeking.")
            chosen[index] = frame.to_ndarray(format="rgb24")
        return chosen

    def _by_count(self, wanted: list[int]) -> dict[int, np.ndarray]:
        """Frames counted from the start (videos without timestamps)."""
        self.container.seek(0)
        self.seeks += 1
        self._start(None)
        wanted_set, last = set(wanted), max(wanted)
        chosen: dict[int, np.ndarray] = {}
        frame, i = None, -1
        for i, frame in enumerate(self._run):
            if i in wanted_set:
                chosen[i] = frame.to_ndarray(format="rgb24")
            if i >= last:
                break
        if frame is None:
            raise DataError(f"video '{self.path}' yielded no frames.")
        if i < last:   # a header that over-counts: the last frame stands in
            tail = frame.to_ndarray(format="rgb24")
            chosen.update({j: tail for j in wanted_set if j > i})
        return chosen
