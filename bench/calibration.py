"""Calibration corpus: how much room each rule's threshold has, on 1 000+ real pictures.

    .venv/bin/python bench/calibration.py [--limit N]    # numpy, pillow, scikit-image, opencv, torch

The procedure, per rule (written here so that the next threshold is chosen the same way):

1. Corpus: every real picture available offline (``corpus``): scikit-image's photographs,
   Debian's wallpaper packages (each wallpaper whole and as its two halves), Adwaita's icons
   on white, text pages and charts drawn with the DejaVu fonts, and footage frames of those
   photographs filmed under night at high gain, fog, infrared night, rain, a burned-in
   timestamp, a fast pan's smear and a low bit rate (``bench/quality_data.py``).
2. Split by a hash of each picture's name: a quarter is held out and never used to choose.
3. Image rules: each good picture and its damaged versions (Gaussian blur of 5-8 pixels at
   640: for footage the lens out of focus before the sensor's noise; under- and
   over-exposure, black, white, noise); per rule, the figure it thresholds on
   good pictures and on the damage it must catch. On the calibration part, the threshold
   with the widest margin is the midpoint between the nearest bad and the nearest good
   example (geometric for positive figures); it is printed beside the threshold in use.
4. Duplicates: near copies of a third of the pictures (shift, brightness, JPEG q60, 5 % crop)
   against each picture's most similar other picture (the hardest unrelated pair): the
   embedding cosine and hash distance of each; dense alignment on two cameras of a rig
   against another pose of the camera, for every photograph.
5. Printed per rule and part: threshold in use, nearest good and nearest bad with margins,
   and what the full rules flag (``outliers.image_flags``).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import describe  # noqa: E402
from bench.quality_data import (  # noqa: E402
    CONDITIONS,
    PLASMA,
    WALLPAPERS,
    _fit,
    _jpeg,
    _scale,
    bar_chart,
    camera_condition,
    film,
    flow_chart,
    line_plot,
    near_copy,
    text_page,
)

SKIMAGE = ("astronaut", "brick", "camera", "cat", "chelsea", "coffee", "coins", "grass", "gravel", "moon", "rocket",
           "cell", "colorwheel", "clock", "retina", "microaneurysms", "hubble_deep_field", "immunohistochemistry",
           "page", "text", "logo", "horse", "checkerboard", "motorcycle_left", "eagle", "skin",
           "shepp_logan_phantom")  # fmt: skip
ICONS = Path("/usr/share/icons/Adwaita/512x512")
DESKTOP_BASE = Path("/usr/share/desktop-base")


def _decoded(image: Image.Image) -> Image.Image:
    """The picture as a camera or a folder would hand it over: a JPEG, decoded."""
    import io

    return Image.open(io.BytesIO(_jpeg(image, 92))).convert("RGB")


def _wallpapers() -> list[Path]:
    """One file per wallpaper (a Plasma wallpaper ships many sizes: the smallest of at least
    1280 pixels a side, which decodes fastest)."""
    files = [p for p in sorted(WALLPAPERS.rglob("*")) if p.suffix in (".jpg", ".png", ".webp")]
    files += [
        p for p in sorted(DESKTOP_BASE.glob("*-theme/wallpaper/contents/images/*")) if p.suffix in (".png", ".svg")
    ]
    by_name: dict[str, Path] = {}
    for path in sorted(PLASMA.glob("*/contents/images/*")):
        if path.suffix in (".jpg", ".png") and "x" in path.stem:
            w, h = (int(v) for v in path.stem.split("x")[:2])
            best = by_name.get(path.parents[2].name)
            if max(w, h) >= 1280 and (best is None or w * h < np.prod([int(v) for v in best.stem.split("x")[:2]])):
                by_name[path.parents[2].name] = path
    return [p for p in files if p.suffix != ".svg"] + list(by_name.values())


OUT_OF_FOCUS: dict[str, Image.Image] = {}  # footage frame -> the same frame filmed out of focus


def _filmed(scene: Image.Image, condition: str, seed: int, soft: float = 0.0) -> Image.Image:
    """One 640x480 frame of ``scene`` as a camera under ``condition`` records it."""
    frame = next(camera_condition(condition, film(scene, (640, 480), 1.0, 2, seed=seed, soft=soft), seed=seed))
    if condition == "low_bitrate":
        frame = np.asarray(Image.open(__import__("io").BytesIO(_jpeg(Image.fromarray(frame), 20))))
    return Image.fromarray(frame)


def corpus(limit: int | None = None) -> list[tuple[str, str, Image.Image]]:
    """(name, kind, picture) for every real picture found; kinds: photo (a wallpaper may be a
    design), icon, text, diagram, footage."""
    import skimage.data

    pictures: list[tuple[str, str, Image.Image]] = []
    for name in SKIMAGE:
        try:
            data = getattr(skimage.data, name.replace("motorcycle_left", "stereo_motorcycle"))()
        except Exception:  # noqa: BLE001 - a dataset that needs a download: not offline
            continue
        data = data[0] if isinstance(data, tuple) else data
        if data.dtype.kind == "f":  # a float image in [0, 1]
            data = (np.clip(data, 0, 1) * 255).astype(np.uint8)
        kind = (
            "text" if name in ("page", "text") else "diagram" if name in ("horse", "checkerboard", "logo") else "photo"
        )
        pictures.append((f"skimage/{name}", kind, _fit(Image.fromarray(data))))
    for path in _wallpapers():
        try:
            image = _fit(Image.open(path), 1280)
        except OSError:
            continue
        name = f"wallpaper/{path.relative_to(path.parents[3] if 'contents' in path.parts else path.parent)}"
        w, h = image.size
        pictures.append((name, "photo", _fit(image)))
        pictures += [(f"{name}#left", "photo", _fit(image.crop((0, 0, w // 2, h)))),
                     (f"{name}#right", "photo", _fit(image.crop((w // 2, 0, w, h))))]  # fmt: skip
    for path in sorted(ICONS.rglob("*.png")):
        icon = Image.open(path).convert("RGBA")
        canvas = Image.new("RGBA", icon.size, "white")
        canvas.alpha_composite(icon)
        pictures.append((f"icon/{path.parent.name}/{path.stem}", "icon", canvas.convert("RGB")))
    for seed in range(100):
        pictures.append((f"text/page{seed}", "text", _fit(text_page(1000 + seed, 4 + seed % 26, mono=seed % 3 == 0))))
    for seed in range(45):
        maker = (bar_chart, line_plot, flow_chart)[seed % 3]
        pictures.append((f"diagram/{maker.__name__}{seed}", "diagram", maker(1000 + seed)))
    photos = [(n, im) for n, k, im in pictures if k == "photo" and "#" not in n]
    for c, condition in enumerate(CONDITIONS):  # one frame per scene and condition: a fleet's cameras
        for s, (name, scene) in enumerate(photos[c % 2 :: 2]):
            pictures.append((f"footage/{condition}/{name}", "footage", _filmed(scene, condition, 100 * c + s)))
            # the same camera out of focus: the lens blurs the scene, then the sensor adds its noise
            OUT_OF_FOCUS[pictures[-1][0]] = _decoded(_filmed(scene, condition, 100 * c + s, soft=5.0 + s % 4))
    pictures = [(n, k, _decoded(im)) for n, k, im in pictures]
    return pictures[:limit] if limit else pictures


def source(name: str) -> str:
    """The picture a corpus entry comes from: a wallpaper's halves and the footage filmed
    from it share its source."""
    return name.split("#")[0].split("/", 2)[-1] if name.startswith("footage/") else name.split("#")[0]


def held_out(name: str) -> bool:
    """A quarter of the pictures, by a hash of the picture's source, never used to choose a threshold."""
    return hashlib.sha1(source(name).encode()).digest()[0] % 4 == 0


