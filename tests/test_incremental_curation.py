"""Curation one source at a time against the vector store: equal to a rebuild, and nothing new costs nothing."""

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from curation_assets.core import layout
from curation_assets.core.ids import video_id_for
from curation_assets.core.incremental import RunningSummary, kth_frame_distance, merge_neighbours
from curation_assets.core.neighbors import knn_graph
from curation_assets.core.outliers import isolation_scores, robust_z
from curation_assets.definitions import ASSETS
from curation_assets.defs.curation import CURATION_PAYLOAD, MEMBER, REPRESENTATIVE, read_groups, read_outliers
from curation_assets.defs.partitions import videos
from resources.vector_store import VectorStore, Where
from tests.conftest import SCENE_A, SCENE_B, drop, make_resources
from tests.test_pipeline import _materialize_video


def _unit(rng, n, dim=16):
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_running_summary_z_matches_the_exact_robust_z_to_bin_width():
    values = np.random.default_rng(0).gamma(4.0, 0.05, 5000)
    summary = RunningSummary()
    for part in np.array_split(values, 7):  # added a source at a time
        summary.add(part)
    again = RunningSummary.from_json(summary.to_json())
    assert np.allclose(again.z(values), robust_z(values), atol=0.02)


def test_isolation_from_a_sources_own_and_the_stores_neighbours_equals_the_whole_corpus():
    rng = np.random.default_rng(1)
    vectors, sizes, k = _unit(rng, 300), rng.integers(1, 4, 300), 5
    whole = isolation_scores(vectors, k, sizes)
    new, stored = np.arange(250, 300), np.arange(250)  # the new source's groups, the stored ones
    nbr, sims = knn_graph(vectors[new], k)
    local = (np.where(nbr >= 0, sims, -np.inf), np.where(nbr >= 0, sizes[new][np.where(nbr >= 0, nbr, 0)], 0))
    to_stored = vectors[new] @ vectors[stored].T  # what the store's k-NN answers
    top = np.argsort(-to_stored, axis=1)[:, :k]
    from_store = (np.take_along_axis(to_stored, top, axis=1), sizes[stored][top])
    assert np.allclose(kth_frame_distance(*merge_neighbours(local, from_store), k), whole[new], atol=1e-5)


def _curate(resources, instance, **config):
    ops = {"duplicate_groups": {"config": config}, "outliers": {"config": config}} if config else {}
    result = dg.materialize(ASSETS, selection=dg.AssetSelection.assets("duplicate_groups", "outliers"),
                            resources=resources, instance=instance, run_config={"ops": ops})  # fmt: skip
    assert result.success
    return {
        a: result.asset_materializations_for_node(a)[0].metadata["mode"].value for a in ("duplicate_groups", "outliers")
    }


def _sorted(table: pd.DataFrame) -> pd.DataFrame:
    return table.sort_values("frame_id").reset_index(drop=True)


def test_sources_curated_one_at_a_time_equal_a_rebuild_and_nothing_new_writes_nothing(tmp_path, instance, video_dir):
    resources = make_resources(str(tmp_path / "root"), tmp_path / "qdrant")
    store = resources["object_store"].store()
    drop(resources["object_store"].landing_store(), video_dir, SCENE_A.name, SCENE_B.name)
    first, second = video_id_for(SCENE_A.name), video_id_for(SCENE_B.name)
    instance.add_dynamic_partitions(videos.name, [first, second])
    assert _materialize_video(resources, instance, first).success
    assert _curate(resources, instance)["duplicate_groups"].startswith("rebuild")
    assert _materialize_video(resources, instance, second).success
    modes = _curate(resources, instance)
    assert modes["duplicate_groups"].startswith("incremental: 1 new sources")
    assert modes["outliers"].startswith("incremental: 1 sources")
    one_at_a_time = _sorted(read_groups(store)), _sorted(read_outliers(store))
    written = {o.key: o.fingerprint for o in store.list("tables/")}

    assert _curate(resources, instance) == {"duplicate_groups": "unchanged", "outliers": "unchanged"}
    assert {o.key: o.fingerprint for o in store.list("tables/")} == written

    assert all(m.startswith("rebuild") for m in _curate(resources, instance, incremental=False).values())
    pd.testing.assert_frame_equal(_sorted(read_groups(store)), one_at_a_time[0])
    rebuilt = _sorted(read_outliers(store))
    flags = ["frame_id", "is_outlier", "reasons"]
    pd.testing.assert_frame_equal(rebuilt[flags], one_at_a_time[1][flags])
    # the newest source's isolation is measured against everything stored, as a rebuild does;
    # an older source's waits for the rebuild (so may the robust z of the population)
    newest = rebuilt["frame_id"].str.startswith(second).to_numpy()
    assert np.allclose(rebuilt.loc[newest, "isolation"], one_at_a_time[1].loc[newest, "isolation"], atol=1e-4)
    assert not store.exists(layout.table_key("duplicate_groups"))  # one table per source, none for all


