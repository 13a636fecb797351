"""Repetitive patterns seen by virtual pinhole cameras: stereo pairs (near duplicates) and other poses (not).

    .venv/bin/python bench/rig_data.py OUT [--held-out] [--boards]   # numpy, pillow, opencv, scikit-image

A scene is a few textured planes in 3-D, rendered by pinhole cameras (``render``): a real
photograph as the wall of a room 2.5-6 m away, a real texture as its floor, and in front,
0.5-1.5 m from the camera, a repetitive pattern — a printed chessboard, a tiled panel, a
shelf of one product (a real object photograph repeated), a picket fence, a facade of
identical windows — optionally held by a person (a real photograph's cut-out standing just
behind it). Two kinds of pair come out of one scene:

- ``stereo_pair``: the two cameras of a rig at one instant. The second camera sits 3-9 cm to
  the side (or above) with a hair of rotation and focal difference, and its own exposure and
  sensor noise. Near things shift more than far ones (the board by 20-100 px at 640 px,
  the wall by a few): nearly the same picture, shifted, with parallax. A near duplicate.
- ``pose_pair``: one camera, the pattern (and the person holding it) moved: turned 10-40°
  about a random axis and moved 5-25 cm. Not a near duplicate, though the room is the same.

Pictures are 640x480, grey (as calibration rigs record) or colour. ``OUT/images`` and
``OUT/truth.json`` follow ``bench/quality_data.py``'s format (``category`` original / view,
``base``), so ``bench/quality.py`` scores them; ``bench/rig.py`` scores the geometric checks.
The held-out set (``--held-out``) draws other rooms (Lomiri's photographs), other seeds and
other textures; no threshold was chosen on it. ``--boards`` makes only what a stereo
calibration records: a person holding a chessboard in a plain room, grey.
"""

from __future__ import annotations

import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.quality_data import HELD_OUT_RESHOT, LOMIRI, PHOTOS  # noqa: E402

SIZE = (640, 480)
PATTERNS = ("chessboard", "tiles", "shelf", "fence", "facade")


@dataclass(frozen=True)
class Plane:
    """A textured rectangle in 3-D: ``texture`` (H, W, 3) float32 and ``alpha`` (H, W) float32
    span ``width`` x ``height`` metres, centred at ``centre`` (camera 0's frame: x right, y
    down, z forward), its texture's x and y axes along ``axes[:, 0]`` and ``axes[:, 1]``."""

    texture: np.ndarray
    alpha: np.ndarray
    centre: np.ndarray
    axes: np.ndarray
    width: float
    height: float

    def moved(self, rotation: np.ndarray, pivot: np.ndarray, shift: np.ndarray) -> Plane:
        centre = rotation @ (self.centre - pivot) + pivot + shift
        return Plane(self.texture, self.alpha, centre, rotation @ self.axes, self.width, self.height)


@dataclass(frozen=True)
class Camera:
    focal: float  # pixels
    rotation: np.ndarray  # world -> camera
    position: np.ndarray  # in the world (camera 0's frame)
    gain: float = 1.0
    noise: float = 2.0  # sensor noise, grey levels

    def homography(self, plane: Plane) -> np.ndarray:
        """Texture pixel (column, row, 1) -> image pixel."""
        h, w = plane.alpha.shape
        ax, ay = plane.axes[:, 0] * plane.width / w, plane.axes[:, 1] * plane.height / h
        origin = plane.centre - plane.axes[:, 0] * plane.width / 2 - plane.axes[:, 1] * plane.height / 2
        to_world = np.column_stack([ax, ay, origin])
        K = np.array([[self.focal, 0, SIZE[0] / 2], [0, self.focal, SIZE[1] / 2], [0, 0, 1]])
        in_camera = self.rotation @ to_world
        in_camera[:, 2] -= self.rotation @ self.position
        return K @ in_camera


def rotation(axis: np.ndarray, degrees: float) -> np.ndarray:
    import cv2

    axis = np.asarray(axis, dtype=np.float64)
    return cv2.Rodrigues(axis / np.linalg.norm(axis) * np.radians(degrees))[0]


