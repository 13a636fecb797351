"""Decoding and sampling video frames with PyAV, and encoding them as JPEG."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
from PIL import Image

MAX_PIXELS = 4096 * 4096  # a video or image larger than this is refused before it is decoded


class UnreadableSourceError(ValueError):
    """A landing source that cannot be read at all; the message names it and the cause."""


class VideoDecodeError(UnreadableSourceError):
    """A landing object that cannot be read as a video."""


@dataclass(frozen=True)
class SampledFrame:
    index: int  # position in the decoded stream, 0-based
    timestamp_s: float
    rgb: np.ndarray  # (H, W, 3) uint8


def sample_frames(
    path: str | Path,
    *,
    name: str,
    sample_fps: float | None = 2.0,
    every_n: int | None = None,
    max_frames: int | None = None,
    max_pixels: int = MAX_PIXELS,
    on_damage: Callable[[str], None] | None = None,
    seek_gap_s: float = 8.0,
) -> Iterator[SampledFrame]:
    """Yield frames of the video at ``path``, streaming (memory does not grow with length).

    Keeps one frame per ``1 / sample_fps`` seconds, or every ``every_n``-th frame when given.
    ``name`` is how errors refer to the input (its landing key). Raises VideoDecodeError for
    files that are not videos, have no video stream, are too large, or yield no frames.
    A video damaged part-way (a decode error, or decoding ending well before the duration
    its header declares) keeps the frames before the damage when ``on_damage`` is given,
    which then receives the description; without it the damage is an error.

    At low sampling rates (``seek_gap_s`` or more between samples) it seeks to the keyframe
    before the next sample instead of decoding everything in between; the frames kept are
    the same (indices come from timestamps after a seek, as in a constant-rate stream).
    """
    if every_n is not None and every_n < 1:
        raise ValueError("every_n must be >= 1")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as exc:
        reason = mp4_without_index(path) or _reason(exc)
        raise VideoDecodeError(f"{name}: not a readable video ({reason})") from exc
    with container:
        if not container.streams.video:
            raise VideoDecodeError(f"{name}: no video stream")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        if ctx.width * ctx.height > max_pixels:
            raise VideoDecodeError(
                f"{name}: resolution {ctx.width}x{ctx.height} exceeds the limit of {max_pixels} pixels"
            )
        stream.thread_type = "AUTO"
        fps = float(stream.average_rate or stream.guessed_rate or 25)
        next_time = 0.0
        yielded = 0
        index = -1
        last_time = None
        seeked = False
        turned: set[int] = set()  # display rotations met (a phone's portrait footage is stored sideways)
        decoder = container.decode(stream)
        try:
            while (frame := next(decoder, None)) is not None:  # a seek below swaps the decoder
                ts = float(frame.time) if frame.time is not None else (index + 1) / fps
                index = round(ts * fps) if seeked else index + 1
                last_time = ts
                if every_n is not None:
                    keep = index % every_n == 0
                else:
                    keep = sample_fps is None or ts + 1e-6 >= next_time
                if not keep:
                    continue
                if sample_fps is not None and every_n is None:
                    next_time = max(next_time + 1.0 / sample_fps, ts)
                yield SampledFrame(index, round(ts, 6), upright(frame, name, on_damage, turned))
                yielded += 1
                if max_frames is not None and yielded >= max_frames:
                    return
                if sample_fps is not None and every_n is None and next_time - ts >= seek_gap_s:
                    start = stream.start_time or 0
                    container.seek(start + int((next_time - 1.0 / fps) / stream.time_base), stream=stream)
                    decoder = container.decode(stream)
                    seeked = True
        except av.error.FFmpegError as exc:
            damage = f"{name}: decoding failed after frame {index} ({_reason(exc)})"
            if on_damage is None or yielded == 0:
                raise VideoDecodeError(damage) from exc
            on_damage(damage)
            return
        if yielded == 0:
            raise VideoDecodeError(f"{name}: no decodable frames")
        declared_s = container.duration / 1e6 if container.duration else None
        last_s = (index + 1) / fps if last_time is None else last_time
        if declared_s and last_s < declared_s - max(1.0, 0.05 * declared_s):
            damage = f"{name}: decoding stopped at {last_s:.1f} s of the {declared_s:.1f} s its header declares"
            if on_damage is None:
                raise VideoDecodeError(f"{damage} (truncated file?)")
            on_damage(damage)


def upright(frame: av.VideoFrame, name: str, on_damage: Callable[[str], None] | None, seen: set[int]) -> np.ndarray:
    """The frame's RGB pixels as a player shows them: its display matrix's rotation applied
    (counter-clockwise degrees). A rotation that is not a quarter turn is kept as stored and
    reported once (through ``on_damage`` when given)."""
    rgb = frame.to_ndarray(format="rgb24")
    rotation = frame.rotation or 0
    if rotation % 90:
        if rotation not in seen and on_damage is not None:
            on_damage(f"{name}: display rotation of {rotation} degrees is not a quarter turn; frames kept as stored")
        seen.add(rotation)
        return rgb
    turns = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


MP4_BRANDS = (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"uuid", b"pdin", b"moof", b"mfra", b"meta")


def mp4_without_index(path: str | Path) -> str | None:
    """Why an MP4/MOV cannot be read when its index ('moov') is missing: a file cut short
    (copy interrupted, camera lost power) whose layout writes the index after the media
    data. None for any other file. Without the index neither the codec's setup nor where a
    frame starts is known, so no frame can be decoded."""
    boxes, size, offset = [], Path(path).stat().st_size, 0
    with open(path, "rb") as f:
        while offset + 8 <= size and len(boxes) < 64:
            f.seek(offset)
            header = f.read(16)
            length, kind = int.from_bytes(header[:4], "big"), header[4:8]
            if length == 1 and len(header) == 16:
                length = int.from_bytes(header[8:16], "big")
            elif length == 0:
                length = size - offset
            if kind not in MP4_BRANDS or length < 8:
                break
            boxes.append((kind, offset, length))
            offset += length
    kinds = [kind for kind, _, _ in boxes]
    if not boxes or kinds[0] != b"ftyp" or b"mdat" not in kinds or b"moov" in kinds or b"moof" in kinds:
        return None
    _, start, length = boxes[kinds.index(b"mdat")]
    cut = (
        f"declares {length} bytes from offset {start} but the file ends at {size}"
        if start + length > size
        else (f"ends the file at {size} bytes")
    )
    return (
        f"an MP4 cut short: its media data {cut}, and its index ('moov'), written after the media data in this "
        "layout, is missing, so no "
        "frame can be located or decoded (the codec's setup is in the index too). Record fragmented MP4 or "
        "with the index first (ffmpeg -movflags +faststart) to keep the frames before such damage"
    )


def _reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    """Baseline JPEG, 4:2:0 (OpenCV's libjpeg-turbo: 1.5x PIL's encoder here, same format)."""
    bgr = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)  # OpenCV's channel order
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"could not encode a {rgb.shape} image as JPEG")
    return data.tobytes()


def decode_image(data: bytes, at_least: int | None = None) -> Image.Image:
    """RGB; with ``at_least``, a JPEG decodes straight at the smallest of its 1/2, 1/4, 1/8
    scales that keeps both sides at least that long (libjpeg DCT scaling: a thumbnail's need)."""
    image = Image.open(io.BytesIO(data))
    if at_least:
        image.draft("RGB", (at_least, at_least))
    image.load()
    return image.convert("RGB")