def test_a_rebuild_streamed_a_source_at_a_time_equals_the_one_in_memory(tmp_path, instance, video_dir):
    resources = make_resources(str(tmp_path / "root"), tmp_path / "qdrant")
    store = resources["object_store"].store()
    drop(resources["object_store"].landing_store(), video_dir, SCENE_A.name, SCENE_B.name)
    sources = [video_id_for(SCENE_A.name), video_id_for(SCENE_B.name)]
    instance.add_dynamic_partitions(videos.name, sources)
    for source in sources:
        assert _materialize_video(resources, instance, source).success
    _curate(resources, instance, incremental=False)  # both sources in one chunk
    in_memory = _sorted(read_groups(store)), _sorted(read_outliers(store))

    modes = _curate(resources, instance, incremental=False, rebuild_sources_at_once=1)

    assert modes["duplicate_groups"].endswith("2 sources in 2 chunks")
    pd.testing.assert_frame_equal(_sorted(read_groups(store)), in_memory[0])
    pd.testing.assert_frame_equal(_sorted(read_outliers(store)), in_memory[1], check_dtype=False, atol=1e-5)


def _two_sources(tmp_path, instance, video_dir) -> dict:
    """Both test videos ingested (not curated): their resources."""
    resources = make_resources(str(tmp_path / "root"), tmp_path / "qdrant")
    drop(resources["object_store"].landing_store(), video_dir, SCENE_A.name, SCENE_B.name)
    sources = [video_id_for(SCENE_A.name), video_id_for(SCENE_B.name)]
    instance.add_dynamic_partitions(videos.name, sources)
    for source in sources:
        assert _materialize_video(resources, instance, source).success
    return resources


def _curation_payload(resources) -> dict[str, dict]:
    """Every grouped frame's curation payload in the store."""
    frames = list(read_groups(resources["object_store"].store())["frame_id"])
    with resources["vector_store"].open() as vs:
        [collection] = vs.collections()
        return {f: {k: p.get(k) for k in CURATION_PAYLOAD} for f, p in vs.payloads(collection, frames).items()}


def test_a_rebuild_whose_results_do_not_change_writes_no_payload(tmp_path, instance, video_dir):
    resources = _two_sources(tmp_path, instance, video_dir)
    _curate(resources, instance, incremental=False, rebuild_sources_at_once=1)
    written = VectorStore.payload_writes
    modes = _curate(resources, instance, incremental=False, rebuild_sources_at_once=1)
    assert all(m.startswith("rebuild") for m in modes.values())
    assert VectorStore.payload_writes == written  # every point stays where the index has it


def test_a_rebuild_leaves_the_payload_a_rebuild_of_a_cleared_store_leaves(tmp_path, instance, video_dir):
    resources = _two_sources(tmp_path, instance, video_dir)
    _curate(resources, instance, incremental=False)
    first = read_groups(resources["object_store"].store())
    first = first[first["frame_id"].str.startswith(video_id_for(SCENE_A.name))]
    with resources["vector_store"].open() as vs:  # the first source as an earlier build with other results left it
        [collection] = vs.collections()
        vs.set_payloads(collection, dict.fromkeys(first["frame_id"], {"group_id": "gone", "group_role": MEMBER,
                                                                      "group_size": 99, "isolation": 0.5,
                                                                      "is_outlier": True}))  # fmt: skip
    _curate(resources, instance, incremental=False, rebuild_sources_at_once=1)
    kept = _curation_payload(resources)
    with resources["vector_store"].open() as vs:  # what the rebuild used to start from: nothing
        vs.delete_payload_keys(collection, CURATION_PAYLOAD, Where(group_roles=(REPRESENTATIVE, MEMBER)))
    _curate(resources, instance, incremental=False, rebuild_sources_at_once=1)
    from_scratch = _curation_payload(resources)
    assert kept.keys() == from_scratch.keys()
    for frame, payload in from_scratch.items():
        assert kept[frame] == pytest.approx(payload), frame
