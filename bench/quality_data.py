"""A labelled real-data set for the duplicate and outlier quality benchmark (deterministic).

    .venv/bin/python bench/quality_data.py OUT [--held-out]   # numpy, pillow, scikit-image, av

Everything comes from real pictures available offline: scikit-image's bundled photographs
(and its scanned page, text and logo), Debian's wallpaper packages (``gnome-backgrounds``,
``mate-backgrounds``, ``plasma-workspace-wallpapers``, ``ukui-wallpapers``: photographs and
designs), Adwaita's icons and the Debian logo, plus pages of text, charts and diagrams
rendered with the DejaVu fonts. Missing packages shrink the set (it says so), never fail it.

``OUT/images/`` (one image folder):

- good images: photographs, designs, logos, icons, text pages, charts, diagrams, a
  chessboard, a smooth gradient, a mildly motion-blurred photo, and images in odd modes
  (16-bit grey, grey+alpha, CMYK, palette, 1-bit) that must be read faithfully;
- near copies of some of them: exact, shift, brightness, jpeg (q60), crop (5 %), and
  flips (reported apart);
- real near duplicates (``view``): the other camera of a stereo pair, the portrait and
  landscape framings a wallpaper ships in, and two shots of one scene (overlapping windows
  of a large photograph with a perspective, zoom and exposure change);
- bad images: truncated and corrupt files, black, white, noise, heavy blur, under- and
  over-exposed photos.

``OUT/footage/`` (a landing zone of real-looking camera footage with nothing wrong: scenes
from the photographs filmed by a virtual camera with pan, jitter, lighting drift, sensor
noise and people walking through): per-camera folders holding videos of different sizes,
and a folder of JPEG frames from two scenes; the held-out set adds a camera each for night
at high gain, fog, infrared night, rain, a burned-in timestamp, a fast pan's smear and a
low bit rate (``CONDITIONS``). ``OUT/truth.json`` says what each file is.
"""

from __future__ import annotations

import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

NEAR_COPIES = ("exact", "shift", "brightness", "jpeg", "crop")
HARD_COPIES = ("flip", "view")
BAD = ("truncated", "corrupt", "black", "white", "noise", "blurred", "dark", "bright")
GOOD_KINDS = ("photo", "design", "logo", "text", "diagram", "odd_mode", "soft")

SKIMAGE_PHOTOS = ("astronaut", "brick", "camera", "chelsea", "coffee", "coins", "grass", "gravel", "moon", "rocket",
                  "cell", "colorwheel", "clock")  # fmt: skip
WALLPAPERS = Path("/usr/share/backgrounds")
PLASMA = Path("/usr/share/wallpapers")
PHOTOS = [WALLPAPERS / "mate/nature" / f"{n}.jpg" for n in
          ("Garden", "Dune", "Wood", "Aqua", "TwoWings", "Storm", "GreenMeadow", "RainDrops", "Blinds", "FreshFlower",
           "LadyBird", "YellowFlower")] + \
         [PLASMA / n / "contents/images/2560x1600.jpg" for n in
          ("Autumn", "BytheWater", "ColdRipple", "ColorfulCups", "EveningGlow", "FallenLeaf", "Grey", "Kite",
           "OneStandsOut", "Path", "summer_1am")]  # fmt: skip
DESIGNS = [WALLPAPERS / "gnome" / f"{n}.webp" for n in ("pixels-l", "truchet-l", "grid-d", "symbolic-l",
           "licorice-d", "adwaita-l", "wood-d")] + \
          [WALLPAPERS / "mate/abstract" / f"{n}.png" for n in ("Flow", "Waves", "Silk", "Spring", "Gulp")] + \
          [WALLPAPERS / n for n in ("calla.png", "city.png", "desert.png", "goldfish.png", "string.jpg", "rhythm.jpg",
           "firstgeneration.jpg", "the-mouse.jpg", "2004default.jpg")] + \
          [PLASMA / n / "contents/images" / f for n, f in (("Elarun", "2560x1600.png"), ("Opal", "3840x2160.png"),
           ("Cluster", "3840x2160.png"), ("Volna", "5120x2880.jpg"), ("IceCold", "5120x2880.png"))]  # fmt: skip