def render(camera: Camera, planes: list[Plane], rng: np.random.Generator, grey: bool) -> Image.Image:
    """The camera's picture: planes far to near (painter's order), rendered at twice the size
    and reduced (no aliasing on fine patterns), then the camera's gain and sensor noise."""
    import cv2

    big = (SIZE[0] * 2, SIZE[1] * 2)
    scale = np.diag([2.0, 2.0, 1.0])
    canvas = np.zeros((big[1], big[0], 3), np.float32)
    for plane in sorted(planes, key=lambda p: -float((camera.rotation @ (p.centre - camera.position))[2])):
        H = scale @ camera.homography(plane)
        colour = cv2.warpPerspective(plane.texture, H, big, flags=cv2.INTER_LINEAR)
        alpha = cv2.warpPerspective(plane.alpha, H, big, flags=cv2.INTER_LINEAR)[..., None]
        canvas = canvas * (1 - alpha) + colour * alpha
    picture = cv2.resize(canvas, SIZE, interpolation=cv2.INTER_AREA) * camera.gain
    noise = rng.normal(0, camera.noise, picture.shape[:2] + ((1,) if grey else (3,)))  # grey: one sensor value
    picture = picture + noise
    picture = np.clip(picture, 0, 255).astype(np.uint8)
    image = Image.fromarray(picture)
    return image.convert("L") if grey else image


# ---------------------------------------------------------------- textures


def _photo(source) -> np.ndarray:
    import skimage.data

    image = Image.fromarray(getattr(skimage.data, source)()) if isinstance(source, str) else Image.open(source)
    image = image.convert("RGB")
    image.thumbnail((1600, 1600), Image.Resampling.LANCZOS)
    return np.asarray(image, np.float32)


def chessboard(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float, float]:
    """A printed calibration board with a white margin: (texture, alpha, width m, height m)."""
    columns, rows = int(rng.integers(7, 12)), int(rng.integers(5, 9))
    square = float(rng.uniform(0.025, 0.045))
    px = 24
    squares = (np.indices((rows, columns)).sum(0) % 2).astype(np.float32)
    board = np.kron(squares, np.ones((px, px), np.float32))
    board = np.pad(board, px, constant_values=1.0) * 225 + 20  # black ink is not 0, paper not 255
    texture = np.repeat(board[..., None], 3, axis=2)
    return texture, np.ones(board.shape, np.float32), (columns + 2) * square, (rows + 2) * square


def tiles(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float, float]:
    """A panel of identical ceramic tiles with grout lines, each tile a little off in shade."""
    n, m, px = int(rng.integers(5, 9)), int(rng.integers(4, 7)), 40
    base = rng.uniform(90, 230, 3).astype(np.float32)
    texture = np.empty((m * px, n * px, 3), np.float32)
    for i in range(m):
        for j in range(n):
            texture[i * px : (i + 1) * px, j * px : (j + 1) * px] = base * rng.uniform(0.95, 1.05)
    grout = float(rng.uniform(40, 90))
    texture[::px, :], texture[1::px, :], texture[:, ::px], texture[:, 1::px] = grout, grout, grout, grout
    size = float(rng.uniform(0.06, 0.1))
    return texture, np.ones(texture.shape[:2], np.float32), n * size, m * size


