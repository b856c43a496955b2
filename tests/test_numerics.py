"""ffzoo's forward pass against independent NumPy implementations and golden tensors."""

import os

import numpy as np
import pytest

import ffzoo
from ffzoo.weights.convert import load_state_dict
from tests import families
from tests.conftest import ROOT
from references import numpy_deit
from references import numpy_ffvit as ref

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
    load_state_dict(model, state, families.FORMATS[family])
    images = rng.standard_normal((3, *size, 3)).astype(np.float32)
    got = model.predict(images, verbose=0)
    if family == "deit":  # DeiT's own forward pass; other grids resampled as ffzoo documents
        grid = (size[0] // dims["patch_size"], size[1] // dims["patch_size"])
        resize = None if grid == (dims["pos_grid_size"],) * 2 else "bilinear"
        want = numpy_deit.forward(state, images, dims["patch_size"], dims["num_heads"], resize)
    else:
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
    load_state_dict(model, state, families.FORMATS[family])
    images = rng.standard_normal((2, 224, 224, 3)).astype(np.float32)
    got = model.predict(images, verbose=0)
    want = families.numpy_logits(family, state, images, dims)
    diff = float(np.max(np.abs(got - want)))
    record(f"max |logit - numpy| {name}", diff)
    assert np.abs(want).max() > 0.5
    assert diff < 1e-4
    probs = ffzoo.create_model(name)  # softmax head on the same weights
    load_state_dict(probs, state, families.FORMATS[family])
    np.testing.assert_allclose(probs.predict(images, verbose=0), ref.softmax(want), atol=1e-5)


# DeiT at its native grid, written from DeiT's code: head counts 1 and 4, MLP ratio 2,
# three blocks, a 7 x 7 grid of 4-pixel patches.
DEIT_CONFIGS = [
    dict(patch_size=4, embed_dim=16, depth=3, num_heads=4, mlp_ratio=2.0, image_size=28, pos_grid_size=7),
    dict(patch_size=8, embed_dim=12, depth=2, num_heads=1, mlp_ratio=4.0, image_size=32, pos_grid_size=4),
]


@pytest.mark.parametrize("dims", DEIT_CONFIGS, ids=["heads4_mlp2_depth3", "heads1"])
def test_deit_matches_deit_reference(dims, rng, record):
    model = ffzoo.DeiT(**dims, classes=7, classifier_activation=None)
    grid = dims["pos_grid_size"]
    state = numpy_deit.random_state_dict(
        rng, patch_size=dims["patch_size"], embed_dim=dims["embed_dim"], depth=dims["depth"],
        num_heads=dims["num_heads"], grid=grid, classes=7, mlp_ratio=dims["mlp_ratio"])
    load_state_dict(model, state, "timm_vit_pth")
    size = dims["image_size"]
    images = rng.standard_normal((3, size, size, 3)).astype(np.float32)
    got = model.predict(images, verbose=0)
    want = numpy_deit.forward(state, images, dims["patch_size"], dims["num_heads"])
    diff = float(np.max(np.abs(got - want)))
    record(f"max |logit - DeiT reference| heads {dims['num_heads']}", diff)
    assert np.abs(want).max() > 0.5
    assert diff < 1e-4
    # Every patch's position row matters: moving one row of the table moves the logits.
    shifted = dict(state, pos_embed=state["pos_embed"].copy())
    shifted["pos_embed"][0, 1 + grid + 1] += rng.standard_normal(dims["embed_dim"])  # grid (1, 1)
    load_state_dict(model, shifted, "timm_vit_pth")
    moved = model.predict(images, verbose=0)
    want_moved = numpy_deit.forward(shifted, images, dims["patch_size"], dims["num_heads"])
    assert np.max(np.abs(moved - want_moved)) < 1e-4 and np.max(np.abs(want_moved - want)) > 1e-2


GOLDEN = os.path.join(ROOT, "tests", "data", "golden_ffvit_small.npz")


def test_golden_tensors(record):
    """A tiny seeded model's stored input and output (tests/make_golden.py wrote them)."""
    data = np.load(GOLDEN)
    dims = {k[5:]: int(data[k]) for k in data.files if k.startswith("dims_")}
    sd = {k[3:]: data[k] for k in data.files if k.startswith("sd_")}
    model = ffzoo.FFViT(**dims, classes=int(data["classes"]), classifier_activation=None,
                        input_shape=data["images"].shape[1:])
    load_state_dict(model, sd, "ff_pth")
    got = model.predict(data["images"], verbose=0)
    diff = float(np.max(np.abs(got - data["logits"])))
    record("max |logit - golden|", diff)
    assert diff < 1e-4
