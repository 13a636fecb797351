"""Turning validations into Dagster asset check results.

Checks are declared on their asset (``check_specs``) and evaluated inside the step, on the
table about to be published: a table whose blocking checks fail is not published, so
nothing downstream, in this run or a later one, reads it.
"""

import dagster as dg

from curation_assets.quality import Validation


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
