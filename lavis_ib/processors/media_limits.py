"""What the image and video readers accept from untrusted files: formats, codecs and
pixel, duration and frame limits (`MediaLimits`), one set per process, changed with
`set_media_limits`. A file outside them is refused, never cut or guessed."""
from __future__ import annotations

import dataclasses
import math
from typing import Any

from lavis_ib.common.errors import ConfigError


IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")


@dataclasses.dataclass(frozen=True)
class MediaLimits:
    """What `processors.image.decode_image` and `processors.video.read_video_frames`
    accept. A file outside these limits is a `BadSample` in datasets and one `DataError`
    line in `predict` and `serve`; nothing is cut or guessed.

    Attributes:
        image_formats: PIL format names opened (JPEG includes the multi-picture JPEGs of
            phones, MPO); never one that hands the file to an external program, as EPS
            does to Ghostscript.
        max_image_pixels: width x height above which an image is refused before it is
            decoded (PIL's own refusal point by default: twice `Image.MAX_IMAGE_PIXELS`;
            PIL's global check still applies on top of this one).
        video_formats: FFmpeg demuxer names a video may be opened with (no playlist,
            concat or image-sequence demuxer: nothing that opens other files or URLs; not
            MPEG-PS, `mpeg`, whose timestamps are too loose to seek by).
        video_codecs: FFmpeg decoder names a video stream may use.
        max_video_pixels: width x height of one video frame.
        max_video_seconds: the duration a video's metadata may give.
        max_video_frames: the frame count a video's metadata may give (or its packets,
            when the container has neither a frame count nor a duration).
        max_decoded_frames: frames decoded to reach one video's sampled frames (frames
            are reached by seeking to the keyframe before each, so this binds only when
            keyframes are far apart).
    """

    image_formats: tuple[str, ...] = IMAGE_FORMATS
    max_image_pixels: int = 2 * 89_478_485
    video_formats: tuple[str, ...] = ("mov", "mp4", "matroska", "webm", "avi", "mpegts")
    video_codecs: tuple[str, ...] = (
        "h264", "hevc", "av1", "libdav1d", "libaom-av1", "vp8", "vp9", "libvpx", "libvpx-vp9",
        "mpeg4", "msmpeg4v1", "msmpeg4v2", "msmpeg4", "h263", "flv", "mpeg1video",
        "mpeg2video", "mjpeg", "theora", "wmv1", "wmv2", "wmv3", "vc1", "rawvideo")
    max_video_pixels: int = 7680 * 4320
    max_video_seconds: float = 3 * 3600.0
    max_video_frames: int = 1_000_000
    max_decoded_frames: int = 10_000

    def __post_init__(self) -> None:
        for name in ("max_image_pixels", "max_video_pixels", "max_video_frames",
                     "max_decoded_frames"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"media limit {name} must be a whole number >= 1; got {value!r}.")
        seconds = self.max_video_seconds
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) \
                or not math.isfinite(seconds) or seconds <= 0:
            raise ConfigError(f"media limit max_video_seconds must be a finite number > 0; "
                              f"got {seconds!r}.")
        for name in ("image_formats", "video_formats", "video_codecs"):
            value = getattr(self, name)
            if isinstance(value, str) or not value or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"media limit {name} must be a non-empty list of names; "
                                  f"got {value!r}.")
            object.__setattr__(self, name, tuple(value))
        object.__setattr__(self, "image_formats", tuple(f.upper() for f in self.image_formats))
        from_programs = {"EPS", "PDF"} & set(self.image_formats)
        if from_programs:
            raise ConfigError(f"media limit image_formats may not name {sorted(from_programs)}: "
                              f"PIL hands such files to an external program (Ghostscript).")
        if self.image_formats == IMAGE_FORMATS:
            return   # known to PIL: importing every PIL plugin to check them is not free
        from PIL import Image

        Image.init()
        unknown = [f for f in self.image_formats if f not in Image.OPEN]
        if unknown:
            raise ConfigError(f"media limit image_formats: PIL cannot open {unknown}; "
                              f"known: {', '.join(sorted(Image.OPEN))}.")


_LIMITS = MediaLimits()


def media_limits() -> MediaLimits:
    """The limits in force in this process."""
    return _LIMITS


def set_media_limits(**changes: Any) -> MediaLimits:
    """Change some limits for this process (and the data-loader workers it starts after),
    e.g. `set_media_limits(max_video_seconds=600)`; returns the new limits. A training
    run sets them from a plugin module (the project's `plugins:`), which each of its
    processes imports before its loaders start. Raises `ConfigError` for an unknown name
    or a value out of range."""
    global _LIMITS
    known = {f.name for f in dataclasses.fields(MediaLimits)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise ConfigError(f"unknown media limit(s) {unknown}; known: {', '.join(sorted(known))}.")
    _LIMITS = dataclasses.replace(_LIMITS, **changes)
    return _LIMITS