def shelf(rng: np.random.Generator, product: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Rows of one product (a real object photograph) on planks."""
    columns, rows = int(rng.integers(5, 9)), int(rng.integers(2, 4))
    item = np.asarray(Image.fromarray(product.astype(np.uint8)).resize((60, 80)), np.float32)
    cell_w, cell_h = 66, 100
    texture = np.full((rows * cell_h, columns * cell_w, 3), rng.uniform(150, 220), np.float32)
    for r in range(rows):
        for c in range(columns):
            texture[r * cell_h + 4 : r * cell_h + 84, c * cell_w + 3 : c * cell_w + 63] = item
        texture[r * cell_h + 84 : r * cell_h + 100] = (95, 70, 50)
    item_m = float(rng.uniform(0.06, 0.09))
    return texture, np.ones(texture.shape[:2], np.float32), columns * item_m * 1.1, rows * item_m * 1.65


def fence(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float, float]:
    """A picket fence: painted boards with gaps the room shows through."""
    pickets, px = int(rng.integers(8, 15)), 30
    width = pickets * px
    texture = np.empty((240, width, 3), np.float32)
    texture[:] = rng.uniform(120, 240, 3).astype(np.float32)
    texture *= rng.uniform(0.9, 1.1, (1, width, 1)).astype(np.float32)  # grain
    alpha = np.zeros((240, width), np.float32)
    gap = int(rng.integers(8, 14))
    for k in range(pickets):
        alpha[:, k * px : (k + 1) * px - gap] = 1.0
    alpha[60:75], alpha[170:185] = 1.0, 1.0  # rails
    picket_m = float(rng.uniform(0.06, 0.1))
    return texture, alpha, pickets * picket_m, 240 / px * picket_m


def facade(rng: np.random.Generator, wall: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """A building front: identical windows on a real wall texture."""
    columns, rows = int(rng.integers(4, 8)), int(rng.integers(3, 5))
    cell = 60
    base = Image.fromarray(wall.astype(np.uint8)).resize((columns * cell, rows * cell))
    texture = np.asarray(base, np.float32).copy()
    for r in range(rows):
        for c in range(columns):
            y, x = r * cell, c * cell
            texture[y + 10 : y + 50, x + 15 : x + 45] = (235, 235, 230)  # frame
            texture[y + 13 : y + 47, x + 18 : x + 42] = (40, 50, 65)  # glass
            texture[y + 29 : y + 31, x + 18 : x + 42] = (235, 235, 230)  # transom
    size = float(rng.uniform(0.07, 0.11))
    return texture, np.ones(texture.shape[:2], np.float32), columns * size, rows * size


def plain_room(rng: np.random.Generator, poster: np.ndarray) -> np.ndarray:
    """A painted wall with little on it (a lab, an office): lit from one side, a door, a poster
    (a real photograph), a light switch. Most of it gives keypoints nothing to hold on to."""
    h, w = 900, 1350
    paint = rng.uniform(150, 225) * rng.uniform(0.92, 1.0, 3)
    light = np.linspace(rng.uniform(0.75, 0.9), rng.uniform(1.0, 1.1), w, dtype=np.float32)[None, :, None]
    wall = np.ones((h, w, 3), np.float32) * paint * light
    door = int(rng.uniform(0.05, 0.3) * w) if rng.random() < 0.5 else int(rng.uniform(0.6, 0.8) * w)
    wall[int(0.2 * h) :, door : door + 230] = paint * 0.55
    wall[int(0.2 * h) + 12 :, door + 12 : door + 218] = paint * 0.7
    y, x = int(rng.uniform(0.15, 0.35) * h), int(rng.uniform(0.35, 0.55) * w)
    art = np.asarray(Image.fromarray(poster.astype(np.uint8)).resize((260, 190)), np.float32)
    wall[y : y + 190, x : x + 260] = art
    wall[int(0.5 * h) : int(0.5 * h) + 30, door + 260 : door + 280] = 245.0
    return wall


def _person(photo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A real photograph's head and shoulders, cut out by an ellipse."""
    h, w = photo.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    alpha = (((xx - w / 2) / (w / 2)) ** 2 + ((yy - h * 0.6) / (h * 0.62)) ** 2 <= 1).astype(np.float32)
    return photo, alpha


# ---------------------------------------------------------------- scenes


@dataclass(frozen=True)
class Scene:
    room: list[Plane]  # wall and floor: never move
    held: list[Plane]  # the pattern and the person holding it
    pivot: np.ndarray  # where the pattern is held


def scene(kind: str, wall_photo: np.ndarray, rng: np.random.Generator, textures: dict) -> Scene:
    distance = float(rng.uniform(2.5, 6.0))
    wall_h, wall_w = wall_photo.shape[:2]
    width = distance * 1.6
    wall = Plane(wall_photo, np.ones((wall_h, wall_w), np.float32), np.array([0, -0.3, distance]), np.eye(3),
                 width, width * wall_h / wall_w)  # fmt: skip
    floor_texture = textures["floor"]
    floor_axes = np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], dtype=np.float64).T  # texture y runs away from us
    floor = Plane(floor_texture, np.ones(floor_texture.shape[:2], np.float32),
                  np.array([0, float(rng.uniform(1.1, 1.5)), (distance + 0.4) / 2]), floor_axes, width,
                  distance - 0.4)  # fmt: skip
    if kind == "chessboard":
        texture, alpha, w, h = chessboard(rng)
    elif kind == "tiles":
        texture, alpha, w, h = tiles(rng)
    elif kind == "shelf":
        texture, alpha, w, h = shelf(rng, textures["product"])
    elif kind == "fence":
        texture, alpha, w, h = fence(rng)
    else:
        texture, alpha, w, h = facade(rng, textures["wall"])
    depth = float(rng.uniform(0.5, 1.5))
    # as large as fits the view with a margin, at most the pattern's natural size x 3
    fits = 0.8 * depth * SIZE[1] / 560 / h
    scale = min(fits, 3.0) if kind in ("fence", "facade") else min(fits, 1.0)
    w, h = w * scale, h * scale
    centre = np.array([rng.uniform(-0.2, 0.2) * depth, rng.uniform(-0.1, 0.15) * depth, depth])
    facing = rotation(rng.normal(size=3), float(rng.uniform(0, 15)))
    pattern = Plane(texture, alpha, centre, facing, w, h)
    held = [pattern]
    if textures.get("person") is not None:
        face, face_alpha = _person(textures["person"])
        person = Plane(face, face_alpha, centre + np.array([rng.uniform(-0.1, 0.1), -0.25, 0.3]), np.eye(3),
                       0.55, 0.55 * face.shape[0] / face.shape[1])  # fmt: skip
        held.append(person)
    return Scene([wall, floor], held, centre)


