"""Issue 14's build path: DeiT's published weights, skip_head, wrong-family errors, no import
cycle, one build per model and no training-only state in inference graphs."""

import ast
import inspect
import os
import pathlib
import sys

import keras
import numpy as np
import pytest
import torch

import ffzoo
from ffzoo import cli
from ffzoo.models import builder
from ffzoo.weights import ConversionError, convert, download, presets
from references import torch_deit, torch_ffvit
from tests import loopback
from tests.conftest import ROOT

DEIT_TINY = "deit_tiny_patch16_224"
TINY_DIMS = dict(patch_size=16, embed_dim=192, depth=12, num_heads=3)
# A small DeiT at 224 px: a 14 x 14 grid, so the positions load without any resize.
SMALL_DEIT = dict(patch_size=16, embed_dim=48, depth=2, num_heads=3)


def _deit(seed, dims=TINY_DIMS, classes=1000):
    """The PyTorch reference DeiT (references/torch_deit.py) with random non-trivial weights."""
    model = torch_deit.VisionTransformer(image_size=224, num_classes=classes, **dims)
    return torch_deit.randomize(model, seed=seed).eval()


def _save_fair_checkpoint(reference, path):
    """Saved as FAIR's published DeiT files are: `{"model": state_dict}`."""
    torch_deit.save_checkpoint(reference, path)
    return path


def _state(reference):
    return {k: v.numpy() for k, v in reference.state_dict().items()}


