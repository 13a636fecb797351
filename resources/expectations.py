"""Great Expectations as a resource: how checks validate tables and how much they report."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import dagster as dg
import pandas as pd
from pydantic import Field

from curation_assets.quality import Validation, validate, warm_up


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
