import numpy as np
import pandas as pd

from curation_assets.core.duplicates import DuplicateParams, embedding_sources, find_duplicate_groups
from tests.helpers import frame_table


def _unit(rows):
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _random_unit(n, dim=16, seed=0):
    return _unit(np.random.default_rng(seed).normal(size=(n, dim)))


PICTURE = 0x0F0F_0F0F_0F0F_0F0F  # a hash with information in it: half its bits set, as any picture's


def _hashes(*flips: int) -> np.ndarray:
    """Hashes of pictures: ``PICTURE`` with these bits flipped (-1: its complement, 64 bits away)."""
    return np.array([~PICTURE if f == -1 else PICTURE ^ f for f in flips], dtype=np.int64)


def test_identical_pixels_form_one_exact_group_across_videos():
    frames = pd.concat(
        [frame_table(3, "v1", sha=["a", "b", "c"]), frame_table(2, "v2", sha=["x", "a"])], ignore_index=True
    )
    groups = find_duplicate_groups(frames, _random_unit(5)).set_index("frame_id")
    assert groups.loc["v1/000000", "group_id"] == groups.loc["v2/000001", "group_id"]
    assert groups.loc["v2/000001", "reason"] in ("exact", "representative")
    assert groups["group_id"].nunique() == 4


def test_consecutive_near_copies_group_temporally():
    vectors = _unit([[1, 0.01 * i, 0] for i in range(5)] + [[0, 0, 1]])
    phash = _hashes(0, 1, 3, 7, 15, -1)  # 0-4 bits apart, last far away
    groups = find_duplicate_groups(frame_table(6, phash=phash), vectors)
    assert groups["group_id"].iloc[:5].nunique() == 1
    assert groups["group_id"].iloc[5] != groups["group_id"].iloc[0]
    assert set(groups["reason"].iloc[:5]) <= {"temporal", "representative"}


def test_a_slow_pan_does_not_chain_into_one_group():
    angles = np.arange(30) * 0.1  # each step cos 0.995, ends 2.9 rad away from the start
    vectors = _unit(np.stack([np.cos(angles), np.sin(angles), np.zeros(30)], axis=1))
    params = DuplicateParams(near_cosine=0.95, near_phash_distance=64, identical_phash_distance=-1)
    groups = find_duplicate_groups(frame_table(30), vectors, params)
    by_id = dict(zip(groups["frame_id"], vectors))
    sim_to_rep = [float(by_id[f] @ by_id[g]) for f, g in zip(groups["frame_id"], groups["group_id"])]
    assert min(sim_to_rep) >= 0.95  # every member is near its representative
    assert groups["group_size"].max() <= 5
    assert groups["group_id"].nunique() >= 6


def test_near_copies_in_different_videos_join_one_group():
    base = _random_unit(4, seed=1)
    copy = _unit([base[2] + 0.01 * _random_unit(1, seed=2)[0]])
    v1 = frame_table(4, "v1")
    frames = pd.concat([v1, frame_table(1, "v2", phash=np.array([v1["phash"][2] ^ 0b111]))], ignore_index=True)
    groups = find_duplicate_groups(frames, np.vstack([base, copy])).set_index("frame_id")
    assert groups.loc["v2/000000", "group_id"] == groups.loc["v1/000002", "group_id"]
    assert "near" in set(groups.loc[["v2/000000", "v1/000002"], "reason"])
    assert groups["group_id"].nunique() == 4


def test_representative_is_the_sharpest_well_exposed_member():
    frames = frame_table(
        3, sha=["s", "s", "s"], sharpness=np.array([0.01, 0.5, 0.9]), brightness=np.array([0.5, 0.5, 0.02])
    )
    groups = find_duplicate_groups(frames, _random_unit(3))
    reps = groups[groups["is_representative"]]
    assert list(reps["frame_id"]) == ["v1/000001"]  # the sharper one is dark, so not chosen
    assert (groups["group_id"] == "v1/000001").all()
    assert np.isclose(reps["similarity"].iloc[0], 1.0)


def test_a_runs_anchor_is_labelled_with_its_group_not_unique():
    vectors = _unit([[1, 0.01 * i, 0] for i in range(5)])
    sharper_later = np.array([0.01, 0.01, 0.01, 0.01, 0.05])  # the anchor (frame 0) is not the representative
    groups = find_duplicate_groups(frame_table(5, sharpness=sharper_later, phash=_hashes(0, 0, 0, 0, 0)), vectors)
    assert groups["group_id"].nunique() == 1
    assert list(groups["reason"]) == ["temporal"] * 4 + ["representative"]


def test_every_frame_lands_in_exactly_one_group_with_one_representative():
    rng = np.random.default_rng(3)
    n = 200
    frames = frame_table(n, sha=[f"h{h}" for h in rng.integers(0, 150, n)], phash=rng.integers(0, 2**62, n))
    groups = find_duplicate_groups(frames, _random_unit(n, seed=4))
    assert groups["frame_id"].is_unique and len(groups) == n
    assert (groups.groupby("group_id")["is_representative"].sum() == 1).all()


