"""The models' public contract: counts, keras.applications arguments, errors, init."""

import keras
import numpy as np
import pytest

import ffzoo
from tests import families
from tests.conftest import to_numpy
from tests.families import FAMILIES
from references import numpy_ffvit as ref

# Parameter counts measured on the reference code (shared/REFERENCE.md), and timm's
# DeiT models (5.7M, 22M and 86.6M in the DeiT paper).
REFERENCE_PARAMS = {
    "ffvit_tiny_patch16_224": 7_676_332,
    "ffvit_base_patch16_224": 61_943_020,
    "ffvit_large_patch32_224": 206_363_576,
    "deit_tiny_patch16_224": 5_717_416,
    "deit_small_patch16_224": 22_050_664,
    "deit_base_patch16_224": 86_567_656,
    # Not in the paper: the count of references/torch_ffvit.FFViT(patch_size=4,
    # embed_dim=128, depth=6, image_size=32, pos_grid=8); test_micro_count_is_the_torch_reference_s.
    "ffvit_micro_patch4_32": 1_141_314,
}
SMALL = families.SMALL["ffvit"]


def test_micro_count_is_the_torch_reference_s():
    from references.torch_ffvit import FFViT

    module = FFViT(patch_size=4, embed_dim=128, depth=6, image_size=32, pos_grid=8)
    assert sum(p.numel() for p in module.parameters()) == REFERENCE_PARAMS["ffvit_micro_patch4_32"]


def test_list_models():
    from tests.test_mlp_families import PUBLISHED_PARAMS as MLP_PARAMS  # the MLP families'

    assert set(REFERENCE_PARAMS) | set(MLP_PARAMS) == set(ffzoo.list_models())
    assert ffzoo.list_models("ffvit_*_patch16_*") == [
        "ffvit_base_patch16_224", "ffvit_tiny_patch16_224"]


# Building the large variants takes seconds (FF-Large has 206M parameters); their layer
# shapes are backend-independent Keras, so they are counted with the first backend only.
LARGE = {"ffvit_base_patch16_224", "ffvit_large_patch32_224", "deit_base_patch16_224"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.once) if n in LARGE else n
                                  for n in sorted(REFERENCE_PARAMS)])
def test_parameter_counts_match_reference(name):
    model = ffzoo.create_model(name)
    assert model.count_params() == REFERENCE_PARAMS[name]
    assert model.name == name
    keras.backend.clear_session()


def test_ff_large_resizes_its_14x14_grid_to_7x7():
    model = ffzoo.FFViTLarge(include_top=False, input_shape=(224, 224, 3))
    pos = model.get_layer("pos_embed")
    assert tuple(pos.position_grid.shape) == (14, 14, 1024)
    assert model.get_layer("block_0").token_ff.norm.gamma.shape == (50,)
    keras.backend.clear_session()


@pytest.mark.parametrize("wrapper,name", [(ffzoo.FFViTTiny, "ffvit_tiny_patch16_224"),
                                          (ffzoo.DeiTTiny, "deit_tiny_patch16_224")])
def test_wrappers_and_create_model_agree(wrapper, name):
    a = wrapper(include_top=False, pooling="token")
    b = ffzoo.create_model(name, include_top=False, pooling="token")
    assert a.get_config()["layers"] == b.get_config()["layers"]
    assert a.output.shape == (None, 192)
    assert a.name == name


