"""Mixed precision: dtypes, and the numbers against the float64 NumPy references.

The models hold random reference weights (LayerNorm scales and offsets, positions and
every matrix away from their initial values) and are compared with the NumPy
references at a bound set by the half type's precision; each test also checks that
the bound is far below what deleting the blocks would change. `TokenFF` is called
itself, so its JAX branch (normalizing and mixing along axis 1) runs in half precision
on JAX and its transposing branch on the other backends.
"""

import keras
import numpy as np
import pytest

from ffzoo import layers as ffl
from tests import families
from tests.conftest import to_numpy
from references import numpy_ffvit as ref

POLICIES = [("mixed_bfloat16", "bfloat16"), ("mixed_float16", "float16")]
# Relative precision (one ulp at 1) of each half type.
ULP = {"bfloat16": 2.0 ** -7, "float16": 2.0 ** -10}
# Logit error allowed, in ulps of the largest logit. Measured (depth-2 models, 2 images,
# the three backends): 0.50-1.04 ulps with bfloat16, 0.78-1.16 with float16.
LOGIT_ULPS = 3


def _without_blocks(state):
    return {k: v for k, v in state.items() if not k.startswith("blocks.")}


@pytest.mark.parametrize("family", families.FAMILIES)
@pytest.mark.parametrize("policy,half", POLICIES)
def test_mixed_policy_matches_the_numpy_reference(family, policy, half, rng, record):
    keras.config.set_dtype_policy(policy)
    model, state = families.small_with_reference_weights(family, rng, classes=5,
                                                         classifier_activation=None)
    assert {w.dtype for w in model.weights} == {"float32"}  # float32 master weights
    block = model.get_layer("block_0")
    assert block.compute_dtype == half
    mixer = block.token_ff if family == "ffvit" else block.attention
    assert mixer.norm.compute_dtype == half and mixer.norm.gamma.dtype == "float32"
    assert model.get_layer("head").compute_dtype == "float32"
    images = rng.standard_normal((2, 32, 32, 3)).astype("float32")
    logits = model(images)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    tokens = keras.Model(model.input, model.get_layer("block_1").output)(images)
    assert keras.backend.standardize_dtype(tokens.dtype) == half

    dims = families.SMALL[family]
    want = families.numpy_logits(family, state, images, dims)
    bound = LOGIT_ULPS * ULP[half] * np.abs(want).max()
    diff = float(np.max(np.abs(to_numpy(logits) - want)))
    record(f"{policy} {family}: max |logit - numpy| in ulps of the largest logit",
           diff / (ULP[half] * np.abs(want).max()))
    assert diff < bound
    # The bound means something: the blocks move the logits by far more.
    no_blocks = families.numpy_logits(family, _without_blocks(state), images, dims)
    assert np.max(np.abs(no_blocks - want)) > 10 * bound


def _token_ff_reference(x, weights):
    """float64 `x + FF(LayerNorm(x))` with LayerNorm and FF over axis 1 (the tokens)."""
    g, b, w1, b1, w2, b2 = (np.asarray(w, np.float64) for w in weights)
    xt = np.swapaxes(x, 1, 2)
    return np.swapaxes(xt + ref.gelu(ref.layer_norm(xt, g, b) @ w1 + b1) @ w2 + b2, 1, 2)


@pytest.mark.parametrize("policy,half", POLICIES)
def test_token_ff_in_half_precision_matches_numpy(policy, half, rng, record):
    # 17 tokens of mean 40 and std 0.5 for every feature: half-precision sums would put
    # the mean off by more than the spread; with float32 statistics the output is as
    # exact as the half type allows.
    keras.config.set_dtype_policy(policy)
    layer = ffl.TokenFF(17, 24)
    x = 40 + 0.5 * rng.standard_normal((2, 17, 6))
    x_half = to_numpy(keras.ops.cast(x, half)).astype(np.float64)  # the layer's input
    layer.build(x.shape)
    norm_gamma, norm_beta, w1, b1, w2, b2 = layer.weights
    norm_gamma.assign(1 + 0.3 * rng.standard_normal(17))
    norm_beta.assign(0.3 * rng.standard_normal(17))
    w1.assign(rng.standard_normal((17, 24)) / np.sqrt(17))
    b1.assign(0.3 * rng.standard_normal(24))
    w2.assign(8 * rng.standard_normal((24, 17)) / np.sqrt(24))  # the branch of size ~ x
    b2.assign(0.3 * rng.standard_normal(17))
    weights = [to_numpy(w) for w in layer.weights]
    y = layer(keras.ops.cast(x, half))
    assert keras.backend.standardize_dtype(y.dtype) == half
    y = to_numpy(y).astype(np.float64)
    want = _token_ff_reference(x_half, weights)
    branch = want - x_half
    scale = np.abs(want).max()
    diff = float(np.max(np.abs(y - want)))
    record(f"{policy} TokenFF: max |out - numpy| in ulps of the largest output", diff / (ULP[half] * scale))
    # Measured 0.57 ulps (bfloat16) and 0.34-0.43 (float16) of the largest output.
    bound = 2 * ULP[half] * scale
    assert diff < bound
    assert np.abs(branch).max() > 20 * bound  # the mixing branch is what is checked