ICONS = Path("/usr/share/icons/Adwaita/512x512")
LOGOS = [Path("/usr/share/pixmaps/debian-logo.png"), Path("/usr/share/icons/hicolor/256x256/apps/chromium.png")] + \
        [ICONS / p for p in ("devices/camera-web.png", "devices/printer.png", "devices/input-gaming.png",
         "devices/phone.png", "mimetypes/x-office-spreadsheet.png", "mimetypes/package-x-generic.png",
         "places/user-bookmarks.png", "emblems/emblem-shared.png")]  # fmt: skip
# wallpapers shipped in a landscape and a portrait framing: real re-framings of one picture
FRAMINGS = [(PLASMA / n / "contents/images" / a, PLASMA / n / "contents/images" / b) for n, a, b in
            (("Altai", "5120x2880.png", "1080x1920.png"), ("Kay", "5120x2880.png", "1080x1920.png"),
             ("Patak", "5120x2880.png", "1080x1920.png"), ("Honeywave", "5120x2880.jpg", "1080x1920.jpg"),
             ("Shell", "5120x2880.jpg", "720x1440.jpg"), ("MilkyWay", "5120x2880.png", "1080x1920.png"),
             ("SafeLanding", "5120x2880.jpg", "1622x2880.jpg"), ("Flow", "5120x2880.jpg", "720x1440.jpg"))]  # fmt: skip
RESHOT = [WALLPAPERS / "mate/abstract/Elephants_3840x2160.jpg", PLASMA / "Canopee/contents/images/3840x2160.png",
          PLASMA / "Cascade/contents/images/3840x2160.png", PLASMA / "Kokkini/contents/images/3840x2160.png",
          PLASMA / "DarkestHour/contents/images/2560x1600.jpg", PLASMA / "PastelHills/contents/images/3200x2000.jpg",
          PLASMA / "FlyingKonqui/contents/images/2560x1600.png", WALLPAPERS / "focal-ubuntukylin.png",
          WALLPAPERS / "fluent-color.png", WALLPAPERS / "rollpaper.png",
          WALLPAPERS / "mate/desktop/GreenTraditional.jpg",
          WALLPAPERS / "mate/desktop/Float-into-MATE.png"]  # fmt: skip
FONTS = Path("/usr/share/fonts/truetype/dejavu")
LOREM = ("Camera fleets record hours of video and most frames are near copies of each other. Some are "
         "broken, and labelling costs money per box, so the useful frames are chosen first. ").split()  # fmt: skip
TITLES = ("Quarterly report", "Installation guide", "Minutes of the meeting", "Chapter 7", "Invoice 2291")

# The held-out set (``--held-out``): the same kinds of picture from sources the thresholds never
# saw: Lomiri's (Ubuntu Touch) wallpaper photographs, Debian's desktop-base themes (each
# ships a 16:9 and a 4:3 framing of one design), other Adwaita icons, text pages and charts
# drawn from other seeds. ``apt-get install lomiri-wallpapers lomiri-wallpapers-16.04
# lomiri-wallpapers-20.04 desktop-base``.
LOMIRI = [WALLPAPERS / f"{n}.jpg" for n in
          ("Dragonfly_by_Bolly", "Picture_0B_by_freespace", "Picture_1A_by_freespace", "Wine_by_Jakkub_Mede",
           "aitzgorri_by_Aitzol_Berasategi", "friends_by_Aitzol_Berasategi", "greentock_by_Peter_Nerlich")]  # fmt: skip
LOMIRI_BAD = [WALLPAPERS / f"{n}.jpg" for n in ("Bridge_by_Sander_Klootwijk", "life_by_Aitzol_Berasategi",
              "free_by_Peter_Nerlich", "picosdeeuropa_by_Aitzol_Berasategi")]  # fmt: skip
# photographs only ever shown as two shots of one scene
HELD_OUT_RESHOT = [WALLPAPERS / f"{n}.jpg" for n in ("Kleiber_by_Lukas_Baubkus", "seeding_by_Clements_Engelhardt",
                   "sunset_by_Aitzol_Berasategi")]  # fmt: skip
