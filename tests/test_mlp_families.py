"""MLP-Mixer, ResMLP and gMLP against the independent references in references/, fed
random weights saved in each author's own file layout and loaded through
`weights=<path>`: Google's `.npz` (Flax paths), FAIR's `.pth`, timm's `.safetensors`."""

import os
import sys

import keras
import numpy as np
import pytest

import ffzoo
from ffzoo import mlp_layers
from ffzoo.weights import ConversionError, download
from references import numpy_mixer, torch_gmlp, torch_resmlp
from tests import loopback
from tests.conftest import BACKEND

torch = pytest.importorskip("torch")

# The counts (1000 classes, 224 px), as timm's implementations give them.
PUBLISHED_PARAMS = {**numpy_mixer.PUBLISHED_PARAMS, **torch_resmlp.PUBLISHED_PARAMS,
                    **torch_gmlp.PUBLISHED_PARAMS}
FAMILIES = ["mixer", "resmlp", "gmlp"]
# The references' small test configuration: 32 px, 8 px patches (16 tokens), width 24,
# two blocks, 10 classes.
SMALL = {
    "mixer": dict(patch_size=8, embed_dim=24, depth=2, tokens_mlp_dim=12, channels_mlp_dim=40,
                  image_size=32),
    "resmlp": dict(patch_size=8, embed_dim=24, depth=2, init_scale=0.1, image_size=32),
    "gmlp": dict(patch_size=8, embed_dim=24, depth=2, image_size=32),
}
BUILDERS = {"mixer": ffzoo.MLPMixer, "resmlp": ffzoo.ResMLP, "gmlp": ffzoo.GMLP}


class Reference:
    """A family's reference with random weights, written in the authors' file layout."""

    def __init__(self, family, directory, variant=None, seed=0, classes=10, suffix=None):
        self.family = family
        if family == "mixer":
            if variant:
                cfg = dict(numpy_mixer.config(variant), num_classes=classes)
            else:
                cfg = dict(numpy_mixer.TINY_TEST, num_classes=classes)
            self.params = numpy_mixer.random_params(seed, **cfg)
            self.path = os.path.join(directory, "Mixer.npz")
            numpy_mixer.save_npz(self.params, self.path)
            return
        module = torch_resmlp if family == "resmlp" else torch_gmlp
        make = module.resmlp if family == "resmlp" else module.gmlp
        model = (make(variant, num_classes=classes) if variant
                 else module.tiny_test_model(num_classes=classes))
        torch.manual_seed(seed)
        self.model = module.randomize(model, seed).eval()
        suffix = suffix or (".pth" if family == "resmlp" else ".safetensors")
        self.path = os.path.join(directory, family + suffix)
        if suffix == ".safetensors":
            torch_gmlp.save_safetensors(self.model, self.path)
        else:
            module.save_checkpoint(self.model, self.path)

    def logits(self, images):
        if self.family == "mixer":
            return numpy_mixer.forward(self.params, images)
        with torch.no_grad():
            return self.model(torch.from_numpy(images.transpose(0, 3, 1, 2))).double().numpy()


def _images(size, batch=3, seed=1):
    return np.random.default_rng(seed).standard_normal((batch, size, size, 3)).astype(np.float32)


def _logits(model, images):
    """The model's output on one small batch: JAX compiles it whole (`predict`; its eager
    mode compiles every op apart), TensorFlow and PyTorch run it eagerly (no tracing)."""
    if BACKEND == "jax":
        return model.predict(images, verbose=0)
    return keras.ops.convert_to_numpy(model(images, training=False))


def _small(family, **kwargs):
    return BUILDERS[family](**SMALL[family], classes=10, classifier_activation=None, **kwargs)


@pytest.mark.parametrize("family,suffix", [("mixer", None), ("resmlp", None), ("gmlp", None),
                                           pytest.param("gmlp", ".pth", marks=pytest.mark.once)],
                         ids=["mixer-npz", "resmlp-pth", "gmlp-safetensors", "gmlp-pth"])
