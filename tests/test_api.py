"""The arguments users type: preset names, timm's spellings, wrong-variant weights files,
`.keras` files loaded without `import ffzoo`, and `feature_blocks=` feature extraction."""

import json
import os
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest

import ffzoo
from ffzoo.weights import convert, loading
from tests import families

MICRO = "ffvit_micro_patch4_32"


def _randomize(model, seed=0):
    rng = np.random.default_rng(seed)
    model.set_weights([rng.standard_normal(w.shape).astype("float32") * 0.1
                       for w in model.weights])
    return model


def _no_layer_built(monkeypatch):
    def spy(self, *args, **kw):
        raise AssertionError("a layer was built before the arguments were checked")

    monkeypatch.setattr(ffzoo.layers.PatchEmbedding, "__init__", spy)


# -- weights="<preset name>" ------------------------------------------------------------

@pytest.mark.once
def test_own_preset_name_loads_like_imagenet(tmp_path, monkeypatch):
    cached = str(tmp_path / "ffvit_tiny_patch16_224.in1k.weights.h5")
    source = _randomize(ffzoo.FFViTTiny(), seed=3)
    source.save_weights(cached)
    # the preset's converted file, as a first "imagenet" load leaves it in the cache
    monkeypatch.setattr(loading, "converted_path", lambda row: cached)
    model = ffzoo.create_model("ffvit_tiny_patch16_224", weights="ffvit_tiny_patch16_224.in1k")
    for have, want in zip(model.get_weights(), source.get_weights()):
        np.testing.assert_array_equal(have, want)
    # ffzoo.weights.load takes it too (training's fine-tuning path)
    _randomize(model, seed=5)
    ffzoo.weights.load(model, "ffvit_tiny_patch16_224.in1k",
                       ffzoo.weights.preset_for_model("ffvit_tiny_patch16_224"))
    for have, want in zip(model.get_weights(), source.get_weights()):
        np.testing.assert_array_equal(have, want)
    # and the imagenet rules apply to the preset name as to "imagenet"
    with pytest.raises(ValueError, match=r"pretrained classifier has 1000 classes"):
        ffzoo.FFViTTiny(weights="ffvit_tiny_patch16_224.in1k", classes=10)


@pytest.mark.once
@pytest.mark.parametrize("build,preset,owner", [
    (lambda w: ffzoo.FFViTTiny(weights=w), "deit_tiny_patch16_224.fb_in1k", "deit_tiny_patch16_224"),
    (lambda w: ffzoo.DeiTTiny(weights=w), "ffvit_tiny_patch16_224.in1k", "ffvit_tiny_patch16_224"),
    (lambda w: ffzoo.create_model("ffvit_base_patch16_224", weights=w),
     "ffvit_tiny_patch16_224.in1k", "ffvit_tiny_patch16_224"),
    (lambda w: families.small_model("ffvit", weights=w), "ffvit_tiny_patch16_224.in1k",
     "ffvit_tiny_patch16_224"),
], ids=["ff_gets_deit", "deit_gets_ff", "base_gets_tiny", "custom_dims"])
def test_another_models_preset_names_its_model(build, preset, owner, monkeypatch):
    _no_layer_built(monkeypatch)
    with pytest.raises(ValueError, match=rf"^weights='{preset}' is the preset of {owner}, not of"):
        build(preset)


@pytest.mark.once
def test_preset_without_weights_says_so(monkeypatch):
    _no_layer_built(monkeypatch)
    with pytest.raises(ValueError, match=r"ffvit_micro_patch4_32 has no published ImageNet weights"):
        ffzoo.FFViTMicro(weights="ffvit_micro_patch4_32.none")


# -- timm's spellings and unknown arguments ---------------------------------------------

