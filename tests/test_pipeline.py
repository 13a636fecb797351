"""The whole lineage graph, run for real: Dagster in process, encoded videos, Qdrant, GX."""

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import boto3
import dagster as dg
import numpy as np
import pandas as pd
import pytest

from curation_assets.cli import headless
from curation_assets.core import layout
from curation_assets.core.ids import video_id_for
from curation_assets.definitions import ASSETS, build_defs
from curation_assets.defs.curation import read_groups, read_outliers
from curation_assets.defs.embedding import frame_embeddings
from curation_assets.defs.ingestion import raw_frames
from curation_assets.defs.objects import object_embeddings
from curation_assets.defs.partitions import videos
from curation_assets.demo.labeler import annotate_round
from tests.conftest import SCENE_A, SCENE_B, drop, encoded, make_resources, photo

ALL_INPUTS = (SCENE_A.name, SCENE_B.name, "cam-b/broken.mp4", "cam-a/notes.txt")


def run_everything(defs, instance, video_dir):
    object_store = defs.resources["object_store"]
    drop(object_store.landing_store(), video_dir, *ALL_INPUTS)
    ingested = {o.name: o for o in headless.ingest_landing(defs, instance, log=lambda _: None)}
    curate = headless.outcome("curate", headless.run_job(defs, instance, "curate"))
    round_1 = headless.run_round(defs, instance, "round-0001", budget=2, strategy="diversity")
    annotate_round(object_store.store(), "round-0001", scenes=(SCENE_A, SCENE_B))
    labeled = headless.outcome("labels", headless.run_job(defs, instance, "import_labels"))
    return ingested, curate, round_1, labeled


@dataclass
class Graph:
    """One run of the whole graph: every input landed, curated, a round selected and labeled."""

    ingested: dict
    curate: headless.RunOutcome
    round_1: headless.RunOutcome
    labeled: headless.RunOutcome
    store: object

    @property
    def good(self) -> list:
        return [self.ingested[video_id_for(SCENE_A.name)], self.ingested[video_id_for(SCENE_B.name)]]


@pytest.fixture(scope="module", params=["local", "s3"])
def graph(request, tmp_path_factory, video_dir):
    """The whole graph once per storage: a local folder, then a bucket on moto's S3 server."""
    tmp = tmp_path_factory.mktemp(request.param)
    if request.param == "local":
        resources = make_resources(str(tmp / "root"), tmp / "qdrant")
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="whole-graph")
        resources = make_resources("s3://whole-graph/curation", tmp / "qdrant", endpoint)
    defs = build_defs(resources)
    with dg.instance_for_test() as instance:
        yield Graph(*run_everything(defs, instance, video_dir), resources["object_store"].store())


def test_every_good_run_succeeds_with_each_stage_s_checks_passed_or_warned(graph):
    stages = {
        "curate": (graph.curate, {"duplicate_groups_cover_frames", "duplicate_groups_one_representative",
                                  "outliers_every_frame_scored", "outliers_flagged_fraction"}),
        "round": (graph.round_1, {"selected_batch_valid", "selected_batch_exports_valid"}),
        "labels": (graph.labeled, {"labeled_set_annotations_valid", "labeled_set_groups_in_one_split",
                                   "labeled_set_labels_consistent", "labeled_set_rejections_under_limit"}),
    }  # fmt: skip
    for outcome in [*graph.good, *(o for o, _ in stages.values())]:
        assert outcome.success, outcome.error
        assert set(outcome.checks.values()) <= {"passed", "WARN"}, outcome.checks
    for name, (outcome, checks) in stages.items():
        assert set(outcome.checks) == checks, name


def test_with_no_labeled_dataset_the_audit_says_there_is_nothing_to_audit_and_skips_its_check(graph):
    assert graph.curate.metadata["dataset_audit"]["audit"].startswith("nothing to audit")
    assert "dataset_audit_cleaned_is_leak_free" not in graph.curate.checks  # not evaluated: no pass over nothing
    assert not graph.store.exists(layout.table_key("dataset_audit"))


