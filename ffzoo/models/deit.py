"""DeiT / ViT: the attention models the paper compares against.

The same stem (patch embedding, class token, positions resized on every call) and
head as the FF models, with multi-head self-attention where they have the token FF.
Attention handles any token count, so these models accept any input size whose
sides are at least one patch.
"""

from ffzoo import layers as ffl
from ffzoo.models import common
from ffzoo.models.registry import register_model

DEIT_VARIANTS = {
    "deit_tiny_patch16_224": dict(patch_size=16, embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.0),
    "deit_base_patch16_224": dict(patch_size=16, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0),
}
for _dims in DEIT_VARIANTS.values():
    _dims.update(image_size=224, pos_grid_size=14)


def DeiT(
    patch_size,
    embed_dim,
    depth,
    num_heads,
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
    name="deit",
    drop_rate=0.0,
    drop_path_rate=0.0,
    attention_dropout_rate=0.0,
    weights_preset=None,
):
    """Builds a DeiT/ViT as a functional `keras.Model` (timm's VisionTransformer).

    Args are those of `ffzoo.models.ffvit.FFViT`, with `num_heads` (attention heads)
    and `attention_dropout_rate` (dropout on the attention weights) in place of
    `token_mlp_dim`. `image_size` only sets the default input shape.
    """
    dims = dict(patch_size=patch_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                mlp_ratio=mlp_ratio, pos_grid_size=pos_grid_size)
    published = DEIT_VARIANTS.get(weights_preset, dims)
    spec = common.validate_arguments(
        name=name,
        patch_size=patch_size,
        image_size=image_size,
        num_tokens=None,
        fixed_token_count=False,
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
        architecture_changes=[f"{k}={v}" for k, v in dims.items() if v != published[k]],
    )
    common.check_rate("attention_dropout_rate", attention_dropout_rate)
    inputs, x = common.embed_patches(spec, patch_size, embed_dim, pos_grid_size, drop_rate)
    for i, rate in enumerate(common.drop_path_rates(drop_path_rate, depth)):
        x = ffl.AttentionBlock(
            embed_dim=embed_dim,
            num_heads=num_heads,
            mlp_dim=int(embed_dim * mlp_ratio),
            dropout_rate=drop_rate,
            attention_dropout_rate=attention_dropout_rate,
            drop_path_rate=rate,
            name=f"block_{i}",
        )(x)
    model = common.finish_model(spec, inputs, x)
    common.load_weights(model, spec)
    return model


def _constructor(variant, class_name, summary):
    constructor = common.make_constructor(
        DeiT, variant, DEIT_VARIANTS[variant], class_name, summary,
        family_arguments=[("attention_dropout_rate", 0.0)],
        family_doc="`attention_dropout_rate`",
    )
    register_model(variant, constructor, family="deit", dims=DEIT_VARIANTS[variant])
    return constructor


DeiTTiny = _constructor("deit_tiny_patch16_224", "DeiTTiny", "DeiT-Tiny, the attention counterpart of FF-Tiny (72.2% ImageNet top-1 in DeiT; weights not yet in ffzoo).")
DeiTBase = _constructor("deit_base_patch16_224", "DeiTBase", "DeiT-Base, the attention counterpart of FF-Base (79.9% ImageNet top-1 in DeiT; weights not yet in ffzoo).")
