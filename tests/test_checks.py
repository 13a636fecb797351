import dagster as dg
import pandas as pd

from curation_assets.core import layout
from curation_assets.defs import checks
from resources.object_store import LocalObjectStore


def _result(name, passed, severity=dg.AssetCheckSeverity.ERROR):
    return checks.from_assertion(name, passed, severity=severity)


def test_a_table_whose_blocking_check_fails_is_kept_aside_never_published(tmp_path):
    store, table = LocalObjectStore(tmp_path), pd.DataFrame({"frame_id": ["v/000000"]})
    warned = checks.publish(
        store, [_result("a", True), _result("b", False, dg.AssetCheckSeverity.WARN)], "t", "v", table
    )
    assert warned.published and warned.key == layout.table_key("t", "v") and store.exists(warned.key)

    failed = checks.publish(store, [_result("a", True), _result("b", False)], "t", "w", table)
    assert not failed.published and failed.failed == ["b"]
    assert failed.key == layout.rejected_table_key("t", "w") and store.exists(failed.key)
    assert not store.exists(layout.table_key("t", "w"))  # nothing downstream can read it
    pd.testing.assert_frame_equal(store.read_table(failed.key), table)
