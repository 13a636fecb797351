"""Turning validations into Dagster asset check results.

Checks are declared on their asset (``check_specs``) and evaluated inside the step, on the
table about to be published: a table whose blocking checks fail is not published, so
nothing downstream, in this run or a later one, reads it.
"""

from dataclasses import dataclass

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
    """Where a step's table went, and why."""

    failed: list[str]  # blocking checks that failed: empty when the table is published
    key: str  # its storage key: the published one, or under tables/_rejected/

    @property
    def published(self) -> bool:
        return not self.failed


def publish(
    store: ObjectStore, results: list[dg.AssetCheckResult], asset: str, partition: str = "all", table=None
) -> Verdict:
    """Publish-or-reject, the one place it happens: ``table`` (when given) goes to the
    asset's published key when every blocking check passed, else to ``tables/_rejected/``,
    kept for inspection and never read downstream."""
    failed = blocking_failures(results)
    key = (layout.rejected_table_key if failed else layout.table_key)(asset, partition)
    if isinstance(table, pd.DataFrame):
        store.write_table(key, table)
    return Verdict(failed, key)