DEBIAN_THEMES = Path("/usr/share/desktop-base")
HELD_OUT_DESIGNS = [WALLPAPERS / f"{n}.jpg" for n in ("Fossa_by_Jasper_Roks", "Infinite-Sea_by_Aury88",
                    "Painting-Colors_by__herobrine7gamer", "analogpattern_by_Peter_Nerlich",
                    "umang_by_Abhishek_Mudgal")] + \
                   [DEBIAN_THEMES / f"{t}-theme/grub/grub-4x3.png" for t in ("lines", "spacefun")]  # fmt: skip
HELD_OUT_LOGOS = [ICONS / p for p in
                  ("devices/computer.png", "devices/audio-headphones.png", "devices/scanner.png",
                   "devices/media-floppy.png", "mimetypes/text-x-generic.png", "mimetypes/x-office-presentation.png",
                   "places/folder-music.png", "places/network-server.png",
                   "emblems/emblem-synchronizing.png")]  # fmt: skip
HELD_OUT_FRAMINGS = [(DEBIAN_THEMES / f"{t}-theme/grub/grub-16x9.png", DEBIAN_THEMES / f"{t}-theme/grub/grub-4x3.png")
                     for t in ("emerald", "futureprototype", "homeworld", "joy", "moonlight", "softwaves")]  # fmt: skip


@dataclass(frozen=True)
class Sources:
    """Where one set's pictures come from, and the seeds of what is drawn or generated."""

    skimage_photos: tuple[str, ...]
    photos: list[Path]
    designs: list[Path]
    logos: list[Path]
    framings: list[tuple[Path, Path]]
    reshot: list[Path]
    bad_photos: list  # skimage names or paths: photographs that appear nowhere else in the set
    seed: int  # text pages, charts, re-shoots and bad images
    fixed_extras: bool  # the skimage checkerboard, horse, stereo pair, odd modes, gradient


def _fit(image: Image.Image, side: int = 640) -> Image.Image:
    if image.mode in ("RGBA", "LA", "P"):  # overlays meant for a desktop colour (MATE's Silk, Waves...)
        canvas = Image.new("RGBA", image.size, (38, 70, 110, 255))
        canvas.alpha_composite(image.convert("RGBA"))
        image = canvas
    image = image.convert("RGB")
    image.thumbnail((side, side), Image.Resampling.LANCZOS)
    return image


def _open(path: Path) -> Image.Image | None:
    try:
        return Image.open(path)
    except OSError:
        return None


