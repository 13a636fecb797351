import pytest

from curation_assets.core.ids import camera_id_for, frame_id_for, point_id_for, video_id_for, video_id_of


def test_plain_keys_stay_readable():
    assert video_id_for("cam-a/shelf.mp4") == "cam-a__shelf.mp4"


@pytest.mark.parametrize(
    "key",
    ["cam a/shelf 1.mp4", "../../etc/passwd", "/abs/path.mp4", "cam,a/ünïcode.mp4", "x" * 1000 + ".mp4"],
    ids=["spaces", "parent traversal", "absolute path", "comma and unicode", "1000 characters"],
)
def test_hostile_keys_become_safe_bounded_partition_keys(key):
    video_id = video_id_for(key)
    assert "/" not in video_id and " " not in video_id and "," not in video_id
    assert len(video_id) <= 120
    assert video_id == video_id_for(key)  # stable


def test_different_keys_that_sanitise_alike_do_not_collide():
    assert video_id_for("cam a/x.mp4") != video_id_for("cam_a/x.mp4")
    assert video_id_for("cam a/x.mp4") != video_id_for("cam-a/x.mp4")


def test_camera_comes_from_the_first_folder():
    assert camera_id_for("cam-b/day1/v.mp4") == "cam-b"
    assert camera_id_for("v.mp4") == "default"


def test_point_ids_are_deterministic_uuids_per_frame():
    a = point_id_for(frame_id_for("v1", 3))
    assert a == point_id_for("v1/000003")
    assert a != point_id_for(frame_id_for("v2", 3))


def test_a_frame_id_names_its_source_even_when_the_source_id_is_hashed():
    source = video_id_for("cam a/clip 1.mp4")  # unsafe characters: the id carries a hash
    assert video_id_of(frame_id_for(source, 12)) == source
    assert video_id_of(frame_id_for("landing-root", 0)) == "landing-root"