def test_frames_are_sampled_at_2_fps_and_static_stretches_reuse_a_vector(graph):
    frames = sum(o.metadata["raw_frames"]["frames"] for o in graph.good)
    embedded = sum(o.metadata["frame_embeddings"]["frames_embedded"] for o in graph.good)
    reused = sum(o.metadata["frame_embeddings"]["frames_reused_copies"] for o in graph.good)
    assert frames == 2 * (SCENE_A.duration_s + SCENE_B.duration_s)
    assert embedded + reused == frames and reused > 0
    assert not any("source_labels" in o.metadata for o in graph.good)  # videos bring no labels


def test_static_stretches_collapse_into_groups_and_the_lights_off_stretch_is_dark(graph):
    frames = sum(o.metadata["raw_frames"]["frames"] for o in graph.good)
    groups = graph.curate.metadata["duplicate_groups"]
    assert groups["frames"] == frames and 1 < groups["groups"] < frames
    assert graph.curate.metadata["outliers"]["flag_dark"] >= 1


def test_groups_outliers_and_the_batch_come_with_pictures_inline_and_full_size(graph):
    for asset, picture in [("duplicate_groups", "largest_groups"), ("outliers", "outliers_by_reason")]:
        preview = graph.curate.metadata[asset][f"{picture}_preview"]
        assert preview.startswith(f"![{picture}](data:image/png;base64,") and len(preview) < 1_000_000
        assert graph.store.get_bytes(layout.report_key(f"{picture}.png")).startswith(b"\x89PNG")
    assert graph.store.get_bytes(layout.report_key("selected_batch/round-0001.png")).startswith(b"\x89PNG")


def test_the_batch_is_one_frame_per_group_no_outlier_and_its_manifest_names_stored_frames(graph):
    batch = graph.store.read_table(layout.table_key("selected_batch", "round-0001"))
    assert len(batch) == 2 and batch["group_id"].is_unique and not batch["is_outlier"].any()
    manifest = graph.store.get_bytes(layout.export_key("round-0001", "manifest.jsonl")).decode().splitlines()
    assert sorted(json.loads(line)["source-ref"] for line in manifest) == sorted(batch["uri"])
    assert all(graph.store.exists(graph.store.key_for_uri(uri)) for uri in batch["uri"])


def test_the_dataset_version_holds_the_labeled_frames_and_rejects_the_labelers_mistakes(graph):
    dataset = json.loads(graph.store.get_bytes(layout.dataset_key("v0001", "manifest.json")))
    labeled = graph.labeled.metadata["labeled_set"]
    assert dataset["rounds"] == ["round-0001"]
    assert sum(c["images"] for c in dataset["counts"].values()) == labeled["labeled_frames"]
    assert labeled["annotations_rejected"] == 2  # the demo labelers' deliberate mistakes


def test_bad_inputs_fail_alone_naming_the_file_and_leave_nothing_behind(graph):
    broken, notes = graph.ingested[video_id_for("cam-b/broken.mp4")], graph.ingested[video_id_for("cam-a/notes.txt")]
    assert not broken.success and "landing/cam-b/broken.mp4: not a readable video" in broken.error
    assert not notes.success and "landing/cam-a/notes.txt: not a readable video" in notes.error
    assert not graph.store.exists(layout.table_key("raw_frames", video_id_for("cam-b/broken.mp4")))
    assert list(graph.store.list(f"frames/{video_id_for('cam-b/broken.mp4')}")) == []


def test_everything_lives_under_the_storage_root(graph):
    keys = [o.key for o in graph.store.list("")]
    assert any(k.startswith("frames/") for k in keys) and any(k.startswith("tables/") for k in keys)
    assert all(k.split("/", 1)[0] in {"landing", "frames", "tables", "exports", "datasets", "reports", "annotations"}
               for k in keys), sorted({k.split("/", 1)[0] for k in keys})  # fmt: skip


