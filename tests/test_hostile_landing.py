"""Hostile landing zones (issue 35): what the command does with a root inside its landing zone,
malformed labels, unreadable folders, unreachable stores, a full disk, links and special
files, rotated and cut videos, and what it writes outside its root. Real files, real
processes, a real small filesystem."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import av
import dagster as dg
import numpy as np
import pandas as pd
import pytest

from curation_assets.cli import headless
from curation_assets.core.frames import VideoDecodeError, sample_frames
from curation_assets.core.ingest import source_labels
from curation_assets.core.label_formats import read_labeled
from curation_assets.core.layout import overlap_problem
from curation_assets.core.sources import archive_images, is_image
from curation_assets.demo.scenes import Scene, write_video
from curation_assets.deploy.topology import free_port
from resources import ObjectStoreResource
from tests.conftest import encoded, photo
from tests.helpers import tar_with

ROOT = Path(__file__).resolve().parents[1]


def _command(landing: Path | str, root: Path, summary: Path, cwd: Path = ROOT, timeout: int = 240, **env):
    """The headless command as a user runs it, in a process of its own."""
    environment = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "CURATION_QDRANT_PATH")}
    command = [sys.executable, "-m", "curation_assets", "run", "--landing", str(landing), "--root", str(root),
               "--summary-json", str(summary)]  # fmt: skip
    environment = {**environment, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout)


def _photos(folder: Path, *seeds: int, size=(96, 64)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        (folder / f"p{seed}.jpg").write_bytes(encoded(photo(seed, size=size)))


# -- 1: a root inside the landing zone --------------------------------------------------------
def test_a_root_inside_the_landing_zone_is_refused_at_once_naming_both(tmp_path):
    _photos(tmp_path / "land" / "cam", 1)
    summary = tmp_path / "summary.json"
    proc = _command(tmp_path / "land", tmp_path / "land" / "out", summary, timeout=120)
    assert proc.returncode == 2
    expected = f"the storage root {tmp_path / 'land' / 'out'} lies inside the landing zone {tmp_path / 'land'}"
    assert expected in proc.stderr
    [refused] = json.loads(summary.read_text())["stages"]
    assert refused["name"] == "start-up" and expected in refused["error"]
    assert not (tmp_path / "land" / "out").exists()  # nothing written, nothing ingested


@pytest.mark.parametrize(
    "root, landing, refused",
    [
        ("/data/curation", "/data/curation/landing", False),
        ("/data/curation", "/data/curation/landing/cam-a", False),
        ("/data/curation", "/data/photos", False),
        ("/data/curation", "/data/curation", True),
        ("/data/curation", "/data/curation/frames", True),
        ("/data/curation", "/data", True),
        ("s3://b/curation", "s3://b/curation/landing", False),
        ("s3://b/curation", "s3://b", True),
    ],
    ids=lambda v: str(v),
)
def test_only_the_roots_own_landing_folder_may_hold_the_landing_zone(root, landing, refused):
    assert (overlap_problem(root, landing) is not None) is refused
    if refused:  # the Dagster path (sensor, UI runs) refuses it too, with the same words
        with pytest.raises(ValueError, match="landing zone"):
            ObjectStoreResource(root=root, landing=landing).landing_store()


def test_a_vector_store_or_instance_inside_the_landing_zone_is_refused():
    problem = overlap_problem("/data/curation", "/data/land", DAGSTER_HOME="/data/land/.dagster")
    assert problem == (
        "DAGSTER_HOME /data/land/.dagster lies inside the landing zone /data/land: its files would be read as sources"
    )


# -- 2: COCO labels that are not what they claim ------------------------------------------
def _coco(images, annotations, categories=({"id": 1, "name": "person"},)) -> dict[str, bytes]:
    doc = {"images": list(images), "annotations": list(annotations), "categories": list(categories)}
    files = {"ds/annotations/instances_train.json": json.dumps(doc).encode()}  # NaN/Infinity as JSON writes them
    files.update({f"ds/train/{image['file_name']}": b"x" for image in images})
    return files


def _read(files: dict[str, bytes]):
    problems: list[str] = []
    entries = read_labeled("coco", "ds/", tuple(sorted(files)), files.__getitem__, is_image, problems)
    return entries, problems


def test_coco_boxes_that_are_not_finite_numbers_are_reported_and_skipped():
    images = [{"id": 1, "file_name": "a.jpg"}]
    bad = [[float("nan"), 1, 2, 3], [1, 2, float("inf"), 3], [1, 2, 3, float("-inf")], [1, 2, "3", 4], [0, 0, -5, 4]]
    anns = [{"image_id": 1, "category_id": 1, "bbox": box} for box in [*bad, [1, 2, 3, 4]]]
    [entry], problems = _read(_coco(images, anns))
    assert entry.annotations == (("person", 1.0, 2.0, 3.0, 4.0),)
    assert [p.split(": ", 1)[1][:24] for p in problems] == ["annotation row 0 has bbo", "annotation row 1 has bbo",
                                                           "annotation row 2 has bbo", "annotation row 3 has bbo",
                                                           "annotation row 4 has bbo"]  # fmt: skip
    assert "[NaN, 1, 2, 3]: not four finite numbers" in problems[0]


def test_coco_annotations_of_an_unknown_or_twice_listed_category_are_reported_and_skipped():
    images = [{"id": 1, "file_name": "a.jpg"}]
    categories = [{"id": 1, "name": "person"}, {"id": 2, "name": "cart"}, {"id": 2, "name": "forklift"}]
    anns = [{"image_id": 1, "category_id": c, "bbox": [1, 2, 3, 4]} for c in (1, 2, 9)]
    [entry], problems = _read(_coco(images, anns, categories))
    assert [a[0] for a in entry.annotations] == ["person"]
    assert problems == [
        "landing/ds/annotations/instances_train.json: category id 2 is listed twice ('cart', 'forklift'); "
        "its annotations are skipped",
        "landing/ds/annotations/instances_train.json: annotation row 1 has category_id 2, listed twice under "
        "different names; skipped",
        "landing/ds/annotations/instances_train.json: annotation row 2 has category_id 9, not in categories; skipped",
    ]


def test_boxes_of_images_left_out_for_a_shared_id_never_reach_source_labels():
    images = [{"id": 1, "file_name": "a.jpg"}, {"id": 1, "file_name": "b.jpg"}, {"id": 2, "file_name": "c.jpg"}]
    anns = [{"image_id": i, "category_id": 1, "bbox": [1, 2, 3, 4]} for i in (1, 2)]
    entries, problems = _read(_coco(images, anns))
    frames = pd.DataFrame({"frame_index": [0, 1, 2], "width": [96] * 3, "height": [64] * 3})
    labels = source_labels("ds", entries, frames)
    assert labels["frame_id"].tolist() == ["ds/000002"]  # only c.jpg's box
    assert np.isfinite(labels[["x", "y", "w", "h"]].to_numpy()).all()


# -- 3: a folder none of whose images can be read -----------------------------------------
def test_a_folder_whose_images_are_all_unreadable_fails_naming_its_files_and_causes(local_defs, instance):
    landing = local_defs.resources["object_store"].landing_store()
    landing.put_bytes("bad/a.jpg", b"not a picture")
    landing.put_bytes("bad/b.png", encoded(photo(1), "PNG")[:40])  # cut short
    landing.put_bytes("loose.jpg", b"")  # one unreadable file at the landing top
    outcomes = {o.name: o for o in headless.ingest_landing(local_defs, instance, log=lambda _: None)}
    assert outcomes["bad"].error.startswith("landing/bad/: none of its 2 image(s) is readable (bad/a.jpg: unreadable")
    assert "bad/b.png: unreadable image" in outcomes["bad"].error
    assert outcomes["landing-root"].error == "landing/: none of its 1 image(s) is readable (loose.jpg: empty file)"
    assert "raw_frames_table_valid" not in outcomes["bad"].error


# -- 4: the cause, not "Exceeded max_retries" ---------------------------------------------
def test_a_fault_that_outlasts_every_retry_is_summarised_by_its_cause(instance):
    from resources import VectorStoreResource

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there

    @dg.asset(retry_policy=dg.RetryPolicy(max_retries=1, delay=0))
    def embeddings(vector_store: VectorStoreResource):
        with vector_store.open() as store:
            store.ensure_collection("frames", "m", 8)

    result = dg.materialize([embeddings], instance=instance, resources={"vector_store": VectorStoreResource(url=url)},
                            raise_on_error=False)  # fmt: skip
    outcome = headless.outcome("embeddings", result)
    assert outcome.error.startswith(f"VectorStoreError: Qdrant at {url}: collection_exists failed")
    assert outcome.error.endswith("(exceeded max_retries of 1)")


# -- 7: an unreachable S3 landing zone ----------------------------------------------------
def test_an_unreachable_s3_landing_zone_writes_the_summary_with_its_cause(tmp_path):
    summary = tmp_path / "summary.json"
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    proc = _command("s3://bucket/landing", tmp_path / "root", summary, CURATION_S3_ENDPOINT_URL=endpoint,
                    AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="s", AWS_DEFAULT_REGION="us-east-1",
                    AWS_MAX_ATTEMPTS="1")  # fmt: skip
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    [ingest] = [s for s in json.loads(summary.read_text())["stages"] if s["name"] == "ingest"]
    assert "s3://bucket/landing/: list failed: Could not connect to the endpoint URL" in ingest["error"]


# -- 5: a full disk -------------------------------------------------------------------------
def _on_a_small_tmpfs(tmp_path: Path, size: str, **env) -> tuple[subprocess.CompletedProcess, dict, Path]:
    """The headless command with its root on a tmpfs of ``size``, mounted in a mount namespace
    of its own (it vanishes with the process). Returns (process, summary, root); the process's
    stdout ends with the temp files left in the root."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"]).returncode != 0:
        pytest.skip("needs unshare -m (root or user namespaces) to mount a small tmpfs")
    root, summary = tmp_path / "root", tmp_path / "summary.json"
    root.mkdir()
    command = [sys.executable, "-m", "curation_assets", "run", "--landing", str(tmp_path / "land"), "--root",
               str(root), "--summary-json", str(summary)]  # fmt: skip
    script = f"mount -t tmpfs -o size={size} tmpfs {root} && {' '.join(command)}; find {root} -name '.tmp-*'"
    environment = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "CURATION_QDRANT_PATH")}
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=ROOT, capture_output=True, text=True,
                          env={**environment, "PYTHONPATH": str(ROOT), **env}, timeout=240)  # fmt: skip
    assert summary.exists(), proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc, json.loads(summary.read_text()), root


