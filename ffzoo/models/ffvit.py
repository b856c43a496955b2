"""The feed-forward-only vision transformer of "Do You Even Need Attention?".

One variant table, one builder (`FFViT`) and thin per-size wrappers.
"""

from ffzoo import layers as ffl
from ffzoo.models import common
from ffzoo.models.registry import register_model

# Dims of the paper's three models. `image_size` fixes the token count,
# 1 + (image_size // patch_size) ** 2; `pos_grid_size` is the learned position
# grid, 14 x 14 in the reference for every variant (FF-Large resizes it to 7 x 7).
FFVIT_VARIANTS = {
    "ffvit_tiny_patch16_224": dict(patch_size=16, embed_dim=192, depth=12, mlp_ratio=4.0),
    "ffvit_base_patch16_224": dict(patch_size=16, embed_dim=768, depth=12, mlp_ratio=4.0),
    "ffvit_large_patch32_224": dict(patch_size=32, embed_dim=1024, depth=24, mlp_ratio=4.0),
}
for _dims in FFVIT_VARIANTS.values():
    _dims.update(image_size=224, pos_grid_size=14)
# Beyond the paper: a small model for 32 x 32 images (the embedded digits demo, CIFAR).
FFVIT_VARIANTS["ffvit_micro_patch4_32"] = dict(
    patch_size=4, embed_dim=128, depth=6, mlp_ratio=4.0, image_size=32, pos_grid_size=8)


def FFViT(
    patch_size,
    embed_dim,
    depth,
    mlp_ratio=4.0,
    image_size=224,
    pos_grid_size=14,
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    name="ffvit",
    drop_rate=0.0,
    drop_path_rate=0.0,
    token_mlp_dim=None,
    weights_preset=None,
):
    """Builds an FF-only vision transformer as a functional `keras.Model`.

    The architecture follows the reference code exactly (see `ffzoo.layers`); the
    model accepts only inputs whose patch grid has `(image_size // patch_size) ** 2`
    cells, because the token FF's weights are sized by the token count.

    Args:
        patch_size, embed_dim, depth, mlp_ratio: the variant's dims.
        image_size: the input size the token count is derived from (224 for the
            paper's models). Inputs of other sizes are accepted only when they give
            the same number of patches.
        pos_grid_size: side of the learned position grid (14 in the reference).
        include_top: whether to end with the classifier on the class token.
        weights: `None` (random initialisation matching the reference), `"imagenet"`
            or a path to a `.weights.h5` file or an official `.pth` checkpoint.
        input_tensor: optional Keras tensor to use as the model's input.
        input_shape: `(H, W, C)` (or `(C, H, W)` with channels-first data format);
            defaults to `(image_size, image_size, 3)`.
        pooling: with `include_top=False`, `None` returns all tokens `(B, N, E)`
            after the final LayerNorm; `"token"` the class token; `"avg"` / `"max"`
            pool the patch tokens. With `include_top=True` only `None` or `"token"`.
        classes: number of classes of the classifier.
        classifier_activation: activation of the classifier (`None` for logits).
        name: model name.
        drop_rate: dropout after the position embedding and inside every FF.
        drop_path_rate: stochastic depth, rising linearly from 0 over the blocks.
        token_mlp_dim: hidden width of the token FFs; default
            `int(mlp_ratio * num_tokens)` as in the paper.
        weights_preset: name of the weights preset that `weights="imagenet"` loads.
    """
    if token_mlp_dim is not None and (
            not isinstance(token_mlp_dim, int) or isinstance(token_mlp_dim, bool) or token_mlp_dim < 1):
        raise ValueError(f"token_mlp_dim must be a positive integer or None; got {token_mlp_dim!r}.")
    num_tokens = 1 + (image_size // patch_size) ** 2
    default_token_mlp_dim = int(mlp_ratio * num_tokens)
    dims = dict(patch_size=patch_size, embed_dim=embed_dim, depth=depth, mlp_ratio=mlp_ratio,
                image_size=image_size, pos_grid_size=pos_grid_size)
    published = FFVIT_VARIANTS.get(weights_preset, dims)
    changes = [f"{k}={v}" for k, v in dims.items() if v != published[k]]
    if token_mlp_dim is not None and token_mlp_dim != default_token_mlp_dim:
        changes.append(f"token_mlp_dim={token_mlp_dim}")
    if token_mlp_dim is None:
        token_mlp_dim = default_token_mlp_dim
    spec = common.validate_arguments(
        name=name,
        patch_size=patch_size,
        image_size=image_size,
        num_tokens=num_tokens,
        fixed_token_count=True,
        include_top=include_top,
        weights=weights,
        weights_preset=weights_preset,
        input_tensor=input_tensor,
        input_shape=input_shape,
        pooling=pooling,
        classes=classes,
        classifier_activation=classifier_activation,
        drop_rate=drop_rate,
        drop_path_rate=drop_path_rate,
        architecture_changes=changes,
    )

    inputs, x = common.embed_patches(spec, patch_size, embed_dim, pos_grid_size, drop_rate)
    for i, rate in enumerate(common.drop_path_rates(drop_path_rate, depth)):
        x = ffl.FFBlock(
            embed_dim=embed_dim,
            num_tokens=num_tokens,
            mlp_dim=int(embed_dim * mlp_ratio),
            token_mlp_dim=token_mlp_dim,
            dropout_rate=drop_rate,
            drop_path_rate=rate,
            name=f"block_{i}",
        )(x)
    model = common.finish_model(spec, inputs, x)
    common.load_weights(model, spec)
    return model


def _constructor(variant, class_name, summary):
    constructor = common.make_constructor(
        FFViT, variant, FFVIT_VARIANTS[variant], class_name, summary,
        family_arguments=[("token_mlp_dim", None)],
        family_doc="`token_mlp_dim` (hidden width of the token FFs; default 4 x the token "
                   "count, as in the paper; a fixed width makes the cost linear in the token count)",
    )
    register_model(variant, constructor, family="ffvit", dims=FFVIT_VARIANTS[variant])
    return constructor


FFViTTiny = _constructor("ffvit_tiny_patch16_224", "FFViTTiny", "FF-Tiny (7.7M parameters, 61.4% ImageNet top-1 in the paper).")
FFViTBase = _constructor("ffvit_base_patch16_224", "FFViTBase", "FF-Base (61.9M parameters, 74.9% ImageNet top-1 in the paper).")
FFViTLarge = _constructor("ffvit_large_patch32_224", "FFViTLarge", "FF-Large (206.4M parameters, 71.4% ImageNet top-1 in the paper; no published weights).")
FFViTMicro = _constructor("ffvit_micro_patch4_32", "FFViTMicro", "FF-Micro, for 32 x 32 images (not in the paper; no published weights).")
