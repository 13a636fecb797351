"""Geometric verification on real pictures: the same scene from another view is confirmed,
look-alikes (two pages of text, two photographs) are not."""

import functools
import io
import itertools

import numpy as np
import pandas as pd
import skimage.data
from PIL import Image, ImageDraw, ImageFont

from curation_assets.core.duplicates import DuplicateParams, find_duplicate_groups
from curation_assets.core.embedder import Embedder
from curation_assets.core.geometry import dense, inliers, keypoints
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


def _rig(scene: Image.Image, pose: str) -> Image.Image:
    """A virtual camera's view of ``scene`` (640x480): the reference camera, its rig partner
    (the same instant, a small baseline: shifted, a hair of perspective) or another pose of
    the camera (turned, tilted and moved)."""
    import cv2

    shift, turn, tilt, scale = {"reference": ((0, 0), 0.0, 0.0, 0.8), "rig": ((-25, 2), 0.0, 2e-5, 0.8),
                                "pose": ((60, -40), 0.35, 3e-4, 0.7)}[pose]  # fmt: skip
    c, s = np.cos(turn), np.sin(turn)
    camera = np.array([[scale * c, -scale * s, shift[0]], [scale * s, scale * c, shift[1]], [tilt, 0, 1]])
    H = camera @ np.array([[1, 0, -280], [0, 1, -200], [0, 0, 1]], dtype=np.float64)
    view = cv2.warpPerspective(np.asarray(scene), H, (640, 480), borderMode=cv2.BORDER_REFLECT).astype(np.float32)
    rng = np.random.default_rng(len(pose))  # each camera's own sensor noise and exposure
    view = view * rng.uniform(0.9, 1.1) + rng.normal(0, 4, view.shape)
    return Image.fromarray(np.clip(view, 0, 255).astype(np.uint8))


def _chessboard_on_a_table() -> Image.Image:
    """A calibration board filling most of the view, on a real photograph's table."""
    squares = (np.indices((14, 14)).sum(0) % 2 * 255).astype(np.uint8)
    scene = Image.fromarray(skimage.data.coffee()).convert("RGB").resize((1200, 900))
    scene.paste(Image.fromarray(np.kron(squares, np.ones((55, 55), np.uint8))).convert("RGB"), (215, 65))
    return scene


def _brick_wall() -> Image.Image:
    """A real photograph of a repetitive pattern: a brick wall."""
    return Image.fromarray(skimage.data.brick()).convert("RGB").resize((1200, 900))


def _shelf() -> Image.Image:
    """A store shelf: rows of one product (a real photograph) on planks."""
    from PIL import ImageDraw

    product = Image.fromarray(skimage.data.coffee()).convert("RGB").resize((90, 120))
    scene = Image.new("RGB", (1200, 900), (200, 200, 205))
    draw = ImageDraw.Draw(scene)
    for row in range(6):
        y = 20 + row * 145
        for column in range(12):
            scene.paste(product, (15 + column * 98, y))
        draw.rectangle([0, y + 122, 1200, y + 140], fill=(90, 70, 50))
    return scene


def test_two_cameras_of_a_rig_on_a_repetitive_pattern_are_confirmed():
    for scene in (_chessboard_on_a_table(), _brick_wall(), _shelf()):
        left, right = keypoints(_rig(scene, "reference")), keypoints(_rig(scene, "rig"))
        assert inliers(left, right) >= ENOUGH


def test_a_calibration_board_or_a_shelf_seen_from_another_pose_is_not_confirmed():
    for scene in (_chessboard_on_a_table(), _shelf()):
        reference, other = keypoints(_rig(scene, "reference")), keypoints(_rig(scene, "pose"))
        assert inliers(reference, other) < ENOUGH


def test_two_pages_of_one_layout_do_not_align():
    from curation_assets.core.geometry import ALIGNED_DETAIL, alignment, dense

    assert alignment(dense(_page(1)), dense(_page(2))) < ALIGNED_DETAIL


def _grouped_as_one_folder(images: list[Image.Image]) -> pd.DataFrame:
    """The images' duplicate groups, as frames of one folder in this order: real stats, real
    embeddings from the packaged model, keypoint verification."""
    frames = pd.DataFrame(
        [
            {"frame_id": f"f/{i:06d}", "video_id": "f", "frame_index": i, "timestamp_s": 0.0, **image_stats(a).__dict__}
            for i, a in enumerate(np.asarray(im) for im in images)
        ]  # fmt: skip
    )
    model = Embedder()
    vectors = model.embed([lambda im=im: im for im in images])
    points = [keypoints(im) for im in images]
    params = DuplicateParams.for_model(model.calibration)
    groups = find_duplicate_groups(frames, vectors, params, verify=lambda a, b: inliers(points[a], points[b]))
    return groups


