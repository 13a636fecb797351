"""Geometric verification on real pictures: the same scene from another view is confirmed,
look-alikes (two pages of text, two photographs) are not."""

import numpy as np
import pandas as pd
import skimage.data
from PIL import Image, ImageDraw, ImageFont

from curation_assets.core.duplicates import DuplicateParams, find_duplicate_groups
from curation_assets.core.embedder import Embedder
from curation_assets.core.geometry import inliers, keypoints
from curation_assets.core.image_stats import image_stats

ENOUGH = DuplicateParams().verify_inliers


def _reshot(name: str) -> tuple[Image.Image, Image.Image]:
    """Two shots of one scene: windows 12 % apart with a zoom, a small perspective and exposure change."""
    big = Image.fromarray(getattr(skimage.data, name)()).convert("RGB").resize((1024, 768))
    first = big.crop((100, 80, 740, 560))
    quad = (190, 100, 190, 530, 790, 550, 790, 80)
    second = big.transform((640, 480), Image.Transform.QUAD, quad, resample=Image.Resampling.BICUBIC)
    second = Image.fromarray(np.clip(np.asarray(second, np.float32) * 1.12, 0, 255).astype(np.uint8))
    return first, second


def _page(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    words = "frames cameras labels budget duplicate scene video select curation model store".split()
    page = Image.new("RGB", (640, 820), (246, 246, 246))
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(18)
    for line in range(30):
        draw.text((50, 40 + 25 * line), " ".join(rng.choice(words, 8)), fill=(20, 20, 20), font=font)
    return page


def test_the_same_scene_from_another_view_is_confirmed():
    left, right, _ = skimage.data.stereo_motorcycle()
    assert inliers(keypoints(Image.fromarray(left)), keypoints(Image.fromarray(right))) >= ENOUGH
    first, second = _reshot("astronaut")
    assert inliers(keypoints(first), keypoints(second)) >= ENOUGH


def test_look_alikes_are_not_confirmed():
    assert inliers(keypoints(_page(1)), keypoints(_page(2))) < ENOUGH / 2
    photos = [Image.fromarray(getattr(skimage.data, n)()) for n in ("coffee", "chelsea", "rocket")]
    assert max(inliers(keypoints(a), keypoints(b)) for a, b in zip(photos, photos[1:])) < ENOUGH / 2


def test_verification_joins_a_re_shot_scene_and_leaves_text_pages_apart():
    images = [*_reshot("coffee"), _page(1), _page(2), *(Image.fromarray(getattr(skimage.data, n)()).convert("RGB")
              for n in ("chelsea", "rocket", "coins", "camera"))]  # fmt: skip
    rgb = [np.asarray(im) for im in images]
    frames = pd.DataFrame(
        [
            {"frame_id": f"f/{i:06d}", "video_id": "f", "frame_index": i, "timestamp_s": 0.0, **image_stats(a).__dict__}
            for i, a in enumerate(rgb)
        ]  # fmt: skip
    )
    model = Embedder()
    vectors = model.embed([lambda im=im: im for im in images])
    params = DuplicateParams.for_model(model.calibration)
    points = [keypoints(im) for im in images]
    groups = find_duplicate_groups(frames, vectors, params, verify=lambda a, b: inliers(points[a], points[b]))
    group = dict(zip(range(len(images)), groups["group_id"]))
    assert group[0] == group[1]  # the re-shot scene
    assert group[2] != group[3]  # two different pages
    assert groups["group_id"].nunique() == len(images) - 1