def test_token_mlp_dim_fixes_the_token_hidden_width():
    default = ffzoo.FFViT(**SMALL)
    assert default.get_layer("block_0").token_ff.ff.fc1.kernel.shape == (17, 68)
    fixed = ffzoo.FFViT(**SMALL, token_mlp_dim=10)
    assert fixed.get_layer("block_1").token_ff.ff.fc1.kernel.shape == (17, 10)
    tokens = 1 + (64 // 8) ** 2  # a bigger input at the same fixed width
    wide = ffzoo.FFViT(**{**SMALL, "image_size": 64}, token_mlp_dim=10)
    assert wide.get_layer("block_0").token_ff.ff.fc1.kernel.shape == (tokens, 10)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("pooling", [None, "token", "avg", "max"])
def test_notop_pooling(family, pooling, rng):
    model, sd = families.small_with_reference_weights(family, rng, include_top=False, pooling=pooling)
    images = rng.standard_normal((2, 32, 32, 3)).astype("float32")
    tokens = families.numpy_tokens(family, sd, images, families.SMALL[family])
    want = {None: tokens, "token": tokens[:, 0], "avg": tokens[:, 1:].mean(1),
            "max": tokens[:, 1:].max(1)}[pooling]
    got = model.predict(images, verbose=0)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert all("head" not in w.path for w in model.weights)


@pytest.mark.parametrize("family", FAMILIES)
def test_classes_and_classifier_activation(family, rng):
    logits_model, sd = families.small_with_reference_weights(family, rng, classes=5,
                                                             classifier_activation=None)
    images = rng.standard_normal((3, 32, 32, 3)).astype("float32")
    logits = logits_model.predict(images, verbose=0)
    assert logits.shape == (3, 5)
    np.testing.assert_allclose(
        logits, families.numpy_logits(family, sd, images, families.SMALL[family]), atol=1e-4)
    assert np.abs(logits.sum(1) - 1).max() > 0.1  # not probabilities
    probs = families.small_model(family, classes=5)
    probs.set_weights(logits_model.get_weights())
    np.testing.assert_allclose(probs.predict(images, verbose=0), ref.softmax(logits), atol=1e-5)
    sig = families.small_model(family, classes=5, classifier_activation="sigmoid")
    sig.set_weights(logits_model.get_weights())
    np.testing.assert_allclose(sig.predict(images, verbose=0), 1 / (1 + np.exp(-logits)), atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_custom_input_tensor(family, rng):
    inputs = keras.Input((32, 32, 3), name="pixels")
    x = keras.layers.Rescaling(2.0, offset=-1.0)(inputs)
    model = families.small_model(family, input_tensor=x, classes=4, include_top=True)
    assert model.inputs[0].name == inputs.name
    plain = families.small_model(family, classes=4)
    plain.set_weights(model.get_weights())
    images = rng.uniform(size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(model.predict(images, verbose=0),
                               plain.predict(2 * images - 1, verbose=0), atol=1e-5)


def test_channels_first_data_format(rng):
    keras.config.set_image_data_format("channels_first")
    cf = ffzoo.FFViT(**SMALL, classes=3)
    assert cf.input_shape == (None, 3, 32, 32)
    keras.config.set_image_data_format("channels_last")
    cl = ffzoo.FFViT(**SMALL, classes=3)
    cl.set_weights(cf.get_weights())
    images = rng.standard_normal((2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(cf.predict(np.transpose(images, (0, 3, 1, 2)), verbose=0),
                               cl.predict(images, verbose=0), atol=1e-5)


def test_attention_models_take_any_input_size():
    model = ffzoo.DeiTTiny(input_shape=(384, 256, 3), include_top=False)
    assert model.output.shape == (None, 1 + 24 * 16, 192)
    with pytest.raises(ValueError, match="smaller than one 16 x 16 patch"):
        ffzoo.DeiTTiny(input_shape=(8, 224, 3))
    with pytest.raises(ValueError, match="classes=10 with weights='imagenet' and include_top=True: "
                                         "the pretrained classifier has 1000 classes"):
        ffzoo.DeiTTiny(weights="imagenet", classes=10)  # checked before any download


def test_accepted_input_sizes_share_the_token_count(rng):
    model = ffzoo.FFViTTiny(input_shape=(239, 230, 3), include_top=False, pooling="token")
    assert model.output.shape == (None, 192)
    tall = ffzoo.FFViTTiny(input_shape=(112, 448, 3), include_top=False)  # 7 x 28 = 196 patches
    assert tall.output.shape == (None, 197, 192)


ERRORS = [
    (dict(input_shape=(256, 256, 3)), r"mixes exactly 197 tokens.*16 x 16 patch grid \(257 tokens\).*224 to 239 px.*token_mlp_dim does not lift this.*image_size="),
    (dict(input_shape=(256, 256, 3), token_mlp_dim=100), r"token_mlp_dim does not lift this"),
    (dict(input_shape=(None, None, 3)), r"unknown size"),
    (dict(input_shape=(224, 224)), r"3 entries"),
    (dict(input_shape=(8, 8, 3)), r"smaller than one 16 x 16 patch"),
    (dict(pooling="mean", include_top=False), r"pooling='mean' is not supported; use None, 'token', 'avg', 'max'"),
    (dict(pooling="avg"), r"pooling='avg' needs include_top=False"),
    (dict(classifier_activation="softmaxx"), r"classifier_activation='softmaxx' is not an activation"),
    (dict(classes=0), r"classes must be an integer >= 1"),
    (dict(classes=2.5), r"classes must be an integer >= 1"),
    (dict(drop_path_rate=1.5), r"drop_path_rate must be a number in \[0, 1\)"),
    (dict(drop_rate=-0.1), r"drop_rate must be a number in \[0, 1\)"),
    (dict(token_mlp_dim=0), r"token_mlp_dim must be a positive integer"),
    (dict(include_top="yes"), r"include_top must be True or False"),
    (dict(weights=3), r"weights must be"),
    (dict(weights="missing/file.weights.h5"), r"no such file"),
]


@pytest.mark.parametrize("kwargs,message", ERRORS, ids=[str(sorted(e[0])) for e in ERRORS])
def test_argument_errors_before_building(kwargs, message, monkeypatch):
    built = []

    def spy(self, *args, **kw):
        built.append(self)
        raise AssertionError("a layer was built before the arguments were checked")

    monkeypatch.setattr(ffzoo.layers.PatchEmbedding, "__init__", spy)
    with pytest.raises(ValueError, match=message):
        ffzoo.FFViTTiny(**kwargs)
    assert not built


def test_input_tensor_must_be_a_keras_tensor():
    with pytest.raises(ValueError, match="input_tensor must be a Keras tensor"):
        ffzoo.FFViTTiny(input_tensor=np.zeros((1, 224, 224, 3)))


def test_unknown_model_name_lists_close_matches():
    with pytest.raises(ValueError, match=r"Unknown model 'ffvit_tiny_patch16'.*Did you mean 'ffvit_tiny_patch16_224'"):
        ffzoo.create_model("ffvit_tiny_patch16")
    with pytest.raises(ValueError, match=r"Registered models: .*ffvit_base_patch16_224"):
        ffzoo.create_model("resnet50")


def _values(model, fragment):
    return np.concatenate([to_numpy(w).ravel() for w in model.weights if fragment in w.path])


def test_initialisation_matches_the_reference():
    model = ffzoo.FFViTTiny()
    # Linear kernels: timm's trunc_normal_(std=.02) cuts at +-2 absolute, i.e. a plain
    # normal; 4.55% of draws lie beyond 2 std (Keras' TruncatedNormal would give none).
    kernels = _values(model, "ff/fc1/kernel")
    assert abs(kernels.std() - 0.02) < 2e-4 and abs(kernels.mean()) < 1e-4
    beyond = np.mean(np.abs(kernels) > 0.04)
    assert 0.04 < beyond < 0.051
    assert np.all(_values(model, "ff/fc1/bias") == 0) and np.all(_values(model, "head/bias") == 0)
    assert abs(_values(model, "head/kernel").std() - 0.02) < 5e-4
    for name in ("class_token", "class_position", "position_grid"):
        assert 0.012 < _values(model, name).std() < 0.028
    assert np.all(_values(model, "norm/gamma") == 1) and np.all(_values(model, "norm/beta") == 0)
    # The patch convolution keeps PyTorch's default: uniform in +-1/sqrt(3 * 16 * 16).
    bound = 1 / np.sqrt(768)
    for name in ("patch_embed/kernel", "patch_embed/bias"):
        v = _values(model, name)
        assert np.abs(v).max() <= bound and np.abs(v).max() > 0.9 * bound
    uniform_std = bound / np.sqrt(3)
    assert abs(_values(model, "patch_embed/kernel").std() - uniform_std) < 0.02 * uniform_std


def test_drop_path_rates_rise_linearly():
    model = ffzoo.FFViTTiny(drop_path_rate=0.11, drop_rate=0.1)
    rates = [model.get_layer(f"block_{i}").drop_path_rate for i in range(12)]
    np.testing.assert_allclose(rates, np.linspace(0, 0.11, 12))
    assert model.get_layer("pos_drop").rate == 0.1
    assert model.get_layer("block_3").feature_ff.ff.dropout1.rate == 0.1