def _reference_logits(reference, images):
    with torch.no_grad():
        return reference(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()


def _reference_class_token(reference, images):
    with torch.no_grad():
        return reference.forward_features(torch.from_numpy(images.transpose(0, 3, 1, 2)))[:, 0].numpy()


@pytest.fixture(scope="module")
def deit_tiny_checkpoint(tmp_path_factory):
    reference = _deit(0)
    path = tmp_path_factory.mktemp("deit") / "deit_tiny_patch16_224-a1311bcf.pth"
    return _save_fair_checkpoint(reference, path), reference


@pytest.fixture
def images():
    return np.random.default_rng(1).standard_normal((2, 224, 224, 3)).astype("float32")


def test_deit_tiny_loads_fairs_checkpoint_layout(deit_tiny_checkpoint, images, record):
    path, reference = deit_tiny_checkpoint
    model = ffzoo.DeiTTiny(weights=str(path), classifier_activation=None)
    want = _reference_logits(reference, images)
    diff = float(np.abs(model.predict(images, verbose=0) - want).max())
    record("max |logit - pytorch| deit_tiny FAIR .pth at 224", diff)
    assert np.abs(want).max() > 1.0  # non-trivial weights
    assert diff < 1e-4


def test_deit_imagenet_downloads_converts_and_caches(deit_tiny_checkpoint, images, tmp_path,
                                                     monkeypatch, record):
    path, reference = deit_tiny_checkpoint
    row = presets.preset_for_model(DEIT_TINY)
    root = tmp_path / "mirror"
    root.mkdir()
    os.link(path, root / row["file_name"])
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setitem(row, "sha256", download.sha256_of(path))
    builds, lookups = [], []
    real_init, real_lookup = ffzoo.layers.PatchEmbedding.__init__, presets.preset_for_model

    def counting_init(self, *args, **kwargs):
        builds.append(1)
        real_init(self, *args, **kwargs)

    def counting_lookup(name):
        lookups.append(name)
        return real_lookup(name)

    monkeypatch.setattr(ffzoo.layers.PatchEmbedding, "__init__", counting_init)
    monkeypatch.setattr(ffzoo.models.deit, "preset_for_model", counting_lookup)
    with loopback.serve(root) as server:
        monkeypatch.setenv(download.MIRROR_ENV, f"http://127.0.0.1:{server.server_port}/")
        model = ffzoo.DeiTTiny(weights="imagenet", classifier_activation=None)
        assert server.requests == ["/deit_tiny_patch16_224-a1311bcf.pth"]
    assert builds == [1] and lookups == [DEIT_TINY]  # one model built, the row read once
    diff = float(np.abs(model.predict(images, verbose=0) - _reference_logits(reference, images)).max())
    record("max |logit - pytorch| deit_tiny weights='imagenet'", diff)
    assert diff < 1e-4
    cache = tmp_path / "keras_home" / "models" / "ffzoo"
    assert sorted(os.listdir(cache)) == sorted([row["file_name"], f"{row['name']}.weights.h5",
                                                f"{row['name']}.weights.h5.json"])
    features = ffzoo.DeiTTiny(weights="imagenet", include_top=False, pooling="token")  # offline
    np.testing.assert_allclose(features.predict(images, verbose=0),
                               _reference_class_token(reference, images), atol=1e-4)


WRONG_FAMILY = [
    ("deit file into an FF model", "deit", lambda: ffzoo.FFViT(patch_size=16, embed_dim=48, depth=2),
     r"this checkpoint looks like a DeiT/ViT checkpoint \(timm layout\) \(it has "
     r"blocks\.0\.attn\.qkv\.weight\), not an FF-only ViT checkpoint .* It fits deit_\* models"),
    ("ff file into a DeiT model", "ffvit", lambda: ffzoo.DeiT(**SMALL_DEIT),
     r"this checkpoint looks like an FF-only ViT checkpoint \(the paper's "
     r"vision_transformer_linear\.py layout\) .*not a DeiT/ViT checkpoint \(timm layout\)\. "
     r"It fits ffvit_\* models"),
]


@pytest.mark.parametrize("case,kind,build,message", WRONG_FAMILY, ids=[c[0] for c in WRONG_FAMILY])
def test_wrong_family_checkpoint_names_the_family_it_looks_like(case, kind, build, message, tmp_path):
    path = tmp_path / "other.pth"
    if kind == "deit":
        _save_fair_checkpoint(_deit(2, SMALL_DEIT), path)
    else:
        torch_ffvit.save_deit_checkpoint(torch_ffvit.FFViT(embed_dim=48, depth=2), path)
    model = build()
    row = {"source_format": "ff_pth" if kind == "deit" else "timm_vit_pth"}
    with pytest.raises(ConversionError, match=message):
        ffzoo.weights.load(model, str(path), row)


@pytest.mark.once
def test_convert_command_for_deit(deit_tiny_checkpoint, tmp_path, capsys, images):
    path, reference = deit_tiny_checkpoint
    state = _state(reference)
    target = tmp_path / "deit_tiny.weights.h5"
    assert cli.main(["convert", str(path), str(target), "--model", DEIT_TINY]) == 0
    assert f"converted {len(state)} tensors (5,717,416 parameters" in capsys.readouterr().out
    model = ffzoo.DeiTTiny(weights=str(target), classifier_activation=None)
    np.testing.assert_allclose(model.predict(images, verbose=0),
                               _reference_logits(reference, images), atol=1e-4)
    assert cli.main(["convert", str(path), str(tmp_path / "x.weights.h5"),
                     "--model", "ffvit_tiny_patch16_224"]) == 2
    assert "looks like a DeiT/ViT checkpoint (timm layout)" in capsys.readouterr().err
    assert not (tmp_path / "x.weights.h5").exists()
    from weights import tools

    tools.main(["verify", "deit_tiny_patch16_224.fb_in1k", str(path)])
    assert "deit_tiny_patch16_224.fb_in1k: max |logit difference| vs the reference" in capsys.readouterr().out


def _non_head(model):
    return {w.path: keras.ops.convert_to_numpy(w) for w in model.weights
            if not w.path.startswith("head/")}


def _head(model):
    return [keras.ops.convert_to_numpy(w) for w in model.get_layer("head").weights]


@pytest.mark.parametrize("source", ["pth", "h5", "imagenet"])
def test_skip_head_loads_everything_but_the_classifier(source, tmp_path, monkeypatch):
    reference = _deit(3, SMALL_DEIT)
    state = _state(reference)
    pth_path = _save_fair_checkpoint(reference, tmp_path / "deit_small.pth")
    if source == "pth":
        weights = str(pth_path)
        row = {"source_format": "timm_vit_pth"}
    elif source == "h5":
        published = ffzoo.DeiT(**SMALL_DEIT, weights=str(pth_path))
        weights = str(tmp_path / "published.weights.h5")
        published.save_weights(weights)
        row = {"source_format": "timm_vit_pth"}
    else:  # the preset path, with a small model's checkpoint behind a patched row
        row = presets.preset_for_model(DEIT_TINY)
        for key, value in dict(file_name="deit_small.pth", sha256=None).items():
            monkeypatch.setitem(row, key, value)
        monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
        monkeypatch.setenv(download.MIRROR_ENV, (tmp_path).as_uri() + "/")
        weights = "imagenet"
    model = ffzoo.DeiT(**SMALL_DEIT, classes=10)
    initial_head = _head(model)
    assert ffzoo.weights.head_classes(weights, row) == 1000
    ffzoo.weights.load(model, weights, row, skip_head=True)
    for got, init in zip(_head(model), initial_head):
        np.testing.assert_array_equal(got, init)  # the head keeps its initialisation
    shapes = {w.path: tuple(w.shape) for w in model.weights}
    want = convert.state_dict_to_keras(state, shapes, "timm_vit_pth", skip_head=True)
    got = _non_head(model)
    assert set(got) == set(want) and len(got) == len(model.weights) - 2
    for path, value in got.items():
        np.testing.assert_array_equal(value, want[path].astype(value.dtype), err_msg=path)
    if source == "imagenet":  # a 10-class model is not the published one: nothing cached
        assert os.listdir(tmp_path / "keras_home" / "models" / "ffzoo") == ["deit_small.pth"]


def test_training_build_model_fine_tunes_with_one_build(tmp_path, monkeypatch, capsys):
    from training import train

    reference = _deit(4)
    state = _state(reference)
    path = _save_fair_checkpoint(reference, tmp_path / "deit_tiny.pth")
    calls = []
    real = builder.build_model_with_cfg
    monkeypatch.setattr(builder, "build_model_with_cfg",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    config = {"model": DEIT_TINY, "weights": str(path), "drop_rate": 0.0, "drop_path_rate": 0.1}
    model = train.build_model(config, classes=7)
    assert calls == [1]
    assert model.output.shape == (None, 7)
    assert "every layer but the 7-class head is pretrained" in capsys.readouterr().out
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.get_layer("norm").gamma),
                                  state["norm.weight"])
    same = train.build_model(config, classes=1000)  # the file's class count: the head loads too
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(same.get_layer("head").bias),
                                  state["head.bias"])