def _camera(rng: np.random.Generator, focal: float) -> Camera:
    return Camera(focal, np.eye(3), np.zeros(3), float(rng.uniform(0.9, 1.1)), float(rng.uniform(1.0, 4.0)))


def stereo_pair(s: Scene, rng: np.random.Generator, grey: bool) -> tuple[Image.Image, Image.Image]:
    """Both cameras of a rig at one instant: 3-9 cm apart (side by side, sometimes one above
    the other), a hair of rotation and focal difference, each its own exposure and noise."""
    focal = float(rng.uniform(480, 700))
    left = _camera(rng, focal)
    baseline = float(rng.uniform(0.03, 0.09))
    direction = np.array([1.0, 0, 0]) if rng.random() < 0.8 else np.array([0, 1.0, 0])
    right = Camera(focal * float(rng.uniform(0.99, 1.01)), rotation(rng.normal(size=3), float(rng.uniform(0, 1.0))),
                   direction * baseline, float(rng.uniform(0.85, 1.15)), float(rng.uniform(1.0, 4.0)))  # fmt: skip
    planes = s.room + s.held
    return render(left, planes, rng, grey), render(right, planes, rng, grey)


def pose_pair(s: Scene, rng: np.random.Generator, grey: bool) -> tuple[Image.Image, Image.Image]:
    """One camera, two poses of the pattern and of the person holding it: turned 10-40° about
    a random axis and moved 5-25 cm (the room stays)."""
    camera = _camera(rng, float(rng.uniform(480, 700)))
    turn = rotation(rng.normal(size=3), float(rng.uniform(10, 40)))
    direction = rng.normal(size=3)
    shift = direction / np.linalg.norm(direction) * float(rng.uniform(0.05, 0.25))
    shift[2] = abs(shift[2]) * np.sign(1.0 - s.pivot[2])  # stay between 0.4 m and the wall
    # the person follows the board's move, but stays upright
    moved = [s.held[0].moved(turn, s.pivot, shift)] + [p.moved(np.eye(3), s.pivot, shift * 0.7) for p in s.held[1:]]
    second = Camera(camera.focal, camera.rotation, camera.position, camera.gain * float(rng.uniform(0.97, 1.03)),
                    camera.noise)  # fmt: skip
    return render(camera, s.room + s.held, rng, grey), render(second, s.room + moved, rng, grey)


