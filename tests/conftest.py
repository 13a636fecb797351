"""Shared fixtures: real encoded videos, real storage (folder or moto's S3 server), real Qdrant."""

import hashlib
import os
import re
from pathlib import Path

import boto3
import dagster as dg
import pytest

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

from curation_assets.definitions import build_defs  # noqa: E402
from curation_assets.demo.scenes import Event, Scene, write_corrupt_video, write_video  # noqa: E402
from curation_assets.deploy.topology import free_port  # noqa: E402
from resources import EmbedderResource, ExpectationsResource, ObjectStoreResource, VectorStoreResource  # noqa: E402

# The files that take minutes (mostly waiting on servers) start first, so the two workers of
# `make test` (a file each, `--dist loadfile`) finish together instead of one waiting on the other.
SLOW_FIRST = ("test_topology.py", "test_reliability.py", "test_ui_browser.py")


def pytest_collection_modifyitems(items):
    order = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: order.get(item.path.name, len(SLOW_FIRST)))  # stable: files stay whole


# Small scenes: seconds, not minutes, of video; the same generator as the demo.
SMALL = {"width": 160, "height": 120, "fps": 5}
SCENE_A = Scene(
    "cam-a/shelf.mp4", seed=1, duration_s=8.0, events=(Event("walk", 3.0, 5.0), Event("dark", 5.0, 6.5)), **SMALL
)
SCENE_B = Scene("cam-b/checkout.mp4", seed=7, duration_s=6.0, events=(Event("cart", 2.0, 4.0),), **SMALL)


@pytest.fixture(scope="session")
def video_dir(tmp_path_factory) -> Path:
    """Encoded test videos, written once per session with PyAV."""
    folder = tmp_path_factory.mktemp("videos")
    for scene in (SCENE_A, SCENE_B):
        write_video(scene, folder / scene.name)
    write_corrupt_video(folder / "cam-b/broken.mp4", folder / SCENE_B.name)
    (folder / "cam-a/notes.txt").write_text("not a video\n")
    return folder


# distinct real photographs bundled with scikit-image (no download)
PHOTOS = ("page", "astronaut", "text", "horse", "brick", "checkerboard", "camera", "cell", "chelsea", "clock", "coffee",
          "coins", "colorwheel", "grass", "gravel", "hubble_deep_field", "immunohistochemistry", "logo",
          "microaneurysms", "moon", "retina", "rocket", "stereo_motorcycle")  # fmt: skip


def photo(seed: int, size=(96, 64)):
    """A real photograph, a different one for each seed in a run of 23 (as far as tests use)."""
    import numpy as np
    import skimage.data
    from PIL import Image

    name = PHOTOS[(seed * 7) % len(PHOTOS)]
    data = getattr(skimage.data, name)()
    data = data[0] if name == "stereo_motorcycle" else data
    image = Image.fromarray(np.asarray(data))
    if image.mode in ("RGBA", "LA"):
        canvas = Image.new("RGBA", image.size, "white")
        canvas.alpha_composite(image.convert("RGBA"))
        image = canvas
    return image.convert("RGB").resize(size, Image.Resampling.LANCZOS)


def encoded(image, fmt: str = "JPEG", **kwargs) -> bytes:
    import io

    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def drop(landing, video_dir: Path, *names: str) -> None:
    """Copy test videos into a landing store (folder or S3) under the same keys."""
    for name in names:
        landing.put_bytes(name, (video_dir / name).read_bytes())


def make_resources(root: str, qdrant_path: Path, endpoint_url: str | None = None) -> dict:
    return {
        "object_store": ObjectStoreResource(root=root, endpoint_url=endpoint_url, region_name="us-east-1"),
        "vector_store": VectorStoreResource(path=str(qdrant_path), lock_timeout_s=5),
        "embedder": EmbedderResource(batch_size=16),  # the packaged pretrained default
        "expectations": ExpectationsResource(),
    }


@pytest.fixture
def local_defs(tmp_path) -> dg.Definitions:
    return build_defs(make_resources(str(tmp_path / "root"), tmp_path / "qdrant"))


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 server on loopback: real HTTP, real boto3, no monkeypatching."""
    from moto.server import ThreadedMotoServer

    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "testing-key-id",
            "AWS_SECRET_ACCESS_KEY": "testing-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint, request) -> str:
    digest = hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:8]  # one bucket per test and parameter
    name = ("c-" + digest + "-" + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()))[:60].strip("-")
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


CORPUS_FOLDER = "cam-a/photos"
CORPUS_PHOTOS = [photo(seed, size=(320, 240)) for seed in range(10)]


def shifted(image):
    """A near copy: 6 px to the side and a touch brighter (not what is stored)."""
    from PIL import Image

    moved = image.transform(image.size, Image.Transform.AFFINE, (1, 0, 6, 0, 1, 0), fillcolor=(128, 128, 128))
    return moved.point(lambda v: min(255, int(v * 1.08)))


@pytest.fixture(scope="session")
def corpus(tmp_path_factory, video_dir):
    """Ten photographs and a planted copy of the fourth (``p99-copy-of-p03.jpg``) in one
    camera's folder, a video in another camera's; ingested and curated through the real
    graph once per session. (defs, instance, resources, folder)."""
    from curation_assets.cli import headless

    tmp = tmp_path_factory.mktemp("corpus")
    resources = make_resources(str(tmp / "root"), tmp / "qdrant")
    landing = resources["object_store"].landing_store()
    for i, image in enumerate(CORPUS_PHOTOS):
        landing.put_bytes(f"{CORPUS_FOLDER}/p{i:02d}.jpg", encoded(image, quality=92))
    landing.put_bytes(f"{CORPUS_FOLDER}/p99-copy-of-p03.jpg", encoded(shifted(CORPUS_PHOTOS[3]), quality=80))
    landing.put_bytes("cam-b/shelf.mp4", (video_dir / SCENE_A.name).read_bytes())
    defs = build_defs(resources)
    with dg.instance_for_test() as instance:
        assert all(o.success for o in headless.ingest_landing(defs, instance, log=lambda _: None))
        assert headless.run_job(defs, instance, "curate").success
        yield defs, instance, resources, tmp
