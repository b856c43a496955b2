"""ffzoo's forward pass against an independent NumPy implementation and golden tensors."""

import os

import numpy as np
import pytest

import ffzoo
from ffzoo.weights.convert import load_ffvit_state_dict
from tests.conftest import BACKEND, ROOT
from tests.reference import numpy_ffvit as ref

# (name, builder kwargs, input (H, W)): small; a 14 -> 4 grid resize (FF-Large's path);
# a non-square 2 x 8 grid resized from 4 x 4; FF-Large's 14 -> 7 on a small width.
SMALL_CONFIGS = [
    ("small", dict(patch_size=8, embed_dim=16, depth=2, image_size=32, pos_grid_size=4), (32, 32)),
    ("resize_14_to_4", dict(patch_size=16, embed_dim=24, depth=2, image_size=64, pos_grid_size=14), (64, 64)),
    ("non_square_4_to_2x8", dict(patch_size=8, embed_dim=16, depth=2, image_size=32, pos_grid_size=4), (16, 64)),
    ("large_like_p32_14_to_7", dict(patch_size=32, embed_dim=32, depth=2, image_size=224, pos_grid_size=14), (224, 224)),
]


def _build_with_reference_weights(rng, dims, classes=10, **kwargs):
    num_tokens = 1 + (dims["image_size"] // dims["patch_size"]) ** 2
    sd = ref.random_state_dict(
        rng, patch_size=dims["patch_size"], embed_dim=dims["embed_dim"], depth=dims["depth"],
        num_tokens=num_tokens, pos_grid=dims["pos_grid_size"], classes=classes,
    )
    model = ffzoo.FFViT(**dims, classes=classes, classifier_activation=None, **kwargs)
    load_ffvit_state_dict(model, sd)
    return model, sd


@pytest.mark.parametrize("name,dims,size", SMALL_CONFIGS, ids=[c[0] for c in SMALL_CONFIGS])
def test_matches_numpy_reference_small(name, dims, size, rng, record):
    model, sd = _build_with_reference_weights(rng, dims, input_shape=(*size, 3))
    images = rng.standard_normal((3, *size, 3)).astype(np.float32)
    got = model.predict(images, verbose=0)
    want = ref.forward(sd, images, dims["patch_size"])
    diff = float(np.max(np.abs(got - want)))
    record(f"max |logit - numpy| {name}", diff)
    assert np.abs(want).max() > 0.5  # a meaningful scale for the 1e-4 bound
    assert diff < 1e-4


def test_matches_numpy_reference_ff_tiny(rng, record):
    model = ffzoo.FFViTTiny(classifier_activation=None)
    sd = ref.random_state_dict(rng, patch_size=16, embed_dim=192, depth=12, num_tokens=197)
    load_ffvit_state_dict(model, sd)
    images = rng.standard_normal((2, 224, 224, 3)).astype(np.float32)
    got = model.predict(images, verbose=0)
    want = ref.forward(sd, images, 16)
    diff = float(np.max(np.abs(got - want)))
    record("max |logit - numpy| ff_tiny", diff)
    assert np.abs(want).max() > 0.5
    assert diff < 1e-4
    probs = ffzoo.FFViTTiny()  # softmax head on the same weights
    load_ffvit_state_dict(probs, sd)
    np.testing.assert_allclose(probs.predict(images, verbose=0), ref.softmax(want), atol=1e-5)


GOLDEN = os.path.join(ROOT, "tests", "data", "golden_ffvit_small.npz")


def test_golden_tensors(record):
    """A tiny seeded model's stored input and output (tests/make_golden.py wrote them)."""
    data = np.load(GOLDEN)
    dims = {k[5:]: int(data[k]) for k in data.files if k.startswith("dims_")}
    sd = {k[3:]: data[k] for k in data.files if k.startswith("sd_")}
    model = ffzoo.FFViT(**dims, classes=int(data["classes"]), classifier_activation=None,
                        input_shape=data["images"].shape[1:])
    load_ffvit_state_dict(model, sd)
    got = model.predict(data["images"], verbose=0)
    diff = float(np.max(np.abs(got - data["logits"])))
    record("max |logit - golden|", diff)
    assert diff < 1e-4