def test_copies_of_the_last_embedded_frame_reuse_its_vector_and_drift_does_not():
    frames = frame_table(
        7,
        sha=["a", "a", "b", "c", "d", "e", "f"],
        phash=_hashes(0, 0, 0b1, 0b11, 0b111, 0b1111, -1),
    )
    # 0 embedded; 1 same pixels; 2, 3 within 2 bits of 0; 4 is 3 bits from 0: embedded;
    # 5 is 1 bit from 4; 6 is far from everything
    assert list(embedding_sources(frames, max_phash_distance=2)) == [0, 0, 0, 0, 4, 4, 6]


def test_reuse_never_crosses_videos():
    frames = pd.concat([frame_table(2, "v1", sha=["s", "s"]), frame_table(2, "v2", sha=["s", "s"])], ignore_index=True)
    assert list(embedding_sources(frames)) == [0, 0, 2, 2]


def test_a_new_leader_joins_the_existing_group_whose_representative_it_copies_and_never_chains():
    from curation_assets.core.duplicates import extend_groups, match_to_corpus

    previous = find_duplicate_groups(frame_table(2, "old", phash=_hashes(0, -1)), _unit([[1, 0, 0], [0, 1, 0]]))
    reps = pd.DataFrame({"frame_id": ["old/000000", "old/000001"], "phash": _hashes(0, -1)})
    rep_vectors = _unit([[1, 0, 0], [0, 1, 0]])
    new_vectors = _unit([[1, 0.05, 0], [0.6, 0.8, 0], [0, 0, 1]])  # a copy of rep 0; halfway; something new
    new = frame_table(3, "new", phash=_hashes(0b1, 0xFFFF_FFFF << 16, 0x00FF_00FF_00FF_00FF))
    new_groups = find_duplicate_groups(new, new_vectors)
    # the store found every old representative near every new leader
    match, cosine = match_to_corpus(new, new_vectors, reps, rep_vectors, np.array([[0, 1]] * 3))
    assert list(match) == [0, -1, -1] and cosine[0] > 0.99
    joins = {new_groups.at[0, "group_id"]: "old/000000"}
    merged = extend_groups(previous, new_groups, new_vectors, joins, {"old/000000": rep_vectors[0]}).set_index(
        "frame_id"
    )
    assert merged.loc["new/000000", "group_id"] == "old/000000" and merged.loc["new/000000", "reason"] == "near"
    assert merged.loc["old/000000", "reason"] == "representative" and merged.loc["old/000000", "group_size"] == 2
    assert merged.loc["new/000001", "group_id"] == "new/000001" and merged.loc["new/000001", "reason"] == "unique"
    assert merged["group_id"].nunique() == 4


def test_a_mirrored_copy_in_another_video_is_a_near_copy():
    a = frame_table(1, "v1", phash=np.array([0x0123456789ABCDEF]))
    b = frame_table(2, "v2", phash=np.array([0x7EDCBA9876543210, 0x0F0F0F0F0F0F0F0F]))
    a["phash_mirror"] = [0x7EDCBA9876543211]  # its mirror image hashes 1 bit from v2's first frame
    b["phash_mirror"] = [0x0123456789ABCDEE, 0x00FF00FF00FF00FF]
    vectors = _unit([[1, 0.1, 0], [1, 0.12, 0], [0, 0, 1]])
    groups = find_duplicate_groups(pd.concat([a, b], ignore_index=True), vectors).set_index("frame_id")
    assert groups.loc["v1/000000", "group_id"] == groups.loc["v2/000000", "group_id"]
    assert groups.loc["v2/000001", "reason"] == "unique"
    # without the mirror hashes the same frames stay apart
    plain = find_duplicate_groups(pd.concat([a, b], ignore_index=True).drop(columns="phash_mirror"), vectors)
    assert plain["group_id"].nunique() == 3


def _folder(frames: pd.DataFrame) -> pd.DataFrame:
    return frames.assign(timestamp_s=0.0)  # an image folder: no time, files in name order


def test_a_folder_of_frames_from_one_pan_is_one_group_however_many_the_neighbour_graph_holds():
    # 40 frames dumped from a slow pan, named in order, all near the first (cosine >= 0.93, hashes
    # agreeing): the k-NN graph (k=10) alone split them into 5 groups of at most 11
    vectors = _unit([[1, 0.01 * i, 0] for i in range(40)])
    params = DuplicateParams(near_cosine=0.9, near_phash_distance=64, identical_phash_distance=-1, neighbors=10)
    groups = find_duplicate_groups(_folder(frame_table(40, "dump")), vectors, params)
    assert groups["group_id"].nunique() == 1
    assert set(groups["reason"]) == {"near", "representative"}  # not "temporal": a folder has no time


