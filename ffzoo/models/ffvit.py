"""The feed-forward-only vision transformer of "Do You Even Need Attention?".

The family in one file: its blocks, its variant table, its pretrained configs and
its constructors. `ffzoo.models.builder` builds and loads every one of them.
"""

from ffzoo import layers as ffl
from ffzoo.models import builder
from ffzoo.models.registry import register_model
from ffzoo.weights import preset_for_model, register_preset

FAMILY = builder.Family(
    name="ffvit", source_format="ff_pth", fixed_token_count=True, block_layer="ff_block",
    token_count_hint="token_mlp_dim does not lift this: the token FF's LayerNorm and first "
                     "layer are sized by the token count. ")

# `image_size` fixes the token count, 1 + (image_size // patch_size) ** 2;
# `pos_grid_size` is the learned position grid, 14 x 14 in the reference for every
# paper variant (FF-Large resizes it to 7 x 7 on every call).
VARIANTS = {
    "ffvit_tiny_patch16_224": dict(patch_size=16, embed_dim=192, depth=12, mlp_ratio=4.0,
                                   image_size=224, pos_grid_size=14),
    "ffvit_base_patch16_224": dict(patch_size=16, embed_dim=768, depth=12, mlp_ratio=4.0,
                                   image_size=224, pos_grid_size=14),
    "ffvit_large_patch32_224": dict(patch_size=32, embed_dim=1024, depth=24, mlp_ratio=4.0,
                                    image_size=224, pos_grid_size=14),
    # Beyond the paper: a small model for 32 x 32 images (the embedded digits demo, CIFAR).
    "ffvit_micro_patch4_32": dict(patch_size=4, embed_dim=128, depth=6, mlp_ratio=4.0,
                                  image_size=32, pos_grid_size=8),
}

_PAPER = "the FF paper (Melas-Kyriazi 2021, arXiv 2105.02723)"
_RELEASE = "https://github.com/lukemelas/do-you-even-need-attention/releases/download/v0.0.1/"

PRETRAINED = [
    dict(name="ffvit_tiny_patch16_224.in1k", model="ffvit_tiny_patch16_224", family="ffvit",
         source_format="ff_pth", source_url=_RELEASE + "linear-tiny-checkpoint.pth",
         file_name="linear-tiny-checkpoint.pth", sha256=None, source_entry="model",
         dataset="ImageNet-1k", classes=1000, parameters=7_676_332,
         top1=61.4, top1_source=_PAPER, top1_other=[], preprocessing=builder.DEIT_EVAL,
         license="not stated (the authors' repository has no license file)",
         notes="Trained by the authors with DeiT's recipe and dropout 0.1; top-1 as reported "
               "in the paper (non-EMA weights)."),
    dict(name="ffvit_base_patch16_224.in1k", model="ffvit_base_patch16_224", family="ffvit",
         source_format="ff_pth", source_url=_RELEASE + "linear-base-checkpoint.pth",
         file_name="linear-base-checkpoint.pth", sha256=None, source_entry="model",
         dataset="ImageNet-1k", classes=1000, parameters=61_943_020,
         top1=74.9, top1_source=_PAPER, top1_other=[], preprocessing=builder.DEIT_EVAL,
         license="not stated (the authors' repository has no license file)",
         notes="Trained by the authors with DeiT's recipe and dropout 0.1; top-1 as reported "
               "in the paper (non-EMA weights)."),
    dict(name="ffvit_large_patch32_224.in1k", model="ffvit_large_patch32_224", family="ffvit",
         source_format="ff_pth", source_url=None, file_name=None, sha256=None, source_entry=None,
         dataset="ImageNet-1k", classes=1000, parameters=206_363_576,
         top1=71.4, top1_source=_PAPER, top1_other=[], preprocessing=builder.DEIT_EVAL, license=None,
         notes="Never published: the authors did not upload FF-Large (over GitHub's file "
               "size limit)."),
    dict(name="ffvit_micro_patch4_32.none", model="ffvit_micro_patch4_32", family="ffvit",
         source_format="ff_pth", source_url=None, file_name=None, sha256=None, source_entry=None,
         dataset=None, classes=None, parameters=1_141_314,
         top1=None, top1_source=None, top1_other=[], preprocessing=None, license=None,
         notes="Not in the paper: ffzoo's small model for 32 x 32 images; no published weights."),
]