@pytest.fixture(scope="module")
def two_rounds(tmp_path_factory, video_dir):
    """The whole graph with round-0001 labeled and then re-run; then a folder of photographs
    lands and is curated, so that round-0002 has something left to choose: (defs, instance,
    store, round-0001's batch, round-0002's batch, round-0001's batch re-run after its labels)."""
    tmp = tmp_path_factory.mktemp("rounds")
    defs = build_defs(make_resources(str(tmp / "root"), tmp / "qdrant"))
    store = defs.resources["object_store"].store()
    with dg.instance_for_test() as instance:
        *_, labeled = run_everything(defs, instance, video_dir)
        assert labeled.success, labeled.error
        rerun = headless.run_round(defs, instance, "round-0001", budget=2, strategy="diversity")
        assert rerun.success, rerun.error
        after_labels = store.read_table(layout.table_key("selected_batch", "round-0001"))
        landing = defs.resources["object_store"].landing_store()
        for seed in range(8):
            landing.put_bytes(f"cam-c/photos/p{seed:02d}.jpg", encoded(photo(seed, size=(160, 120)), quality=92))
        ingested = {o.name: o for o in headless.ingest_landing(defs, instance, log=lambda _: None)}
        assert ingested[video_id_for("cam-c/photos/")].success  # (the broken inputs fail again)
        assert headless.run_job(defs, instance, "curate").success
        second = headless.run_round(defs, instance, "round-0002", budget=50, strategy="random")
        assert second.success, second.error
        batches = [store.read_table(layout.table_key("selected_batch", r)) for r in ("round-0001", "round-0002")]
        yield defs, instance, store, *batches, after_labels


def test_a_second_round_never_reselects_a_frame_or_a_group_of_the_first(two_rounds):
    _, _, _, first, second, _ = two_rounds
    assert len(second)
    assert set(second["frame_id"]).isdisjoint(first["frame_id"])
    assert set(second["group_id"]).isdisjoint(first["group_id"])


def test_re_running_a_round_selects_the_same_frames(two_rounds):
    defs, instance, store, _, second, _ = two_rounds
    again = headless.run_round(defs, instance, "round-0002", budget=50, strategy="random")
    assert again.success, again.error
    assert store.read_table(layout.table_key("selected_batch", "round-0002")).equals(second)


def test_re_running_a_round_after_its_labels_came_back_selects_its_frames_again(two_rounds):
    _, _, _, first, _, after_labels = two_rounds
    assert after_labels.equals(first)


def _materialize_video(resources, instance, video_id, **raw_config):
    return dg.materialize(
        ASSETS,
        selection=dg.AssetSelection.assets(raw_frames, frame_embeddings),
        partition_key=video_id,
        resources=resources,
        instance=instance,
        run_config={"ops": {"raw_frames": {"config": raw_config}}} if raw_config else None,
        raise_on_error=False,
    )


def _one_video(tmp_path, instance, video_dir, scene):
    """Resources on a fresh root with ``scene`` landed and its partition registered."""
    resources = make_resources(str(tmp_path / "root"), tmp_path / "qdrant")
    drop(resources["object_store"].landing_store(), video_dir, scene.name)
    video_id = video_id_for(scene.name)
    instance.add_dynamic_partitions(videos.name, [video_id])
    return resources, resources["object_store"].store(), video_id


def test_rematerializing_a_video_leaves_qdrant_and_the_frame_table_unchanged(tmp_path, instance, video_dir):
    resources, store, video_id = _one_video(tmp_path, instance, video_dir, SCENE_A)

    assert _materialize_video(resources, instance, video_id).success
    table = store.read_table(layout.table_key("raw_frames", video_id))
    vectors = store.read_table(layout.table_key("frame_embeddings", video_id))
    assert _materialize_video(resources, instance, video_id).success

    assert store.read_table(layout.table_key("raw_frames", video_id)).equals(table)
    assert list(store.read_table(layout.table_key("frame_embeddings", video_id))["point_id"]) == list(
        vectors["point_id"]
    )
    vector_store, embedder = resources["vector_store"], resources["embedder"].embedder()
    with vector_store.open() as vs:
        assert vs.count(vector_store.collection_for(embedder.vector_name), video_id) == len(table)
        assert vs.count(vector_store.collection_for(embedder.vector_name)) == len(table)


