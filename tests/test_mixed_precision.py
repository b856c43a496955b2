"""Mixed precision: the model builds and runs; LayerNorm statistics and logits are float32."""

import keras
import numpy as np
import pytest

from ffzoo import layers as ffl
from tests.conftest import to_numpy
from tests.families import FAMILIES, small_model


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("policy,half", [("mixed_bfloat16", "bfloat16"), ("mixed_float16", "float16")])
def test_mixed_policy_dtypes(family, policy, half, rng):
    images = rng.standard_normal((2, 32, 32, 3)).astype("float32")
    reference = small_model(family, classes=5, classifier_activation=None)
    keras.config.set_dtype_policy(policy)
    model = small_model(family, classes=5, classifier_activation=None)
    model.set_weights(reference.get_weights())
    assert {w.dtype for w in model.weights} == {"float32"}  # float32 master weights
    block = model.get_layer("block_0")
    assert block.compute_dtype == half
    mixer = block.token_ff if family == "ffvit" else block.attention
    assert mixer.norm.compute_dtype == half and mixer.norm.gamma.dtype == "float32"
    assert model.get_layer("head").compute_dtype == "float32"
    logits = model(images)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    tokens = keras.Model(model.input, model.get_layer("block_1").output)(images)
    assert keras.backend.standardize_dtype(tokens.dtype) == half
    # Close to the float32 model (half precision activations, so a loose bound).
    want = reference.predict(images, verbose=0)
    assert np.max(np.abs(to_numpy(logits) - want)) < 0.05 * np.abs(want).max() + 0.05


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_layer_norm_statistics_are_float32(policy):
    # 197 tokens of mean 40 and std 0.5: variance from half-precision sums would be
    # far off; with float32 statistics the output is exact up to output rounding.
    keras.config.set_dtype_policy(policy)
    block = ffl.TokenFF(197, 8)
    half = keras.backend.standardize_dtype(block.compute_dtype)
    x = 40 + 0.5 * np.random.default_rng(1).standard_normal((2, 197, 3))
    x_half = to_numpy(keras.ops.cast(x, half)).astype(np.float64)
    y = to_numpy(block.norm(keras.ops.cast(np.swapaxes(x, 1, 2), half))).astype(np.float64)
    mean = np.swapaxes(x_half, 1, 2).mean(-1, keepdims=True)
    std = np.swapaxes(x_half, 1, 2).std(-1, keepdims=True)
    want = (np.swapaxes(x_half, 1, 2) - mean) / np.sqrt(std ** 2 + 1e-6)
    tolerance = 4 * 2.0 ** (-8 if half == "bfloat16" else -11)  # a few output ulps
    assert np.max(np.abs(y - want) / np.maximum(np.abs(want), 1)) < tolerance
