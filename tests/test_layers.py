"""Each layer on its own: config round trip, shapes, and its maths against NumPy."""

import inspect

import keras
import numpy as np
import pytest

from ffzoo import layers as ffl
from tests.conftest import to_numpy
from references import numpy_deit
from references import numpy_ffvit as ref

# (layer, input shape)
LAYER_CASES = [
    (lambda: ffl.PatchEmbedding(4, 6, name="pe"), (2, 8, 12, 3)),
    (lambda: ffl.ClassTokenPositionEmbedding(grid_size=(3, 3), name="cp"), (2, 2, 3, 6)),
    (lambda: ffl.DropPath(0.3, seed=1, name="dp"), (4, 5, 6)),
    (lambda: ffl.FeedForward(12, 6, dropout_rate=0.1, name="ff"), (2, 5, 6)),
    (lambda: ffl.FeatureFF(6, 12, dropout_rate=0.1, drop_path_rate=0.2, epsilon=1e-5, name="f"), (2, 5, 6)),
    (lambda: ffl.TokenFF(5, 9, dropout_rate=0.1, drop_path_rate=0.2, name="t"), (2, 5, 6)),
    (lambda: ffl.FFBlock(6, 5, 12, 7, dropout_rate=0.1, drop_path_rate=0.2, name="b"), (2, 5, 6)),
    (lambda: ffl.TokenPooling("avg", name="tp"), (2, 5, 6)),
    (lambda: ffl.TokenAttention(6, 2, dropout_rate=0.1, attention_dropout_rate=0.2,
                                drop_path_rate=0.1, name="ta"), (2, 5, 6)),
    (lambda: ffl.AttentionBlock(6, 3, 12, dropout_rate=0.1, attention_dropout_rate=0.1,
                                drop_path_rate=0.2, name="ab"), (2, 5, 6)),
]
IDS = ["PatchEmbedding", "ClassTokenPositionEmbedding", "DropPath", "FeedForward",
       "FeatureFF", "TokenFF", "FFBlock", "TokenPooling", "TokenAttention", "AttentionBlock"]


@pytest.mark.parametrize("make,shape", LAYER_CASES, ids=IDS)
def test_config_lists_exactly_the_constructor_arguments(make, shape):
    layer = make()
    config = layer.get_config()
    own = set(inspect.signature(type(layer).__init__).parameters) - {"self", "kwargs"}
    base = {"name", "trainable", "dtype"}  # keras.layers.Layer's own, through **kwargs
    assert set(config) == own | base


@pytest.mark.parametrize("make,shape", LAYER_CASES, ids=IDS)
def test_from_config_round_trip(make, shape, rng):
    layer = make()
    x = rng.standard_normal(shape).astype("float32")
    y = to_numpy(layer(x))
    clone = type(layer).from_config(layer.get_config())
    clone(x)  # builds
    assert clone.get_config() == layer.get_config()
    assert [w.shape for w in clone.weights] == [w.shape for w in layer.weights]
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(to_numpy(clone(x)), y, atol=1e-6)
    assert tuple(y.shape) == tuple(layer.compute_output_shape(shape))


def test_patch_embedding_is_a_strided_convolution(rng):
    layer = ffl.PatchEmbedding(4, 5)
    x = rng.standard_normal((2, 9, 13, 3)).astype("float32")  # ragged edges dropped
    y = to_numpy(layer(x))
    kernel, bias = (to_numpy(w) for w in layer.weights)
    want = np.zeros((2, 2, 3, 5))
    for i in range(2):
        for j in range(3):
            patch = x[:, 4 * i: 4 * i + 4, 4 * j: 4 * j + 4, :]
            want[:, i, j] = np.einsum("byxc,yxce->be", patch, kernel) + bias
    np.testing.assert_allclose(y, want, atol=1e-5)