def test_a_failing_blocking_check_stops_downstream_and_publishes_nothing(tmp_path, instance, video_dir):
    resources, store, video_id = _one_video(tmp_path, instance, video_dir, SCENE_B)

    result = _materialize_video(resources, instance, video_id, min_frames=1000)

    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not checks["raw_frames_table_valid"].passed
    assert "expect_table_row_count_to_be_between" in str(checks["raw_frames_table_valid"].metadata["failures"].value)
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert frame_embeddings.key not in materialized  # the downstream step never ran
    assert not store.exists(layout.table_key("raw_frames", video_id))
    assert store.exists(layout.rejected_table_key("raw_frames", video_id))  # kept for inspection


def test_definitions_load_from_workspace_yaml(tmp_path):
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", str(root / "workspace.yaml")],
        cwd=root,
        env={**os.environ, "DAGSTER_HOME": str(tmp_path)},  # a clean checkout has no instance folder yet
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_definitions_hold_the_lineage_assets_with_blocking_checks():
    from curation_assets.definitions import defs

    keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    assert keys == {
        "raw_frames",
        "source_labels",
        "frame_embeddings",
        "duplicate_groups",
        "outliers",
        "embedding_map",
        "dataset_audit",
        "merged_dataset",
        "object_embeddings",
        "object_outliers",
        "selected_batch",
        "labeled_set",
    }
    assert all(any(s.blocking for s in asset.check_specs) for asset in ASSETS)
    assert {spec.name for asset in ASSETS for spec in asset.check_specs} == {
        "raw_frames_table_valid", "raw_frames_images_exist", "raw_frames_source_complete",
        "frame_embeddings_vectors_valid", "frame_embeddings_qdrant_count",
        "duplicate_groups_cover_frames", "duplicate_groups_one_representative",
        "outliers_every_frame_scored", "outliers_flagged_fraction", "embedding_map_places_frames",
        "dataset_audit_cleaned_is_leak_free", "merged_dataset_accounts_for_everything",
        "object_embeddings_vectors_valid", "object_embeddings_qdrant_count", "object_outliers_every_object_scored",
        "object_outliers_flagged_fraction",
        "selected_batch_valid", "selected_batch_exports_valid",
        "labeled_set_annotations_valid", "labeled_set_groups_in_one_split", "labeled_set_labels_consistent",
        "labeled_set_rejections_under_limit",
    }  # fmt: skip
    assert frame_embeddings.op.pool == object_embeddings.op.pool == "qdrant"  # serialised on the embedded store


def test_new_embeddings_trigger_duplicates_outliers_and_the_map_once(tmp_path, instance, video_dir):
    resources = make_resources(str(tmp_path / "root"), tmp_path / "qdrant")
    defs = build_defs(resources)
    drop(resources["object_store"].landing_store(), video_dir, SCENE_B.name)
    instance.add_dynamic_partitions(videos.name, [video_id_for(SCENE_B.name)])

    quiet = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert quiet.total_requested == 0  # nothing landed yet: no timer-driven runs
    assert _materialize_video(resources, instance, video_id_for(SCENE_B.name)).success

    first = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=quiet.cursor)
    requested = {r.key.to_user_string() for r in first.results if r.true_subset.size}
    assert requested == {"duplicate_groups", "outliers", "embedding_map", "dataset_audit"}
    again = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
    assert again.total_requested == 0  # handled; waits for the next video


