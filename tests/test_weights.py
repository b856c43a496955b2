"""Published weights: exact conversion, strictness, safety, and the download path."""

import functools
import os
import pickle

import numpy as np
import pytest
import torch

import ffzoo
from ffzoo.weights import ConversionError, UnsafeCheckpointError, convert, download, presets
from ffzoo.weights import pth as ffpth
from tests.conftest import BACKEND, python_without, run_python
from tests import loopback
from references import torch_ffvit

TINY = dict(patch_size=16, embed_dim=192, depth=12)
# A small patch-32 model: 7 x 7 patches, so the 14 x 14 grid is resized on every call.
P32 = dict(patch_size=32, embed_dim=48, depth=2)


def _torch_logits(model, images):
    with torch.no_grad():
        return model(torch.from_numpy(np.transpose(images, (0, 3, 1, 2)))).numpy()


@functools.lru_cache(maxsize=None)
def _reference(config, seed):
    model = torch_ffvit.perturb(torch_ffvit.FFViT(**dict(config)), seed=seed)
    return model.eval()


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    model = _reference(tuple(TINY.items()), 0)
    ema = torch_ffvit.perturb(torch_ffvit.FFViT(**TINY), seed=1).eval()
    path = tmp_path_factory.mktemp("ckpt") / "linear-tiny-checkpoint.pth"
    torch_ffvit.save_deit_checkpoint(model, path, ema_model=ema)
    return path, model, ema


@pytest.fixture
def images(rng):
    return rng.standard_normal((2, 224, 224, 3)).astype("float32")


def test_official_tiny_checkpoint_matches_pytorch(tiny_checkpoint, images, record):
    path, reference, _ = tiny_checkpoint
    model = ffzoo.FFViTTiny(weights=str(path), classifier_activation=None)
    want = _torch_logits(reference, images)
    diff = float(np.abs(model.predict(images, verbose=0) - want).max())
    record("max |logit - pytorch| ff_tiny checkpoint", diff)
    assert np.abs(want).max() > 1.0
    assert diff < 1e-4


def test_patch32_checkpoint_with_position_resize_matches_pytorch(tmp_path, images, record):
    reference = _reference(tuple(dict(P32, num_classes=10).items()), 2)
    path = tmp_path / "p32.pth"
    torch_ffvit.save_deit_checkpoint(reference, path)
    model = ffzoo.FFViT(**P32, classes=10, classifier_activation=None, weights=str(path))
    want = _torch_logits(reference, images)
    diff = float(np.abs(model.predict(images, verbose=0) - want).max())
    record("max |logit - pytorch| patch32 14->7 checkpoint", diff)
    assert np.abs(want).max() > 1.0
    assert diff < 1e-4


def test_ema_entry_bare_state_dict_and_module_prefix(tiny_checkpoint, tmp_path, images):
    path, reference, ema = tiny_checkpoint
    model = ffzoo.FFViTTiny(classifier_activation=None)
    row = presets.preset_for_model("ffvit_tiny_patch16_224")
    ffzoo.weights.load(model, str(path), row, ema=True)
    np.testing.assert_allclose(model.predict(images, verbose=0), _torch_logits(ema, images), atol=1e-4)
    bare = tmp_path / "bare.pth"
    torch.save({"module." + k: v for k, v in reference.state_dict().items()}, bare)
    ffzoo.weights.load(model, str(bare), row)
    np.testing.assert_allclose(model.predict(images, verbose=0), _torch_logits(reference, images), atol=1e-4)


@pytest.fixture(scope="module")
def tiny_state():
    return {k: v.numpy() for k, v in _reference(tuple(TINY.items()), 0).state_dict().items()}


def _shapes():
    model = ffzoo.FFViTTiny()
    return {w.path: tuple(w.shape) for w in model.weights}


