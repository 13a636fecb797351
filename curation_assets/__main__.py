"""Headless command: run the graph for any landing location and storage root.

    python -m curation_assets run --landing PATH_OR_S3_URI --root PATH_OR_S3_URI \\
        [--select ingest,curate,rebuild,objects,map,select,label] [--predictions boxes.parquet] \\
        [--round round-0001 --budget 50 --strategy diversity|object_diversity|...] \\
        [--summary-json summary.json]
    python -m curation_assets search --image q.jpg | --frame VIDEO/000042 | --text "a forklift" \\
        [--top 20] [--camera cam-a] [--video ID] [--from-s 10 --to-s 60] [--split val] \\
        [--exclude-outliers] [--exclude-duplicates] [--root ...] [--json hits.json]
    python -m curation_assets search --boxes --image crop.jpg | --box VIDEO/000042/labels-000 \\
        [--category forklift] [--camera ...] [--exclude-outliers] [--exclude-duplicates] ...

Same definitions, checks and lineage as the UI: with DAGSTER_HOME set, the runs appear
there. Exit status: 0 when every run succeeded and no blocking check failed, 1 otherwise,
2 for bad arguments. Cron, CI or an Airflow BashOperator can drive it.
"""

import argparse
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

STARTED = time.perf_counter()  # before the heavy imports: start-up is part of the summary's timings

# curate adds new sources to the groups and flags; rebuild redoes them all (model or thresholds
# changed, stored frames' isolation refreshed, a root of the first layout migrated)
STAGES = ("ingest", "curate", "rebuild", "objects", "map", "select", "label")
TEMPORARY: list[str] = []  # folders the command made for itself, removed before it exits


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m curation_assets", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the pipeline headless and print a summary")
    run.add_argument("--landing", help="landing folder or s3:// prefix (default <root>/landing)")
    run.add_argument("--root", help="storage root folder or s3:// prefix (default $CURATION_STORAGE_URI or .curation)")
    run.add_argument("--select", default="ingest,curate", help=f"comma list of {', '.join(STAGES)}")
    run.add_argument("--predictions", default="", help="for objects: key under the root of a detection "
                     "predictions table whose boxes join the labeled ones")  # fmt: skip
    run.add_argument("--round", default="round-0001", help="labeling round for --select select")
    # unset: the labeling round's own defaults (SelectionConfig), read once Dagster is imported
    run.add_argument("--budget", type=int, help="frames to send to labeling (default: selected_batch's)")
    run.add_argument("--strategy", help="selection strategy (default: selected_batch's)")
    run.add_argument("--seed", type=int, help="selection seed (default: selected_batch's)")
    run.add_argument("--summary-json", type=Path, help="also write the summary here as JSON")
    find = sub.add_parser("search", help="frames like an image, a stored frame or a text")
    query = find.add_mutually_exclusive_group(required=True)
    query.add_argument("--image", help="query image: a file path or s3:// URI")
    query.add_argument("--frame", help="query by a stored frame id (video/000042)")
    query.add_argument("--text", help="query by text (open_clip models only)")
    query.add_argument("--box", help="query by a stored box's object id (VIDEO/000042/labels-000); implies --boxes")
    find.add_argument("--boxes", action="store_true", help="search the boxes' crops instead of whole frames")
    find.add_argument("--category", action="append", default=[], help="boxes only: only this class (repeatable)")
    find.add_argument("--root", help="storage root folder or s3:// prefix (default $CURATION_STORAGE_URI or .curation)")
    find.add_argument("--top", type=int, help="how many hits (default: the search job's)")
    find.add_argument("--camera", action="append", default=[], help="only this camera (repeatable)")
    find.add_argument("--video", action="append", default=[], help="only this video (repeatable)")
    find.add_argument("--from-s", type=float, help="only frames at or after this time in their video")
    find.add_argument("--to-s", type=float, help="only frames at or before this time in their video")
    find.add_argument("--split", default="", help="only frames of this split (labeled datasets)")
    find.add_argument("--exclude-outliers", action="store_true")
    find.add_argument("--exclude-duplicates", action="store_true")
    find.add_argument("--json", type=Path, help="also write the hits here as JSON")
    args = parser.parse_args(argv)
    if args.command == "search":
        if args.top is not None and args.top < 1:
            parser.error("--top must be at least 1")
        return args
    unknown = set(args.select.split(",")) - set(STAGES)
    if unknown:
        parser.error(f"--select: unknown stage(s) {', '.join(sorted(unknown))}; choose from {', '.join(STAGES)}")
    return args


def environment(args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ)
    if args.root:
        env["CURATION_STORAGE_URI"] = args.root
    if args.landing:
        env["CURATION_LANDING_URI"] = args.landing
    return env