def test_small_config_matches_reference(family, suffix, tmp_path, record):
    reference = Reference(family, tmp_path, suffix=suffix)
    model = _small(family, weights=reference.path)
    images = _images(32)
    moved = images[:2].copy()  # one patch of the first image changed
    moved[0, :8, :8] += 1.0
    both = np.concatenate([images, moved])
    got = _logits(model, both)
    want = reference.logits(both)
    diff = float(np.max(np.abs(got - want)))
    record(f"max |logit - reference| {family} small ({os.path.basename(reference.path)})", diff)
    assert np.abs(want).max() > 0.5  # a meaningful scale for the 1e-4 bound
    assert diff < 1e-4
    # Every token matters: the changed patch moves its image's logits, and only those.
    changed = np.abs(got[3:] - got[:2]).max(axis=1)
    assert changed[0] > 1e-3 and changed[1] < 1e-6  # (batch position: rounding only)


# The smallest published-size variant of each family (Mixer-B/16 is the smallest Mixer).
REAL = [("mixer", "mixer_b16_224"), ("resmlp", "resmlp_12_224"), ("gmlp", "gmlp_ti16_224")]


@pytest.mark.once  # 10-40 s each: the small configs run on every backend
@pytest.mark.parametrize("family,name", REAL, ids=[n for _, n in REAL])
def test_real_config_matches_reference(family, name, tmp_path, record):
    reference = Reference(family, tmp_path, variant=name, classes=1000)
    model = ffzoo.create_model(name, weights=reference.path, classifier_activation=None)
    assert model.count_params() == PUBLISHED_PARAMS[name] and model.name == name
    images = _images(224, batch=1)
    want = reference.logits(images)
    diff = float(np.max(np.abs(_logits(model, images) - want)))
    record(f"max |logit - reference| {name}", diff)
    assert np.abs(want).max() > 0.5
    assert diff < 1e-4
    keras.backend.clear_session()


@pytest.mark.once
@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_parameter_counts_of_every_variant(name):
    """The analytic counts (no weights built) against the issue's; the built models'
    counts are checked in test_real_config_matches_reference and test_complexity."""
    assert ffzoo.count_params(name) == PUBLISHED_PARAMS[name]
    assert ffzoo.weights.preset_for_model(name)["parameters"] == PUBLISHED_PARAMS[name]
    assert ffzoo.models.registry.model_dims(name)["family"] in FAMILIES