def test_a_full_disk_names_the_file_being_written_and_the_root(tmp_path):
    _photos(tmp_path / "land" / "cam", *range(8), size=(640, 480))
    proc, summary, root = _on_a_small_tmpfs(tmp_path, "100k", CURATION_QDRANT_PATH=str(tmp_path / "q"))
    [video] = summary["videos"]
    assert "No space left on device writing " in video["error"]
    assert f"{root}/frames/cam/" in video["error"] and f"(storage root {root})" in video["error"]
    assert ".tmp-" not in proc.stdout  # no write in progress left behind


def test_a_disk_too_full_for_the_embedded_vector_store_fails_naming_it_instead_of_killing_the_process(tmp_path):
    _photos(tmp_path / "land" / "cam", 1, 2)  # frames and tables fit; the store's mapped files would not
    proc, summary, root = _on_a_small_tmpfs(tmp_path, "1m")
    [video] = summary["videos"]
    assert "No space left on device: " in video["error"] and f"embedded vector store at {root}/qdrant" in video["error"]
    assert "Bus error" not in proc.stderr


# -- 6, 8: links, pipes, devices, sockets --------------------------------------------------
def test_links_pipes_and_sockets_in_the_landing_zone_are_never_followed_and_each_is_reported(
    local_defs, instance, tmp_path
):
    landing = Path(local_defs.resources["object_store"].landing_store().root)
    _photos(landing / "cam", 1, 2)
    outside = tmp_path / "outside"
    _photos(outside, 7)  # readable, outside the landing zone
    (landing / "cam" / "p7.jpg").symlink_to(outside / "p7.jpg")
    (landing / "photos-elsewhere").symlink_to(outside, target_is_directory=True)
    os.mkfifo(landing / "pipe.mp4")  # reading it would wait forever
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(landing / "camera.sock"))
    try:
        outcomes = {o.name: o for o in headless.ingest_landing(local_defs, instance, log=lambda _: None)}
    finally:
        server.close()
    assert outcomes["cam"].success
    rows = local_defs.resources["object_store"].store().read_table("tables/raw_frames/cam.parquet")
    [link] = rows[rows["corrupt"]].itertuples()
    assert link.source_name == "cam/p7.jpg"
    assert link.error == f"{landing}/cam/p7.jpg: a symbolic link to a file ({outside}/p7.jpg): links are not followed"
    assert outcomes["photos-elsewhere"].error == (
        f"{landing}/photos-elsewhere: a symbolic link to a folder ({outside}): links are not followed"
    )
    assert outcomes["pipe.mp4"].error == f"{landing}/pipe.mp4: a named pipe (FIFO): not read"
    assert outcomes["camera.sock"].error == f"{landing}/camera.sock: a socket: not read"