def test_a_rig_pair_of_a_board_is_one_group_and_another_pose_of_it_is_not():
    board = _chessboard_on_a_table()
    images = [_rig(board, "reference"), _rig(board, "rig"), _rig(board, "pose")] + [
        Image.fromarray(getattr(skimage.data, n)()).convert("RGB") for n in ("chelsea", "rocket", "coins", "camera")
    ]
    groups = _grouped_as_one_folder(images)
    assert groups["group_id"].iloc[0] == groups["group_id"].iloc[1]
    assert groups["group_id"].iloc[2] != groups["group_id"].iloc[0]


def test_two_poses_of_a_board_held_in_one_room_stay_apart_in_a_folder_though_embedding_and_hash_call_them_an_edit():
    """A calibration session's poses 1 and 3 (bench/rig_data.py's session 5, one camera): the room
    and the person are the same, the board turned and moved; cosine 0.95, hashes 10 bits apart
    (the near rule's edit), while keypoints agree on the room only. A photograph sits between
    them by name, so only the grouping across the folder can join them."""
    from bench.rig_data import session

    poses = list(itertools.islice(session(5), 3))
    first, third = (poses[i][1].convert("RGB") for i in (0, 2))
    groups = _grouped_as_one_folder([first, Image.fromarray(skimage.data.chelsea()), third])
    assert groups["group_id"].iloc[0] != groups["group_id"].iloc[2]


def _page_of_one_layout(seed: int) -> Image.Image:
    """A page of one template (bench/quality_data.py's DejaVu serif, same margins, size and line
    count), different words: its 32x32 hash sees the layout, the embedding finds it alike."""
    from bench.quality_data import FONTS, LOREM

    rng = np.random.default_rng(seed)
    page = Image.new("L", (850, 1100), 246)
    draw = ImageDraw.Draw(page)
    font = ImageFont.truetype(str(FONTS / "DejaVuSerif.ttf"), 20)
    for line in range(28):
        draw.text((90, 120 + 32 * line), " ".join(LOREM[i] for i in rng.integers(0, len(LOREM), 9)), fill=25, font=font)
    return page.convert("RGB")


def _copies(page: Image.Image) -> list[Image.Image]:
    """The near copies the quality benches plant: JPEG q60, ±10 % brightness, a 3-px shift, a 5 % crop, a flip."""
    import io

    buffer = io.BytesIO()
    page.save(buffer, format="JPEG", quality=60)
    grey = np.asarray(page, np.float32)
    w, h = page.size
    return [
        Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"),
        Image.fromarray(np.clip(grey * 1.1, 0, 255).astype(np.uint8)),
        Image.fromarray(np.clip(grey * 0.9, 0, 255).astype(np.uint8)),
        page.transform(page.size, Image.Transform.AFFINE, (1, 0, 3, 0, 1, 3), fillcolor=(246, 246, 246)),
        page.crop((int(0.025 * w), int(0.025 * h), int(0.975 * w), int(0.975 * h))).resize(page.size),
        page.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    ]


def test_pages_of_one_layout_stay_apart_in_a_folder_and_their_copies_join():
    pages = [_page_of_one_layout(seed) for seed in range(6)]
    images = [pages[0], *_copies(pages[0]), *pages[1:]]
    groups = _grouped_as_one_folder(images)
    group = groups["group_id"].to_numpy()
    assert (group[:7] == group[0]).all()  # the page and its six copies
    assert len(set(group[7:]) | {group[0]}) == 6  # five other pages: each its own group


@functools.cache
def _rig_pictures() -> dict[str, tuple[Image.Image, Image.Image]]:
    """The first eight scenes of bench/rig_data.py's calibration part: pinhole cameras, real photographs."""
    from bench.rig_data import pairs

    return {name: (first, second) for name, _, first, second, _ in itertools.islice(pairs(False, 8), 16)}


def test_two_cameras_of_a_rig_with_parallax_on_a_chessboard_are_confirmed():
    # a board 0.5-1.5 m away shifts by its own disparity, the room behind by another: ORB finds 27 agreeing
    # matches (the board's corners all look alike) and no single warp lines up both; each part is found
    left, right = _rig_pictures()["stereo_05_chessboard"]
    assert inliers(keypoints(left), keypoints(right)) >= ENOUGH