@pytest.mark.once
@pytest.mark.parametrize("family", FAMILIES)
def test_analytic_counts_match_built_custom_models(family):
    model = _small(family, include_top=False)
    dims = SMALL[family]
    n = (dims["image_size"] // dims["patch_size"]) ** 2
    # the small configs' counts, by the references' own formulas
    if family == "mixer":
        cfg = dict(numpy_mixer.TINY_TEST)
        expected = numpy_mixer.parameter_count(**{k: cfg[k] for k in (
            "patch_size", "hidden_dim", "num_blocks", "tokens_mlp_dim", "channels_mlp_dim",
            "image_size")}, num_classes=0)
    elif family == "resmlp":
        expected = torch_resmlp.parameter_count(8, 24, 2, num_classes=0, image_size=32)
    else:
        expected = torch_gmlp.parameter_count(8, 24, 2, num_classes=0, image_size=32)
    assert n == 16 and model.count_params() == expected


def _reload(model, path):
    model.save(path)
    return keras.saving.load_model(path)


@pytest.mark.once
@pytest.mark.parametrize("family", FAMILIES)
def test_config_round_trip_and_keras_saving(family, tmp_path):
    reference = Reference(family, tmp_path)
    model = _small(family, weights=reference.path)
    images = _images(32, batch=2)
    want = _logits(model, images)
    rebuilt = keras.Model.from_config(model.get_config())
    assert rebuilt.get_config()["layers"] == model.get_config()["layers"]
    rebuilt.set_weights(model.get_weights())
    np.testing.assert_allclose(_logits(rebuilt, images), want, atol=1e-6)
    loaded = _reload(model, str(tmp_path / f"{family}.keras"))
    np.testing.assert_allclose(_logits(loaded, images), want, atol=1e-6)
    keras.backend.clear_session()


LAYERS = [
    mlp_layers.Affine(name="affine"),
    mlp_layers.MixingMLP(7, 16, gelu="tanh", dropout_rate=0.1, over_tokens=True, name="mlp"),
    mlp_layers.MixerBlock(16, 12, 8, 20, gelu="erf", dropout_rate=0.1, drop_path_rate=0.2,
                          epsilon=1e-5, name="mixer"),
    mlp_layers.ResMLPBlock(16, 12, 48, init_scale=1e-5, drop_path_rate=0.1, name="resmlp"),
    mlp_layers.SpatialGatingUnit(16, epsilon=1e-4, name="gate"),
    mlp_layers.GatingBlock(16, 12, 36, dropout_rate=0.1, epsilon=1e-5, name="gating"),
]


@pytest.mark.once
@pytest.mark.parametrize("layer", LAYERS, ids=[layer.name for layer in LAYERS])
def test_layer_config_round_trip(layer):
    width = 72 if isinstance(layer, mlp_layers.SpatialGatingUnit) else 12
    x = np.random.default_rng(0).standard_normal((2, 16, width)).astype(np.float32)
    y = layer(x)
    clone = layer.__class__.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    clone.build(x.shape)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(clone(x)), keras.ops.convert_to_numpy(y),
                               atol=1e-6)
    assert tuple(y.shape) == tuple(layer.compute_output_shape(x.shape))


@pytest.mark.once
def test_wrong_family_files_are_named(tmp_path):
    mixer = Reference("mixer", tmp_path)
    resmlp = Reference("resmlp", tmp_path)
    gmlp = Reference("gmlp", tmp_path)
    cases = [("resmlp", mixer.path, "an MLP-Mixer checkpoint \\(Google's .npz layout\\)"),
             ("gmlp", resmlp.path, "a ResMLP checkpoint \\(FAIR layout\\)"),
             ("mixer", gmlp.path, "a gMLP checkpoint \\(timm layout\\)")]
    for family, path, looks in cases:
        with pytest.raises(ConversionError, match=f"looks like {looks}.*It fits"):
            _small(family, weights=path)
    # The right family with the wrong shapes: a strict error naming them.
    with pytest.raises(ConversionError, match="shape mismatches"):
        ffzoo.MLPMixer(**dict(SMALL["mixer"], tokens_mlp_dim=10), classes=10, weights=mixer.path)
    with pytest.raises(ConversionError, match="model weights the source does not provide"):
        ffzoo.ResMLP(**dict(SMALL["resmlp"], depth=3), classes=10, weights=resmlp.path)


@pytest.mark.once
def test_argument_errors():
    with pytest.raises(ValueError, match="has no class token"):
        ffzoo.create_model("gmlp_ti16_224", include_top=False, pooling="token")
    with pytest.raises(ValueError, match="needs include_top=False"):
        ffzoo.create_model("resmlp_12_224", pooling="max")
    with pytest.raises(ValueError, match="mixes exactly 196 tokens"):
        ffzoo.create_model("mixer_b16_224", input_shape=(256, 256, 3))
    with pytest.raises(ValueError, match="gmlp_b16_224 has no published ImageNet weights. No "
                                         "public weights"):
        ffzoo.create_model("gmlp_b16_224", weights="imagenet")
    with pytest.raises(ValueError, match="change its weights' shapes: image_size=256"):
        ffzoo.create_model("resmlp_12_224", weights="imagenet", image_size=256)
    with pytest.raises(ValueError, match="gelu must be 'erf'"):
        ffzoo.MLPMixer(**SMALL["mixer"], gelu="relu")


