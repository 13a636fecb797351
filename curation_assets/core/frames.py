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
    which then receives the description; without it the damage is an error. An MP4 cut before
    its index (written last by most cameras) keeps what scanning its media data decodes (see
    ``recovered_frames``), or fails saying why nothing does. Frames come upright: the video's
    display rotation (phone footage stored sideways) is applied.

    At low sampling rates (``seek_gap_s`` or more between samples) it seeks to the keyframe
    before the next sample instead of decoding everything in between; the frames kept are
    the same (indices come from timestamps after a seek, as in a constant-rate stream).
    """
    if every_n is not None and every_n < 1:
        raise ValueError("every_n must be >= 1")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as exc:
        if (mp4 := indexless_mp4(path)) is None:
            raise VideoDecodeError(f"{name}: not a readable video ({_reason(exc)})") from exc
        yield from _recover(path, mp4, name, sample_fps, every_n, max_frames, max_pixels, on_damage)
        return
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


def _recover(path, mp4: IndexlessMp4, name, sample_fps, every_n, max_frames, max_pixels, on_damage):
    """The frames an index-less MP4 still holds (see ``recovered_frames``), sampled as a
    stream would be; the loss is reported as damage."""
    try:
        frames, decoder = recovered_frames(path, mp4, max_pixels)
    except VideoDecodeError as exc:
        raise VideoDecodeError(f"{name}: not a readable video ({mp4.describe()}; {exc}). Record fragmented MP4 "
                               "or with the index first (ffmpeg -movflags +faststart) to keep the frames before "
                               "such damage") from exc  # fmt: skip
    yielded, next_time, fps, turned = 0, 0.0, None, set()
    try:
        for index, frame in enumerate(frames):
            fps = fps or float(decoder.framerate or 0) or SCAN_FPS  # the stream's own rate, once known
            ts = index / fps
            keep = index % every_n == 0 if every_n else sample_fps is None or ts + 1e-6 >= next_time
            if not keep:
                continue
            if sample_fps is not None and not every_n:
                next_time = max(next_time + 1.0 / sample_fps, ts)
            yield SampledFrame(index, round(ts, 6), upright(frame, name, on_damage, turned))
            yielded += 1
            if max_frames is not None and yielded >= max_frames:
                break
    except av.error.FFmpegError as exc:
        if not yielded:
            raise VideoDecodeError(f"{name}: not a readable video ({mp4.describe()}; {_reason(exc)})") from exc
    if not yielded:
        raise VideoDecodeError(f"{name}: not a readable video ({mp4.describe()}; no frame decodes without it)")
    damage = (f"{name}: {mp4.describe()}; frames recovered by scanning its {decoder.name} data "
              f"(timestamps assume {fps:g} frames/s)")  # fmt: skip
    if on_damage is None:
        raise VideoDecodeError(damage)
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


MP4_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"uuid", b"pdin", b"moof", b"mfra", b"meta")


@dataclass(frozen=True)
class IndexlessMp4:
    """An MP4/MOV cut short before its index ('moov'): where its media data starts, how long
    its header says it is, and the file's size."""

    data_start: int
    declared: int
    size: int

    def describe(self) -> str:
        cut = (
            f"declares {self.declared} bytes but the file ends at {self.size}"
            if self.data_start + self.declared > self.size
            else f"ends the file at {self.size} bytes"
        )
        return f"an MP4 cut short: its media data {cut}, and its index ('moov'), written after it, is missing"


def indexless_mp4(path: str | Path) -> IndexlessMp4 | None:
    """The layout of an MP4 whose index is missing (a copy interrupted, a camera that lost
    power while it wrote the index last), None for any other file."""
    boxes, size, offset = [], Path(path).stat().st_size, 0
    with open(path, "rb") as f:
        while offset + 8 <= size and len(boxes) < 64:
            f.seek(offset)
            header = f.read(16)
            length, kind, header_size = int.from_bytes(header[:4], "big"), header[4:8], 8
            if length == 1 and len(header) == 16:
                length, header_size = int.from_bytes(header[8:16], "big"), 16
            elif length == 0:
                length = size - offset
            if kind not in MP4_BOXES or length < header_size:
                break
            boxes.append((kind, offset, length, header_size))
            offset += length
    kinds = [box[0] for box in boxes]
    if not boxes or kinds[0] != b"ftyp" or b"mdat" not in kinds or b"moov" in kinds or b"moof" in kinds:
        return None
    _, start, length, header_size = boxes[kinds.index(b"mdat")]
    return IndexlessMp4(start + header_size, length - header_size, size)


MAX_NAL_BYTES = 64 * 1024**2  # a length prefix above this is not one: the scan stops there
SCAN_FPS = 25.0  # timestamps of recovered frames when the stream itself gives no rate


def recovered_frames(
    path: str | Path, mp4: IndexlessMp4, max_pixels: int
) -> tuple[Iterator[av.VideoFrame], av.CodecContext]:
    """The frames of an index-less MP4 found by scanning its media data: H.264 or HEVC stored
    as length-prefixed units, decodable where the encoder repeated its parameter sets in the
    stream (many cameras do; ffmpeg's libx264 with ``repeat-headers``). Returns (frames in
    display order, their decoder) or raises VideoDecodeError with why nothing can be decoded."""
    with open(path, "rb") as f:
        f.seek(mp4.data_start)
        head = f.read(4096)
    first = _units(head)
    codecs = [codec for codec, sets in (("h264", {7, 8}), ("hevc", {32, 33, 34})) if sets <= _types(first, codec)]
    if not codecs:
        raise VideoDecodeError(
            "its media data carries no H.264/HEVC parameter sets of its own (they are kept in the index), "
            "so no frame can be decoded without it"
        )
    context = av.CodecContext.create(codecs[0], "r")

    def frames() -> Iterator[av.VideoFrame]:
        with open(path, "rb") as f:
            f.seek(mp4.data_start)
            for unit in _stream_units(f):
                for packet in context.parse(b"\0\0\0\1" + unit):
                    for frame in context.decode(packet):
                        if frame.width * frame.height > max_pixels:
                            raise VideoDecodeError(f"resolution {frame.width}x{frame.height} exceeds {max_pixels}")
                        yield frame
            for packet in context.parse(None):
                yield from context.decode(packet)
            yield from context.decode(None)

    return frames(), context


def _units(data: bytes) -> list[bytes]:
    units, at = [], 0
    while at + 4 <= len(data):
        length = int.from_bytes(data[at : at + 4], "big")
        if not 0 < length <= MAX_NAL_BYTES:
            break
        units.append(data[at + 4 : at + 4 + length])
        at += 4 + length
    return units


def _types(units: list[bytes], codec: str) -> set[int]:
    return {(u[0] & 0x1F) if codec == "h264" else (u[0] >> 1) & 0x3F for u in units if u and not u[0] & 0x80}


def _stream_units(f) -> Iterator[bytes]:
    """Length-prefixed units read one at a time up to the first that is cut or implausible."""
    while len(prefix := f.read(4)) == 4:
        length = int.from_bytes(prefix, "big")
        if not 0 < length <= MAX_NAL_BYTES:
            return
        unit = f.read(length)
        if len(unit) < length:
            return  # the cut
        yield unit


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
