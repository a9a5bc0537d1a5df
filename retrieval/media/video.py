"""Videos (.mp4 .mov .m4v .mkv .webm .avi) through PyAV (FFmpeg): a frame every few seconds, each embedded as a
moment of its video, so a search can answer "this video, at 1:23".

The first frame at or after each sampling moment is kept, converted straight to a small size (the model sees 224
pixels; a 4K frame is never made into a full-size image). Between moments the reader seeks to the keyframe before
the next one whenever a keyframe may lie ahead (a phone clip has one a second: about one frame is decoded per
moment), and decodes on through a long group of pictures, where seeking would only go back. Frames no other frame
is predicted from (B-frames, most of an H.264 stream) are skipped while the next moment is still far ahead: they
are never shown, and the frames that are shown decode exactly as without the skip.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Iterator

from PIL import Image

from clipdex.retrieval import config
from clipdex.retrieval.errors import ClipdexError
from clipdex.retrieval.media.images import open_media


@dataclass
class VideoFrames:
    frames: list[Image.Image]
    times: list[float]  # seconds from the start, one per frame
    width: int
    height: int
    taken_at: float | None  # the container's creation time, when it records one


def _pyav():
    """PyAV, which the `video` extra brings (FFmpeg is a third of a base install's size)."""
    try:
        import av
    except ImportError:
        raise ClipdexError("videos need the video extra: pip install 'clipdex[video]'") from None
    return av


def is_video(name: str) -> bool:
    return Path(name).suffix.lower() in config.VIDEO_EXTENSIONS


def read_frames(
    path: str | Path, min_side: int, every: float = config.VIDEO_FRAME_SECONDS,
    max_frames: int = config.VIDEO_MAX_FRAMES,
) -> VideoFrames:
    av = _pyav()

    try:
        with open_media(path) as handle, av.open(handle) as container:
            if not container.streams.video:
                raise ClipdexError(f"cannot read video {path}: it has no video stream")
            stream = container.streams.video[0]
            # slice threads: frame threads keep frames in flight that a seek throws away (bench/video_index.py:
            # 80 s of phone video read in 2.2 s instead of 2.7; through 8-s groups of pictures 7.3 instead of 7.9)
            stream.thread_type = "SLICE"
            width, height = stream.codec_context.width, stream.codec_context.height
            if width * height > config.MAX_IMAGE_PIXELS:
                raise ClipdexError(f"{path}: video frames too large ({width}×{height}), refused")
            scale = max(min_side / max(min(width, height), 1), 0.0)
            size = (max(1, round(width * min(scale, 1.0))), max(1, round(height * min(scale, 1.0))))
            frames, times = [], []
            for frame, moment in _sampled(container, stream, every):
                frames.append(frame.to_image(width=size[0], height=size[1]).convert("RGB"))
                times.append(round(max(moment, 0.0), 3))
                if len(frames) >= max_frames:
                    break
            taken = _creation_time(container.metadata.get("creation_time"))
    except av.FFmpegError as exc:
        raise ClipdexError(f"cannot read video {path}: {_reason(exc)}") from None
    if not frames:
        raise ClipdexError(f"cannot read video {path}: no frame could be decoded")
    return VideoFrames(frames, times, width, height, taken)


def _sampled(container, stream, every: float) -> Iterator[tuple[object, float]]:
    """(frame, its time) for the first frame at or after 0, then `every` seconds after the frame taken before."""
    av = _pyav()
    time_base = float(stream.time_base)
    due, position, last_key = 0.0, -math.inf, None
    reach = 0.0  # the longest distance seen between keyframes (decoded in a row): a seek shorter than that may
    # land behind where the decoder is, one to the next keyframe's time lands on it
    frames, landed = container.decode(stream), None
    context = stream.codec_context
    while True:
        if due - position > reach or (last_key is not None and position < last_key + reach <= due):
            try:
                container.seek(int(due / time_base), stream=stream, backward=True)
                frames, landed, last_key = container.decode(stream), None, None
            except av.FFmpegError:  # a file that cannot seek is decoded in order
                reach, landed = math.inf, position
        for frame in frames:
            moment = frame.time if frame.time is not None else float(frame.pts or 0) * time_base
            if landed is None:
                landed = moment
                if moment <= position:  # the seek went back: keyframes are at least this far apart
                    reach = max(reach, due - moment)
            if frame.key_frame:
                if last_key is not None and moment > last_key:
                    reach = max(reach, moment - last_key)
                last_key = moment
            position = moment
            taken = moment + 1e-6 >= due
            if taken:
                yield frame, moment
                due = moment + every
            # decided at each frame that comes out (a few behind the packets being decoded), so the frame due is
            # always decoded in full
            context.skip_frame = "NONREF" if due - moment > config.VIDEO_SKIP_AHEAD_SECONDS else "DEFAULT"
            if taken:
                break
        else:
            return


def frame_at(source: str | Path | IO[bytes], moment: float, side: int) -> Image.Image:
    """One frame near `moment` (for a thumbnail): the first decoded at or after it."""
    av = _pyav()

    try:
        with (contextlib.nullcontext(source) if hasattr(source, "read") else open_media(source)) as handle, \
                av.open(handle) as container:
            stream = container.streams.video[0]
            container.seek(int(max(moment, 0.0) / float(stream.time_base)), stream=stream, backward=True)
            for frame in container.decode(stream):
                time = frame.time if frame.time is not None else 0.0
                if time + 1e-3 >= moment:
                    image = frame.to_image()
                    image.thumbnail((side, side))
                    return image.convert("RGB")
    except (av.FFmpegError, IndexError) as exc:
        raise ClipdexError(f"cannot read video: {_reason(exc)}") from None
    raise ClipdexError(f"cannot read video: no frame at {moment:.1f} s")


def _creation_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _reason(exc: Exception) -> str:
    """FFmpeg's words for what went wrong, without the errno (FFmpeg's tags read as numbers like 1094995529)."""
    return getattr(exc, "strerror", None) or str(exc)