STRICT_CASES = [
    ("missing", lambda sd: sd.pop("blocks.3.mlp2.fc1.bias"), r"model weights the source does not provide: block_3/token_ff/ff/fc1/bias"),
    ("unknown", lambda sd: sd.update({"blocks.0.attn.qkv.weight": np.zeros((3, 3))}), r"source keys with no place in the model: blocks.0.attn.qkv.weight"),
    ("extra_block", lambda sd: sd.update({"blocks.12.norm1.weight": np.ones(192)}), r"source keys whose target the model lacks: blocks.12.norm1.weight -> block_12/feature_ff/norm/gamma"),
    ("shape", lambda sd: sd.update({"head.weight": np.zeros((10, 192)), "head.bias": np.zeros(10)}), r"shape mismatches: head.weight \(10, 192\) -> head/kernel needs \(192, 1000\)"),
]


@pytest.mark.parametrize("name,mutate,message", STRICT_CASES, ids=[c[0] for c in STRICT_CASES])
def test_conversion_is_strict(name, mutate, message, tiny_state):
    state = dict(tiny_state)
    mutate(state)
    with pytest.raises(ConversionError, match=message):
        convert.state_dict_to_keras(state, _shapes())


def test_conversion_uses_every_tensor_once(tiny_state):
    converted = convert.state_dict_to_keras(tiny_state, _shapes())
    assert len(converted) == len(tiny_state) == 153
    assert sum(a.size for a in converted.values()) == 7_676_332


def test_duplicate_parameter_with_module_prefix_is_an_error(tiny_state, tmp_path):
    state = {k: torch.from_numpy(v) for k, v in tiny_state.items()}
    state["module.norm.weight"] = state["norm.weight"]
    path = tmp_path / "dup.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match="'norm.weight' appears twice"):
        ffpth.read_state_dict(path)


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused(tmp_path):
    exploit = _Exploit()
    exploit.marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model": {"cls_token": torch.zeros(1)}, "payload": exploit}, path)
    with pytest.raises(UnsafeCheckpointError, match="Refusing to load .*evil.pth.*only argparse.Namespace"):
        ffzoo.FFViTTiny(weights=str(path))
    raw = tmp_path / "evil_raw.pth"  # a plain (non-zip) pickle
    with open(raw, "wb") as f:
        pickle.dump(exploit, f, protocol=2)
    with pytest.raises(UnsafeCheckpointError):
        ffpth.read_state_dict(raw)
    assert not exploit.marker.exists()


def test_truncated_checkpoint_is_a_clear_error(tiny_checkpoint, tmp_path):
    data = tiny_checkpoint[0].read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="Cannot read .*cut.pth as a PyTorch checkpoint"):
        ffpth.read_state_dict(cut)


IMAGENET_ERRORS = [
    (lambda: ffzoo.FFViTTiny(weights="imagenet", classes=10), r"classes=10 with weights='imagenet' and include_top=True"),
    (lambda: ffzoo.FFViTTiny(weights="imagenet", classifier_activation="relu"), r"classifier_activation must be None \(logits\) or 'softmax'"),
    (lambda: ffzoo.FFViTLarge(weights="imagenet"), r"ffvit_large_patch32_224 has no published ImageNet weights. Never published"),
    (lambda: ffzoo.FFViTTiny(weights="imagenet", image_size=384, input_shape=(384, 384, 3)), r"change its weights' shapes: image_size=384"),
    (lambda: ffzoo.FFViTBase(weights="imagenet", token_mlp_dim=256), r"token_mlp_dim=256"),
    (lambda: ffzoo.FFViTTiny(weights="imagenet", input_shape=(224, 224, 1)), r"need RGB input"),
    (lambda: ffzoo.FFViT(**P32, weights="imagenet"), r"This model has no published ImageNet weights"),
    (lambda: ffzoo.FFViTTiny(weights="model.ckpt"), r"expected a file ending in .weights.h5 \(Keras\) or .pth"),
]