def damaged(image: Image.Image, kind: str, rng: np.random.Generator) -> Image.Image:
    """A damaged version of a good picture, as ``bench/quality_data.py`` makes them."""
    w, h = image.size
    if kind == "blurred":
        return image.filter(ImageFilter.GaussianBlur(float(rng.choice([5, 6, 8]))))
    if kind == "dark":
        return _scale(image, 0.06)
    if kind == "bright":
        return Image.fromarray((255 - (255 - np.asarray(image, np.float32)) * 0.1).astype(np.uint8))
    if kind == "black":
        return Image.fromarray(rng.integers(0, 6, (h, w, 3), dtype=np.uint8))
    if kind == "white":
        return Image.fromarray(rng.integers(250, 256, (h, w, 3), dtype=np.uint8))
    if kind == "noise":
        return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    raise ValueError(kind)


DAMAGE = ("blurred", "dark", "bright", "black", "white", "noise")


def _stats(name: str, kind: str, image: Image.Image, part: str, damage: str | None) -> dict:
    from curation_assets.core.image_stats import image_stats

    rgb = np.asarray(image.convert("RGB"))
    return {"frame_id": f"{name}|{damage or ''}", "video_id": "folder", "frame_index": 0, "timestamp_s": 0.0,
            "width": rgb.shape[1], "height": rgb.shape[0], "name": name, "kind": kind, "part": part,
            "damage": damage or "", **asdict(image_stats(rgb))}  # fmt: skip