def test_links_devices_and_pipes_inside_archives_are_reported_whatever_their_names(tmp_path):
    tar_path = tmp_path / "a.tar"
    specials = (
        ("fifo", tarfile.FIFOTYPE, ""),
        ("null", tarfile.CHRTYPE, ""),
        ("link.jpg", tarfile.SYMTYPE, "/etc/passwd"),
    )
    tar_with(tar_path, "ok.jpg", encoded(photo(1)), specials)
    assert [(m, e) for m, _, e in archive_images(tar_path, "a.tar")] == [
        ("fifo", "a named pipe (FIFO) in the archive: not read"),
        ("link.jpg", "a link to '/etc/passwd' in the archive: links are not followed"),
        ("null", "a character device in the archive: not read"),
        ("ok.jpg", None),
    ]
    zip_path = tmp_path / "a.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        link = zipfile.ZipInfo("link.jpg")
        link.external_attr = 0o120777 << 16  # how zip -y stores a symbolic link: its target as the content
        archive.writestr(link, "/etc/passwd")
    assert list(archive_images(zip_path, "a.zip")) == [
        ("link.jpg", b"", "a symbolic link in the archive: links are not followed")
    ]


# -- 11: nothing written outside the root and CURATION_CACHE ------------------------------
def test_a_run_writes_nothing_outside_its_root_and_cache(tmp_path):
    _photos(tmp_path / "land" / "cam", 1, 2)
    home, work, temp = tmp_path / "home", tmp_path / "work", tmp_path / "temp"
    for folder in (home, work, temp):
        folder.mkdir()
    cache = os.environ.get("CURATION_CACHE") or str(Path("~/.cache/curation").expanduser())  # the model's export
    proc = _command(tmp_path / "land", tmp_path / "root", tmp_path / "summary.json", cwd=work, HOME=str(home),
                    TMPDIR=str(temp), CURATION_CACHE=cache)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    left = [str(p.relative_to(tmp_path)) for folder in (home, work, temp) for p in folder.rglob("*")]
    assert left == []  # e.g. onnxruntime's telemetry under ~/.cache/Microsoft: off


