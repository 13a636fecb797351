"""Similarity search over ingested frames (the ``corpus`` fixture: real photographs and a real
video, the packaged model, the embedded Qdrant store), the headless command and the Launchpad job."""

import io
import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from PIL import Image

from curation_assets.core import layout
from curation_assets.core.embedder import EmbedderError
from curation_assets.core.ids import video_id_for
from curation_assets.core.search import SearchError
from curation_assets.defs.curation import read_groups, read_outliers
from curation_assets.defs.search import SearchConfig, search
from resources import EmbedderResource
from tests.conftest import CORPUS_FOLDER as FOLDER
from tests.conftest import CORPUS_PHOTOS as PHOTOS
from tests.conftest import make_resources, shifted


def _search(resources, **config):
    return search(SearchConfig(**config), resources["object_store"], resources["embedder"], resources["vector_store"])


def _photo_frame(index: int) -> str:
    """Frame id of p{index} (files are read in name order, the copy last)."""
    return f"{video_id_for(FOLDER + '/')}/{index:06d}"


def test_an_image_finds_the_stored_photo_it_copies_first(corpus, tmp_path):
    _, _, resources, _ = corpus
    query = tmp_path / "query.png"
    shifted(PHOTOS[7]).save(query)
    hits = _search(resources, image=str(query), top=5).hits
    assert hits.loc[0, "frame_id"] == _photo_frame(7)
    assert list(hits["rank"]) == [1, 2, 3, 4, 5] and hits["score"].is_monotonic_decreasing
    assert hits.loc[0, "score"] > 0.9 > hits.loc[1, "score"]


def test_a_stored_frame_finds_its_planted_copy_first_and_not_itself(corpus):
    _, _, resources, _ = corpus
    hits = _search(resources, frame=_photo_frame(3), top=3).hits
    assert _photo_frame(3) not in set(hits["frame_id"])
    assert hits.loc[0, "frame_id"] == _photo_frame(10)  # p99-copy-of-p03, the eleventh file


def test_filters_leave_out_what_they_should(corpus):
    _, _, resources, tmp = corpus
    store = resources["object_store"].store()
    video = video_id_for("cam-b/shelf.mp4")
    query = {"frame": store.read_table(layout.table_key("raw_frames", video))["frame_id"][4], "top": 200}
    everything = _search(resources, **query).hits
    assert set(everything["camera_id"]) == {"cam-a", "cam-b"}

    only_b = _search(resources, **query, cameras=["cam-b"]).hits
    assert set(only_b["camera_id"]) == {"cam-b"} and len(only_b) == (everything["camera_id"] == "cam-b").sum()
    window = _search(resources, **query, videos=[video], time_from_s=2.0, time_to_s=4.0).hits
    assert len(window) and window["timestamp_s"].between(2.0, 4.0).all()

    groups = read_groups(store)
    kept = _search(resources, **query, exclude_duplicates=True).hits
    copies = set(groups.loc[~groups["is_representative"], "frame_id"])
    assert copies and not copies & set(kept["frame_id"])
    assert len(kept) == len(everything) - len(copies - {query["frame"]})

    flagged = read_outliers(store).query("is_outlier")["frame_id"]
    clean = _search(resources, **query, exclude_outliers=True).hits
    assert len(flagged) and not set(flagged) & set(clean["frame_id"])

    with pytest.raises(SearchError, match="no frames in split 'val'"):
        _search(resources, **query, split="val")


def test_exclusions_filter_on_the_curation_payload_in_the_store(corpus):
    """--exclude-outliers / --exclude-duplicates ask the store for points whose payload is not
    flagged / not a group's member (inside the k-NN query); no curation table decides."""
    _, _, resources, _ = corpus
    store = resources["object_store"].store()
    video = video_id_for("cam-b/shelf.mp4")
    query = {"frame": store.read_table(layout.table_key("raw_frames", video))["frame_id"][4], "top": 200}
    groups, flags = read_groups(store).set_index("frame_id"), read_outliers(store).set_index("frame_id")
    hits = _search(resources, **query).hits["frame_id"]
    marked = next(f for f in hits if groups.loc[f, "is_representative"] and not flags.loc[f, "is_outlier"])
    collection = resources["vector_store"].collection_for(resources["embedder"].embedder().vector_name)
    with resources["vector_store"].open() as vs:  # the store says otherwise than the tables
        vs.set_payloads(collection, {marked: {"is_outlier": True, "group_role": "member"}})
    try:
        assert marked not in set(_search(resources, **query, exclude_outliers=True).hits["frame_id"])
        assert marked not in set(_search(resources, **query, exclude_duplicates=True).hits["frame_id"])
        assert marked in set(_search(resources, **query).hits["frame_id"])
    finally:
        with resources["vector_store"].open() as vs:
            vs.set_payloads(collection, {marked: {"is_outlier": False, "group_role": "representative"}})