def start_helpers(args: argparse.Namespace, env: dict[str, str]) -> None:
    """Start the validation and model processes before Dagster is imported (1.2 s of CPU
    here): GX imports and the model loads on the other core meanwhile."""
    from curation_assets.defs.settings import embedder_settings
    from curation_assets.runtime import validation_process

    if validation_process.configured(env) == "separate":
        validation_process.start()
    model = embedder_settings(env)
    if "ingest" in args.select.split(",") and model.pop("process") == "separate":
        from curation_assets.runtime.model_process import model_process

        model_process(model)  # the run's embedder resource finds it started


def landing_problem(env: dict[str, str]) -> str | None:
    """Why the landing zone cannot be used with this root: it overlaps what a run writes."""
    from curation_assets.core.layout import overlap_problem
    from curation_assets.defs.settings import landing_and_root, vector_store_path

    landing, root = landing_and_root(env)
    written = {"DAGSTER_HOME": env.get("DAGSTER_HOME", "")}
    if not env.get("QDRANT_URL"):
        written["the embedded vector store"] = vector_store_path(env)
    return overlap_problem(root, landing, **written)


def run(args: argparse.Namespace, env: dict[str, str]) -> int:
    """Every stage asked for. The summary is printed and written (``--summary-json``) however
    the command ends: runs that failed, a fault outside any run (the landing zone cannot be
    listed, the instance cannot be opened: one line with the cause, not a traceback), or a
    stop signal (then re-raised)."""
    from curation_assets.cli import headless

    started = time.perf_counter()
    videos: list = []
    outcomes: list = []
    begun = ["start-up"]  # the stages begun: the last one is where a fault outside a run happened

    def summary() -> dict:
        return headless.summarize(videos, outcomes, time.perf_counter() - started, started - STARTED)

    try:
        _run_stages(args, env, videos, outcomes, begun.append)
    except KeyboardInterrupt as stop:
        signum = getattr(stop, "signum", None) or headless.STOP.received() or signal.SIGINT
        outcomes.append(headless.RunOutcome(begun[-1], False, f"stopped by {signal.Signals(signum).name}"))
        _report(args, summary())
        stop.signum = signum
        raise
    except Exception as exc:  # noqa: BLE001 - reported as the stage's failure, with its cause
        failed = headless.failed_outside_runs(begun[-1], exc)
        print(f"FAILED {failed.name}: {failed.error}", file=sys.stderr)
        outcomes.append(failed)
    result = summary()
    _report(args, result)
    failed = result["blocking_checks_failed"] or not all(o.success for o in [*videos, *outcomes])
    return 1 if failed else 0


def _report(args: argparse.Namespace, summary: dict) -> None:
    from curation_assets.cli import headless

    print(headless.format_summary(summary))
    if args.summary_json:
        try:
            args.summary_json.write_text(json.dumps(summary, indent=1))
        except OSError as exc:
            print(f"cannot write --summary-json {args.summary_json}: {exc}", file=sys.stderr)


def _run_stages(args: argparse.Namespace, env: dict[str, str], videos: list, outcomes: list, begin) -> None:
    import dagster as dg

    from curation_assets.cli import headless
    from curation_assets.cli.terminal import TerminalProgress
    from curation_assets.core.progress import show_progress
    from curation_assets.location import component

    begin("start-up")
    fleet = component(env)  # defs.yaml resolved once, as the code location does
    defs = fleet.definitions(fleet.resources(env), location_executor=True)
    if os.environ.get("DAGSTER_HOME"):
        instance = dg.DagsterInstance.get()
    else:
        print("note: DAGSTER_HOME is not set; runs are kept in a temporary instance, not shown in the UI")
        # its folder is removed on the way out (the command ends with os._exit: no finalizer runs)
        TEMPORARY.append(tempfile.mkdtemp(prefix="curation-instance-"))
        instance = dg.DagsterInstance.ephemeral(tempdir=TEMPORARY[-1])
    show_progress(TerminalProgress())

    stages = args.select.split(",")
    # One load of the embedded store for the whole command, not one per step that uses it (at a million
    # points a load takes seconds); a process that waits for it gets it between two steps (held's doc)
    with defs.resources["vector_store"].held():
        if "ingest" in stages:
            begin("ingest")
            headless.ingest_landing(defs, instance, outcomes=videos)
        if "curate" in stages:
            begin("curate")
            outcomes.append(headless.timed_run(defs, instance, "curate", "curate"))
        if "rebuild" in stages:
            begin("rebuild")
            outcomes.append(headless.timed_run(defs, instance, "rebuild", "rebuild_curation"))
        if "objects" in stages:
            begin("objects")
            config = {"ops": {"object_embeddings": {"config": {"predictions": args.predictions}}}}
            outcomes.append(headless.timed_run(defs, instance, "objects", "curate_objects", run_config=config))
        if "map" in stages:
            begin("map")
            outcomes.append(headless.timed_run(defs, instance, "map", "draw_map"))
        if "select" in stages:
            from curation_assets.defs.selected_batch import SelectionConfig

            begin(args.round)
            chosen = {"budget": args.budget, "strategy": args.strategy, "seed": args.seed}
            round_config = SelectionConfig(**{k: v for k, v in chosen.items() if v is not None})
            outcomes.append(headless.run_round(defs, instance, args.round, round_config.budget, round_config.strategy,
                                               round_config.seed))  # fmt: skip
        if "label" in stages:
            begin("import_labels")
            outcomes.append(headless.timed_run(defs, instance, "import_labels", "import_labels"))