@pytest.mark.parametrize("grid", [(3, 3), (2, 2), (4, 5)])
def test_class_token_and_positions(grid, rng):
    layer = ffl.ClassTokenPositionEmbedding(grid_size=(3, 3))
    x = rng.standard_normal((2, *grid, 4)).astype("float32")
    y = to_numpy(layer(x))
    cls, cls_pos, pos = (to_numpy(w) for w in layer.weights)
    pos = np.transpose(ref.bilinear_resize_chw(np.transpose(pos, (2, 0, 1)), *grid), (1, 2, 0))
    want = np.concatenate([np.broadcast_to(cls + cls_pos, (2, 1, 4)),
                           (x + pos).reshape(2, -1, 4)], axis=1)
    np.testing.assert_allclose(y, want, atol=1e-6)


def test_feed_forward_uses_exact_gelu(rng):
    layer = ffl.FeedForward(16, 4)
    x = (3 * rng.standard_normal((3, 4))).astype("float32")  # where tanh-GELU differs
    y = to_numpy(layer(x))
    w1, b1, w2, b2 = (to_numpy(w).astype(np.float64) for w in layer.weights)
    want = ref.gelu(x @ w1 + b1) @ w2 + b2
    np.testing.assert_allclose(y, want, atol=1e-5)


def test_token_ff_normalizes_and_mixes_over_tokens(rng):
    layer = ffl.TokenFF(5, 7)
    x = rng.standard_normal((2, 5, 3)).astype("float32")
    layer.build(x.shape)
    for w in layer.weights:  # move LayerNorm away from its init
        w.assign(rng.standard_normal(w.shape).astype("float32"))
    g, b, w1, b1, w2, b2 = (to_numpy(w).astype(np.float64) for w in layer.weights)
    xt = np.swapaxes(x, 1, 2)
    want = np.swapaxes(xt + ref.gelu(ref.layer_norm(xt, g, b) @ w1 + b1) @ w2 + b2, 1, 2)
    np.testing.assert_allclose(to_numpy(layer(x)), want, atol=1e-5)
    assert layer.norm.gamma.shape == (5,)


def test_feature_ff_and_layer_norm_epsilon(rng):
    layer = ffl.FeatureFF(4, 8)
    assert layer.norm.epsilon == 1e-6
    x = (1e-3 * rng.standard_normal((2, 3, 4))).astype("float32")  # eps matters here
    y = to_numpy(layer(x))
    g, b, w1, b1, w2, b2 = (to_numpy(w).astype(np.float64) for w in layer.weights)
    want = x + ref.gelu(ref.layer_norm(x, g, b, eps=1e-6) @ w1 + b1) @ w2 + b2
    np.testing.assert_allclose(y, want, atol=1e-5)


def test_drop_path_drops_whole_samples_and_rescales(rng):
    layer = ffl.DropPath(0.25, seed=3)
    x = np.ones((4000, 3, 2), "float32")
    np.testing.assert_array_equal(to_numpy(layer(x)), x)  # inference: identity
    y = to_numpy(layer(x, training=True))
    per_sample = y.reshape(4000, -1)
    assert np.all(per_sample.min(1) == per_sample.max(1))  # one decision per sample
    assert set(np.unique(y)) <= {0.0, np.float32(1 / 0.75)}
    kept = (per_sample[:, 0] > 0).mean()
    assert abs(kept - 0.75) < 0.03  # binomial std 0.007
    y2 = to_numpy(layer(x, training=True))
    assert not np.array_equal(y, y2)  # the generator advances


def test_drop_path_seed_makes_masks_reproducible():
    x = np.ones((64, 2), "float32")
    a = to_numpy(ffl.DropPath(0.5, seed=7)(x, training=True))
    b = to_numpy(ffl.DropPath(0.5, seed=7)(x, training=True))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("mode", ["token", "avg", "max"])
def test_token_pooling(mode, rng):
    x = rng.standard_normal((2, 5, 3)).astype("float32")
    want = {"token": x[:, 0], "avg": x[:, 1:].mean(1), "max": x[:, 1:].max(1)}[mode]
    np.testing.assert_allclose(to_numpy(ffl.TokenPooling(mode)(x)), want, atol=1e-6)


