import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from resources.embedder import Embedder, EmbedderError


def _images(n=4):
    rng = np.random.default_rng(0)
    return [lambda a=rng.integers(0, 255, (64, 80, 3), dtype=np.uint8): Image.fromarray(a) for _ in range(n)]


@pytest.fixture(scope="module")
def random_model():
    return Embedder("ViT-B-32", "none", seed=0, batch_size=3)


def test_random_init_is_seeded_reported_and_unit_norm(random_model):
    vectors = random_model.embed(_images(5))  # two batches
    assert vectors.shape == (5, 512) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert random_model.describe()["random_init"] is True
    assert random_model.vector_name == "ViT-B-32__random-init-seed0"
    assert np.allclose(Embedder("ViT-B-32", "none", seed=0).embed(_images(5)), vectors, atol=1e-5)


def test_a_local_checkpoint_loads_those_weights(random_model, tmp_path):
    random_model.load()
    path = tmp_path / "clip.pt"
    torch.save(random_model._model.state_dict(), path)
    from_checkpoint = Embedder("ViT-B-32", str(path), seed=123)
    assert not from_checkpoint.random_init
    assert from_checkpoint.vector_name.startswith("ViT-B-32__ckpt-")
    assert np.allclose(from_checkpoint.embed(_images()), random_model.embed(_images()), atol=1e-5)


def test_a_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(EmbedderError, match="checkpoint .*missing.pt does not exist"):
        Embedder("ViT-B-32", str(tmp_path / "missing.pt")).load()


def test_unknown_tag_or_model_is_a_clear_error():
    with pytest.raises(EmbedderError, match="no pretrained tag 'nonsense'"):
        Embedder("ViT-B-32", "nonsense").load()
    with pytest.raises(EmbedderError, match="unknown open_clip model"):
        Embedder("ViT-Z-99", "none").load()


def test_unavailable_hub_weights_fail_with_advice_not_random_weights():
    code = (
        "from resources.embedder import Embedder, EmbedderError\n"
        "try:\n    Embedder('ViT-B-32', 'laion2b_s34b_b79k').load()\n"
        "except EmbedderError as e:\n    print('ERROR:', e)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # what an air-gapped site sees, without waiting on DNS
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300).stdout
    assert "ERROR: could not load open_clip weights ViT-B-32/laion2b_s34b_b79k" in out
    assert "checkpoint path or s3:// URI" in out
