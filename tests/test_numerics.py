"""ffzoo's forward pass against independent NumPy implementations and golden tensors."""

import os

import numpy as np
import pytest

import ffzoo
from ffzoo.weights.convert import load_ffvit_state_dict, load_state_dict
from tests import families
from tests.conftest import ROOT
from tests.reference import numpy_ffvit as ref

# (family, name, builder kwargs, input (H, W)): small; a 14 -> 4 grid resize; a
# non-square 2 x 8 grid resized from 4 x 4; FF-Large's 14 -> 7 path on a small width.
SMALL_CONFIGS = [
    ("ffvit", "small", dict(patch_size=8, embed_dim=16, depth=2, image_size=32, pos_grid_size=4), (32, 32)),
    ("ffvit", "resize_14_to_4", dict(patch_size=16, embed_dim=24, depth=2, image_size=64, pos_grid_size=14), (64, 64)),
    ("ffvit", "non_square_4_to_2x8", dict(patch_size=8, embed_dim=16, depth=2, image_size=32, pos_grid_size=4), (16, 64)),
    ("ffvit", "large_like_p32_14_to_7", dict(patch_size=32, embed_dim=32, depth=2, image_size=224, pos_grid_size=14), (224, 224)),
    ("deit", "small", dict(patch_size=8, embed_dim=16, depth=2, num_heads=2, image_size=32, pos_grid_size=4), (32, 32)),
    ("deit", "resize_4_to_6x3", dict(patch_size=8, embed_dim=24, depth=2, num_heads=3, image_size=32, pos_grid_size=4), (48, 24)),
]


@pytest.mark.parametrize("family,name,dims,size", SMALL_CONFIGS,
                         ids=[f"{c[0]}-{c[1]}" for c in SMALL_CONFIGS])
def test_matches_numpy_reference_small(family, name, dims, size, rng, record):
    model = families.BUILDERS[family](**dims, classes=10, classifier_activation=None,
                                      input_shape=(*size, 3))
    state = families.reference_state(family, rng, dims, classes=10)
    load_state_dict(model, state, family)
    images = rng.standard_normal((3, *size, 3)).astype(np.float32)
    got = model.predict(images, verbose=0)
    want = families.numpy_logits(family, state, images, dims)
    diff = float(np.max(np.abs(got - want)))
    record(f"max |logit - numpy| {family} {name}", diff)
    assert np.abs(want).max() > 0.5  # a meaningful scale for the 1e-4 bound
    assert diff < 1e-4


@pytest.mark.parametrize("family,name", [("ffvit", "ffvit_tiny_patch16_224"),
                                         ("deit", "deit_tiny_patch16_224")])
def test_matches_numpy_reference_tiny(family, name, rng, record):
    model = ffzoo.create_model(name, classifier_activation=None)
    dims = ffzoo.models.registry.model_dims(name)
    state = families.reference_state(family, rng, dims)
    load_state_dict(model, state, family)
    images = rng.standard_normal((2, 224, 224, 3)).astype(np.float32)
    got = model.predict(images, verbose=0)
    want = families.numpy_logits(family, state, images, dims)
    diff = float(np.max(np.abs(got - want)))
    record(f"max |logit - numpy| {name}", diff)
    assert np.abs(want).max() > 0.5
    assert diff < 1e-4
    probs = ffzoo.create_model(name)  # softmax head on the same weights
    load_state_dict(probs, state, family)
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
