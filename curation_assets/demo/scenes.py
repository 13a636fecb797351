"""Synthetic store-camera videos with known content, for the demo and the tests.

A scene is a shelf seen by a fixed camera: long static stretches, a person walking by, a
cart, a lights-off stretch and a fast, motion-blurred pass. Because the scene is a pure
function of time, the "labeling team" in the demo can box every object exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from curation_assets.core.labels import DEFAULT_CATEGORIES

CATEGORIES = list(DEFAULT_CATEGORIES)  # the objects its scenes draw


@dataclass(frozen=True)
class Event:
    kind: str  # "walk", "cart", "dark", "blur_walk"
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Scene:
    name: str  # landing key, e.g. "cam-a/shelf-morning.mp4"
    seed: int
    duration_s: float
    events: tuple[Event, ...] = field(default_factory=tuple)
    width: int = 320
    height: int = 240
    fps: int = 10


def default_events(duration_s: float) -> tuple[Event, ...]:
    """The demo's timeline scaled to ``duration_s``: mostly static, with one of each event."""
    d = duration_s
    return (
        Event("walk", 0.30 * d, 0.50 * d),
        Event("dark", 0.50 * d, 0.60 * d),
        Event("blur_walk", 0.75 * d, 0.85 * d),
        Event("cart", 0.85 * d, 1.00 * d),
    )


def _background(scene: Scene) -> np.ndarray:
    rng = np.random.default_rng(scene.seed)
    h, w = scene.height, scene.width
    img = np.zeros((h, w, 3), dtype=np.float32)
    img[:] = rng.uniform(150, 200, size=3)  # wall
    img += rng.normal(0, 3, size=(h, w, 1))  # texture
    for shelf_y in np.linspace(0.25, 0.85, 3):
        y = int(shelf_y * h)
        img[y : y + 4] = (90, 70, 50)
        x = 4
        while x < w - 20:  # products on the shelf
            pw, ph = int(rng.integers(10, 22)), int(rng.integers(18, 34))
            img[max(y - ph, 0) : y, x : x + pw] = rng.uniform(30, 240, size=3)
            x += pw + int(rng.integers(2, 8))
    return np.clip(img, 0, 255)


def objects_at(scene: Scene, t: float) -> list[tuple[str, tuple[int, int, int, int]]]:
    """Ground truth at time ``t``: (category, (x, y, w, h)) of every moving object in view."""
    out = []
    h, w = scene.height, scene.width
    for ev in scene.events:
        if not ev.start_s <= t < ev.end_s or ev.kind == "dark":
            continue
        progress = (t - ev.start_s) / (ev.end_s - ev.start_s)
        if ev.kind in ("walk", "blur_walk"):
            bw, bh = w // 8, int(h * 0.6)
            x = int(-bw + progress * (w + bw))
            box = (x, h - bh - 8, bw, bh)
            category = "person"
        else:
            bw, bh = w // 5, h // 5
            x = int(w - progress * (w + bw))
            box = (x, h - bh - 4, bw, bh)
            category = "cart"
        x0, y0 = max(box[0], 0), max(box[1], 0)
        x1, y1 = min(box[0] + box[2], w), min(box[1] + box[3], h)
        if x1 - x0 >= 4 and y1 - y0 >= 4:
            out.append((category, (x0, y0, x1 - x0, y1 - y0)))
    return out


def render(scene: Scene, t: float, background: np.ndarray | None = None) -> np.ndarray:
    img = (_background(scene) if background is None else background).copy()
    colors = {"person": (40, 60, 160), "cart": (200, 40, 40)}
    for category, (x, y, bw, bh) in objects_at(scene, t):
        img[y : y + bh, x : x + bw] = colors[category]
        if category == "person":  # a lighter head so the shape has structure
            img[y : y + bh // 5, x + bw // 4 : x + 3 * bw // 4] = (220, 180, 150)
    for ev in scene.events:
        if ev.start_s <= t < ev.end_s and ev.kind == "blur_walk":
            # camera shake: the whole frame smeared along a diagonal
            img = sum(np.roll(img, (s // 2, s), axis=(0, 1)) for s in range(0, 24, 3)) / 8.0
        if ev.start_s <= t < ev.end_s and ev.kind == "dark":
            img = img * 0.04
    return np.clip(img, 0, 255).astype(np.uint8)


def write_video(scene: Scene, path: Path, codec: str = "mpeg4") -> int:
    """Encode the scene to ``path``; returns the number of frames written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    background = _background(scene)
    n = int(round(scene.duration_s * scene.fps))
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=scene.fps)
        stream.width, stream.height, stream.pix_fmt = scene.width, scene.height, "yuv420p"
        stream.bit_rate = 2_000_000
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(render(scene, i / scene.fps, background), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return n


def write_corrupt_video(path: Path, valid_video: Path) -> None:
    """The first kilobytes of a real video: a header with no decodable stream behind it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(valid_video.read_bytes()[:1500])


DEMO_SCENES = (
    Scene("cam-a/aisle-3-morning.mp4", seed=1, duration_s=40.0, events=default_events(40.0)),
    Scene("cam-a/aisle-3-evening.mp4", seed=1, duration_s=40.0, events=default_events(40.0)[::2]),
    Scene("cam-b/checkout-1.mp4", seed=7, duration_s=20.0, events=default_events(20.0)),
)
CORRUPT_VIDEO = "cam-b/checkout-2-corrupt.mp4"
NOT_A_VIDEO = "cam-a/README-camera-notes.txt"
