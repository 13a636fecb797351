"""Great Expectations in its own process: the same verdicts as inline, and it never holds up
the caller (neither its import nor its end)."""

import importlib
import os
import pickle
import signal
import subprocess
import sys

import dagster as dg
import pandas as pd
import pytest

from curation_assets.quality import suites
from curation_assets.runtime import validation_process
from resources import ExpectationsResource
from tests.helpers import ROOT, gone_within, modules_loaded_by


def _groups(reps: list[int]) -> pd.DataFrame:
    return pd.DataFrame({"group_id": [f"g{i}" for i in range(len(reps))], "representatives": reps})


def test_the_separate_process_gives_the_inline_verdicts_with_the_failing_rows():
    separate, inline = ExpectationsResource(), ExpectationsResource(process="inline")
    bad = _groups([1, 2, 1, 0])
    results = [r.validate(bad, "reps", suites.one_representative_per_group(), "group_id") for r in (separate, inline)]
    assert results[0] == results[1]
    assert not results[0].success
    [failure] = results[0].failures
    assert failure.unexpected_rows == ["g1", "g3"] and failure.unexpected_count == 2
    assert separate.validate(_groups([1, 1]), "reps", suites.one_representative_per_group(), "group_id").success


def test_every_suite_pickles_so_it_can_reach_the_validation_process():
    bound = [
        suites.frame_table(3),
        suites.vector_summary(10, 1280, id_column="object_id"),
        suites.duplicate_groups(["v/000000"]),
        suites.cleaned_dataset(),
    ]
    for expectations in bound:
        assert pickle.loads(pickle.dumps(expectations)).func is expectations.func


def test_in_the_validation_process_gx_finds_no_cloud_sdk_and_still_validates():
    pool = validation_process.start()
    for name in validation_process.ABSENT_IN_VALIDATION_PROCESS:
        with pytest.raises(ImportError):
            pool.submit(importlib.import_module, name).result()
    table = pd.DataFrame({"frame_id": ["a", "b"], "dim": [4, 3], "finite": [True, True], "norm": [1.0, 1.0]})
    verdict = ExpectationsResource().validate(table, "vectors", suites.vector_summary(2, 4), "frame_id")
    assert not verdict.success and [f.unexpected_rows for f in verdict.failures] == [["b"]]
    assert importlib.import_module("boto3").client  # this process (the S3 store's) is untouched


def test_the_module_the_process_loads_imports_neither_dagster_nor_gx():
    code = "import curation_assets.runtime.validation_process, curation_assets.quality.suites"
    assert modules_loaded_by(code, ("dagster", "great_expectations", "torch")) == []


def test_a_validation_process_that_dies_is_a_clear_error_and_the_next_check_starts_a_new_one():
    resource = ExpectationsResource()
    assert resource.validate(_groups([1]), "reps", suites.one_representative_per_group(), "group_id").success
    [worker] = validation_process.start()._processes.values()
    os.kill(worker.pid, signal.SIGKILL)
    worker.join(timeout=10)
    with pytest.raises(RuntimeError, match="the validation process died while validating reps"):
        resource.validate(_groups([1]), "reps", suites.one_representative_per_group(), "group_id")
    assert resource.validate(_groups([1]), "reps", suites.one_representative_per_group(), "group_id").success


def test_stopping_does_not_wait_for_the_import_and_leaves_no_process():
    code = (
        "import time\n"
        "from curation_assets.runtime import validation_process\n"
        "pool = validation_process.start()\n"
        "time.sleep(0.5)\n"  # the import is under way
        "[worker] = pool._processes.values()\n"
        "started = time.perf_counter()\n"
        "validation_process.stop()\n"
        "print(worker.pid, round(time.perf_counter() - started, 2))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    pid, seconds = out.stdout.split()
    # the process table, not worker.is_alive(): the executor's own thread may reap the worker
    # first, and is_alive() then reports a process that is gone as alive
    assert float(seconds) < 2.0  # GX's import takes about 4 s
    assert gone_within(int(pid), 1)


def test_the_validation_process_ends_when_its_parent_is_killed():
    code = (
        "import os, signal\n"
        "from curation_assets.runtime import validation_process\n"
        "pool = validation_process.start()\n"
        "print(pool.submit(os.getpid).result(), flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == -signal.SIGKILL
    assert gone_within(int(out.stdout.split()[0]), 30)


def test_an_unknown_setting_fails_the_step_without_retries():
    with pytest.raises(dg.Failure, match="expectations process 'elsewhere'"):
        ExpectationsResource(process="elsewhere").warm_up()


def test_gx_validates_without_loading_what_only_unused_expectations_need_and_loads_it_on_first_use():
    probe = """
import sys, pandas as pd
from curation_assets.runtime import validation_process as vp
from curation_assets.quality import suites
table = pd.DataFrame({"group_id": ["g0", "g1"], "representatives": [1, 2]})
verdict = vp.validate(table, "reps", suites.one_representative_per_group(), "group_id")
stand_in = vp._Deferred("")
loaded = [name for name in ("scipy.stats", "altair") if not isinstance(sys.modules.get(name, stand_in), vp._Deferred)]
from scipy.stats import distributions  # a submodule of a stand-in: its parent loads first
from scipy import stats
import altair
print(repr((verdict.success, verdict.failures[0].unexpected_rows, loaded, round(float(stats.entropy([0.5, 0.5])), 4),
            altair.Chart.__name__, type(sys.modules["scipy.stats"]).__name__, distributions.norm.name)))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True)
    success, failing, loaded, entropy, chart, module, norm = eval(out.stdout.strip().splitlines()[-1])
    assert (success, failing) == (False, ["g1"])  # GX ran for real: one group's two representatives
    assert loaded == []  # neither scipy.stats nor altair executed for it
    assert (entropy, chart, module, norm) == (0.6931, "Chart", "module", "norm")  # later users get the real ones