def _jpeg(image: Image.Image, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _font(size: int, mono: bool = False, serif: bool = False):
    name = "DejaVuSansMono.ttf" if mono else "DejaVuSerif.ttf" if serif else "DejaVuSans.ttf"
    try:
        return ImageFont.truetype(str(FONTS / name), size)
    except OSError:
        return ImageFont.load_default(size)


def text_page(seed: int, lines: int, mono: bool = False) -> Image.Image:
    """A printed page, as a scanner sees it: off-white paper, slight tilt and grain."""
    rng = np.random.default_rng(seed)
    page = Image.new("L", (850, 1100), 246)
    draw = ImageDraw.Draw(page)
    size = int(rng.integers(16, 26))
    font = _font(size, mono=mono, serif=not mono)
    left, top = int(rng.integers(50, 140)), int(rng.integers(40, 200))
    draw.text((left, top), TITLES[seed % len(TITLES)], fill=20, font=_font(int(rng.integers(28, 44)), serif=True))
    for line in range(lines):
        words = [LOREM[i] for i in rng.integers(0, len(LOREM), rng.integers(4, 11))]
        draw.text((left + 30 * mono * (line % 3), top + 70 + int(size * 1.6) * line), " ".join(words), fill=25,
                  font=font)  # fmt: skip
    page = page.rotate(float(rng.uniform(-0.8, 0.8)), fillcolor=246, resample=Image.Resampling.BICUBIC)
    grain = rng.normal(0, 3, (1100, 850))
    return Image.fromarray(np.clip(np.asarray(page, np.float32) + grain, 0, 255).astype(np.uint8)).convert("RGB")


def bar_chart(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (800, 600), "white")
    draw = ImageDraw.Draw(image)
    draw.line([(80, 40), (80, 540), (760, 540)], fill="black", width=2)
    values = rng.uniform(50, 450, 7)
    for i, v in enumerate(values):
        x = 110 + i * 90
        draw.rectangle([x, 540 - v, x + 55, 540], fill=tuple(int(c) for c in rng.integers(30, 220, 3)))
        draw.text((x, 550), f"cam {i}", fill="black", font=_font(16))
    draw.text((250, 10), "Frames selected per camera", fill="black", font=_font(22))
    return image


def flow_chart(seed: int) -> Image.Image:
    image = Image.new("RGB", (900, 500), (250, 250, 250))
    draw = ImageDraw.Draw(image)
    names = ["raw frames", "embeddings", "duplicates", "outliers", "selection"][seed % 2 :]
    for i, name in enumerate(names):
        x = 30 + i * 175
        draw.rounded_rectangle([x, 200, x + 140, 280], radius=12, outline=(40, 60, 120), width=3, fill=(220, 230, 250))
        draw.text((x + 12, 228), name, fill=(20, 20, 20), font=_font(18))
        if i:
            draw.line([(x - 35, 240), (x, 240)], fill="black", width=3)
            draw.polygon([(x, 240), (x - 10, 234), (x - 10, 246)], fill="black")
    return image


def line_plot(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (800, 500), "white")
    draw = ImageDraw.Draw(image)
    for y in range(50, 451, 50):
        draw.line([(60, y), (770, y)], fill=(225, 225, 225))
    draw.line([(60, 30), (60, 450), (770, 450)], fill="black", width=2)
    for colour in ((200, 40, 40), (40, 90, 200)):
        ys = 250 + np.cumsum(rng.normal(0, 12, 71))
        draw.line([(60 + 10 * i, float(np.clip(y, 40, 445))) for i, y in enumerate(ys)], fill=colour, width=3)
    draw.text((300, 5), "recall vs threshold", fill="black", font=_font(18))
    return image


def odd_modes(photo: Image.Image, logo: Image.Image) -> dict[str, bytes]:
    """Valid files in modes a loader must convert correctly."""
    grey = np.asarray(photo.convert("L"), dtype=np.uint16) * 257  # full 16-bit range
    cmyk = io.BytesIO()
    photo.convert("CMYK").save(cmyk, format="JPEG", quality=92)
    return {
        "odd_grey16.png": _png(Image.fromarray(grey)),
        "odd_grey_alpha.png": _png(logo.convert("LA")),
        "odd_cmyk.jpg": cmyk.getvalue(),
        "odd_palette.png": _png(photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)),
        "odd_bilevel.png": _png(text_page(99, 20).convert("1")),
    }


def _shift(image: Image.Image, dx: int = 4, dy: int = 3) -> Image.Image:
    a = np.asarray(image)
    return Image.fromarray(np.pad(a, ((dy, 0), (dx, 0), (0, 0)), mode="edge")[: a.shape[0], : a.shape[1]])


def _scale(image: Image.Image, factor: float) -> Image.Image:
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.float32) * factor, 0, 255).astype(np.uint8))


def _crop(image: Image.Image, fraction: float) -> Image.Image:
    w, h = image.size
    dx, dy = int(w * fraction / 2), int(h * fraction / 2)
    return image.crop((dx, dy, w - dx, h - dy)).resize((w, h), Image.Resampling.BILINEAR)