# -- 9: rotation --------------------------------------------------------------------------
@pytest.mark.parametrize("degrees, white_rows", [(90, "bottom"), (-90, "top")], ids=["90 ccw", "90 cw (phones)"])
def test_a_video_with_a_display_rotation_is_stored_as_a_player_shows_it(tmp_path, degrees, white_rows):
    path = tmp_path / "portrait.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        stream.set_display_rotation(degrees)
        image = np.zeros((32, 64, 3), np.uint8)
        image[:, :16] = 255  # the stored picture's left quarter is white
        for _ in range(5):
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    first = next(sample_frames(path, name="portrait.mp4")).rgb
    assert first.shape == (64, 32, 3)  # upright: taller than wide
    white, black = (first[48:], first[:16]) if white_rows == "bottom" else (first[:16], first[48:])
    assert white.mean() > 200 and black.mean() < 50


# -- 10: an MP4 cut before its index -----------------------------------------------------
def test_an_mp4_cut_before_its_index_says_precisely_why_no_frame_survives(tmp_path):
    scene = Scene("cam/cut.mp4", seed=3, duration_s=3.0, width=96, height=64, fps=10)
    whole = tmp_path / "whole.mp4"
    write_video(scene, whole)  # the index ('moov') is written last, as cameras do
    data = whole.read_bytes()
    assert data.index(b"moov") > data.index(b"mdat")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoDecodeError) as failure:
        next(sample_frames(cut, name="landing/cam/cut.mp4"))
    message = str(failure.value)
    assert message.startswith("landing/cam/cut.mp4: not a readable video (an MP4 cut short: its media data declares ")
    assert f"but the file ends at {len(data) // 2}, and its index ('moov')" in message
    assert "-movflags +faststart" in message


