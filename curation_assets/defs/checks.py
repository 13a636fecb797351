"""Turning validations into Dagster asset check results.

Checks are declared on their asset (``check_specs``) and evaluated inside the step, on the
table about to be published: a table whose blocking checks fail is not published, so
nothing downstream, in this run or a later one, reads it.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import dagster as dg
import pandas as pd

from curation_assets.core import layout
from resources.expectations import Validation
from resources.object_store import ObjectStore


def blocking(name: str, asset: str, description: str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(name, asset=asset, description=description, blocking=True)


def warning(name: str, asset: str, description: str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(name, asset=asset, description=description, blocking=False)


def from_validation(
    name: str,
    validation: Validation,
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
    **metadata,
) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=name,
        passed=validation.success,
        severity=severity,
        metadata={**validation.metadata(), **metadata},
    )


def from_assertion(
    name: str,
    passed: bool,
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
    **metadata,
) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(check_name=name, passed=bool(passed), severity=severity, metadata=metadata)


def blocking_failures(results: list[dg.AssetCheckResult]) -> list[str]:
    return [r.check_name for r in results if not r.passed and r.severity == dg.AssetCheckSeverity.ERROR]


@dataclass(frozen=True)
class Verdict:
    """Where a step's tables went, and why."""

    failed: list[str]  # blocking checks that failed: empty when the tables are published
    key: str  # the main table's storage key: the published one, or under tables/_rejected/
    written: Any = None  # what ``first`` returned (e.g. a dataset version); None when nothing was published

    @property
    def published(self) -> bool:
        return not self.failed


def publish(
    store: ObjectStore,
    results: list[dg.AssetCheckResult],
    asset: str,
    partition: str = "all",
    table: pd.DataFrame | None = None,
    *,
    more_tables: Mapping[str, pd.DataFrame] | None = None,
    first: Callable[[], Any] | None = None,
) -> Verdict:
    """Publish-or-reject, the one place it happens for every asset.

    When every blocking check passed: ``first`` writes what the tables refer to (a dataset
    version, a round's exports), then ``more_tables`` (partition -> table) and ``table`` go to
    the asset's published keys, the main table last, so whatever a published table names exists.
    Otherwise ``first`` never runs and the tables go to ``tables/_rejected/``, kept for
    inspection and never read downstream: nothing of the step looks complete.
    """
    failed = blocking_failures(results)
    key_for = layout.rejected_table_key if failed else layout.table_key
    written = None if failed or first is None else first()
    for part, extra in (more_tables or {}).items():
        store.write_table(key_for(asset, part), extra)
    key = key_for(asset, partition)
    if isinstance(table, pd.DataFrame):
        store.write_table(key, table)
    return Verdict(failed, key, written)