def near_copy(image: Image.Image, category: str, index: int) -> bytes:
    if category == "exact":
        return _jpeg(image)
    if category == "shift":
        return _jpeg(_shift(image))
    if category == "brightness":
        return _jpeg(_scale(image, 1.1 if index % 2 else 0.9))
    if category == "jpeg":
        return _jpeg(image, quality=60)
    if category == "crop":
        return _jpeg(_crop(image, 0.05))
    if category == "flip":
        return _jpeg(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    raise ValueError(category)


def reshoot(big: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Image.Image]:
    """Two shots of one scene: overlapping windows (10-15 % apart, 5-10 % zoom), a small
    perspective change and a different exposure."""
    big = big.convert("RGB")
    w, h = big.size
    cw, ch = int(w * 0.6), int(h * 0.6)
    x, y = int(w * 0.15), int(h * 0.15)
    first = big.crop((x, y, x + cw, y + ch))
    dx, dy = int(cw * rng.uniform(0.10, 0.15)), int(ch * rng.uniform(-0.06, 0.06))
    zoom = rng.uniform(0.90, 0.95)
    zw, zh = int(cw * zoom), int(ch * zoom)
    x2, y2 = x + dx + (cw - zw) // 2, y + dy + (ch - zh) // 2
    k = int(zw * 0.03)  # perspective: one side a little taller than the other
    quad = (x2, y2, x2, y2 + zh, x2 + zw, y2 + zh + k, x2 + zw, y2 - k)
    second = big.transform((cw, ch), Image.Transform.QUAD, quad, resample=Image.Resampling.BICUBIC)
    second = _scale(second, rng.uniform(0.85, 1.15))
    return _fit(first), _fit(second)


def bad_image(category: str, photo: Image.Image, rng: np.random.Generator) -> bytes:
    size = photo.size
    if category == "truncated":
        data = _jpeg(photo)
        return data[: len(data) // 2]
    if category == "corrupt":  # a JPEG header, then garbage
        return _jpeg(photo)[:600] + rng.integers(0, 256, 30000, dtype=np.uint8).tobytes()
    if category == "black":
        return _jpeg(Image.fromarray(rng.integers(0, 6, (*size[::-1], 3), dtype=np.uint8)))
    if category == "white":
        return _jpeg(Image.fromarray(rng.integers(250, 256, (*size[::-1], 3), dtype=np.uint8)))
    if category == "noise":
        return _jpeg(Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)))
    if category == "blurred":
        return _jpeg(photo.filter(ImageFilter.GaussianBlur(6)))
    if category == "dark":
        return _jpeg(_scale(photo, 0.06))
    if category == "bright":  # washed out: every pixel pushed most of the way to white
        return _jpeg(Image.fromarray((255 - (255 - np.asarray(photo, dtype=np.float32)) * 0.1).astype(np.uint8)))
    raise ValueError(category)


def _skimage(name: str) -> Image.Image:
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)())


CALIBRATION = Sources(SKIMAGE_PHOTOS, PHOTOS, DESIGNS, LOGOS, FRAMINGS, RESHOT,
                      ["retina", "microaneurysms", "hubble_deep_field", "immunohistochemistry"], 0, True)  # fmt: skip
HELD_OUT = Sources((), LOMIRI, HELD_OUT_DESIGNS, HELD_OUT_LOGOS, HELD_OUT_FRAMINGS, HELD_OUT_RESHOT, LOMIRI_BAD,
                   100, False)  # fmt: skip


def _name(path: Path) -> str:
    """A picture's name in the set: its wallpaper's or theme's folder where the file is a size."""
    if path.parent.name == "images":  # plasma: <name>/contents/images/<size>.<ext>
        return path.parents[2].name
    if path.parent.name == "grub":  # desktop-base: <theme>/grub/grub-16x9.png
        return path.parents[1].name
    return path.stem


