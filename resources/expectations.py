"""Great Expectations as a resource: how checks validate tables and how much they report.

GX 1.x is called directly with an ephemeral context (dagster-ge pins GX < 1.0). The import
costs seconds (2.6 s warm, 5 s cold here), so it never happens at definition load: assets
call ``warm_up`` first, and the import runs in a background thread while they read frames.
The suites themselves are plain functions in ``curation_assets.quality.suites``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import dagster as dg
import pandas as pd
from pydantic import Field

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


@dataclass(frozen=True)
class Failure:
    expectation: str
    column: str | None
    unexpected_count: int | None
    unexpected_values: list
    unexpected_rows: list  # values of the table's id column for the failing rows
    observed: object = None

    def describe(self) -> str:
        where = f" on {self.column}" if self.column else ""
        count = f": {self.unexpected_count} rows" if self.unexpected_count else ""
        rows = f" e.g. {self.unexpected_rows[:5]}" if self.unexpected_rows else ""
        observed = f" (observed {self.observed})" if self.observed is not None else ""
        return f"{self.expectation}{where}{count}{rows}{observed}"


@dataclass(frozen=True)
class Validation:
    suite: str
    success: bool
    evaluated: int
    failures: list[Failure] = field(default_factory=list)

    def metadata(self) -> dict:
        return {
            "suite": self.suite,
            "expectations_evaluated": self.evaluated,
            "expectations_failed": len(self.failures),
            "failures": [f.describe() for f in self.failures] or "none",
        }


_CONTEXT: list = []  # the one ephemeral GX context of this process, once built
_CONTEXT_LOCK = threading.Lock()


def _context():
    with _CONTEXT_LOCK:  # the warm-up thread and a check may ask at once
        if not _CONTEXT:
            import great_expectations as gx
            from great_expectations.data_context.types.base import ProgressBarsConfig

            context = gx.get_context(mode="ephemeral")
            context.variables.progress_bars = ProgressBarsConfig(globally=False)
            _CONTEXT.append(context)
        return _CONTEXT[0]


def warm_up() -> None:
    """Import GX and build its context in a background thread (no-op once started); a
    failure here surfaces again, with its message, at the first ``validate``."""
    if not _CONTEXT and not _CONTEXT_LOCK.locked():
        threading.Thread(target=_quietly(_context), name="gx-warm-up", daemon=True).start()


def _quietly(fn: Callable) -> Callable:
    def run():
        try:
            fn()
        except Exception:  # noqa: BLE001 - reported by the caller that needs it
            pass

    return run


def validate(
    df: pd.DataFrame,
    suite: str,
    expectations: Callable[[object], Sequence],
    id_column: str | None = None,
    max_rows: int = 20,
) -> Validation:
    """Validate ``df`` against ``expectations(gxe)`` and explain every failure.

    ``expectations`` receives the ``great_expectations.expectations`` module and returns
    expectation objects, so suites stay plain functions and GX is imported lazily.
    """
    import great_expectations as gx
    import great_expectations.expectations as gxe

    context = _context()
    name = f"{suite}-{id(df)}"
    source = context.data_sources.add_or_update_pandas(name)
    batch_def = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
    gx_suite = gx.ExpectationSuite(name=name)
    for expectation in expectations(gxe):
        gx_suite.add_expectation(expectation)
    frame = df.reset_index(drop=True)
    try:
        batch = batch_def.get_batch(batch_parameters={"dataframe": frame})
        # the verdict alone first (2x cheaper); only a failing table is validated again for the rows
        result = batch.validate(gx_suite, result_format={"result_format": "BOOLEAN_ONLY"})
        if not result.success:
            result = batch.validate(
                gx_suite, result_format={"result_format": "COMPLETE", "partial_unexpected_count": max_rows}
            )
    finally:
        context.data_sources.delete(name)
    failures = []
    for r in result.results:
        if r.success:
            continue
        res = r.result or {}
        indexes = (res.get("unexpected_index_list") or [])[:max_rows]
        rows = (
            [frame.at[i, id_column] for i in indexes if isinstance(i, int)] if id_column and id_column in frame else []
        )
        failures.append(
            Failure(
                expectation=r.expectation_config.type,
                column=r.expectation_config.kwargs.get("column"),
                unexpected_count=res.get("unexpected_count"),
                unexpected_values=[_plain(v) for v in (res.get("partial_unexpected_list") or [])[:max_rows]],
                unexpected_rows=[_plain(v) for v in rows],
                observed=_plain(res.get("observed_value")),
            )
        )
    return Validation(suite, bool(result.success), len(result.results), failures)


def _plain(value):
    return value.item() if hasattr(value, "item") else value


class ExpectationsResource(dg.ConfigurableResource):
    """Runs GX suites in an ephemeral context (nothing is written to disk)."""

    max_reported_rows: int = Field(default=20, description="Failing rows listed per expectation.")

    def warm_up(self) -> None:
        """Start importing GX in the background, to overlap the caller's own work."""
        warm_up()

    def validate(
        self,
        df: pd.DataFrame,
        suite: str,
        expectations: Callable[[object], Sequence],
        id_column: str | None = "frame_id",
    ) -> Validation:
        return validate(df, suite, expectations, id_column, self.max_reported_rows)
