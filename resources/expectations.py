"""Great Expectations as a resource: how checks validate tables and how much they report.

GX 1.x is called directly with an ephemeral context (dagster-ge pins GX < 1.0), by default
in a process of its own (``curation_assets/runtime/validation_process.py``): its import costs
seconds of CPU holding the interpreter lock, so it never happens at definition load nor in
the step's process. The resource starts it as a run (or step) begins, and the import runs
while the assets read frames. The suites are plain functions in ``curation_assets.quality.suites``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import dagster as dg
import pandas as pd
from pydantic import Field

from curation_assets.runtime import validation_process
from curation_assets.runtime.validation_process import Failure, Validation

__all__ = ["ExpectationsResource", "Failure", "Validation"]


class ExpectationsResource(dg.ConfigurableResource):
    """Runs GX suites in an ephemeral context (nothing is written to disk)."""

    max_reported_rows: int = Field(default=20, description="Failing rows listed per expectation.")
    process: str = Field(
        default="separate",
        description="'separate': GX in a process of its own (its import never stalls the step); 'inline': here.",
    )

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # every run or step that can validate starts the import with itself, not at its first check
        self.warm_up()

    def warm_up(self) -> None:
        """Start importing GX in the background, to overlap the caller's own work."""
        if self._separate():
            validation_process.start()
        else:
            # GX imports SQLAlchemy's ORM on the warm-up thread while Dagster's event log imports it lazily
            # on the step's: two threads importing one package can meet in Python's import-deadlock
            # avoidance, and one is handed a partly initialised module ("partially initialized module
            # 'sqlalchemy.orm.exc'", a step failing at random). Dagster brings SQLAlchemy: import it here.
            import sqlalchemy.orm  # noqa: F401

            validation_process.warm_up()

    def validate(
        self,
        df: pd.DataFrame,
        suite: str,
        expectations: Callable[[object], Sequence],
        id_column: str | None = "frame_id",
    ) -> Validation:
        run = validation_process.validate_elsewhere if self._separate() else validation_process.validate
        return run(df, suite, expectations, id_column, self.max_reported_rows)

    def _separate(self) -> bool:
        if self.process not in ("separate", "inline"):
            raise dg.Failure(f"expectations process {self.process!r}: use 'separate' or 'inline'", allow_retries=False)
        return self.process == "separate"
