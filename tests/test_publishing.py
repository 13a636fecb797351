"""One publish path: an asset whose blocking check fails publishes nothing, whatever it writes."""

import functools

import dagster as dg
import pytest

from curation_assets.cli import headless
from curation_assets.core.ids import source_id_for, video_id_for
from curation_assets.definitions import ASSETS, build_defs
from curation_assets.defs.partitions import labeling_rounds
from curation_assets.demo.labeler import annotate_round
from resources import ExpectationsResource
from tests.conftest import SCENE_A, SCENE_B, drop, make_resources
from tests.test_labeled_datasets import planted_dataset

# Every asset that has a blocking check, from the definitions themselves.
BLOCKING = sorted({spec.asset_key.to_user_string() for a in ASSETS for spec in a.check_specs if spec.blocking})
PUBLISHED = ("tables/", "datasets/", "exports/")  # what downstream steps and users read
DATASET = "shelf-dataset/"
ROUND = "round-0001"


def _with_one_no_table_meets(expectations, gxe):
    return [*expectations(gxe), gxe.ExpectTableRowCountToBeBetween(min_value=-2, max_value=-1)]


class ExpectationsNoTableMeets(ExpectationsResource):
    """Real GX on every suite, plus one expectation that no table meets: each GX check fails."""

    def validate(self, df, suite, expectations, id_column="frame_id"):
        return super().validate(df, suite, functools.partial(_with_one_no_table_meets, expectations), id_column)


@pytest.fixture(scope="module")
def world(tmp_path_factory, video_dir):
    """Every asset materialized once: a video and a labeled dataset landed, curated, a round
    selected and labeled, datasets merged, boxes embedded, the map drawn."""
    tmp = tmp_path_factory.mktemp("publishing")
    resources = make_resources(str(tmp / "root"), tmp / "qdrant")
    landing = resources["object_store"].landing_store()
    drop(landing, video_dir, SCENE_A.name)
    for name, data in planted_dataset().items():
        landing.put_bytes(DATASET + name, data)
    defs = build_defs(resources)
    with dg.instance_for_test() as instance:
        assert all(o.success for o in headless.ingest_landing(defs, instance, log=lambda _: None))
        for job in ("curate", "draw_map", "merge_datasets", "curate_objects"):
            assert headless.run_job(defs, instance, job).success, job
        assert headless.run_round(defs, instance, ROUND, budget=2, strategy="diversity").success
        annotate_round(resources["object_store"].store(), ROUND, scenes=(SCENE_A,))
        assert headless.run_job(defs, instance, "import_labels").success
        yield resources, instance


def _partition(asset: dg.AssetsDefinition, name: str) -> str | None:
    if asset.partitions_def is None:
        return None
    if asset.partitions_def == labeling_rounds:
        return ROUND
    return source_id_for(DATASET) if name == "raw_frames" else video_id_for(SCENE_A.name)  # the labels too


def _published(store) -> dict[str, str]:
    return {o.key: o.fingerprint for o in store.list() if o.key.startswith(PUBLISHED) and "/_rejected/" not in o.key}


def _land_something_new(resources, instance, video_dir, name: str) -> None:
    """Curation adds new sources only (a run with nothing new does nothing): give duplicate_groups
    a newly embedded source, and outliers one that is newly grouped, each its own."""
    if name not in ("duplicate_groups", "outliers"):
        return
    resources["object_store"].landing_store().put_bytes(
        f"cam-{name.replace('_', '-')}/checkout.mp4", (video_dir / SCENE_B.name).read_bytes()
    )
    defs = build_defs(resources)
    assert all(o.success for o in headless.ingest_landing(defs, instance, log=lambda _: None))
    if name == "outliers":
        grouped = dg.materialize(ASSETS, selection=["duplicate_groups"], instance=instance, resources=resources)
        assert grouped.success


@pytest.mark.parametrize("name", BLOCKING)
def test_a_failed_blocking_check_publishes_nothing_and_keeps_its_table_aside(world, video_dir, name):
    resources, instance = world
    store = resources["object_store"].store()
    _land_something_new(resources, instance, video_dir, name)
    asset = next(a for a in ASSETS if name in {k.to_user_string() for k in a.keys})
    before = _published(store)

    result = dg.materialize(
        ASSETS,
        selection=dg.AssetSelection.assets(name).required_multi_asset_neighbors(),
        partition_key=_partition(asset, name),
        instance=instance,
        resources={**resources, "expectations": ExpectationsNoTableMeets(process="inline")},
        raise_on_error=False,
    )

    failed = [e for e in result.get_asset_check_evaluations() if not e.passed]
    assert any(e.asset_key.to_user_string() == name and e.severity == dg.AssetCheckSeverity.ERROR for e in failed)
    assert _published(store) == before  # nothing new, nothing rewritten
    assert any(o.key.startswith(f"tables/_rejected/{name}/") for o in store.list("tables/_rejected"))