# ---------------------------------------------------------------------------------------
# Structure: no import cycle, explicit constructors, nothing unused in inference graphs.

_WEIGHTS_ALONE = r"""
import sys, types, pathlib
root = pathlib.Path(sys.argv[1])
package = types.ModuleType("ffzoo")  # ffzoo's package, without its __init__ (which imports all)
package.__path__ = [str(root / "ffzoo")]
sys.modules["ffzoo"] = package
import ffzoo.weights
from ffzoo.weights import convert, download, loading, presets, pth
print(sorted(m for m in sys.modules if m.startswith("ffzoo")))
"""


@pytest.mark.once
def test_weights_never_import_models(tmp_path):
    import subprocess

    run = subprocess.run([sys.executable, "-c", _WEIGHTS_ALONE, ROOT], capture_output=True,
                         text=True, timeout=300, env=dict(os.environ, PYTHONPATH=ROOT))
    assert run.returncode == 0, run.stderr[-3000:]
    modules = ast.literal_eval(run.stdout.strip().splitlines()[-1])
    assert "ffzoo.weights.loading" in modules
    assert not [m for m in modules if m.startswith("ffzoo.models")], modules
    # and statically: no import of ffzoo.models anywhere in ffzoo/weights, function bodies included
    for path in sorted(pathlib.Path(ROOT, "ffzoo", "weights").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not [n for n in names if n.startswith("ffzoo.models")], (path.name, names)
            if isinstance(node, ast.ImportFrom) and node.module == "ffzoo":
                assert "models" not in [a.name for a in node.names], path.name


PUBLIC_CONSTRUCTORS = ["FFViTTiny", "FFViTBase", "FFViTLarge", "FFViTMicro", "DeiTTiny",
                       "DeiTSmall", "DeiTBase", "FFViT", "DeiT"]


@pytest.mark.once
@pytest.mark.parametrize("name", PUBLIC_CONSTRUCTORS)
def test_constructors_are_plain_defs(name):
    constructor = getattr(ffzoo, name)
    assert inspect.getsource(constructor).startswith(f"def {name}(")
    assert "__signature__" not in vars(constructor)
    parameters = inspect.signature(constructor).parameters
    assert "weights_preset" not in parameters and "skip_head" not in parameters
    for argument in ("include_top", "weights", "input_tensor", "input_shape", "pooling",
                     "classes", "classifier_activation", "name"):
        assert argument in parameters, (name, argument)
    assert constructor.__doc__, name
    if name not in ("FFViT", "DeiT"):  # the variants share their family's one docstring
        assert "Returns:" in constructor.__doc__ and constructor.__name__ in dir(ffzoo)


def _seed_variables(model):
    return [v.path for v in model.variables if "seed_generator" in v.path]


def test_inference_models_hold_no_training_state():
    model = ffzoo.FFViTTiny()
    assert _seed_variables(model) == []
    assert len(model.variables) == len(model.weights) == 153
    assert not [layer.name for layer in model._flatten_layers()
                if isinstance(layer, keras.layers.Dropout)]
    deit = ffzoo.DeiT(**SMALL_DEIT)
    assert _seed_variables(deit) == []
    # with stochastic depth, each block but the first (rate 0) draws from two generators
    training = ffzoo.FFViTTiny(drop_path_rate=0.1, drop_rate=0.1)
    assert len(_seed_variables(training)) == 2 * 11 + 2 * 2 * 12 + 1  # DropPath + FF dropouts + pos_drop


@pytest.mark.once
def test_wheel_ships_only_ffzoo():
    import tomllib

    config = tomllib.loads(pathlib.Path(ROOT, "pyproject.toml").read_text())["tool"]["setuptools"]
    assert all(p == "ffzoo" or p.startswith("ffzoo.") for p in config["packages"])
    # Only training/ is mapped into the package (as ffzoo.training); nothing maps weights/
    # (the maintainer tools) there.
    assert config["package-dir"] == {"ffzoo.training": "training",
                                     "ffzoo.training.recipes": "training/recipes"}
    assert not pathlib.Path(ROOT, "weights", "manifest.json").exists()
