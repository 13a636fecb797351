"""Cost of adding one video to the duplicate groups, against corpus size: incremental vs rebuild.

    python bench/incremental.py [--corpus 10000,50000,200000] [--video 1000] [--dim 512]

For each corpus size: a synthetic corpus (bench/scale.py's generator, 1 000 frames per
video) is grouped once and its vectors stored in the embedded Qdrant engine with the
payload frame_embeddings writes; then one new video arrives whose frames are 20 % copies
of old frames and 80 % new. "incremental" is what duplicate_groups does for it (group
the new video alone, match each new leader with the existing representatives through the
vector store: their group ids are the points' payload); "rebuild" regroups everything.
The embedded engine's HNSW index over the corpus is built once before timing (reported
apart: a Qdrant server builds it in the background as points arrive; later builds index
only what arrived since). Also checks that every copied frame joined its original's group.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import describe  # noqa: E402
from bench.scale import corpus  # noqa: E402
from curation_assets.core import layout  # noqa: E402
from curation_assets.core.duplicates import DuplicateParams, find_duplicate_groups  # noqa: E402
from curation_assets.core.ids import point_id_for  # noqa: E402
from curation_assets.defs.curation import _group_new_sources, _group_payloads  # noqa: E402
from resources.object_store import LocalObjectStore  # noqa: E402
from resources.vector_store import EdgeVectorStore  # noqa: E402

VECTOR = "bench"


def new_video(frames: pd.DataFrame, vectors: np.ndarray, size: int, seed: int = 9):
    """``size`` frames: a fifth are noisy copies of random old frames, the rest new ones."""
    rng = np.random.default_rng(seed)
    copies = size // 5
    originals = rng.choice(len(frames), copies, replace=False)
    fresh, fresh_vectors, *_ = corpus(size, vectors.shape[1], 0.0, seed=seed)
    new_vectors = fresh_vectors.copy()
    new_vectors[:copies] = vectors[originals] + 0.004 * rng.standard_normal((copies, vectors.shape[1]))
    new_vectors /= np.linalg.norm(new_vectors, axis=1, keepdims=True)
    new = fresh.assign(
        video_id="new",
        frame_id=[f"new/{i:06d}" for i in range(size)],
        sha256=[f"new-{i}" for i in range(size)],
        corrupt=False,
        uri="",  # no pictures: geometric verification is off here
    )
    new.loc[: copies - 1, "phash"] = frames["phash"].to_numpy()[originals]
    return new, new_vectors.astype(np.float32), originals


def measure(n: int, video: int, dim: int) -> dict:
    frames, vectors, *_ = corpus(n, dim, 0.0)
    params = DuplicateParams(verify_cosine=None)  # synthetic frames have no pictures to verify
    with tempfile.TemporaryDirectory() as tmp:
        store = LocalObjectStore(Path(tmp) / "root")
        vs = EdgeVectorStore(Path(tmp) / "qdrant")
        vs.ensure_collection("frames", VECTOR, dim)
        started = time.perf_counter()
        stored_groups = find_duplicate_groups(frames, vectors, params)
        first_build = time.perf_counter() - started
        group_payload = _group_payloads(stored_groups)  # what duplicate_groups keeps in the store
        payloads = [
            {**p, **group_payload[p["frame_id"]]}
            for p in frames[["frame_id", "video_id", "frame_index", "phash"]].to_dict("records")
        ]
        ids = [point_id_for(f) for f in frames["frame_id"]]
        for start in range(0, n, 2048):
            vs.upsert("frames", VECTOR, ids[start : start + 2048], vectors[start : start + 2048],
                      payloads[start : start + 2048])  # fmt: skip

        new, new_vectors, originals = new_video(frames, vectors, video)
        store.write_table(layout.table_key("raw_frames", "new"), new)
        vector_table = pd.DataFrame({"frame_id": new["frame_id"], "vector_name": VECTOR, "vector": list(new_vectors)})
        store.write_table(layout.table_key("frame_embeddings", "new"), vector_table)
        started = time.perf_counter()
        vs.build_index("frames")  # once per corpus; later calls index only what arrived since
        index_build = time.perf_counter() - started
        started = time.perf_counter()
        _, new_groups, joins = _group_new_sources(store, vs, "frames", VECTOR, ["new"], params)
        incremental = time.perf_counter() - started
        groups, joined = pd.concat([stored_groups, new_groups], ignore_index=True), len(joins)

        started = time.perf_counter()
        find_duplicate_groups(pd.concat([frames, new], ignore_index=True), np.vstack([vectors, new_vectors]), params)
        rebuild = time.perf_counter() - started
        vs.close()
    group = groups.set_index("frame_id")["group_id"]
    copied = new["frame_id"][: len(originals)]
    found = (group.loc[copied].to_numpy() == group.loc[frames["frame_id"].to_numpy()[originals]].to_numpy()).mean()
    return {
        "corpus": n,
        "incremental_s": round(incremental, 2),
        "rebuild_s": round(rebuild, 2),
        "first_build_s": round(first_build, 2),
        "index_build_once_s": round(index_build, 1),
        "copies_joined": f"{found:.3f}",
        "groups_joined": joined,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="10000,50000,200000")
    parser.add_argument("--video", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=512)
    args = parser.parse_args()
    print(f"machine: {describe()}")
    print(f"new video: {args.video} frames (20 % copies of old frames)")
    header = ("corpus", "incremental_s", "rebuild_s", "copies_joined", "groups_joined", "index_build_once_s")
    print(" | ".join(header))
    for n in (int(s) for s in args.corpus.split(",")):
        row = measure(n, args.video, args.dim)
        print(" | ".join(str(row[h]) for h in header))


if __name__ == "__main__":
    main()
