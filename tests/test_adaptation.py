"""embedder_adaptation: a few SimCLR steps give a checkpoint, a new uncalibrated model beside the packaged one."""

import importlib.util
import json

import dagster as dg
import numpy as np
import pytest
import torch

from curation_assets.core.adaptation import AdaptationParams, adapt
from curation_assets.core.embedder import Embedder, _packaged_weights
from curation_assets.core.ids import video_id_for
from curation_assets.core.models import PACKAGED, UNCALIBRATED
from curation_assets.definitions import build_defs
from curation_assets.defs.partitions import videos
from tests.conftest import SCENE_A, drop, make_resources, photo

needs_lightly = pytest.mark.skipif(
    importlib.util.find_spec("lightly") is None, reason="the ssl extra is not installed (make ssl)"
)
TINY = AdaptationParams(max_steps=2, batch_size=4, input_size=64, trainable_blocks=1, max_images=8)


def packaged_file():
    return _packaged_weights(PACKAGED["efficientnet-lite0"])


@pytest.fixture
def packaged_copy(tmp_path):
    """The packaged weights saved as a checkpoint file: the same network, loaded from elsewhere."""
    path = tmp_path / "copy.pt"
    path.write_bytes(packaged_file().read_bytes())
    return path


def test_a_checkpoint_of_the_packaged_network_is_a_new_model_beside_the_packaged_one(packaged_copy):
    adapted, packaged = Embedder(pretrained=str(packaged_copy)), Embedder()

    assert adapted.vector_name != packaged.vector_name
    assert adapted.vector_name.startswith("efficientnet-lite0__ckpt-")


def test_a_checkpoint_of_the_packaged_network_runs_uncalibrated(packaged_copy):
    assert Embedder(pretrained=str(packaged_copy)).calibration == UNCALIBRATED


def test_a_checkpoint_of_the_packaged_network_embeds_with_its_own_weights(packaged_copy):
    image = photo(1, size=(160, 120))
    from_checkpoint = Embedder(pretrained=str(packaged_copy), runtime="torch", precision="fp32").embed([lambda: image])
    from_package = Embedder(runtime="torch", precision="fp32").embed([lambda: image])

    assert float((from_checkpoint * from_package).sum()) > 0.9999  # the same weights: the same vector


@needs_lightly
def test_adaptation_trains_a_few_steps_into_a_checkpoint_the_embedder_loads(tmp_path):
    images = [lambda seed=seed: photo(seed, size=(160, 120)) for seed in range(8)]

    adapted = adapt(images, TINY)
    (tmp_path / "adapted.pt").write_bytes(adapted.checkpoint)
    vectors = Embedder(pretrained=str(tmp_path / "adapted.pt"), precision="fp32").embed(images[:2])
    packaged = Embedder(runtime="torch", precision="fp32").embed(images[:2])

    assert adapted.steps == 2 and all(np.isfinite(adapted.losses))
    assert vectors.shape == (2, 1280)
    assert not np.allclose(vectors, packaged, atol=1e-4)  # the last block learned


@needs_lightly
def test_embedder_adaptation_versions_its_checkpoint_with_window_and_losses(tmp_path, video_dir):
    resources = make_resources(str(tmp_path / "root"), tmp_path / "qdrant")
    drop(resources["object_store"].landing_store(), video_dir, SCENE_A.name)
    video_id = video_id_for(SCENE_A.name)
    defs = build_defs(resources, adaptation=True)
    config = {k: getattr(TINY, k) for k in ("max_steps", "batch_size", "input_size", "trainable_blocks", "max_images")}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(videos.name, [video_id])
        frames = dg.materialize([defs.get_assets_def("raw_frames")], partition_key=video_id, resources=resources,
                                instance=instance)  # fmt: skip
        assert frames.success
        result = dg.materialize([defs.get_assets_def("embedder_adaptation")], resources=resources, instance=instance,
                                run_config={"ops": {"embedder_adaptation": {"config": config}}})  # fmt: skip

    metadata = result.asset_materializations_for_node("embedder_adaptation")[0].metadata
    store = resources["object_store"].store()
    key = store.key_for_uri(metadata["checkpoint"].value)
    record = json.loads(store.get_bytes(key.replace(".pt", ".json")))
    assert key.startswith("models/embedder_adaptation/") and store.exists(key)
    assert record["data_window"]["videos"] == [video_id] and len(record["losses"]) == 2
    with store.local_path(key) as path:  # the packaged network's whole state: the embedder loads it strictly
        assert torch.load(path, weights_only=True).keys() == torch.load(packaged_file(), weights_only=True).keys()