def _check_token_mlp_dim(token_mlp_dim):
    if token_mlp_dim is not None and (not isinstance(token_mlp_dim, int)
                                      or isinstance(token_mlp_dim, bool) or token_mlp_dim < 1):
        raise ValueError(f"token_mlp_dim must be a positive integer or None; got {token_mlp_dim!r}.")


def _build(variant, dims, arguments, token_mlp_dim):
    _check_token_mlp_dim(token_mlp_dim)
    num_tokens = 1 + (dims["image_size"] // dims["patch_size"]) ** 2
    default_token_mlp_dim = int(dims["mlp_ratio"] * num_tokens)
    changes = builder.architecture_changes(dims, VARIANTS.get(variant))
    if token_mlp_dim is not None and token_mlp_dim != default_token_mlp_dim:
        changes.append(f"token_mlp_dim={token_mlp_dim}")
    token_mlp_dim = token_mlp_dim or default_token_mlp_dim

    def blocks(x, drop_path_rates):
        for i, rate in enumerate(drop_path_rates):
            x = ffl.FFBlock(embed_dim=dims["embed_dim"], num_tokens=num_tokens,
                            mlp_dim=int(dims["embed_dim"] * dims["mlp_ratio"]),
                            token_mlp_dim=token_mlp_dim, dropout_rate=arguments["drop_rate"],
                            drop_path_rate=rate, name=f"block_{i}")(x)
        return x

    row = preset_for_model(variant) if variant else None
    return builder.build_model_with_cfg(FAMILY, dims, row, arguments, blocks, changes)


def FFViT(patch_size, embed_dim, depth, mlp_ratio=4.0, image_size=224, pos_grid_size=14,
          include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
          classes=1000, classifier_activation="softmax", name="ffvit", drop_rate=0.0,
          drop_path_rate=0.0, token_mlp_dim=None, feature_blocks=None, **kwargs):
    """Builds an FF-only vision transformer of any dims as a functional `keras.Model`.

    The architecture follows the reference code exactly (see `ffzoo.layers`); the
    model accepts only inputs whose patch grid has `(image_size // patch_size) ** 2`
    cells, because the token FF's weights are sized by the token count.

    Args:
        patch_size, embed_dim, depth, mlp_ratio: the dims.
        image_size: the input size the token count is derived from (224 for the
            paper's models). Inputs of other sizes are accepted only when they give
            the same number of patches.
        pos_grid_size: side of the learned position grid (14 in the reference).
        include_top, weights, input_tensor, input_shape, pooling, classes,
            classifier_activation, name, drop_rate, drop_path_rate, token_mlp_dim:
            as for `FFViTTiny`. With custom dims, `weights` is None or a file.
    """
    dims, arguments = builder.custom_arguments(locals(), (
        "patch_size", "embed_dim", "depth", "mlp_ratio", "image_size", "pos_grid_size"))
    return _build(None, dims, arguments, token_mlp_dim)


def _variant(variant, arguments):
    dims, arguments, (token_mlp_dim,) = builder.variant_arguments(
        VARIANTS, variant, arguments, ("token_mlp_dim",))
    return _build(variant, dims, arguments, token_mlp_dim)


_DOC = """{summary}

    `{variant}`: {dims}.

    Args:
        include_top: whether to end with the classifier on the class token.
        weights: `None` (random initialisation matching the reference), `"imagenet"`
            (the published weights, see weights/README.md; the preset's name, e.g.
            `"ffvit_tiny_patch16_224.in1k"`, says the same) or a path to a `.weights.h5`
            file or a `.pth` checkpoint in the paper's layout (needs PyTorch).
        input_tensor: optional Keras tensor to use as the model's input.
        input_shape: `(H, W, C)` (or `(C, H, W)` with channels-first data format);
            default `(image_size, image_size, 3)`.
        pooling: with `include_top=False`, `None` returns all tokens `(B, N, E)`
            after the final LayerNorm; `"token"` the class token; `"avg"` / `"max"`
            pool the patch tokens. With `include_top=True` only `None` or `"token"`.
        feature_blocks: with `include_top=False` (and `pooling=None`), the indices of
            the blocks whose outputs the model returns instead, as a list of feature
            maps in the order given (timm's `features_only` / `out_indices`), e.g.
            `(3, 7, 11)`; negative indices count from the end (`-1`: the last block).
            Each map is the block's patch tokens as a grid, `(B, H / patch, W / patch,
            width)` (`(B, width, H / patch, W / patch)` with channels-first data format),
            the class token dropped and before the final LayerNorm. Works with
            `weights=` (pretrained features).
        classes: number of classes of the classifier.
        classifier_activation: activation of the classifier (`None` for logits).
        name: model name (default the variant's).
        drop_rate: dropout after the position embedding and inside every FF.
        drop_path_rate: stochastic depth, rising linearly from 0 over the blocks.
        token_mlp_dim: hidden width of the token FFs; default 4 x the token count, as
            in the paper (a fixed width makes the cost linear in the token count).
        image_size: the input size the model is built for (default {image_size});
            another size changes the token count (weights=None only).
        **kwargs: none are accepted; an unknown argument is a `ValueError` naming
            the accepted ones (and ffzoo's spelling of timm's: `classes=` for
            `num_classes=`, `weights="imagenet"` / `weights=None` for `pretrained=`).

    Returns:
        A `keras.Model` (with `feature_blocks`, one whose outputs are a list; with
        one index, Keras returns that one output itself).
    """


def _document(constructor, variant, summary):
    constructor.__doc__ = _DOC.format(summary=summary, variant=variant,
                                      dims=builder.describe_dims(VARIANTS[variant]),
                                      image_size=VARIANTS[variant]["image_size"])
    register_model(variant, constructor, family=FAMILY.name, dims=VARIANTS[variant])
    return constructor


def FFViTTiny(include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
              classes=1000, classifier_activation="softmax", name=None, drop_rate=0.0,
              drop_path_rate=0.0, token_mlp_dim=None, image_size=None, feature_blocks=None,
              **kwargs):
    return _variant("ffvit_tiny_patch16_224", locals())


def FFViTBase(include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
              classes=1000, classifier_activation="softmax", name=None, drop_rate=0.0,
              drop_path_rate=0.0, token_mlp_dim=None, image_size=None, feature_blocks=None,
              **kwargs):
    return _variant("ffvit_base_patch16_224", locals())


def FFViTLarge(include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
               classes=1000, classifier_activation="softmax", name=None, drop_rate=0.0,
               drop_path_rate=0.0, token_mlp_dim=None, image_size=None, feature_blocks=None,
              **kwargs):
    return _variant("ffvit_large_patch32_224", locals())


def FFViTMicro(include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
               classes=1000, classifier_activation="softmax", name=None, drop_rate=0.0,
               drop_path_rate=0.0, token_mlp_dim=None, image_size=None, feature_blocks=None,
              **kwargs):
    return _variant("ffvit_micro_patch4_32", locals())


_document(FFViTTiny, "ffvit_tiny_patch16_224",
          "FF-Tiny (7.7M parameters, 61.4% ImageNet top-1 in the paper).")
_document(FFViTBase, "ffvit_base_patch16_224",
          "FF-Base (61.9M parameters, 74.9% ImageNet top-1 in the paper).")
_document(FFViTLarge, "ffvit_large_patch32_224",
          "FF-Large (206.4M parameters, 71.4% ImageNet top-1 in the paper; no published weights).")
_document(FFViTMicro, "ffvit_micro_patch4_32",
          "FF-Micro, for 32 x 32 images (not in the paper; no published weights).")
for _row in PRETRAINED:
    register_preset(_row)