def test_a_shelf_held_in_another_pose_in_the_same_room_is_contradicted_though_the_room_matches():
    # one camera, the shelf turned and moved: ORB's 183 agreeing matches are the room's; the shelf is found nowhere
    first, second = _rig_pictures()["pose_07_shelf"]
    assert inliers(keypoints(first), keypoints(second)) == 0


def test_a_zoomed_crop_of_a_photograph_is_covered_once_placed_by_its_keypoints():
    from curation_assets.core.geometry import COVERED, _matches, covered

    photo = Image.fromarray(skimage.data.astronaut())
    crop = photo.crop((26, 26, 486, 486)).resize((512, 512))  # 5 % off each side: a 10 % zoom
    a, b = keypoints(photo), keypoints(crop)
    assert covered(a.grey, b.grey) < COVERED <= covered(a.grey, b.grey, _matches(a, b)[1])


def _matched_to_a_stored_page(new: Image.Image) -> int:
    """Incremental matching of ``new`` against one stored page of a layout (real stats,
    embeddings and keypoints): the stored row it joins, or -1."""
    from curation_assets.core.duplicates import match_to_corpus

    stored = _page_of_one_layout(1)
    stats = [image_stats(np.asarray(im)).__dict__ for im in (new, stored)]
    model = Embedder()
    vectors = model.embed([lambda im=im: im for im in (new, stored)])
    leaders = pd.DataFrame([{"frame_id": "new/0", **stats[0]}])
    reps = pd.DataFrame([{"frame_id": "old/0", **{k: stats[1][k] for k in ("phash", "brightness", "contrast")}}])
    points = [keypoints(new), keypoints(stored)]
    params = DuplicateParams.for_model(model.calibration)
    match, _ = match_to_corpus(leaders, vectors[:1], reps, vectors[1:], np.array([[0]]), params,
                               verify=lambda leader, rep: inliers(points[0], points[1 + rep]))  # fmt: skip
    return int(match[0])


def test_a_new_page_of_one_layout_does_not_join_a_stored_page_that_geometry_contradicts():
    assert _matched_to_a_stored_page(_page_of_one_layout(2)) == -1


def test_a_new_copy_of_a_stored_page_joins_it_with_the_geometric_check():
    buffer = io.BytesIO()
    _page_of_one_layout(1).save(buffer, format="JPEG", quality=60)
    assert _matched_to_a_stored_page(Image.open(buffer).convert("RGB")) == 0


def test_keypoints_hold_the_dense_picture_in_8_bits_and_give_back_its_exact_float_values():
    photo = Image.fromarray(skimage.data.astronaut()).resize((768, 576))
    held = keypoints(photo)
    assert held.luma.dtype == np.uint8  # a quarter of the float32 picture: a rebuild's verifier keeps thousands
    assert np.array_equal(held.grey, dense(photo)) and held.grey.dtype == np.float32


def test_looking_for_parts_near_their_place_first_finds_what_the_whole_reach_finds(monkeypatch):
    # a rig pair's board parts sit 20-100 px from their place (parallax), the room's within a pixel or two:
    # the near look must not change which parts count as found, only how soon
    from curation_assets.core import geometry

    left, right = _rig_pictures()["stereo_05_chessboard"]
    a, b = geometry.dense(left), geometry.dense(right)
    near_first = geometry.covered(a, b)
    monkeypatch.setattr(geometry, "NEAR", 0)  # a one-position look: nearly every part goes to the wide search
    assert geometry.covered(a, b) == near_first > 0


def _on_a_blank_page(name: str) -> Image.Image:
    """A scikit-image picture shrunk to 200 px and centred on a white 1024 x 768 page (a logo on a
    slide): every such page hashes like any other, the picture being a small blob at its centre."""
    picture = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
    picture.thumbnail((200, 200))
    page = Image.new("RGB", (1024, 768), "white")
    page.paste(picture, ((1024 - picture.width) // 2, (768 - picture.height) // 2))
    return page


def test_pictures_centred_small_on_blank_pages_stay_apart_though_their_hashes_match():
    # logo~camera and logo~moon hash within 2 bits, logo~clock and camera~horse mirrored; too few keypoints to judge
    images = [_on_a_blank_page(name) for name in ("logo", "camera", "moon", "clock", "horse")]
    assert _grouped_as_one_folder(images)["group_id"].nunique() == len(images)


def test_the_near_copies_of_a_picture_centred_on_a_blank_page_join_it():
    page = _on_a_blank_page("logo")
    images = [page, *_copies(page), _on_a_blank_page("camera")]
    group = _grouped_as_one_folder(images)["group_id"].to_numpy()
    assert (group[:7] == group[0]).all()  # the page and its six copies
    assert group[7] != group[0]
