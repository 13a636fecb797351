import pytest

from curation_assets.core.frames import VideoDecodeError, sample_frames
from tests.conftest import SCENE_A


def test_sampling_by_fps_keeps_one_frame_per_interval(video_dir):
    frames = list(sample_frames(video_dir / SCENE_A.name, name="a", sample_fps=1.0))
    assert len(frames) == int(SCENE_A.duration_s)
    assert [round(f.timestamp_s) for f in frames] == list(range(int(SCENE_A.duration_s)))
    assert frames[0].rgb.shape == (SCENE_A.height, SCENE_A.width, 3)


def test_sampling_every_n_frames_uses_stream_indexes(video_dir):
    frames = list(sample_frames(video_dir / SCENE_A.name, name="a", sample_fps=None, every_n=7))
    assert [f.index for f in frames] == list(range(0, int(SCENE_A.duration_s * SCENE_A.fps), 7))


def test_max_frames_stops_early(video_dir):
    assert len(list(sample_frames(video_dir / SCENE_A.name, name="a", sample_fps=None, max_frames=3))) == 3


@pytest.mark.parametrize(
    ("name", "cause"),
    [("cam-b/broken.mp4", "not a readable video"), ("cam-a/notes.txt", "not a readable video")],
    ids=["truncated video", "text file"],
)
def test_unreadable_inputs_raise_an_error_naming_the_file(video_dir, name, cause):
    with pytest.raises(VideoDecodeError, match=f"landing/{name}: {cause}"):
        list(sample_frames(video_dir / name, name=f"landing/{name}"))


def test_empty_file_is_rejected(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoDecodeError, match="empty.mp4"):
        list(sample_frames(tmp_path / "empty.mp4", name="empty.mp4"))


def test_resolution_above_the_limit_is_rejected_before_decoding(video_dir):
    with pytest.raises(VideoDecodeError, match="exceeds the limit"):
        list(sample_frames(video_dir / SCENE_A.name, name="a", max_pixels=100 * 100))


def test_low_sampling_rates_seek_between_samples_and_keep_the_same_frames(tmp_path):
    import numpy as np

    from curation_assets.demo.scenes import Scene, default_events, write_video

    path = tmp_path / "long.mp4"
    write_video(Scene("long.mp4", seed=3, duration_s=60, events=default_events(60), fps=10), path)
    streamed = list(sample_frames(path, name="long.mp4", sample_fps=0.1, seek_gap_s=float("inf")))
    seeking = list(sample_frames(path, name="long.mp4", sample_fps=0.1, seek_gap_s=5.0))
    assert [(f.index, f.timestamp_s) for f in seeking] == [(f.index, f.timestamp_s) for f in streamed]
    assert [f.index for f in seeking] == list(range(0, 600, 100))
    assert all(np.array_equal(a.rgb, b.rgb) for a, b in zip(seeking, streamed))