CALLS = {
    "create_model_ff": lambda **kw: ffzoo.create_model(MICRO, **kw),
    "create_model_deit": lambda **kw: ffzoo.create_model("deit_tiny_patch16_224", **kw),
    "FFViTTiny": lambda **kw: ffzoo.FFViTTiny(**kw),
    "DeiTTiny": lambda **kw: ffzoo.DeiTTiny(**kw),
    "FFViT": lambda **kw: families.small_model("ffvit", **kw),
    "DeiT": lambda **kw: families.small_model("deit", **kw),
    # the all-MLP families' constructors check their **kwargs the same way
    "create_model_gmlp": lambda **kw: ffzoo.create_model("gmlp_ti16_224", **kw),
    "MixerB16": lambda **kw: ffzoo.MixerB16(**kw),
    "ResMLP": lambda **kw: ffzoo.ResMLP(patch_size=8, embed_dim=24, depth=2, image_size=32, **kw),
}
SPELLINGS = [
    (dict(num_classes=10), r"Unknown argument num_classes=10\. ffzoo spells it classes="),
    (dict(pretrained=True), r"Unknown argument pretrained=True\. ffzoo spells it "
                            r"weights=\"imagenet\" \(for pretrained=True\) or weights=None"),
    (dict(features_only=True), r"ffzoo spells it include_top=False, feature_blocks="),
    (dict(clases=10), r"Unknown argument clases=10\. Did you mean classes=\?"),
    (dict(colour="red"), r"Unknown argument colour='red'\. Accepted arguments: .*include_top, "
                         r"weights, .*classes, .*feature_blocks"),
]


@pytest.mark.once
@pytest.mark.parametrize("call", list(CALLS))
@pytest.mark.parametrize("kwargs,message", SPELLINGS, ids=[next(iter(s[0])) for s in SPELLINGS])
def test_unknown_arguments_name_ffzoos_spelling(call, kwargs, message, monkeypatch):
    _no_layer_built(monkeypatch)
    with pytest.raises(ValueError, match=message) as error:
        CALLS[call](**kwargs)
    assert "\n" not in str(error.value)


@pytest.mark.once
def test_accepted_arguments_are_the_constructors():
    import inspect

    with pytest.raises(ValueError) as error:
        ffzoo.DeiTTiny(num_classes=3)
    accepted = str(error.value).split("Accepted arguments: ")[1].rstrip(".").split(", ")
    assert accepted == [p for p in inspect.signature(ffzoo.DeiTTiny).parameters if p != "kwargs"]
    assert "attention_dropout_rate" in accepted and "token_mlp_dim" not in accepted


# -- a .weights.h5 file of another variant ----------------------------------------------

def _h5(model, tmp_path, name):
    path = str(tmp_path / f"{name}.weights.h5")
    model.save_weights(path)
    return path


def _describe(name, tokens=True):
    """The dims of the registered `name` as the error describes them (from the tables)."""
    d = ffzoo.models.registry.model_dims(name)
    count = f", {1 + (d['image_size'] // d['patch_size']) ** 2} tokens" if tokens else ""
    return f"patch {d['patch_size']}, width {d['embed_dim']}, depth {d['depth']}{count}"


@pytest.mark.once
def test_wrong_variant_file_names_the_variant_it_holds(tmp_path):
    ff_tiny, deit_tiny = ffzoo.FFViTTiny(), ffzoo.DeiTTiny()
    tiny, deit_file = _h5(ff_tiny, tmp_path, "tiny"), _h5(deit_tiny, tmp_path, "deit_tiny")
    micro = _h5(ffzoo.FFViTMicro(), tmp_path, "micro")
    cases = [
        (lambda: ffzoo.FFViTMicro(weights=tiny), tiny, MICRO, "ffvit_tiny_patch16_224",
         "ff_block"),
        (lambda: ffzoo.weights.load(ff_tiny, micro, None), micro, "ffvit_tiny_patch16_224",
         MICRO, "ff_block"),
        # same patch, width and depth as FF-Tiny: told apart by the blocks' kind
        (lambda: ffzoo.weights.load(ff_tiny, deit_file, None), deit_file,
         "ffvit_tiny_patch16_224", "deit_tiny_patch16_224", "attention_block"),
        (lambda: ffzoo.weights.load(deit_tiny, tiny, None), tiny, "deit_tiny_patch16_224",
         "ffvit_tiny_patch16_224", "ff_block"),
    ]
    for build, path, target, held, block in cases:
        with pytest.raises(ValueError) as error:
            build()
        tokens = block == "ff_block"
        assert str(error.value) == (
            f"{path} does not hold the weights of {target}: it seems to hold {held} "
            f"({_describe(held, tokens)}, {block} blocks).")


@pytest.mark.once
def test_file_of_unregistered_dims_is_described(tmp_path):
    path = _h5(families.small_model("ffvit"), tmp_path, "small")
    with pytest.raises(ValueError) as error:
        ffzoo.FFViTMicro(weights=path)
    assert str(error.value) == (
        f"{path} does not hold the weights of {MICRO}: it seems to hold a model of patch 8, "
        "width 16, depth 2, 17 tokens, ff_block blocks (no registered model has these dims).")


