"""Throughput of the frame_embeddings step against a bare model forward, measured in one run.

    python bench/embed.py [--frames 128] [--batch 0] [--models efficientnet-lite0,open_clip:ViT-B-32]
                          [--precisions fp32,bf16] [--device auto] [--process separate|inline]
                          [--runtime auto|torch|onnxruntime] [--repeats 3]

"step" is what frame_embeddings does per video, through the resource as the asset calls it
(the model in its own process by default, ``--process inline`` to keep it here): read each
stored JPEG, send it, decode at the model's scale, preprocess (in a background thread,
overlapped with inference), forward, normalise, and replace the video's points in the
embedded Qdrant store. The model process is started and loaded before the clock starts, as
the headless command's warm-up does. "bare" is the model's forward alone on
images already decoded and preprocessed in memory, same model, runtime, batch and precision. The
packaged model runs with
its real weights; open_clip models with random-init weights (no hub offline; the
arithmetic is the same as with pretrained ones). Bare and step alternate ``--repeats`` times
(this VM's speed drifts by 20 % within minutes); prints their medians, the ratio of the
medians, and for reduced precision the worst cosine similarity to fp32 over the first batch.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import describe  # noqa: E402
from curation_assets.core.embedder import DEFAULT_BATCH_SIZE, Embedder  # noqa: E402
from curation_assets.core.frames import decode_image, encode_jpeg  # noqa: E402
from curation_assets.core.ids import point_id_for  # noqa: E402
from curation_assets.demo.scenes import Scene, default_events, render  # noqa: E402
from resources.embedder import EmbedderResource  # noqa: E402
from resources.object_store import LocalObjectStore  # noqa: E402
from resources.vector_store import EdgeVectorStore  # noqa: E402


def stored_frames(store: LocalObjectStore, n: int) -> list[str]:
    """n vtest-sized (768x576) JPEG frames of a moving store scene, like raw_frames writes."""
    scene = Scene("bench/cam.mp4", seed=3, duration_s=n / 10, events=default_events(n / 10), width=768, height=576)
    return [store.put_bytes(f"frames/bench/{i:06d}.jpg", encode_jpeg(render(scene, i / 10))) for i in range(n)]


def bare_forward(model: Embedder, prepared: list, batch: int) -> float:
    """Images per second of the model alone on preprocessed images in memory, run as the step
    runs it: onnxruntime one batch per core at once, torch one batch at a time on all cores."""
    batches = [prepared[i : i + batch] for i in range(0, len(prepared), batch)]
    model.vectors(batches[0])  # warm-up
    start = time.perf_counter()
    with ThreadPoolExecutor(len(os.sched_getaffinity(0)) if model.resolved_runtime() == "onnxruntime" else 1) as pool:
        list(pool.map(model.vectors, batches))
    if model.resolved_device().startswith("cuda"):
        import torch

        torch.cuda.synchronize()
    return len(prepared) / (time.perf_counter() - start)


def whole_step(
    resource: EmbedderResource, store: LocalObjectStore, uris: list[str], vectors_dir: Path
) -> tuple[float, float | None]:
    model = resource.embedder(load=True)  # loaded before the clock, as after the command's warm-up
    start = time.perf_counter()
    vectors = model.embed_encoded(lambda uri=uri: store.get_bytes(store.key_for_uri(uri)) for uri in uris)
    vs = EdgeVectorStore(vectors_dir)
    vs.ensure_collection("bench", model.vector_name, vectors.shape[1])
    ids = [point_id_for(f"bench/{i:06d}") for i in range(len(uris))]
    vs.replace_video("bench", model.vector_name, "bench", ids, vectors, [{"video_id": "bench"}] * len(ids))
    vs.close()
    return len(uris) / (time.perf_counter() - start), model.describe().get("precision_min_cosine_vs_fp32")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=128)
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH_SIZE, help="0: the runtime's best")
    parser.add_argument("--process", default="separate", choices=["separate", "inline"])
    parser.add_argument("--models", default="efficientnet-lite0,open_clip:ViT-B-32")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--runtime", default="auto", help="auto: onnxruntime for the packaged model at fp32 on CPU")
    parser.add_argument("--repeats", type=int, default=3, help="alternating bare/step measurements; medians shown")
    args = parser.parse_args()

    print(f"machine: {describe()}")
    with tempfile.TemporaryDirectory() as tmp:
        store = LocalObjectStore(Path(tmp) / "root")
        uris = stored_frames(store, args.frames)
        print(f"{args.frames} stored 768x576 JPEG frames, batch {args.batch or 'best per runtime'}\n")
        print(
            f"{'model':>16} {'runtime':>11} {'precision':>9} {'bare img/s':>11} {'step img/s':>11} {'ratio':>6} "
            f"{'min cos vs fp32':>16}"
        )
        for name in args.models.split(","):
            for precision in args.precisions.split(","):
                weights = "none" if name.startswith("open_clip:") else ""
                settings = dict(batch_size=args.batch, device=args.device, precision=precision, runtime=args.runtime)
                model = Embedder(name, weights, **settings)
                prepared = [model.preprocess(decode_image(store.get_bytes(store.key_for_uri(u)))) for u in uris]
                resource = EmbedderResource(model=name, pretrained=weights, process=args.process, **settings)
                bares, steps = [], []
                for _ in range(args.repeats):
                    bares.append(bare_forward(model, prepared, model.resolved_batch_size()))
                    step, min_cos = whole_step(resource, store, uris, Path(tmp) / f"qdrant-{name}-{precision}")
                    steps.append(step)
                bare, step = statistics.median(bares), statistics.median(steps)
                print(f"  bare {[round(b) for b in bares]}, step {[round(s) for s in steps]} images/s")
                cos = "-" if min_cos is None else f"{min_cos:.5f}"
                runtime = model.resolved_runtime()
                print(f"{name:>16} {runtime:>11} {precision:>9} {bare:>11.1f} {step:>11.1f} {step / bare:>6.2f} "
                      f"{cos:>16}")  # fmt: skip


if __name__ == "__main__":
    main()