def session(seed: int, held_out: bool = False, poses: int = 13, baseline: float = 0.06):
    """A stereo calibration session, as one folder holds it: one person holding a chessboard
    in a plain room in ``poses`` poses (turned 10-40° about a random axis and moved 5-25 cm),
    each shot by both cameras of a rig ``baseline`` m apart. Yields (pose number, left, right):
    a pose's two pictures are near duplicates, two poses are not."""
    rng = np.random.default_rng(seed)
    rooms = [p for p in ROOMS[held_out] if isinstance(p, str) or Path(p).exists()]
    wall = plain_room(rng, _photo(rooms[seed % len(rooms)]))
    s = scene("chessboard", wall, rng, textures_for(held_out, rng, with_person=True))
    focal = float(rng.uniform(480, 700))
    left = Camera(focal, np.eye(3), np.zeros(3), 1.0, 2.5)
    right = Camera(focal * 1.005, rotation(rng.normal(size=3), 0.7), np.array([baseline, 0, 0]), 1.08, 3.0)
    for pose in range(1, poses + 1):
        turn = rotation(rng.normal(size=3), float(rng.uniform(10, 40)))
        direction = rng.normal(size=3)
        shift = direction / np.linalg.norm(direction) * float(rng.uniform(0.05, 0.25))
        shift[2] = abs(shift[2]) * np.sign(1.0 - s.pivot[2])
        held = [s.held[0].moved(turn, s.pivot, shift)] + [p.moved(np.eye(3), s.pivot, shift * 0.7) for p in s.held[1:]]
        yield pose, render(left, s.room + held, rng, True), render(right, s.room + held, rng, True)


# ---------------------------------------------------------------- sets


ROOMS = {False: ["coffee", "chelsea", "rocket", "astronaut"] + PHOTOS[:8], True: LOMIRI + HELD_OUT_RESHOT}
FLOORS = {False: ["brick", "gravel"], True: ["grass", "gravel"]}
PRODUCTS = {False: ("coffee", (60, 90, 300, 380)), True: ("rocket", (180, 40, 330, 430))}  # a real object, cropped


def textures_for(held_out: bool, rng: np.random.Generator, with_person: bool) -> dict:
    name, box = PRODUCTS[held_out]
    product = _photo(name)[box[1] : box[3], box[0] : box[2]]
    floor = _photo(FLOORS[held_out][int(rng.integers(2))])
    person = _photo("astronaut")[0:300, 100:400] if with_person else None
    return {"product": product, "floor": floor, "wall": _photo("brick"), "person": person}


def pairs(held_out: bool, count: int, boards: bool = False):
    """``count`` stereo pairs and ``count`` pose pairs: (name, kind, first, second, is_duplicate).
    ``boards``: only what a stereo calibration records, a person holding a chessboard in a plain room."""
    rng = np.random.default_rng((1031 if held_out else 31) + (7 if boards else 0))
    rooms = [p for p in ROOMS[held_out] if isinstance(p, str) or Path(p).exists()]
    for i in range(count):
        kind = "chessboard" if boards else PATTERNS[i % len(PATTERNS)]
        # calibration boards are mostly filmed in plain rooms
        plain = boards or kind == "chessboard" and i % 2 == 0 or rng.random() < 0.15
        wall = plain_room(rng, _photo(rooms[i % len(rooms)])) if plain else _photo(rooms[i % len(rooms)])
        person = boards or kind == "chessboard" and rng.random() < 0.7
        textures = textures_for(held_out, rng, with_person=person)
        s = scene(kind, wall, rng, textures)
        grey = kind == "chessboard" or rng.random() < 0.3
        yield f"stereo_{i:02d}_{kind}", kind, *stereo_pair(s, rng, grey), True
        s = scene(kind, wall, rng, textures)
        yield f"pose_{i:02d}_{kind}", kind, *pose_pair(s, rng, grey), False


def _jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def generate(out: Path, held_out: bool, count: int = 15, boards: bool = False) -> dict[str, dict]:
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    truth: dict[str, dict] = {}
    for name, kind, first, second, duplicate in pairs(held_out, count, boards):
        (images / f"{name}_a.jpg").write_bytes(_jpeg(first))
        (images / f"{name}_b.jpg").write_bytes(_jpeg(second))
        truth[f"{name}_a.jpg"] = {"base": name, "category": "original", "kind": kind}
        # a stereo partner is a real near duplicate; another pose is a picture of its own
        truth[f"{name}_b.jpg"] = {"base": name if duplicate else f"{name}_b", "category": "view" if duplicate else
                                  "original", "kind": kind}  # fmt: skip
    (out / "truth.json").write_text(json.dumps({"images": truth, "footage": {}}, indent=1))
    return truth


if __name__ == "__main__":
    held = "--held-out" in sys.argv[1:]
    paths = [a for a in sys.argv[1:] if not a.startswith("--")]
    target = Path(paths[0] if paths else "bench/.rig/mixed")
    made = generate(target, held, boards="--boards" in sys.argv[1:])
    print(f"{len(made)} images under {target / 'images'}")
