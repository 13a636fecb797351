import numpy as np

from curation_assets.core.image_stats import hamming_distance, image_stats


def _scene(seed=0, shape=(96, 128)):
    rng = np.random.default_rng(seed)
    img = np.zeros((*shape, 3), np.uint8)
    for _ in range(12):
        y, x = rng.integers(0, shape[0] - 20), rng.integers(0, shape[1] - 20)
        img[y : y + 20, x : x + 20] = rng.integers(0, 255, 3)
    return img


def test_identical_pixels_share_hashes_and_different_scenes_do_not():
    a, b = image_stats(_scene(0)), image_stats(_scene(0))
    c = image_stats(_scene(1))
    assert a.sha256 == b.sha256 and a.phash == b.phash
    assert a.sha256 != c.sha256
    assert hamming_distance(a.phash, c.phash) > 10


def test_perceptual_hash_survives_small_brightness_change():
    img = _scene(2)
    brighter = np.clip(img.astype(int) + 12, 0, 255).astype(np.uint8)
    assert hamming_distance(image_stats(img).phash, image_stats(brighter).phash) <= 4


def test_metrics_are_in_their_ranges_and_order_images_sensibly():
    sharp = image_stats(_scene(3))
    flat = image_stats(np.full((64, 64, 3), 128, np.uint8))
    noise = image_stats(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    dark = image_stats((_scene(3) * 0.03).astype(np.uint8))
    for s in (sharp, flat, noise, dark):
        assert 0 <= s.brightness <= 1 and 0 <= s.contrast <= 1 and s.sharpness >= 0 and 0 <= s.entropy <= 8
    assert flat.entropy == 0 and flat.sharpness == 0
    assert noise.entropy > 7.5 and noise.sharpness > sharp.sharpness
    assert dark.brightness < 0.05
    assert all(0 <= s.mode_share <= 1 and s.fine_detail >= 0 for s in (sharp, flat, noise, dark))
    assert flat.mode_share == 1 and noise.mode_share < 0.05  # one grey level, or every level alike
    # the pre-blur of fine_detail takes most of what pixel noise gave sharpness, and less of real edges
    assert noise.fine_detail / noise.sharpness < 0.5 * sharp.fine_detail / sharp.sharpness


def test_hamming_distance_broadcasts_over_arrays():
    hashes = np.array([0, -1, 0b1011], dtype=np.int64)
    assert list(hamming_distance(hashes, 0)) == [0, 64, 3]


def test_a_mirrored_copy_has_the_mirror_hash_of_the_original():
    scene = _scene(seed=4)
    original, flipped = image_stats(scene), image_stats(np.ascontiguousarray(scene[:, ::-1]))
    assert hamming_distance(original.phash, flipped.phash) > 12  # plain pHash tells them apart
    assert hamming_distance(original.phash, flipped.phash_mirror) <= 2
    assert hamming_distance(flipped.phash, original.phash_mirror) <= 2