def generate_images(out: Path, sources: Sources | None = None) -> dict[str, dict]:
    src = sources or CALIBRATION
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    truth: dict[str, dict] = {}
    missing: list[str] = []

    def write(name: str, data: bytes, **what) -> None:
        (images / name).write_bytes(data)
        truth[name] = what

    def load_all(paths: list[Path]) -> list[tuple[str, Image.Image]]:
        found = []
        for path in paths:
            image = _open(path)
            if image is None:
                missing.append(str(path))
            else:
                found.append((_name(path), image))
        return found

    good: list[tuple[str, Image.Image, str]] = [(n, _fit(_skimage(n)), "photo") for n in src.skimage_photos]
    good += [(n, _fit(im), "photo") for n, im in load_all(src.photos)]
    good += [(n, _fit(im), "design") for n, im in load_all(src.designs)]
    logos = ([("skimage_logo", _skimage("logo"))] if src.fixed_extras else []) + load_all(src.logos)
    for name, logo in logos:  # logos and icons: flat colours on white
        canvas = Image.new("RGBA", logo.size, "white")
        canvas.alpha_composite(logo.convert("RGBA"))
        good.append((f"logo_{name}", canvas.convert("RGB"), "logo"))
    seed = src.seed
    if src.fixed_extras:
        good += [(f"scan_{n}", _skimage(n).convert("RGB"), "text") for n in ("page", "text")]
    good += [(f"text_page_{i}", text_page(seed + i, lines, mono), "text") for i, (lines, mono) in
             enumerate(((28, False), (4, False), (24, True), (12, False)))]  # fmt: skip
    good += [("chart_bars", bar_chart(seed + 1), "diagram"), ("chart_lines", line_plot(seed + 2), "diagram"),
             ("diagram_flow", flow_chart(seed), "diagram")]  # fmt: skip
    if src.fixed_extras:
        good += [("chessboard", _skimage("checkerboard").convert("RGB"), "diagram"),
                 ("silhouette", _skimage("horse").convert("RGB"), "diagram")]  # fmt: skip
        ramp = np.linspace(30, 225, 640, dtype=np.float32)
        gradient = np.stack([np.tile(ramp, (480, 1)), np.tile(ramp[::-1], (480, 1)), np.full((480, 640), 120.0)], -1)
        good.append(("gradient", Image.fromarray(gradient.astype(np.uint8)), "design"))
        stereo_left, stereo_right, _ = (Image.fromarray(a) for a in __import__("skimage.data").data.stereo_motorcycle())
        good.append(("stereo_motorcycle", _fit(stereo_left), "photo"))
    for name, image, kind in good:
        write(f"{name}.jpg", _jpeg(image), base=name, category="original", kind=kind)
    if src.fixed_extras:
        # copies that must stay good: a mildly motion-blurred photo, and files in odd modes
        chelsea, camera = (next(im for n, im, _ in good if n == name) for name in ("chelsea", "camera"))
        write("chelsea__motion.jpg", _jpeg(chelsea.filter(ImageFilter.BoxBlur(2))), base="chelsea", category="soft",
              kind="soft")  # fmt: skip
        for name, data in odd_modes(camera, logos[0][1]).items():
            if "bilevel" in name:  # a page of its own
                write(name, data, base=name, category="original", kind="odd_mode")
            else:
                base = "logo_skimage_logo" if "alpha" in name else "camera"
                write(name, data, base=base, category="odd_mode", kind="odd_mode")

    # near copies of every fourth good image, of each kind
    for i, (name, image, kind) in enumerate(good[::4]):
        for category in NEAR_COPIES + ("flip",):
            write(f"{name}__{category}.jpg", near_copy(image, category, i), base=name, category=category, kind=kind)

    # real near duplicates: a stereo pair, wallpapers' two framings, two shots of one scene
    if src.fixed_extras:
        write("stereo_motorcycle__view.jpg", _jpeg(_fit(stereo_right)), base="stereo_motorcycle", category="view")
    for landscape, portrait in src.framings:
        a, b = _open(landscape), _open(portrait)
        if a is None or b is None:
            missing.append(str(landscape))
            continue
        name = _name(landscape)
        write(f"framing_{name}.jpg", _jpeg(_fit(a)), base=f"framing_{name}", category="original", kind="design")
        write(f"framing_{name}__view.jpg", _jpeg(_fit(b)), base=f"framing_{name}", category="view", kind="design")
    rng = np.random.default_rng(seed + 3)
    for name, big in load_all(src.reshot):
        first, second = reshoot(big, rng)
        write(f"shot_{name}.jpg", _jpeg(first), base=f"shot_{name}", category="original", kind="photo")
        write(f"shot_{name}__view.jpg", _jpeg(second), base=f"shot_{name}", category="view", kind="photo")

    # bad images, from photographs that appear nowhere else in the set
    sources = [_fit(_skimage(p) if isinstance(p, str) else _open(p), 512) for p in src.bad_photos]
    bad_rng = np.random.default_rng(seed + 1)
    for category in BAD:
        for i in range(4):
            photo = sources[(i + BAD.index(category)) % len(sources)]
            write(f"bad_{category}_{i}.jpg", bad_image(category, photo, bad_rng), base=f"bad_{category}_{i}",
                  category=category)  # fmt: skip
    if missing:
        print(f"left out (not installed): {len(missing)} files, e.g. {missing[0]}")
    return truth


