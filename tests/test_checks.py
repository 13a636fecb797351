import dagster as dg
import pandas as pd

from curation_assets.core import layout
from curation_assets.defs import checks
from resources.object_store import LocalObjectStore


def _result(name, passed, severity=dg.AssetCheckSeverity.ERROR):
    return checks.from_assertion(name, passed, severity=severity)


def test_a_table_whose_only_failure_is_a_warning_is_published(tmp_path):
    store, table = LocalObjectStore(tmp_path), pd.DataFrame({"frame_id": ["v/000000"]})
    warned = checks.publish(
        store, [_result("a", True), _result("b", False, dg.AssetCheckSeverity.WARN)], "t", "v", table
    )
    assert warned.published and warned.key == layout.table_key("t", "v") and store.exists(warned.key)


def test_a_table_whose_blocking_check_fails_is_kept_aside_never_published(tmp_path):
    store, table = LocalObjectStore(tmp_path), pd.DataFrame({"frame_id": ["v/000000"]})
    failed = checks.publish(store, [_result("a", True), _result("b", False)], "t", "w", table)
    assert not failed.published and failed.failed == ["b"]
    assert failed.key == layout.rejected_table_key("t", "w") and store.exists(failed.key)
    assert not store.exists(layout.table_key("t", "w"))  # nothing downstream can read it
    pd.testing.assert_frame_equal(store.read_table(failed.key), table)


def test_what_a_rejected_table_refers_to_is_never_written_and_its_other_tables_go_aside_too(tmp_path):
    store, table = LocalObjectStore(tmp_path), pd.DataFrame({"frame_id": ["v/000000"]})
    written = []
    failed = checks.publish(store, [_result("b", False)], "t", "main", table, more_tables={"extra": table},
                            first=lambda: written.append("dataset"))  # fmt: skip
    assert written == [] and failed.written is None
    assert [o.key for o in store.list("tables")] == [layout.rejected_table_key("t", p) for p in ("extra", "main")]


def test_what_a_published_table_refers_to_is_written_before_the_table(tmp_path):
    store, table = LocalObjectStore(tmp_path), pd.DataFrame({"frame_id": ["v/000000"]})
    published = checks.publish(store, [_result("a", True)], "t", "main", table,
                               first=lambda: [o.key for o in store.list("tables")])  # fmt: skip
    assert published.written == []  # nothing of the step was published yet when it ran
    assert store.exists(layout.table_key("t", "main"))


def test_a_frame_whose_image_is_gone_from_storage_fails_the_images_check(tmp_path):
    from curation_assets.defs.ingestion import frame_checks
    from resources import ExpectationsResource

    store = LocalObjectStore(tmp_path)
    uris = [store.put_bytes(layout.frame_key("v", i), b"jpeg") for i in range(3)]
    table = pd.DataFrame({"frame_id": [f"v/{i:06d}" for i in range(3)], "uri": uris, "corrupt": False})
    stored = {obj.key for obj in store.list(layout.frame_prefix("v"))} - {layout.frame_key("v", 1)}

    results = {r.check_name: r for r in frame_checks(store, ExpectationsResource(), table, table, stored, [], 1)}

    assert not results["raw_frames_images_exist"].passed
    assert results["raw_frames_images_exist"].metadata["missing_examples"].value == [uris[1]]
    assert results["raw_frames_source_complete"].passed