@pytest.mark.once
@pytest.mark.parametrize("family", FAMILIES)
def test_features_and_channels_first(family, tmp_path):
    reference = Reference(family, tmp_path)
    images = _images(32, batch=2)
    tokens = _small(family, weights=reference.path, include_top=False)
    pooled = _small(family, weights=reference.path, include_top=False, pooling="avg")
    out = _logits(tokens, images)
    assert out.shape == (2, 16, 24)
    np.testing.assert_allclose(_logits(pooled, images), out.mean(axis=1), atol=1e-5)
    keras.config.set_image_data_format("channels_first")
    first = _small(family, weights=reference.path)
    np.testing.assert_allclose(_logits(first, images.transpose(0, 3, 1, 2)),
                               reference.logits(images), atol=1e-4)


@pytest.mark.once
def test_imagenet_download_of_a_safetensors_preset(tmp_path, monkeypatch, record):
    """weights='imagenet' from a .safetensors preset: downloaded (to a temporary name),
    read by the preset's file name, converted, cached; a small gMLP with a row like
    gmlp_s16_224's pointing at random weights on a loopback server."""
    root = tmp_path / "mirror"
    root.mkdir()
    reference = Reference("gmlp", root)
    row = dict(ffzoo.weights.preset_for_model("gmlp_s16_224"), name="gmlp_small_test.in1k",
               model=None, file_name=os.path.basename(reference.path), classes=10,
               source_url="https://example.invalid/model.safetensors")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    model = _small("gmlp")
    with loopback.serve(root) as server:
        monkeypatch.setenv(download.MIRROR_ENV, f"http://127.0.0.1:{server.server_port}/")
        ffzoo.weights.load(model, "imagenet", row)
        assert server.requests == ["/gmlp.safetensors"]
    images = _images(32, batch=2)
    diff = float(np.abs(_logits(model, images) - reference.logits(images)).max())
    record("max |logit - reference| small gMLP weights='imagenet' (loopback)", diff)
    assert diff < 1e-4
    cache = tmp_path / "keras_home" / "models" / "ffzoo"
    assert sorted(os.listdir(cache)) == ["gmlp.safetensors", "gmlp_small_test.in1k.weights.h5",
                                         "gmlp_small_test.in1k.weights.h5.json"]


@pytest.mark.once
def test_safetensors_without_the_package_is_one_line(tmp_path, monkeypatch):
    reference = Reference("gmlp", tmp_path)
    for module in ("safetensors", "safetensors.numpy"):
        monkeypatch.setitem(sys.modules, module, None)  # `import safetensors` now fails
    with pytest.raises(ImportError, match=r"^weights='.*gmlp.safetensors': Reading "
                                          r"\.safetensors files needs the safetensors package: "
                                          r"pip install 'ffzoo\[safetensors\]' \(PyTorch is "
                                          r"not needed\)\.$"):
        _small("gmlp", weights=reference.path)


# -- the one build path's features: feature_blocks= and the wrong-variant error ----------

