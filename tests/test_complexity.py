"""Analytic parameter and FLOP counts against built models and the reference's figures."""

import numpy as np
import pytest

import ffzoo
from ffzoo import layers as ffl

CASES = [
    ("ffvit_tiny_patch16_224", {}),
    ("ffvit_tiny_patch16_224", dict(include_top=False)),
    ("ffvit_tiny_patch16_224", dict(classes=10)),
    ("ffvit_tiny_patch16_224", dict(image_size=320, token_mlp_dim=788)),
    ("ffvit_large_patch32_224", dict(image_size=256)),
    ("deit_tiny_patch16_224", {}),
    ("deit_base_patch16_224", dict(include_top=False)),
]


@pytest.mark.parametrize("name,kwargs", CASES)
def test_count_params_matches_built_models(name, kwargs):
    if "image_size" in kwargs:
        kwargs = dict(kwargs, input_shape=(kwargs["image_size"],) * 2 + (3,))
    model = ffzoo.create_model(name, **kwargs)
    kwargs.pop("input_shape", None)
    assert ffzoo.count_params(name, **kwargs) == model.count_params()


def _macs_from_weights(model, tokens):
    """Multiply-accumulates read off the built model's kernels (rows known per layer)."""
    macs = 0
    for layer in model._flatten_layers():
        if isinstance(layer, ffl.PatchEmbedding):
            macs += (tokens - 1) * int(np.prod(layer.kernel.shape))
        elif isinstance(layer, ffl.FeatureFF):
            macs += tokens * sum(int(np.prod(d.kernel.shape)) for d in (layer.ff.fc1, layer.ff.fc2))
        elif isinstance(layer, ffl.TokenFF):
            width = model.get_layer("patch_embed").embed_dim
            macs += width * sum(int(np.prod(d.kernel.shape)) for d in (layer.ff.fc1, layer.ff.fc2))
    head = model.get_layer("head")
    return macs + int(np.prod(head.kernel.shape))


@pytest.mark.parametrize("name,gmacs", [("deit_tiny_patch16_224", 1.25), ("deit_base_patch16_224", 17.56)])
def test_count_flops_of_attention_models(name, gmacs):
    # DeiT reports 1.3 and 17.6 "GFLOPs" (fvcore counts multiply-accumulates).
    assert abs(ffzoo.count_flops(name) / 2e9 - gmacs) < 0.01


@pytest.mark.parametrize("name,tokens,gmacs", [
    ("ffvit_tiny_patch16_224", 197, 1.4),   # shared/REFERENCE.md: about 1.4 GMAC
    ("ffvit_base_patch16_224", 197, 14.1),  # about 14.1 GMAC (28 GFLOP)
    ("ffvit_large_patch32_224", 50, None),
])
def test_count_flops(name, tokens, gmacs):
    flops = ffzoo.count_flops(name)
    assert flops == 2 * _macs_from_weights(ffzoo.create_model(name), tokens)
    if gmacs:
        assert abs(flops / 2e9 - gmacs) < 0.05