def test_right_variant_file_still_loads_and_other_mismatches_keep_their_message(tmp_path):
    source = _randomize(families.small_model("ffvit", classes=5))
    path = _h5(source, tmp_path, "small")
    loaded = families.small_model("ffvit", classes=5, weights=path)
    for have, want in zip(loaded.get_weights(), source.get_weights(), strict=True):
        np.testing.assert_array_equal(have, want)
    # same blocks, another class count: not a wrong variant, so Keras' first line is kept
    with pytest.raises(ValueError, match=r"does not hold the weights of ffvit \(\d+ variables\)"):
        families.small_model("ffvit", classes=7, weights=path)


# -- .keras files without `import ffzoo` ------------------------------------------------

_LOAD_WITHOUT_FFZOO = r"""
import sys, numpy as np, keras
path, images = sys.argv[1], np.load(sys.argv[2])
try:
    keras.saving.load_model(path)
    print("LOADED WITHOUT FFZOO")
except Exception as error:
    print("FAILED:", str(error)[:3000])
assert "ffzoo" not in sys.modules
import ffzoo
np.save(sys.argv[3], keras.saving.load_model(path).predict(images, verbose=0))
"""


@pytest.mark.once
def test_keras_file_needs_import_ffzoo(tmp_path, rng):
    model = _randomize(families.small_model("ffvit", classes=3))
    path = str(tmp_path / "m.keras")
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
    ours = {layer["class_name"]: (layer["module"], layer["registered_name"])
            for layer in config["config"]["layers"] if layer["module"].startswith("ffzoo")}
    assert ours == {name: ("ffzoo.layers", f"ffzoo>{name}") for name in
                    ("PatchEmbedding", "ClassTokenPositionEmbedding", "FFBlock", "TokenPooling")}
    images = rng.standard_normal((2, 32, 32, 3)).astype("float32")
    np.save(tmp_path / "images.npy", images)
    out = str(tmp_path / "out.npy")
    result = subprocess.run(
        [sys.executable, "-c", _LOAD_WITHOUT_FFZOO, path, str(tmp_path / "images.npy"), out],
        capture_output=True, text=True, cwd=str(tmp_path), timeout=300,
        # the numpy backend: the quickest to start, and deserializing is backend-independent
        env={**os.environ, "PYTHONPATH": "", "KERAS_BACKEND": "numpy"})
    assert result.returncode == 0, result.stderr[-3000:]
    # Keras 3 imports a saved layer's `module` only for its own packages (keras, keras_hub,
    # ...): without `import ffzoo` the load fails, naming ffzoo's registered layer.
    assert "FAILED:" in result.stdout and "ffzoo>PatchEmbedding" in result.stdout, result.stdout
    np.testing.assert_allclose(np.load(out), model.predict(images, verbose=0), atol=1e-5)


# -- feature_blocks ---------------------------------------------------------------------

def _grid(tokens, grid, channels_first=False):
    """Patch tokens `(B, 1 + h * w, E)` -> `(B, h, w, E)`: the oracle's own reshape."""
    b, _, e = tokens.shape
    out = np.asarray(tokens)[:, 1:].reshape(b, grid[0], grid[1], e)
    return out.transpose(0, 3, 1, 2) if channels_first else out