# ---------------------------------------------------------------- footage


def film(scene: Image.Image, size: tuple[int, int], seconds: float, fps: int, seed: int, soft: float = 0.0):
    """Frames of a fixed camera looking at ``scene``: slow pan, jitter, lighting drift,
    sensor noise, people walking through. ``soft`` blurs the optics (a film look)."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = scene.convert("RGB").resize((int(w * 1.25), int(h * 1.25)), Image.Resampling.LANCZOS)
    walkers = [(rng.uniform(0, seconds), rng.uniform(3, 6), rng.integers(20, 90, 3), rng.uniform(0.6, 0.9))
               for _ in range(max(1, int(seconds / 6)))]  # fmt: skip
    for t in np.arange(0, seconds, 1 / fps):
        pan = 0.5 + 0.4 * np.sin(2 * np.pi * t / (seconds * 2))
        x = int(pan * (base.width - w) + rng.normal(0, 1.0))
        y = int((base.height - h) / 2 + rng.normal(0, 1.0))
        frame = base.crop((max(0, x), max(0, y), max(0, x) + w, max(0, y) + h))
        draw = ImageDraw.Draw(frame)
        for start, duration, colour, height in walkers:
            if start <= t < start + duration:
                cx = int((t - start) / duration * (w + 60)) - 30
                bh = int(h * height * 0.5)
                draw.ellipse([cx - bh // 6, h - bh - bh // 4, cx + bh // 6, h - bh], fill=tuple(int(c) for c in colour))
                draw.rectangle([cx - bh // 5, h - bh, cx + bh // 5, h - 10], fill=tuple(int(c) for c in colour))
        if soft:
            frame = frame.filter(ImageFilter.GaussianBlur(soft))
        light = 1.0 + 0.08 * np.sin(2 * np.pi * t / 17.0)
        pixels = np.asarray(frame, dtype=np.float32) * light + rng.normal(0, 3.0, (h, w, 3))
        yield np.clip(pixels, 0, 255).astype(np.uint8)


def write_video(path: Path, frames, fps: int, bit_rate: int = 2_000_000) -> int:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with av.open(str(path), "w") as container:
        stream = None
        for rgb in frames:
            if stream is None:
                stream = container.add_stream("mpeg4", rate=fps)
                stream.height, stream.width = rgb.shape[:2]
                stream.pix_fmt, stream.bit_rate = "yuv420p", bit_rate
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
            n += 1
        container.mux(stream.encode())
    return n


# (folder, file, scene photograph, size, seconds, soft focus)
FOOTAGE = (
    ("cam-store", "aisle.mp4", PHOTOS[13], (768, 576), 40, 0.0),
    ("cam-store", "entrance.mp4", PHOTOS[6], (320, 240), 30, 0.0),
    ("cam-yard", "yard.mp4", PHOTOS[20], (1280, 720), 30, 0.0),
    ("cam-yard", "night.mp4", PHOTOS[4], (640, 480), 30, 0.0),
)
FRAME_FOLDER = (("frames-two-scenes", PHOTOS[15], (768, 576), 60, 0.0), ("frames-two-scenes", PHOTOS[9], (720, 528),
                 30, 1.2))  # fmt: skip
HELD_OUT_FOOTAGE = (
    ("cam-store", "aisle.mp4", LOMIRI[3], (768, 576), 40, 0.0),
    ("cam-store", "entrance.mp4", LOMIRI[2], (320, 240), 30, 0.0),
    ("cam-yard", "yard.mp4", LOMIRI[4], (1280, 720), 30, 0.0),
    ("cam-yard", "night.mp4", LOMIRI[6], (640, 480), 30, 0.0),
)
HELD_OUT_FRAME_FOLDER = (("frames-two-scenes", LOMIRI[5], (768, 576), 60, 0.0),
                         ("frames-two-scenes", LOMIRI[1], (720, 528), 30, 1.2))  # fmt: skip


# Held-out footage also films the conditions a camera fleet records with nothing wrong:
# (name, what is done to each frame), each a 20 s video of its own camera
CONDITIONS = ("night_high_iso", "fog", "infrared_night", "rain", "timestamp", "motion_smear", "low_bitrate")


def camera_condition(kind: str, frames, seed: int):
    """``frames`` as a camera records them under ``kind`` (low_bitrate: at encoding, see
    ``write_video``)."""
    rng = np.random.default_rng(seed)
    font = _font(14, mono=True)
    for i, rgb in enumerate(frames):
        x = rgb.astype(np.float32)
        if kind == "night_high_iso":  # a dark scene with the sensor's gain turned up
            x = x * 0.22 + rng.normal(0, 10, x.shape)
        elif kind == "fog":
            x = x * 0.45 + 0.55 * 170
        elif kind == "infrared_night":  # grey, flat, noisy
            grey = x.mean(axis=-1, keepdims=True) * 0.5 + 10
            x = np.repeat(grey + rng.normal(0, 8, grey.shape), 3, axis=-1)
        elif kind == "rain":
            for _ in range(150):
                cx, cy = rng.integers(0, x.shape[1]), rng.integers(0, x.shape[0] - 20)
                x[cy : cy + 18, cx] = 230
        elif kind == "timestamp":
            image = Image.fromarray(rgb)
            ImageDraw.Draw(image).text((8, 8), f"2026-12-02 23:{i // 600:02d}:{i // 10 % 60:02d} CAM-07", fill="white",
                                       font=font)  # fmt: skip
            x = np.asarray(image, dtype=np.float32)
        elif kind == "motion_smear":  # a fast pan: every frame smeared sideways
            x = sum(np.roll(x, shift, axis=1) for shift in range(-5, 6)) / 11
        yield np.clip(x, 0, 255).astype(np.uint8)


def generate_footage(out: Path, held_out: bool = False) -> dict[str, dict]:
    footage = out / "footage"
    truth: dict[str, dict] = {}
    fps = 10
    videos, folders = (HELD_OUT_FOOTAGE, HELD_OUT_FRAME_FOLDER) if held_out else (FOOTAGE, FRAME_FOLDER)
    for i, (folder, name, photo, size, seconds, soft) in enumerate(videos):
        scene = _open(photo)
        if scene is None:
            continue
        if name == "night.mp4":
            scene = _scale(scene.convert("RGB"), 0.45)  # dusk: dim, but a real scene
        n = write_video(footage / folder / name, film(scene, size, seconds, fps, seed=i, soft=soft), fps)
        truth[f"{folder}/{name}"] = {"frames_encoded": n, "size": size, "scene": _name(photo)}
    for j, (folder, photo, size, seconds, soft) in enumerate(folders):
        scene = _open(photo)
        if scene is None:
            continue
        for k, rgb in enumerate(film(scene, size, seconds, 2, seed=10 + j, soft=soft)):
            path = footage / folder / f"clip{j}_{k:04d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(_jpeg(Image.fromarray(rgb), 90))
        truth[f"{folder}/clip{j}"] = {"frames": seconds * 2, "size": size, "soft": soft}
    if held_out:
        photos = [_open(p) for p in LOMIRI + HELD_OUT_RESHOT]
        photos = [p for p in photos if p is not None]
        for k, kind in enumerate(CONDITIONS if photos else ()):
            frames = camera_condition(kind, film(photos[k % len(photos)], (640, 480), 20, fps, seed=50 + k), 50 + k)
            bit_rate = 120_000 if kind == "low_bitrate" else 2_000_000
            n = write_video(footage / f"cam-{kind}" / f"{kind}.mp4", frames, fps, bit_rate)
            truth[f"cam-{kind}/{kind}.mp4"] = {"frames_encoded": n, "size": (640, 480), "condition": kind}
    return truth


if __name__ == "__main__":
    held_out = "--held-out" in sys.argv[1:]
    paths = [a for a in sys.argv[1:] if not a.startswith("--")]
    target = Path(paths[0] if paths else "bench/.quality")
    images = generate_images(target, HELD_OUT if held_out else CALIBRATION)
    footage = generate_footage(target, held_out)
    (target / "truth.json").write_text(json.dumps({"images": images, "footage": footage}, indent=1))
    print(f"{len(images)} images under {target / 'images'}, {len(footage)} clips under {target / 'footage'}")