def test_queries_that_cannot_be_answered_say_why(corpus, tmp_path):
    _, _, resources, tmp = corpus
    with pytest.raises(EmbedderError, match="text search needs an open_clip model"):
        _search(resources, text="a forklift")
    with pytest.raises(SearchError, match="exactly one of"):
        _search(resources, text="a forklift", frame=_photo_frame(1))
    other_model = {**resources, "embedder": EmbedderResource(model="open_clip:ViT-S-32", pretrained="none")}
    with pytest.raises(SearchError, match=r"no vectors from open_clip:ViT-S-32 .*it has frames__efficientnet-lite0"):
        _search(other_model, image=str(tmp / "root" / "landing" / FOLDER / "p01.jpg"))
    with pytest.raises(SearchError, match="has no vector"):
        _search(resources, frame="cam-z--nowhere/000001")
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("hello")
    with pytest.raises(SearchError, match="notes.jpg: unreadable image"):
        _search(resources, image=str(not_an_image))
    empty = make_resources(str(tmp_path / "empty-root"), tmp_path / "empty-qdrant")
    with pytest.raises(SearchError, match="vector store is empty"):
        _search(empty, frame=_photo_frame(1))


def test_the_launchpad_job_writes_the_hits_and_their_contact_sheet(corpus):
    defs, instance, resources, _ = corpus
    job = defs.get_job_def("search_frames")
    config = {"ops": {"similarity_search": {"config": {"frame": _photo_frame(3), "top": 4, "cameras": ["cam-a"]}}}}
    result = job.execute_in_process(run_config=config, instance=instance)
    assert result.success
    table_uri = result.output_for_node("similarity_search")
    store = resources["object_store"].store()
    hits = store.read_table(store.key_for_uri(table_uri))
    assert list(hits["rank"]) == [1, 2, 3, 4] and hits.loc[0, "frame_id"] == _photo_frame(10)
    sheet = store.get_bytes(layout.report_key(f"search/{result.run_id}.png"))
    assert Image.open(io.BytesIO(sheet)).size[0] > 500
    output = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_OUTPUT)
    shown = output.event_specific_data.metadata
    assert shown["hits"].value == 4 and "data:image/png;base64" in shown["search_hits_preview"].value

    bad = {"ops": {"similarity_search": {"config": {"text": "a forklift"}}}}
    failed = job.execute_in_process(run_config=bad, instance=instance, raise_on_error=False)
    assert not failed.success
    failure = next(e for e in failed.all_events if e.is_step_failure).step_failure_data
    assert "text search needs an open_clip model" in failure.user_failure_data.description


def test_the_headless_command_prints_the_hits_and_writes_json(corpus, tmp_path):
    _, _, _, tmp = corpus
    out = tmp_path / "hits.json"
    query = tmp / "root" / "landing" / FOLDER / "p05.jpg"
    command = [sys.executable, "-m", "curation_assets", "search", "--root", str(tmp / "root"), "--image", str(query),
               "--top", "3", "--camera", "cam-a", "--json", str(out)]  # fmt: skip
    env = {"CURATION_QDRANT_PATH": str(tmp / "qdrant"), "PATH": "/usr/bin:/bin", "GX_ANALYTICS_ENABLED": "false"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr
    assert "3 hits from efficientnet-lite0" in done.stdout and "contact sheet:" in done.stdout
    hits = json.loads(out.read_text())
    assert hits[0]["frame_id"] == _photo_frame(5) and hits[0]["score"] > 0.99
    wrong = subprocess.run([*command[:6], "--text", "a forklift"], capture_output=True, text=True, env=env,
                           cwd=Path(__file__).parents[1])  # fmt: skip
    assert wrong.returncode == 1 and "search: text search needs an open_clip model" in wrong.stderr


def test_a_hit_in_an_image_folder_names_the_users_own_file_and_its_landing_uri(corpus):
    _, _, resources, tmp = corpus
    hits = _search(resources, frame=_photo_frame(3), top=2).hits
    assert hits.loc[0, "source_name"] == f"{FOLDER}/p99-copy-of-p03.jpg"
    assert hits.loc[0, "landing_uri"] == str(tmp / "root" / "landing" / FOLDER / "p99-copy-of-p03.jpg")


def _headless_search(tmp: Path, root: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "curation_assets", "search", "--root", str(root), *args]
    env = {"CURATION_QDRANT_PATH": str(tmp / "qdrant"), "PATH": "/usr/bin:/bin", "GX_ANALYTICS_ENABLED": "false"}
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=Path(__file__).parents[1])


def test_the_headless_command_shows_the_users_own_file_names_in_the_table_and_the_json(corpus, tmp_path):
    _, _, _, tmp = corpus
    out = tmp_path / "hits.json"
    done = _headless_search(tmp, tmp / "root", "--frame", _photo_frame(3), "--top", "1", "--json", str(out))
    assert done.returncode == 0, done.stderr
    assert f"{FOLDER}/p99-copy-of-p03.jpg" in done.stdout
    [hit] = json.loads(out.read_text())
    assert hit["source_name"] == f"{FOLDER}/p99-copy-of-p03.jpg"
    assert hit["landing_uri"].endswith(f"landing/{FOLDER}/p99-copy-of-p03.jpg")


def test_a_root_that_does_not_hold_the_stores_frames_exits_2_saying_what_to_pass(corpus, tmp_path):
    _, _, _, tmp = corpus
    query = tmp / "root" / "landing" / FOLDER / "p05.jpg"
    done = _headless_search(tmp, tmp_path / "another-root", "--image", str(query), "--top", "1")
    assert done.returncode == 2
    assert f"pass --root {tmp / 'root'}" in done.stderr and str(tmp_path / "another-root") in done.stderr
    assert "Traceback" not in done.stderr
