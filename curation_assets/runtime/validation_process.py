"""Great Expectations in a process of its own: its import never holds the step's interpreter lock.

Importing GX costs 2-3 s of CPU (see DEFERRED), nearly all of it holding the GIL: in a thread of the
step's process it stalled the frame workers beside it (raw_frames 8.9 s against 4.9 s with
no import, 1 065 frames on 2 cores). Here the import runs in a spawned process, started as
early as the caller knows checks will run (the headless command: first thing), on a core of
its own. Each check sends its table and its suite (``curation_assets.quality.suites``,
picklable) and gets the verdict back; a frame table is a few hundred KB through a pipe.
Nothing here imports Dagster: the spawned process loads this module and the suites only.
``validate`` is also the inline path (``ExpectationsResource(process="inline")``).
"""

from __future__ import annotations

import importlib
import importlib.util
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the command imports this module first thing: the process starts before pandas loads here
    import pandas as pd

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


# GX imports these at start-up for expectations this project never runs (KL divergence,
# Kolmogorov-Smirnov tests, their charts): 0.8 s of scipy.stats and 0.45 s of altair, of 3.1 s
DEFERRED = ("scipy.stats", "altair")

# GX probes at import for cloud SDKs and SQLAlchemy (its S3, GCS and SQL data sources). The
# validation process only validates pandas frames: there they are hidden, so GX takes them as
# absent (0.3-0.5 s less of its import CPU here). Never in a step's own process (inline), which
# reads S3 with boto3.
ABSENT_IN_VALIDATION_PROCESS = ("boto3", "botocore", "google", "sqlalchemy")


class _Deferred(ModuleType):
    """Stands in for a module until something reads from it, then loads it for real (and
    answers from it): GX holds the stand-in, and gets the real module if it ever needs it.
    Unlike importlib's LazyLoader, the import system's own look at ``__spec__`` (every
    ``import altair``) does not load it."""

    def __getattr__(self, attr: str):
        if attr.startswith("__") and attr != "__path__":  # a submodule's import reads __path__: load
            raise AttributeError(attr)
        with _DEFER_LOCK:
            if sys.modules.get(self.__name__) is self:
                del sys.modules[self.__name__]
                self.__dict__["_real"] = importlib.import_module(self.__name__)  # rebinds the parent's attribute
        # while it loads, its own submodules reach it through this stand-in: answer from the module being loaded
        return getattr(self.__dict__.get("_real") or sys.modules[self.__name__], attr)


_DEFER_LOCK = threading.RLock()


def _defer(name: str) -> None:
    if name in sys.modules:
        return
    parent, _, child = name.rpartition(".")
    spec = importlib.util.find_spec(name)
    if spec is None:
        return
    stand_in = _Deferred(name)
    stand_in.__spec__, stand_in.__file__ = spec, spec.origin
    sys.modules[name] = stand_in
    if parent:
        setattr(importlib.import_module(parent), child, stand_in)


def _context():
    with _CONTEXT_LOCK:  # the warm-up thread and a check may ask at once
        if not _CONTEXT:
            for name in DEFERRED:
                _defer(name)
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
    context = _context()  # first: it defers what GX need not load
    import great_expectations as gx
    import great_expectations.expectations as gxe

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


SETTING = "CURATION_VALIDATION_PROCESS"


def configured(env: Mapping[str, str]) -> str:
    """Where validation runs: ``separate`` (default) or ``inline`` (in the step's process)."""
    return env.get(SETTING) or "separate"


_POOL: list[ProcessPoolExecutor] = []  # this process's validation process, once started
_POOL_LOCK = threading.Lock()


def start() -> ProcessPoolExecutor:
    """The validation process, started (importing GX at once) on first call."""
    with _POOL_LOCK:
        if not _POOL:
            context = multiprocessing.get_context("spawn")
            pool = ProcessPoolExecutor(1, mp_context=context, initializer=_follow_parent, initargs=(os.getpid(),))
            pool.submit(_ready)  # the import starts now, not at the first check
            _POOL.append(pool)
        return _POOL[0]


def _ready() -> None:
    _context()


def _follow_parent(parent: int) -> None:
    """In the validation process: end when the process that started it is gone (killed, or
    ended by ``os._exit``). Its queue's pipe never reports that (this side holds both ends),
    so without this it would wait for requests forever. Also hides what GX need not probe."""
    for name in ABSENT_IN_VALIDATION_PROCESS:
        sys.modules.setdefault(name, None)  # an import of it raises ImportError

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="follow-parent", daemon=True).start()


def validate_elsewhere(
    df: pd.DataFrame, suite: str, expectations: Callable[[object], Sequence], id_column: str | None, max_rows: int
) -> Validation:
    """``validate`` in the validation process (started if need be)."""
    pool = start()
    try:
        return pool.submit(validate, df, suite, expectations, id_column, max_rows).result()
    except BrokenProcessPool as exc:
        stop()  # the next check starts a new one
        raise RuntimeError(f"the validation process died while validating {suite}: {exc}") from exc


def stop() -> None:
    """End the validation process now, even mid-import (a command that ends with
    ``os._exit`` calls this first; one that ran no check does not wait for GX)."""
    with _POOL_LOCK:
        found = list(_POOL)
        _POOL.clear()
    for pool in found:
        workers = list((pool._processes or {}).values())  # the executor's only handle on its process
        pool.shutdown(wait=False, cancel_futures=True)
        for worker in workers:
            worker.terminate()
            worker.join(timeout=5)