def search(args: argparse.Namespace) -> int:
    from curation_assets.core.embedder import EmbedderError
    from curation_assets.core.search import RootMismatch, SearchError
    from curation_assets.defs.search import SearchConfig, write_report
    from curation_assets.defs.search import search as run_search
    from curation_assets.defs.settings import resources_from_env

    env = dict(os.environ)
    if args.root:
        env["CURATION_STORAGE_URI"] = args.root
    resources = resources_from_env(env)
    config = SearchConfig(image=args.image or "", frame=args.frame or "", text=args.text or "", box=args.box or "",
                          boxes=args.boxes, categories=args.category, cameras=args.camera,
                          videos=args.video, time_from_s=args.from_s, time_to_s=args.to_s, split=args.split,
                          exclude_outliers=args.exclude_outliers,
                          exclude_duplicates=args.exclude_duplicates,
                          **({"top": args.top} if args.top is not None else {}))  # fmt: skip
    try:
        result = run_search(config, resources["object_store"], resources["embedder"], resources["vector_store"])
        store = resources["object_store"].store()
        pictures, _ = write_report(store, result, time.strftime("cli-%Y%m%d-%H%M%S"))
    except RootMismatch as exc:  # the arguments do not fit together: a usage error
        print(f"search: {exc}", file=sys.stderr)
        return 2
    except (SearchError, EmbedderError) as exc:
        print(f"search: {exc}", file=sys.stderr)
        return 1
    print(f"{result.query.describe()}: {len(result.hits)} hits from {result.model} in {result.seconds * 1000:.1f} ms")
    print(result.hits.drop(columns="uri", errors="ignore").to_string(index=False) if len(result.hits) else "no hits")
    print(f"contact sheet: {pictures['search_hits_report'].value}")
    if args.json:
        args.json.write_text(result.hits.to_json(orient="records", indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "search":
        return search(args)
    # SIGTERM (timeout, cron, Kubernetes) stops the command as Ctrl-C does: the step in
    # progress is abandoned (every write is atomic, so nothing half-written is published),
    # no new step starts, and a re-run resumes what is left.
    env = environment(args)
    if problem := landing_problem(env):
        print(f"python -m curation_assets run: {problem}", file=sys.stderr)
        from curation_assets.cli import headless

        refused = headless.RunOutcome("start-up", False, problem)
        _report(args, headless.summarize([], [refused], 0.0, time.perf_counter() - STARTED))
        return 2
    try:
        start_helpers(args, env)
    except Exception as exc:  # noqa: BLE001 - a setting the helpers cannot start with: its cause, and the summary
        from curation_assets.cli import headless

        failed = headless.failed_outside_runs("start-up", exc)
        print(f"FAILED {failed.name}: {failed.error}", file=sys.stderr)
        _report(args, headless.summarize([], [failed], 0.0, time.perf_counter() - STARTED))
        return 1
    from curation_assets.cli import headless

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # outside a run: stop at once
    headless.STOP = headless.StopSignals()
    try:
        return run(args, env)
    except KeyboardInterrupt as stop:
        # Dagster maps SIGTERM onto the Ctrl-C handler between runs: the pipe knows which it was
        signum = getattr(stop, "signum", None) or headless.STOP.received() or signal.SIGINT
        print(f"\nstopped by {signal.Signals(signum).name}: re-run the same command to resume", file=sys.stderr)
        return 128 + signum


if __name__ == "__main__":
    code = main()
    # Everything is written and closed by now (every write is atomic and complete); skip the
    # interpreter's teardown of GX and Dagster: 2.4 s here, for nothing.
    from curation_assets.runtime import validation_process
    from curation_assets.runtime.model_process import stop_model_processes

    stop_model_processes()
    validation_process.stop()
    for folder in TEMPORARY:
        shutil.rmtree(folder, ignore_errors=True)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