def _h264_mp4(path: Path, repeat_headers: bool) -> bytes:
    """40 frames of rising grey, H.264 in MP4 with the index last; with ``repeat_headers`` the
    encoder repeats its parameter sets before each keyframe, as many cameras do."""
    options = {"x264-params": "keyint=10" + (":repeat-headers=1" if repeat_headers else "")}
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=10, options=options)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for i in range(40):
            frame = av.VideoFrame.from_ndarray(np.full((64, 96, 3), i * 6, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path.read_bytes()


def test_an_mp4_cut_before_its_index_keeps_the_frames_its_own_parameter_sets_decode(tmp_path):
    data = _h264_mp4(tmp_path / "whole.mp4", repeat_headers=True)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    damage: list[str] = []
    frames = list(sample_frames(cut, name="landing/cam/cut.mp4", sample_fps=None, on_damage=damage.append))
    assert 10 <= len(frames) < 40  # the first half, in display order, none after the cut
    grey = [f.rgb.mean() for f in frames]
    assert all(a < b for a, b in zip(grey, grey[1:]))  # display order: each frame brighter, none twice
    assert frames[-1].timestamp_s == pytest.approx((len(frames) - 1) / 10)  # the stream's own 10 frames/s
    at = data.index(b"mdat")
    declared = int.from_bytes(data[at - 4 : at], "big") - 8  # the media data box's size, less its header
    assert damage == [
        f"landing/cam/cut.mp4: an MP4 cut short: its media data declares {declared} bytes "
        f"but the file ends at {len(data) // 2}, and its index ('moov'), written after it, is missing; frames "
        "recovered by scanning its h264 data (timestamps assume 10 frames/s)"
    ]


def test_an_mp4_cut_before_its_index_without_parameter_sets_of_its_own_says_so(tmp_path):
    data = _h264_mp4(tmp_path / "whole.mp4", repeat_headers=False)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoDecodeError, match=r"carries no H\.264/HEVC parameter sets of its own \(they are kept in"):
        next(sample_frames(cut, name="landing/cam/cut.mp4", on_damage=lambda _: None))


def test_voc_and_ground_truth_boxes_that_are_not_finite_are_reported_and_skipped():
    voc = {"ds/JPEGImages/a.jpg": b"x", "ds/Annotations/a.xml": (
        b"<annotation><filename>a.jpg</filename>"
        b"<object><name>cart</name><bndbox><xmin>nan</xmin><ymin>1</ymin><xmax>5</xmax><ymax>6</ymax></bndbox></object>"
        b"<object><name>cart</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>inf</xmax><ymax>6</ymax></bndbox></object>"
        b"<object><name>cart</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>6</ymax></bndbox></object>"
        b"</annotation>")}  # fmt: skip
    problems: list[str] = []
    [entry] = read_labeled("voc", "ds/", tuple(sorted(voc)), voc.__getitem__, is_image, problems)
    assert entry.annotations == (("cart", 1.0, 1.0, 4.0, 5.0),)
    malformed = "has no name or a malformed <bndbox>; skipped"
    assert [p.split(": ", 1)[1] for p in problems] == [f"object 0 {malformed}", f"object 1 {malformed}"]
    meta = {"type": "groundtruth/object-detection", "class-map": {"0": "cart"}}
    line = {"source-ref": "s3://b/a.jpg", "job": {"annotations": [{"class_id": 0, "left": float("nan"), "top": 1,
            "width": 2, "height": 3}]}, "job-metadata": meta}  # fmt: skip
    gt = {"ds/output.manifest": json.dumps(line).encode(), "ds/a.jpg": b"x"}
    problems = []
    read_labeled("groundtruth", "ds/", tuple(sorted(gt)), gt.__getitem__, is_image, problems)
    assert problems[0].startswith("landing/ds/output.manifest:1: not a Ground Truth output line (ValueError: box [nan")
