"""new_video_sensor at many landing objects: tick time and cursor size (issue 28 item 5).

    python bench/sensor_scale.py [--objects 100000] [--s3 0]

Fills a landing folder (and, with --s3 N, a moto S3 server's landing prefix with N objects)
with tiny objects in 100 camera folders, puts every one in the ledger as ingested, the way a
sensor that has been running for a while finds them (by handing the first tick an old-format
cursor that mapped every key to its fingerprint: the migration path), then times the real
sensor's ticks: nothing changed; one new object; the tick after it (its request unsettled).
Prints the listing alone, the cursor Dagster stores with every tick, the ledger in the
instance's key-value store (SQLite here), and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dagster as dg  # noqa: E402

from bench.machine import describe  # noqa: E402
from curation_assets.defs import sensors  # noqa: E402
from curation_assets.defs.ingestion import landing_sources  # noqa: E402
from curation_assets.defs.partitions import videos  # noqa: E402
from resources import ObjectStoreResource  # noqa: E402


def tick(instance, object_store, cursor):
    started = time.perf_counter()
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources={"object_store": object_store}) as ctx:
        result = sensors.new_video_sensor(ctx)
    seconds = time.perf_counter() - started
    for request in result.dynamic_partitions_requests or []:  # the daemon would
        instance.add_dynamic_partitions(videos.name, list(request.partition_keys))
    return result, seconds


def measure(label: str, object_store: ObjectStoreResource, count: int, fill) -> None:
    landing = object_store.landing_store()
    started = time.perf_counter()
    fill(landing, count)
    print(f"\n{label}: {count} objects written in {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    sources = landing_sources(landing)
    print(f"  listing alone: {time.perf_counter() - started:.2f} s ({len(sources)} sources)")
    old_cursor = json.dumps({s.key: s.fingerprint for s in sources}, sort_keys=True)
    print(f"  old cursor (every key -> fingerprint, stored with every tick): {len(old_cursor) / 1e6:.2f} MB")
    with tempfile.TemporaryDirectory() as home, dg.DagsterInstance.local_temp(home) as instance:
        first, seconds = tick(instance, object_store, old_cursor)
        assert not first.run_requests
        kvs = sum(
            len(v)
            for v in instance.run_storage.get_cursor_values(
                {f"{sensors.Ledger(instance, landing.root)._prefix}{i}" for i in range(sensors.LEDGER_SHARDS)}
            ).values()
        )
        print(f"  tick 1, old cursor moved into the ledger: {seconds:.2f} s; ledger {kvs / 1e6:.2f} MB in 64 shards")
        print(f"    cursor now {len(first.cursor)} bytes")
        same, seconds = tick(instance, object_store, first.cursor)
        assert not same.run_requests
        print(f"  tick 2, nothing changed: {seconds:.2f} s; cursor {len(same.cursor)} bytes")
        landing.put_bytes("cam-new/arrived.mp4", b"a new video")
        new, seconds = tick(instance, object_store, same.cursor)
        assert len(new.run_requests) == 1, new.run_requests
        print(f"  tick 3, one new object: {seconds:.2f} s, 1 run requested; cursor {len(new.cursor)} bytes")
        after, seconds = tick(instance, object_store, new.cursor)
        assert not after.run_requests
        print(f"  tick 4, its request not yet a run: {seconds:.2f} s; cursor {len(after.cursor)} bytes")
    print(f"  peak RSS of this process so far: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MB")


def fill_folder(landing, count: int) -> None:
    root = Path(landing.root)
    for i in range(count):
        folder = root / f"cam-{i % 100:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"clip-{i:07d}.mp4").write_bytes(b"v%d" % i)


def fill_s3(landing, count: int) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: landing.put_bytes(f"cam-{i % 100:03d}/clip-{i:07d}.mp4", b"v%d" % i), range(count)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=100_000, help="objects in the landing folder")
    parser.add_argument("--s3", type=int, default=0, help="objects on a moto S3 server (0: skip)")
    args = parser.parse_args()
    print(f"machine: {describe()} (shared with other work: read the trend)")
    with tempfile.TemporaryDirectory() as tmp:
        measure("local folder", ObjectStoreResource(root=str(Path(tmp) / "root")), args.objects, fill_folder)
    if args.s3:
        import boto3
        from moto.server import ThreadedMotoServer

        from curation_assets.deploy.topology import free_port

        port = free_port()
        for name, value in (("AWS_ACCESS_KEY_ID", "bench"), ("AWS_SECRET_ACCESS_KEY", "bench")):
            os.environ.setdefault(name, value)  # moto accepts any
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # not a line per request
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        try:
            endpoint = f"http://127.0.0.1:{port}"
            boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="bench")
            store = ObjectStoreResource(root="s3://bench/curation", endpoint_url=endpoint, region_name="us-east-1")
            measure("moto S3", store, args.s3, fill_s3)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