@pytest.mark.parametrize("family", families.FAMILIES)
def test_feature_blocks_are_the_blocks_outputs(family, tmp_path, rng, record):
    dims = dict(families.SMALL[family], depth=3)
    size = (32, 48) if family == "deit" else (32, 32)  # DeiT: a 4 x 6 grid, not square
    state = families.reference_state(family, rng, dims, classes=5)
    full = families.BUILDERS[family](**dims, include_top=False, input_shape=(*size, 3))
    convert.load_state_dict(full, state, families.FORMATS[family])
    path = _h5(full, tmp_path, "backbone")
    chosen = (0, -1)
    features = families.BUILDERS[family](**dims, include_top=False, input_shape=(*size, 3),
                                         feature_blocks=chosen, weights=path)
    images = rng.standard_normal((2, *size, 3)).astype("float32")
    got = features.predict(images, verbose=0)
    assert isinstance(got, list) and len(got) == 2
    grid = (size[0] // dims["patch_size"], size[1] // dims["patch_size"])
    # oracle 1: the full model's own block activations
    blocks = keras.Model(full.input, [full.get_layer(f"block_{i}").output for i in (0, 2)])
    for have, want in zip(got, blocks.predict(images, verbose=0)):
        assert have.shape == (2, *grid, dims["embed_dim"])
        np.testing.assert_allclose(have, _grid(want, grid), atol=1e-6)
    # oracle 2: the NumPy reference's per-block tokens
    reference = []
    if family == "ffvit":
        families.numpy_ffvit.forward_tokens(state, images, dims["patch_size"], reference)
    else:
        families.numpy_deit.forward_tokens(state, images, dims["patch_size"], dims["num_heads"],
                                           resize="bilinear", block_outputs=reference)
    for have, want in zip(got, (reference[0], reference[-1])):
        difference = float(np.max(np.abs(have - _grid(want, grid))))
        record(f"feature_blocks vs numpy reference, {family}", difference)
        assert difference < 1e-4
    # only the layers up to the last chosen block are kept
    assert len(features.weights) == len(blocks.weights)


@pytest.mark.parametrize("family", families.FAMILIES)
def test_feature_blocks_channels_first_and_one_block(family, rng):
    keras.config.set_image_data_format("channels_first")
    model = _randomize(families.small_model(family, include_top=False))
    features = families.small_model(family, include_top=False, feature_blocks=[-2, 1])
    features.set_weights(model.get_weights()[:len(features.weights)])
    images = rng.standard_normal((2, 3, 32, 32)).astype("float32")
    tokens = keras.Model(model.input, [model.get_layer(f"block_{i}").output for i in (0, 1)])
    want = [_grid(t, (4, 4), channels_first=True) for t in tokens.predict(images, verbose=0)]
    got = features.predict(images, verbose=0)
    assert [g.shape for g in got] == [(2, 16, 4, 4)] * 2
    for have, expected in zip(got, want):
        np.testing.assert_allclose(have, expected, atol=1e-6)
    keras.config.set_image_data_format("channels_last")
    # a single block: Keras hands a one-output model's array back unwrapped
    single = ffzoo.create_model(MICRO, include_top=False, feature_blocks=(-1,))
    assert single.output_shape == (None, 8, 8, 128)
    assert len([layer for layer in single.layers if layer.name.startswith("block_")]) == 6


@pytest.mark.once
def test_feature_blocks_compose_with_the_preset_name(tmp_path, monkeypatch):
    cached = str(tmp_path / "deit.weights.h5")
    full = _randomize(ffzoo.DeiTTiny(), seed=4)
    full.save_weights(cached)
    monkeypatch.setattr(loading, "converted_path", lambda row: cached)
    features = ffzoo.create_model("deit_tiny_patch16_224", include_top=False,
                                  feature_blocks=(3, 7, 11), weights="deit_tiny_patch16_224.fb_in1k")
    assert features.output_shape == [(None, 14, 14, 192)] * 3
    # the pretrained backbone up to block 11, nothing after it (the final norm, the head)
    want = {w.path: w for w in full.weights}
    assert len(features.weights) == len(full.weights) - 4
    for weight in features.weights:
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(weight),
                                      keras.ops.convert_to_numpy(want[weight.path]))


FEATURE_ERRORS = [
    (dict(feature_blocks=(1,)), r"^feature_blocks needs include_top=False"),
    (dict(include_top=False, feature_blocks=(6,)),
     r"^feature_blocks index 6 is out of range: the model has 6 blocks \(0 to 5, or -6 to -1"),
    (dict(include_top=False, feature_blocks=(-7,)), r"index -7 is out of range"),
    (dict(include_top=False, feature_blocks=(5, -1)), r"^feature_blocks names block 5 twice"),
    (dict(include_top=False, feature_blocks=3), r"^feature_blocks must be a non-empty list or tuple"),
    (dict(include_top=False, feature_blocks=()), r"^feature_blocks must be a non-empty list"),
    (dict(include_top=False, feature_blocks=(True,)), r"^feature_blocks holds True"),
    (dict(include_top=False, feature_blocks=(1,), pooling="avg"),
     r"^feature_blocks returns feature maps, pooling='avg' pools the final tokens"),
]


@pytest.mark.once
@pytest.mark.parametrize("kwargs,message", FEATURE_ERRORS,
                         ids=[repr(e[0]["feature_blocks"]) + str(len(e[0])) for e in FEATURE_ERRORS])
def test_feature_blocks_errors(kwargs, message, monkeypatch):
    _no_layer_built(monkeypatch)
    with pytest.raises(ValueError, match=message):
        ffzoo.create_model(MICRO, **kwargs)
    with pytest.raises(ValueError, match=message):
        ffzoo.FFViTMicro(**kwargs)