def test_a_balanced_hybrid_round_uses_predictions_and_reports_shares(local_defs, instance, video_dir):
    drop(local_defs.resources["object_store"].landing_store(), video_dir, SCENE_A.name, SCENE_B.name)
    headless.ingest_landing(local_defs, instance, log=lambda _: None)
    assert headless.run_job(local_defs, instance, "curate").success
    store = local_defs.resources["object_store"].store()
    frames = store.read_tables(layout.table_prefix("raw_frames"))
    predictions = frames[["frame_id"]].assign(confidence=np.linspace(0.05, 0.95, len(frames)))
    store.write_table("predictions/detector-v1.parquet", predictions)
    config = {
        "budget": 2,
        "strategy": "hybrid",
        "balance_on": "camera_id",
        "predictions": "predictions/detector-v1.parquet",
    }
    instance.add_dynamic_partitions("labeling_rounds", ["round-0002"])
    result = headless.run_job(
        local_defs, instance, "labeling_round", "round-0002", run_config={"ops": {"selected_batch": {"config": config}}}
    )
    outcome = headless.outcome("round-0002", result)
    assert outcome.success, outcome.error
    meta = outcome.metadata["selected_batch"]
    batch = store.read_table(layout.table_key("selected_batch", "round-0002"))
    assert batch["camera_id"].value_counts().to_dict() == {"cam-a": 1, "cam-b": 1}  # 80/20 input, equal shares
    assert meta["balance_shortfall"] == 0
    assert set(meta["camera_share_labeled_after"]) == {"cam-a", "cam-b"}
    assert meta["coverage_radius_before"] is None  # nothing labeled yet: nothing covered
    assert 0 < meta["coverage_radius_after"] < 2
    tasks = json.loads(store.get_bytes(layout.export_key("round-0002", "label_studio_tasks.json")))
    assert sorted(t["data"]["image"] for t in tasks) == sorted(batch["uri"])
    assert meta["embedding_map_preview"].startswith("![embedding_map](data:image/png;base64,")


def _predicted_tools(corpus) -> pd.Series:
    """A detector that sees a tool in every other photograph (a box elsewhere), as a stored
    predictions table: which frames it called a tool."""
    _, _, resources, _ = corpus
    store = resources["object_store"].store()
    frames = store.read_tables(layout.table_prefix("raw_frames"))
    photo = ~frames["video_id"].str.endswith(".mp4")
    tool = photo & (frames["frame_index"] % 2 == 0)
    boxes = frames[["frame_id"]].assign(category=np.where(tool, "tool", "box"), confidence=0.9)
    store.write_table("predictions/detector-v2.parquet", boxes)
    return boxes.loc[tool, "frame_id"]


def _class_round(corpus, **changes) -> headless.RunOutcome:
    defs, instance, _, _ = corpus
    config = {"budget": 8, "predictions": "predictions/detector-v2.parquet", "balance_on": "predicted_class"}
    if not instance.has_dynamic_partition("labeling_rounds", "round-caps"):
        instance.add_dynamic_partitions("labeling_rounds", ["round-caps"])
    run_config = {"ops": {"selected_batch": {"config": {**config, **changes}}}}
    return headless.outcome("round-caps", headless.run_job(defs, instance, "labeling_round", "round-caps",
                                                           run_config=run_config))  # fmt: skip


def _tools_chosen(corpus, tools: pd.Series) -> pd.DataFrame:
    batch = corpus[2]["object_store"].store().read_table(layout.table_key("selected_batch", "round-caps"))
    return batch.assign(tool=batch["frame_id"].isin(tools))


def test_balancing_on_the_predicted_class_gives_each_class_an_equal_share(corpus):
    tools = _predicted_tools(corpus)
    outcome = _class_round(corpus)
    assert outcome.success, outcome.error
    assert _tools_chosen(corpus, tools)["tool"].sum() == 4
    assert outcome.metadata["selected_batch"]["predicted_class_shares"] == {"box": 0.5, "tool": 0.5}