@pytest.mark.parametrize("build,message", IMAGENET_ERRORS)
def test_imagenet_argument_rules(build, message, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.once
def test_preset_rows_match_the_registry():
    rows = {r["model"]: r for r in presets.list_presets()}
    assert set(rows) == set(ffzoo.list_models())
    for name, row in rows.items():
        assert row["parameters"] == ffzoo.count_params(name), name
        assert row["name"].startswith(name + "."), name
        assert row["source_format"] in convert.CONVERTERS, name
        assert row["source_format"] == ffzoo.models.registry.SOURCE_FORMATS[row["family"]], name
        assert row["family"] == ffzoo.models.registry.model_dims(name)["family"], name
        # a recorded hash is a SHA-256 hex digest, and only a downloadable file has one
        sha = row["sha256"]
        assert sha is None or (len(sha) == 64 and set(sha) <= set("0123456789abcdef")), (name, sha)
        assert sha is None or row["source_url"], name
        assert (row["top1"] is None) == (row["top1_source"] is None), name
    assert rows["ffvit_tiny_patch16_224"]["top1"] == 61.4 and rows["ffvit_base_patch16_224"]["top1"] == 74.9
    assert rows["ffvit_large_patch32_224"]["source_url"] is None
    assert rows["ffvit_micro_patch4_32"]["source_url"] is None
    # DeiT: FAIR's files and the accuracies of DeiT's README; the FF paper's figures beside them
    for size, top1, digits in [("tiny", 72.2, "a1311bcf"), ("small", 79.9, "cd65a155"),
                               ("base", 81.8, "b5f2ef4d")]:
        row = rows[f"deit_{size}_patch16_224"]
        assert row["source_url"] == (f"https://dl.fbaipublicfiles.com/deit/"
                                     f"deit_{size}_patch16_224-{digits}.pth")
        assert row["source_url"].endswith("/" + row["file_name"])
        assert row["top1"] == top1 and "DeiT README" in row["top1_source"]
        assert row["preprocessing"]["interpolation"].startswith("bicubic")
        assert row["preprocessing"]["crop_fraction"] == 0.875
    assert [o["top1"] for o in rows["deit_base_patch16_224"]["top1_other"]] == [79.9]
    assert [o["top1"] for o in rows["deit_tiny_patch16_224"]["top1_other"]] == [72.2]


# ---------------------------------------------------------------------------------------
# The download path, against a loopback HTTP server.


@pytest.fixture
def mirror(tiny_checkpoint, tmp_path, monkeypatch):
    root = tmp_path / "mirror"
    root.mkdir()
    os.link(tiny_checkpoint[0], root / "linear-tiny-checkpoint.pth")
    home = tmp_path / "keras_home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    with loopback.serve(root) as server:
        monkeypatch.setenv(download.MIRROR_ENV, f"http://127.0.0.1:{server.server_port}/")
        yield server, home / "models" / "ffzoo"


_OFFLINE_LOAD = r"""
import sys, numpy as np, ffzoo
model = ffzoo.FFViTTiny(weights="imagenet", classifier_activation=None)
np.save(sys.argv[1], model.predict(np.load(sys.argv[2]), verbose=0))
print("torch loaded:", "torch" in sys.modules)
"""


def test_imagenet_download_convert_cache_then_offline(mirror, tiny_checkpoint, images, tmp_path,
                                                      monkeypatch, record):
    server, cache = mirror
    sha = download.sha256_of(tiny_checkpoint[0])
    monkeypatch.setitem(presets.preset_for_model("ffvit_tiny_patch16_224"), "sha256", sha)
    model = ffzoo.FFViTTiny(weights="imagenet", classifier_activation=None)
    want = _torch_logits(tiny_checkpoint[1], images)
    diff = float(np.abs(model.predict(images, verbose=0) - want).max())
    record("max |logit - pytorch| via weights='imagenet' download", diff)
    assert diff < 1e-4
    assert server.requests == ["/linear-tiny-checkpoint.pth"]
    assert sorted(os.listdir(cache)) == ["ffvit_tiny_patch16_224.in1k.weights.h5",
                                         "ffvit_tiny_patch16_224.in1k.weights.h5.json",
                                         "linear-tiny-checkpoint.pth"]
    server.shutdown()  # from here on, no network

    features = ffzoo.FFViTTiny(weights="imagenet", include_top=False, pooling="token")
    assert features.output.shape == (None, 192)
    if BACKEND == "torch":  # torch is loaded anyway: prove the .pth is not read again
        monkeypatch.setattr(ffpth, "read_state_dict", lambda *a, **k: pytest.fail("read the .pth"))
        again = ffzoo.FFViTTiny(weights="imagenet", classifier_activation=None)
        np.testing.assert_allclose(again.predict(images, verbose=0), want, atol=1e-4)
    else:  # a fresh process in which PyTorch is not even installed
        np.save(tmp_path / "images.npy", images)
        env = python_without(tmp_path, "torch")
        run = run_python(_OFFLINE_LOAD, env, str(tmp_path / "out.npy"), str(tmp_path / "images.npy"))
        assert run.returncode == 0, run.stderr[-3000:]
        assert run.stdout.strip().splitlines()[-1] == "torch loaded: False"
        np.testing.assert_allclose(np.load(tmp_path / "out.npy"), want, atol=1e-4)
    assert server.requests == ["/linear-tiny-checkpoint.pth"]


def test_wrong_hash_fails_and_caches_nothing(mirror, monkeypatch):
    server, cache = mirror
    monkeypatch.setitem(presets.preset_for_model("ffvit_tiny_patch16_224"), "sha256", "0" * 64)
    with pytest.raises(ValueError, match="has sha256 [0-9a-f]{64}, but the weights table expects 0000"):
        ffzoo.FFViTTiny(weights="imagenet")
    assert os.listdir(cache) == []
    assert len(server.requests) == 1


def test_short_download_fails_and_caches_nothing(mirror):
    server, cache = mirror
    server.short_reads.add("linear-tiny-checkpoint.pth")
    with pytest.raises(download.DownloadError, match=r"Cannot download http://127\.0\.0\.1:\d+/linear-tiny-checkpoint.pth: .*FFZOO_WEIGHTS_MIRROR"):
        ffzoo.FFViTTiny(weights="imagenet")
    assert os.listdir(cache) == []


def test_truncated_file_without_known_hash_fails_and_caches_nothing(mirror, tiny_checkpoint, monkeypatch):
    server, cache = mirror
    data = tiny_checkpoint[0].read_bytes()
    target = server.root / "linear-tiny-checkpoint.pth"
    target.unlink()
    target.write_bytes(data[: len(data) // 2])  # served whole, but the file itself is cut
    monkeypatch.setitem(presets.preset_for_model("ffvit_tiny_patch16_224"), "sha256", None)  # no known hash
    with pytest.raises(ValueError, match="Cannot read .* as a PyTorch checkpoint"):
        ffzoo.FFViTTiny(weights="imagenet")
    assert os.listdir(cache) == []


_PTH_WITHOUT_TORCH = r"""
import sys, ffzoo
try:
    ffzoo.FFViTTiny(weights=sys.argv[1])
except ImportError as error:
    print("ImportError:", error)
model = ffzoo.FFViTTiny(weights=sys.argv[2])
print("h5 loaded", model.count_params())
"""


@pytest.mark.skipif(BACKEND == "torch", reason="PyTorch is this run's backend")
def test_pth_without_torch_names_the_extra(tiny_checkpoint, tmp_path):
    h5 = tmp_path / "tiny.weights.h5"
    ffzoo.FFViTTiny(weights=str(tiny_checkpoint[0])).save_weights(str(h5))
    run = run_python(_PTH_WITHOUT_TORCH, python_without(tmp_path, "torch"),
                     str(tiny_checkpoint[0]), str(h5))
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.strip().splitlines()
    assert "pip install 'ffzoo[pth]'" in lines[-2] and lines[-2].startswith("ImportError:")
    assert lines[-1] == "h5 loaded 7676332"
