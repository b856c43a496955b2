"""Per-family helpers so every contract test runs on FF models and attention models alike."""

import numpy as np

import ffzoo
from ffzoo.weights import convert
from references import numpy_deit, numpy_ffvit

FAMILIES = ["ffvit", "deit"]
BUILDERS = {"ffvit": ffzoo.FFViT, "deit": ffzoo.DeiT}
FORMATS = {"ffvit": ffzoo.models.ffvit.FAMILY.source_format,
           "deit": ffzoo.models.deit.FAMILY.source_format}
SMALL = {
    "ffvit": dict(patch_size=8, embed_dim=16, depth=2, image_size=32, pos_grid_size=4),
    "deit": dict(patch_size=8, embed_dim=16, depth=2, num_heads=2, image_size=32, pos_grid_size=4),
}


def small_model(family, **kwargs):
    return BUILDERS[family](**{**SMALL[family], **kwargs})


def reference_state(family, rng, dims, classes=1000):
    """Random weights in the family's PyTorch layout for a model with `dims`."""
    grid = dims["image_size"] // dims["patch_size"]
    common = dict(patch_size=dims["patch_size"], embed_dim=dims["embed_dim"], depth=dims["depth"],
                  classes=classes)
    if family == "ffvit":
        return numpy_ffvit.random_state_dict(rng, num_tokens=1 + grid * grid,
                                             pos_grid=dims["pos_grid_size"], **common)
    return numpy_deit.random_state_dict(rng, num_heads=dims["num_heads"],
                                        grid=dims["pos_grid_size"], **common)


def numpy_tokens(family, state, images, dims):
    if family == "ffvit":
        return numpy_ffvit.forward_tokens(state, images, dims["patch_size"])
    return numpy_deit.forward_tokens(state, images, dims["patch_size"], dims["num_heads"])


def numpy_logits(family, state, images, dims):
    tokens = numpy_tokens(family, state, images, dims)
    return tokens[:, 0] @ np.asarray(state["head.weight"], np.float64).T + state["head.bias"]


def small_with_reference_weights(family, rng, classes=1000, **kwargs):
    """A small model of `family` holding random reference weights, and those weights."""
    dims = SMALL[family]
    model = small_model(family, classes=classes, **kwargs)
    state = reference_state(family, rng, dims, classes)
    convert.load_state_dict(model, state, FORMATS[family])
    return model, state