def test_a_class_cap_keeps_a_dominant_predicted_class_to_its_share(corpus):
    tools = _predicted_tools(corpus)
    outcome = _class_round(corpus, balance_on="", class_caps={"tool": 0.25})
    assert outcome.success, outcome.error
    capped = _tools_chosen(corpus, tools)
    store = corpus[2]["object_store"].store()
    flagged = read_outliers(store).query("is_outlier")["frame_id"]
    candidates = read_groups(store).query("is_representative")["frame_id"]
    others = (~candidates.isin([*tools, *flagged])).sum()
    assert capped["tool"].sum() == 2 and len(capped) == min(8, 2 + others)  # a quarter; the rest: other classes
    assert outcome.metadata["selected_batch"]["class_caps"] == {"tool": 0.25}


def test_class_aware_selection_without_predictions_says_which_config_to_set(corpus):
    _predicted_tools(corpus)
    failed = _class_round(corpus, predictions="")
    assert not failed.success and "class-aware selection needs config 'predictions'" in failed.error


def test_a_failed_import_leaves_the_previous_labeled_set_intact(local_defs, instance, video_dir):
    _, _, _, labeled = run_everything(local_defs, instance, video_dir)
    store = local_defs.resources["object_store"].store()
    before = store.read_table(layout.table_key("labeled_set", "annotations"))
    second = headless.run_round(local_defs, instance, "round-0002", budget=2, strategy="random")
    assert second.success
    # labels for frames that round-0002 never sent out, with boxes outside the images
    tasks = json.loads(store.get_bytes(layout.export_key("round-0001", "coco_images.json")))
    garbage = [
        {"id": i, "image_id": img["id"], "category_id": 1, "bbox": [10_000, 10, 5, 5]}
        for i, img in enumerate(tasks["images"] * 5)
    ]
    store.put_bytes("annotations/round-0002.json", json.dumps({**tasks, "annotations": garbage}).encode())

    failed = headless.outcome("labels", headless.run_job(local_defs, instance, "import_labels"))

    assert not failed.success and failed.checks["labeled_set_rejections_under_limit"] == "FAILED"
    assert store.read_table(layout.table_key("labeled_set", "annotations")).equals(before)
    from curation_assets.defs.versions import labeled_versions

    assert labeled_versions(store) == ["v0001"]


def test_a_new_video_is_matched_against_existing_groups_through_the_vector_store(tmp_path, instance, video_dir):
    from curation_assets.defs.curation import duplicate_groups

    resources = make_resources(str(tmp_path / "root"), tmp_path / "qdrant")
    store, landing = resources["object_store"].store(), resources["object_store"].landing_store()
    drop(landing, video_dir, SCENE_A.name)
    landing.put_bytes("cam-c/shelf-again.mp4", (video_dir / SCENE_A.name).read_bytes())  # the same footage again
    first, again = video_id_for(SCENE_A.name), video_id_for("cam-c/shelf-again.mp4")
    instance.add_dynamic_partitions(videos.name, [first, again])

    def group(**config):
        result = dg.materialize(
            ASSETS,
            selection=dg.AssetSelection.assets(duplicate_groups),
            resources=resources,
            instance=instance,
            run_config={"ops": {"duplicate_groups": {"config": config}}},
        )
        mode = result.asset_materializations_for_node("duplicate_groups")[0].metadata["mode"].value
        return mode, read_groups(store).set_index("frame_id")

    assert _materialize_video(resources, instance, first).success
    mode, before = group()
    assert mode.startswith("rebuild")
    assert _materialize_video(resources, instance, again).success
    mode, after = group()
    assert mode.startswith("incremental: 1 new sources")

    assert (after.loc[before.index, "group_id"] == before["group_id"]).all()  # existing groups keep their ids
    twins = [f.replace(first, again, 1) for f in before.index]
    assert (after.loc[twins, "group_id"].to_numpy() == before["group_id"].to_numpy()).all()
    assert (
        after["group_id"].nunique() == before["group_id"].nunique() and not after.loc[twins, "is_representative"].any()
    )

    mode, rebuilt = group(incremental=False)
    assert mode.startswith("rebuild")
    assert (rebuilt.loc[twins, "group_id"].to_numpy() == rebuilt.loc[before.index, "group_id"].to_numpy()).all()