@pytest.mark.parametrize("training", [False, True])
def test_token_attention_matches_numpy(training, rng):
    layer = ffl.TokenAttention(8, 2, attention_dropout_rate=0.0)
    x = rng.standard_normal((2, 5, 8)).astype("float32")
    layer.build(x.shape)
    for w in layer.weights:
        w.assign(rng.standard_normal(w.shape).astype("float32") * 0.5)
    g, b, wqkv, bqkv, wproj, bproj = (to_numpy(w).astype(np.float64) for w in layer.weights)
    state = {"a.qkv.weight": wqkv.T, "a.qkv.bias": bqkv, "a.proj.weight": wproj.T, "a.proj.bias": bproj}
    want = x + numpy_deit.attention(ref.layer_norm(x, g, b), state, "a.", 2)
    np.testing.assert_allclose(to_numpy(layer(x, training=training)), want, atol=1e-5)


def _attention_with_weights(rng, **kwargs):
    """A built TokenAttention(8 wide, 2 heads) with random weights, an input, and its
    NumPy pieces: `(layer, x, timm-layout state, norm gamma, norm beta)`."""
    layer = ffl.TokenAttention(8, 2, **kwargs)
    x = rng.standard_normal((2, 5, 8)).astype("float32")
    layer.build(x.shape)
    for w in layer.weights:
        w.assign(rng.standard_normal(w.shape).astype("float32") * 0.5)
    g, b, wqkv, bqkv, wproj, bproj = (to_numpy(w).astype(np.float64) for w in layer.weights)
    state = {"a.qkv.weight": wqkv.T, "a.qkv.bias": bqkv, "a.proj.weight": wproj.T, "a.proj.bias": bproj}
    return layer, x, state, g, b


def test_attention_dropout_path_matches_numpy(rng, monkeypatch):
    # attention_dropout_rate > 0 and training: the einsum path. Its dropout is replaced
    # by a known mask (kept weights scaled by 1 / keep, as dropout does), so the maths
    # can be compared with DeiT's reference, mask applied after the softmax, before v.
    layer, x, state, g, b = _attention_with_weights(rng, attention_dropout_rate=0.5)
    mask = (rng.random((2, 2, 5, 5)) < 0.5) / 0.5  # (batch, heads, queries, keys)
    seen = []

    def fixed_mask(weights, training=False):
        seen.append(tuple(weights.shape))
        return weights * keras.ops.cast(mask, weights.dtype) if training else weights

    monkeypatch.setattr(layer.attention_dropout, "call", fixed_mask)
    want = x + numpy_deit.attention(ref.layer_norm(x, g, b), state, "a.", 2, weights_mask=mask)
    np.testing.assert_allclose(to_numpy(layer(x, training=True)), want, atol=1e-5)
    assert seen == [(2, 2, 5, 5)]  # the einsum path ran, on the attention weights
    plain = x + numpy_deit.attention(ref.layer_norm(x, g, b), state, "a.", 2)
    assert np.abs(want - plain).max() > 0.1  # the mask matters at this bound


def test_attention_dropout_path_with_identity_dropout_matches_numpy(rng, monkeypatch):
    layer, x, state, g, b = _attention_with_weights(rng, attention_dropout_rate=0.3)
    monkeypatch.setattr(layer.attention_dropout, "rate", 0.0)  # the einsum path, no drops
    want = x + numpy_deit.attention(ref.layer_norm(x, g, b), state, "a.", 2)
    np.testing.assert_allclose(to_numpy(layer(x, training=True)), want, atol=1e-5)
    monkeypatch.undo()
    # With its real dropout the path drops weights, differently on every call.
    first, second = (to_numpy(layer(x, training=True)) for _ in range(2))
    assert not np.allclose(first, want, atol=1e-4) and not np.allclose(first, second, atol=1e-4)


def test_layer_argument_errors():
    with pytest.raises(ValueError, match="mode must be one of"):
        ffl.TokenPooling("mean")
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\)"):
        ffl.DropPath(1.0)
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        ffl.TokenAttention(10, 3)
    with pytest.raises(ValueError, match="built for width 4"):
        ffl.TokenFF(4, 8)(np.zeros((1, 5, 3), "float32"))