def test_in_a_folder_the_embedding_alone_never_joins_neighbours_by_name():
    # two pages of text side by side: embeddings alike enough for the scene rule, hashes far
    # apart, local features disagreeing; consecutive video frames that alike are one scene
    vectors = _unit([[1, 0.3, 0], [1, 0.31, 0.05]])
    params = DuplicateParams(near_cosine=0.9995, scene_cosine=0.99, verify_cosine=0.5)
    as_video = find_duplicate_groups(frame_table(2, "cam"), vectors, params, verify=lambda a, b: 0)
    as_folder = find_duplicate_groups(_folder(frame_table(2, "pages")), vectors, params, verify=lambda a, b: 0)
    assert as_video["group_id"].nunique() == 1 and "temporal" in set(as_video["reason"])
    assert as_folder["group_id"].nunique() == 2


def _pictures(images):
    """A folder's frame table and real embeddings (the packaged model) for real pictures."""
    from dataclasses import asdict

    from curation_assets.core.embedder import Embedder
    from curation_assets.core.image_stats import image_stats

    rows = [
        {"frame_id": f"folder/{i:06d}", "video_id": "folder", "frame_index": i, "timestamp_s": 0.0,
         "width": im.width, "height": im.height, **asdict(image_stats(np.asarray(im.convert("RGB"))))}
        for i, im in enumerate(images)
    ]  # fmt: skip
    model = Embedder(batch_size=16)
    return pd.DataFrame(rows), model.embed([lambda im=im: im for im in images]), model.calibration


def _jpeg(image):
    import io

    from PIL import Image

    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def test_blank_pictures_join_only_blank_pictures_of_their_kind_and_brightness():
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(0)

    def flat(level, size, spread=0):  # a blank frame as a camera writes it: a level, a little sensor noise
        return _jpeg(Image.fromarray(rng.integers(level, level + spread + 1, (size[1], size[0], 3), dtype=np.uint8)))

    black = [flat(0, (320, 240)), flat(0, (640, 480), 5), flat(0, (1024, 768)), flat(0, (200, 200), 5)]
    white = [flat(255, (320, 240)), flat(250, (640, 480), 5), flat(255, (1024, 768)), flat(250, (200, 200), 5)]
    grey = [flat(128, (320, 240)), flat(126, (800, 600), 4)]
    photos = [Image.fromarray(getattr(skimage.data, n)()).convert("RGB") for n in ("chelsea", "brick", "coffee")]
    textured = [_jpeg(p.resize(size)) for p in photos for size in ((320, 240), (640, 480))]  # each at two sizes
    under, over = (np.asarray(getattr(skimage.data, n)(), np.float32) for n in ("astronaut", "rocket"))
    dark = [_jpeg(Image.fromarray((under * 0.06).astype(np.uint8)))]  # under-exposed: dark, but a picture
    bright = [_jpeg(Image.fromarray((255 - (255 - over) * 0.1).astype(np.uint8)))]  # washed out
    images = black + white + grey + textured + dark + bright
    kind = ["black"] * 4 + ["white"] * 4 + ["grey"] * 2 + [f"photo{i // 2}" for i in range(6)] + ["dark", "bright"]
    frames, vectors, calibration = _pictures(images)
    groups = find_duplicate_groups(frames, vectors, DuplicateParams.for_model(calibration))
    kinds_in_group = pd.Series(kind).groupby(groups["group_id"].to_numpy()).agg(set)
    mixed = kinds_in_group[kinds_in_group.map(len) > 1]
    assert mixed.empty, mixed.to_dict()  # no group mixes kinds
    assert groups["group_id"].iloc[10:16].nunique() == 3  # each photograph's two sizes: one group


def test_the_representative_is_not_an_outlier_when_a_member_is_not():
    import skimage.data
    from PIL import Image

    from curation_assets.core.outliers import score_outliers

    # a folder of equal-sized frames (two corners of twelve photographs), and one of them again
    # as a thumbnail: sharper at its own scale, but of a size nothing else in the folder has
    images = []
    for name in ("astronaut", "camera", "chelsea", "coffee", "rocket", "coins", "brick", "grass", "gravel", "moon",
                 "clock", "cell"):  # fmt: skip
        big = Image.fromarray(getattr(skimage.data, name)()).convert("RGB").resize((640, 480))
        images += [_jpeg(big.crop((0, 0, 320, 240))), _jpeg(big.crop((320, 240, 640, 480)))]
    images.append(images[5].resize((120, 90), Image.Resampling.LANCZOS))
    frames, vectors, calibration = _pictures(images)
    groups = find_duplicate_groups(frames, vectors, DuplicateParams.for_model(calibration))
    assert groups["group_size"].iloc[24] > 1  # the thumbnail is a copy among copies
    flagged = score_outliers(frames, groups, vectors).set_index("frame_id")["is_outlier"]
    reps = groups.loc[groups["is_representative"], "frame_id"]
    assert flagged["folder/000024"] and not flagged[reps].any()