def image_rules(pictures, rng) -> pd.DataFrame:
    rows, damages = [], 0
    for name, kind, image in pictures:
        part = "held_out" if held_out(name) else "calibration"
        rows.append(_stats(name, kind, image, part, None))
        if kind in ("photo", "footage") and "#" not in name:  # damage is done to photographs and footage
            damage = DAMAGE[damages // 2 % len(DAMAGE)] if damages % 2 else "blurred"  # blur, the hardest, every other
            damages += 1
            bad = OUT_OF_FOCUS[name] if damage == "blurred" and name in OUT_OF_FOCUS else damaged(image, damage, rng)
            rows.append(_stats(name, kind, _decoded(bad), part, damage))
    return pd.DataFrame(rows)


def image_margins(table: pd.DataFrame) -> None:
    from curation_assets.core.outliers import OutlierParams, image_flags

    p = OutlierParams()
    table = table.copy()
    table["detail_ratio"] = table["coarse_detail"] / table["broad_detail"].clip(lower=1e-12)
    flags = image_flags(table, p)
    table["flags"] = [",".join(c for c in flags.columns if row[c]) for _, row in flags.iterrows()]
    # rule: figure, threshold in use, flags below it?, damage it must catch, where it judges
    edges = table["edge_density"]
    rules = {
        "blurry (photographs, designs)": ("detail_ratio", p.blurry_detail_ratio, True, ("blurred",),
                   (table["broad_detail"] > p.blurry_broad_detail) & (table["kind"] != "footage")),
        "blurry (footage frames alone)": ("detail_ratio", p.blurry_detail_ratio, True, ("blurred",),
                   (table["broad_detail"] > p.blurry_broad_detail) & (table["kind"] == "footage")),
        "dark": ("luma_p99", p.dark_p99, True, ("dark", "black"), edges < p.stroke_edges),
        "bright": ("luma_p01", p.bright_p01, False, ("bright", "white"), edges < p.stroke_edges),
        "low_information": ("contrast", p.uniform_contrast, True, ("black", "white"), edges < p.uniform_edges),
        "noise": ("pixel_correlation", p.noise_correlation, True, ("noise",), table["entropy"] > p.noise_entropy),
    }  # fmt: skip
    print("\nimage rules: rule | part | threshold in use | nearest good (margin) | nearest bad (margin) | "
          "widest-margin threshold (calibration part)")  # fmt: skip
    for rule, (figure, threshold, below, kinds, judged) in rules.items():
        sign = 1 if below else -1
        chosen = None
        for part in ("calibration", "held_out"):
            rows = table[(table["part"] == part) & judged]
            good, bad = rows[rows["damage"] == ""], rows[rows["damage"].isin(kinds)]
            if good.empty or bad.empty:
                continue
            g = good.loc[(sign * (good[figure] - threshold)).idxmin()]
            b = bad.loc[(sign * (threshold - bad[figure])).idxmin()]
            if part == "calibration":
                lo, hi = (b[figure], g[figure]) if below else (g[figure], b[figure])
                chosen = np.sqrt(lo * hi) if lo > 0 and hi > 0 else (lo + hi) / 2
                chosen = f"{chosen:.4g}" if lo < hi else "none: the classes overlap"
            good_margin, bad_margin = sign * (g[figure] - threshold), sign * (threshold - b[figure])
            print(f"{rule} | {part} | {threshold:.4g} | {g[figure]:.4g} ({good_margin:+.3g}, {g['name']}) | "
                  f"{b[figure]:.4g} ({bad_margin:+.3g}, {b['name']} {b['damage']}) | "
                  f"{chosen if part == 'calibration' else ''}")  # fmt: skip
    print("\nwhat the rules flag (outliers.image_flags): part | good flagged | damaged found, per damage")
    for part in ("calibration", "held_out"):
        rows = table[table["part"] == part]
        good = rows[rows["damage"] == ""]
        found = {d: f"{(rows[rows['damage'] == d]['flags'] != '').sum()}/{(rows['damage'] == d).sum()}" for d in DAMAGE}
        for kind in ("photo", "footage"):
            of_kind = rows[(rows["damage"] == "blurred") & (rows["kind"] == kind)]
            found[f"blurred {kind}"] = f"{(of_kind['flags'] != '').sum()}/{len(of_kind)}"
        wrong = good[good["flags"] != ""]
        missed = rows[(rows["damage"] != "") & (rows["flags"] == "")]
        print(f"{part} | {len(wrong)}/{len(good)} {dict(zip(wrong['name'], wrong['flags']))} | {found}")
        missed = missed[missed["kind"] != "footage"]
        missed_names = [f"{n} {d}" for n, d in zip(missed["name"], missed["damage"])]
        print(f"  damaged photographs and designs not flagged: {missed_names}")


def duplicate_margins(pictures, rng) -> None:
    from curation_assets.core.duplicates import DuplicateParams, _is_near, blank
    from curation_assets.core.embedder import Embedder
    from curation_assets.core.geometry import ALIGNED_DETAIL, alignment, dense
    from curation_assets.core.image_stats import hamming_distance, image_stats
    from curation_assets.core.models import PACKAGED

    params = DuplicateParams.for_model(PACKAGED["efficientnet-lite0"].calibration)
    model = Embedder(batch_size=32)
    images = [im for _, _, im in pictures]
    stats = pd.DataFrame([asdict(image_stats(np.asarray(im))) for im in images])
    structured = ~blank(stats)  # blank pictures are judged by their own rule (issue 34)
    vectors = model.embed([lambda im=im: im for im in images])
    hashes = stats["phash"].to_numpy()
    sources = np.array([source(n) for n, _, _ in pictures])
    sims = vectors @ vectors.T
    sims[sources[:, None] == sources[None, :]] = -1  # another picture: not one from the same source
    sims[:, ~structured] = -1
    nearest = sims.argmax(axis=1)
    parts = np.array(["held_out" if held_out(n) else "calibration" for n, _, _ in pictures])
    copies, of, categories = [], [], []
    for i in np.flatnonzero(structured)[::3]:
        for j, category in enumerate(("shift", "brightness", "jpeg", "crop")):
            copies.append(_decoded(Image.open(__import__("io").BytesIO(near_copy(images[i], category, i + j)))))
            of.append(i)
            categories.append(category)
    copy_vectors = model.embed([lambda im=im: im for im in copies])
    copy_hashes = np.array([image_stats(np.asarray(im)).phash for im in copies])
    of, categories = np.array(of), np.array(categories)
    copy_cos = np.einsum("ij,ij->i", copy_vectors, vectors[of])
    copy_ham = hamming_distance(copy_hashes, hashes[of])
    unrelated_cos = sims[np.arange(len(images)), nearest]
    unrelated_ham = hamming_distance(hashes, hashes[nearest])
    copy_found = _is_near(params, copy_cos, copy_ham)
    false_pair = _is_near(params, unrelated_cos, unrelated_ham) & structured
    print(f"\nduplicates ({len(images)} pictures, {len(copies)} near copies of a third of them; each picture's most "
          f"similar picture from another source as its hardest unrelated pair; efficientnet-lite0 at "
          f"near {params.near_cosine} + {params.near_phash_distance} bits, identical {params.identical_phash_distance} "
          f"bits, scene {params.scene_cosine}):")  # fmt: skip
    print("part | copies found by the near rule, per edit | lowest copy cosine | unrelated pairs the rule joins | "
          "highest unrelated cosine (margin to scene) | fewest bits between unrelated")  # fmt: skip
    for part in ("calibration", "held_out"):
        c, u = parts[of] == part, (parts == part) & structured
        per = {k: f"{int((copy_found & c & (categories == k)).sum())}/{int((c & (categories == k)).sum())}"
               for k in ("shift", "brightness", "jpeg", "crop")}  # fmt: skip
        low = np.flatnonzero(c)[np.argmin(copy_cos[c])]
        high = np.flatnonzero(u)[np.argmax(unrelated_cos[u])]
        joined_rows = np.flatnonzero(u & false_pair)
        joined = [f"{pictures[i][0]} ~ {pictures[nearest[i]][0]}" for i in joined_rows]
        by_rule = {
            "hash alone": int((unrelated_ham[joined_rows] <= params.identical_phash_distance).sum()),
            "embedding + hash": int(
                (
                    (unrelated_cos[joined_rows] >= params.near_cosine)
                    & (unrelated_ham[joined_rows] <= params.near_phash_distance)
                ).sum()
            ),
            "embedding alone (scene)": int((unrelated_cos[joined_rows] >= params.scene_cosine).sum()),
        }
        kinds = pd.Series([f"{pictures[i][1]}~{pictures[nearest[i]][1]}" for i in joined_rows]).value_counts().to_dict()
        examples = joined[:: max(1, len(joined) // 12)]
        print(f"  {part}: unrelated pairs joined, by rule {by_rule}, by kinds {kinds}; e.g. {examples}")
        print(f"{part} | {per} | {copy_cos[low]:.3f} ({categories[low]} of {pictures[of[low]][0]}) | "
              f"{len(joined)}/{int(u.sum())} {joined[:6]} | {unrelated_cos[high]:.3f} "
              f"({params.scene_cosine - unrelated_cos[high]:+.3f}: {pictures[high][0]} ~ {pictures[nearest[high]][0]}) "
              f"| {int(unrelated_ham[u].min())}")  # fmt: skip
    geometric_checks(params, pictures, images, stats, nearest, unrelated_cos, unrelated_ham, false_pair, parts,
                     copies, of, categories, copy_cos, copy_ham, copy_found)  # fmt: skip
    from tests.test_geometry import _rig  # the virtual rig of the tests: reference, rig partner, another pose

    rig, pose = {"calibration": [], "held_out": []}, {"calibration": [], "held_out": []}
    for (name, kind, image), part in zip(pictures, parts):
        if kind == "photo" and "#" not in name:
            scene = image.resize((1200, 900))
            reference = dense(_rig(scene, "reference"))
            rig[part].append(alignment(reference, dense(_rig(scene, "rig"))))
            pose[part].append(alignment(reference, dense(_rig(scene, "pose"))))
    print(f"\ndense alignment (threshold {ALIGNED_DETAIL}): part | rig pairs: lowest, share confirmed | "
          "other poses: highest, share confirmed")  # fmt: skip
    for part in ("calibration", "held_out"):
        r, q = np.array(rig[part]), np.array(pose[part])
        print(f"{part} | {r.min():.3f}, {np.mean(r >= ALIGNED_DETAIL):.2f} of {len(r)} | {q.max():.3f}, "
              f"{np.mean(q >= ALIGNED_DETAIL):.2f} of {len(q)}")  # fmt: skip


def geometric_checks(params, pictures, images, stats, nearest, unrelated_cos, unrelated_ham, false_pair, parts,
                     copies, of, categories, copy_cos, copy_ham, copy_found) -> None:  # fmt: skip
    """What the pipeline's geometric checks (``duplicates._verified``, ``_cluster_checked``) leave
    of the bare rule's joins: an edge on the embedding alone, and (since issue 31b) an edge on the
    hash between two page-like pictures, is dropped when local features contradict it; since
    issue 31's sixth pass, across a folder of stills (as this corpus lands) every join is checked."""
    from curation_assets.core.duplicates import _contradicted, page_like
    from curation_assets.core.geometry import inliers, keypoints

    pages = page_like(stats)
    copy_pages = page_like(pd.DataFrame([asdict(image_stats_of(im)) for im in copies])) & pages[of]
    points: dict[int, object] = {}

    def checked(image, key, other, other_key) -> int:
        for k, im in ((key, image), (other_key, other)):
            if k not in points:
                points[k] = keypoints(im)
        return inliers(points[key], points[other_key])

    def suspect(cos, ham, both_pages):  # the edges the pipeline checks and may drop
        agree = (cos >= params.near_cosine) & (ham <= params.near_phash_distance)
        on_embedding = ~agree & (ham > params.identical_phash_distance)
        on_page_hash = both_pages & (ham <= max(params.near_phash_distance, params.identical_phash_distance))
        return on_embedding, on_page_hash

    emb_u, page_u = suspect(unrelated_cos, unrelated_ham, pages & pages[nearest])
    emb_c, page_c = suspect(copy_cos, copy_ham, copy_pages)
    kept_u, kept_c = false_pair.copy(), copy_found.copy()
    for i in np.flatnonzero(false_pair):
        kept_u[i] = not _contradicted(checked(images[i], i, images[nearest[i]], int(nearest[i])), params)
    for c in np.flatnonzero(copy_found):
        kept_c[c] = not _contradicted(checked(copies[c], ("copy", c), images[of[c]], int(of[c])), params)
    still_u, still_c = kept_u.copy(), kept_c.copy()  # every join of a still checked
    kept_u, kept_c = false_pair & (kept_u | ~(emb_u | page_u)), copy_found & (kept_c | ~(emb_c | page_c))
    print("\nafter the geometric checks (old: the embedding-alone edge; new: also a hash edge between page-like "
          f"pictures, {pages.mean():.2f} of the corpus page-like; stills: every join): part | unrelated pairs "
          "joined: bare rule, old checks, new checks, stills | copies found: bare, old, new, stills (page-like "
          "copies kept, per edit)")  # fmt: skip
    for part in ("calibration", "held_out"):
        u, c = parts == part, parts[of] == part
        old_u = false_pair & ~(emb_u & ~kept_u)
        old_c = copy_found & ~(emb_c & ~kept_c)
        edits = ("shift", "brightness", "jpeg", "crop")
        per = {k: f"{int((kept_c & c & copy_pages & (categories == k)).sum())}/"
                  f"{int((c & copy_pages & (categories == k)).sum())}" for k in edits}  # fmt: skip
        print(f"{part} | {int((false_pair & u).sum())}, {int((old_u & u).sum())}, {int((kept_u & u).sum())}, "
              f"{int((still_u & u).sum())} | {int((copy_found & c).sum())}, {int((old_c & c).sum())}, "
              f"{int((kept_c & c).sum())}, {int((still_c & c).sum())} of {int(c.sum())} ({per})")  # fmt: skip
        lost = [f"{pictures[of[k]][0]}:{categories[k]}" for k in np.flatnonzero(copy_found & c & ~still_c)]
        print(f"  {part}: copies the check of every join drops: {len(lost)} {lost[:12]}")
        left = [f"{pictures[i][0]} ~ {pictures[nearest[i]][0]}" for i in np.flatnonzero(kept_u & u & page_u)]
        print(f"  {part}: page-like pairs the new check keeps: {len(left)} {left[:8]}")


def image_stats_of(image):
    from curation_assets.core.image_stats import image_stats

    return image_stats(np.asarray(image))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="only the first N pictures (a quick look)")
    parser.add_argument("--no-duplicates", action="store_true", help="image rules only (no embedding)")
    parser.add_argument("--no-image-rules", action="store_true", help="duplicates only")
    args = parser.parse_args()
    started = time.perf_counter()
    pictures = corpus(args.limit)
    kinds = pd.Series([k for _, k, _ in pictures]).value_counts().to_dict()
    held = sum(held_out(n) for n, _, _ in pictures)
    print(f"machine: {describe()}")
    print(f"corpus: {len(pictures)} real pictures {kinds}; {held} held out, never used to choose")
    rng = np.random.default_rng(0)
    if not args.no_image_rules:
        image_margins(image_rules(pictures, rng))
    if not args.no_duplicates:
        duplicate_margins(pictures, rng)
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