def test_mixer_feature_blocks_are_the_blocks_outputs(tmp_path, record):
    """feature_blocks=(0, -1) of a three-block Mixer loaded from a Google `.npz`: each map
    is the full model's own block output as a grid, and, after the final LayerNorm (NumPy,
    the file's parameters), the reference's tokens of the model cut after that block."""
    params = numpy_mixer.random_params(0, **dict(numpy_mixer.TINY_TEST, num_blocks=3))
    path = os.path.join(tmp_path, "Mixer.npz")
    numpy_mixer.save_npz(params, path)
    dims = dict(SMALL["mixer"], depth=3)
    features = ffzoo.MLPMixer(**dims, include_top=False, feature_blocks=(0, -1), weights=path)
    full = ffzoo.MLPMixer(**dims, include_top=False, weights=path)
    images = _images(32, batch=2)
    got = features.predict(images, verbose=0)
    assert [g.shape for g in got] == [(2, 4, 4, 24)] * 2
    blocks = keras.Model(full.input, [full.get_layer(f"block_{i}").output for i in (0, 2)])
    for have, want in zip(got, blocks.predict(images, verbose=0)):
        np.testing.assert_allclose(have, want.reshape(2, 4, 4, 24), atol=1e-5)
    for have, kept in zip(got, (1, 3)):
        cut = {k: v for k, v in params.items() if not k.startswith("MixerBlock_")
               or int(k.split("/")[0][len("MixerBlock_"):]) < kept}
        want = numpy_mixer.forward_tokens(cut, images)
        normed = numpy_mixer.layer_norm(have.reshape(2, 16, 24), params, "pre_head_layer_norm")
        difference = float(np.max(np.abs(normed - want)))
        record(f"feature_blocks vs numpy reference, mixer block {kept - 1}", difference)
        assert difference < 1e-4
    # the model stops at the last chosen block: no final norm, every block's weights
    assert len(features.weights) == len(full.weights) - 2
    keras.backend.clear_session()


@pytest.mark.once
def test_wrong_variant_weights_file_names_the_variant(tmp_path):
    """A `.weights.h5` of another variant names the one it holds, told apart by the
    blocks' kind: ResMLP-S12 and DeiT-S share patch 16, width 384 and depth 12."""
    resmlp, deit = ffzoo.ResMLP12(), ffzoo.DeiTSmall()
    resmlp_file = str(tmp_path / "resmlp.weights.h5")
    deit_file = str(tmp_path / "deit.weights.h5")
    resmlp.save_weights(resmlp_file)
    deit.save_weights(deit_file)
    dims = "patch 16, width 384, depth 12"
    cases = [(resmlp, deit_file, "resmlp_12_224", f"deit_small_patch16_224 ({dims}, "
                                                  "attention_block blocks)"),
             (deit, resmlp_file, "deit_small_patch16_224", f"resmlp_12_224 ({dims}, "
                                                           "res_mlp_block blocks)")]
    for model, path, target, held in cases:
        with pytest.raises(ValueError) as error:
            ffzoo.weights.load(model, path, None)
        assert str(error.value) == (f"{path} does not hold the weights of {target}: it seems "
                                    f"to hold {held}.")
    keras.backend.clear_session()


@pytest.mark.once
@pytest.mark.parametrize("name,size", [("resmlp_12_224", 248), ("mixer_b16_224", 224)])
def test_predict_uses_the_presets_own_preprocessing(name, size, tmp_path, monkeypatch, capsys):
    """`ffzoo predict --model NAME` feeds the model its preset's evaluation transform:
    ResMLP's crop fraction 0.9 (a 248 px image is only cropped, 12 px off each side) with
    ImageNet's mean and std, Mixer's crop fraction 1 (a 224 px image is only normalized)
    with mean = std = 0.5. The oracle crops and normalizes by hand (DeiT's transform
    would resize to 256 first)."""
    from PIL import Image

    from ffzoo import cli

    pixels = np.random.default_rng(3).integers(0, 256, (size, size, 3), dtype=np.uint8)
    path = str(tmp_path / "photo.png")
    Image.fromarray(pixels).save(path)
    fed = []

    class Recorder:
        def predict(self, batch, verbose=0):
            fed.append(batch)
            scores = np.zeros((len(batch), 1000), np.float32)
            scores[:, 7] = 1.0
            return scores

    monkeypatch.setattr(ffzoo, "create_model", lambda model, weights: Recorder())
    assert cli.main(["predict", path, "--model", name, "--top", "1"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == path
    row = ffzoo.weights.preset_for_model(name)["preprocessing"]
    offset = (size - 224) // 2
    crop = pixels[offset:offset + 224, offset:offset + 224] / 255.0
    want = (crop - np.array(row["mean"])) / np.array(row["std"])
    assert fed[0].shape == (1, 224, 224, 3)
    np.testing.assert_allclose(fed[0][0], want, atol=1e-5)
