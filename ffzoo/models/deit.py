"""DeiT / ViT: the attention models the paper compares against, with FAIR's weights.

The family in one file: its blocks, its variant table, its pretrained configs and
its constructors. The same stem and head as the FF models, with multi-head
self-attention where they have the token FF. Attention handles any token count, so
these models accept any input size whose sides are at least one patch.

Positions: ffzoo keeps the class token's position and a 14 x 14 grid apart and, when
the patch grid differs from 14 x 14, resizes the grid bilinearly on every call (as the
FF reference does). timm and DeiT keep one `(1, 1 + 196, E)` table and resize it once,
bicubically, when a model is made for another size. At 224 px (a 14 x 14 grid) neither
resizes and FAIR's checkpoints load exactly; at other sizes the two differ.
"""

from ffzoo import layers as ffl
from ffzoo.models import builder
from ffzoo.models.registry import register_model
from ffzoo.weights import preset_for_model, register_preset

FAMILY = builder.Family(name="deit", source_format="timm_vit_pth", fixed_token_count=False,
                        block_layer="attention_block")

VARIANTS = {
    "deit_tiny_patch16_224": dict(patch_size=16, embed_dim=192, depth=12, num_heads=3,
                                  mlp_ratio=4.0, image_size=224, pos_grid_size=14),
    "deit_small_patch16_224": dict(patch_size=16, embed_dim=384, depth=12, num_heads=6,
                                   mlp_ratio=4.0, image_size=224, pos_grid_size=14),
    "deit_base_patch16_224": dict(patch_size=16, embed_dim=768, depth=12, num_heads=12,
                                  mlp_ratio=4.0, image_size=224, pos_grid_size=14),
}

_FAIR = "https://dl.fbaipublicfiles.com/deit/"
_DEIT_README = "DeiT README (facebookresearch/deit), Touvron et al. 2021, arXiv 2012.12877"
_FF_PAPER = "the FF paper (Melas-Kyriazi 2021, arXiv 2105.02723)"
_LICENSE = "not recorded here: see the LICENSE file of facebookresearch/deit"
_NOTES = ("FAIR's checkpoint ({'model': state_dict} with timm's ViT names), trained with DeiT's "
          "recipe without distillation. sha256 not recorded (no maintainer has hashed the file "
          "yet); the file name's 8 hex digits are, in torch.hub's convention, the start of it.")

PRETRAINED = [
    dict(name="deit_tiny_patch16_224.fb_in1k", model="deit_tiny_patch16_224", family="deit",
         source_format="timm_vit_pth", source_url=_FAIR + "deit_tiny_patch16_224-a1311bcf.pth",
         file_name="deit_tiny_patch16_224-a1311bcf.pth", sha256=None, source_entry="model",
         dataset="ImageNet-1k", classes=1000, parameters=5_717_416,
         top1=72.2, top1_source=_DEIT_README,
         top1_other=[dict(top1=72.2, source=_FF_PAPER + " (DeiT-Tiny, the same figure)")],
         preprocessing=builder.DEIT_EVAL, license=_LICENSE, notes=_NOTES),
    dict(name="deit_small_patch16_224.fb_in1k", model="deit_small_patch16_224", family="deit",
         source_format="timm_vit_pth", source_url=_FAIR + "deit_small_patch16_224-cd65a155.pth",
         file_name="deit_small_patch16_224-cd65a155.pth", sha256=None, source_entry="model",
         dataset="ImageNet-1k", classes=1000, parameters=22_050_664,
         top1=79.9, top1_source=_DEIT_README, top1_other=[],
         preprocessing=builder.DEIT_EVAL, license=_LICENSE, notes=_NOTES),
    dict(name="deit_base_patch16_224.fb_in1k", model="deit_base_patch16_224", family="deit",
         source_format="timm_vit_pth", source_url=_FAIR + "deit_base_patch16_224-b5f2ef4d.pth",
         file_name="deit_base_patch16_224-b5f2ef4d.pth", sha256=None, source_entry="model",
         dataset="ImageNet-1k", classes=1000, parameters=86_567_656,
         top1=81.8, top1_source=_DEIT_README,
         top1_other=[dict(top1=79.9, source=_FF_PAPER + " (its DeiT-Base row; 79.9 is the "
                                                        "DeiT README's DeiT-Small figure)")],
         preprocessing=builder.DEIT_EVAL, license=_LICENSE, notes=_NOTES),
]


def _build(variant, dims, arguments, attention_dropout_rate):
    builder.check_rate("attention_dropout_rate", attention_dropout_rate)

    def blocks(x, drop_path_rates):
        for i, rate in enumerate(drop_path_rates):
            x = ffl.AttentionBlock(embed_dim=dims["embed_dim"], num_heads=dims["num_heads"],
                                   mlp_dim=int(dims["embed_dim"] * dims["mlp_ratio"]),
                                   dropout_rate=arguments["drop_rate"],
                                   attention_dropout_rate=attention_dropout_rate,
                                   drop_path_rate=rate, name=f"block_{i}")(x)
        return x

    row = preset_for_model(variant) if variant else None
    # image_size only sets the default input shape: attention takes any token count
    changes = builder.architecture_changes({k: v for k, v in dims.items() if k != "image_size"},
                                           VARIANTS.get(variant))
    return builder.build_model_with_cfg(FAMILY, dims, row, arguments, blocks, changes)


def DeiT(patch_size, embed_dim, depth, num_heads, mlp_ratio=4.0, image_size=224,
         pos_grid_size=14, include_top=True, weights=None, input_tensor=None, input_shape=None,
         pooling=None, classes=1000, classifier_activation="softmax", name="deit",
         drop_rate=0.0, drop_path_rate=0.0, attention_dropout_rate=0.0, feature_blocks=None,
         **kwargs):
    """Builds a DeiT/ViT of any dims as a functional `keras.Model` (timm's VisionTransformer).

    Args:
        patch_size, embed_dim, depth, num_heads, mlp_ratio: the dims.
        image_size: the default input size (any size works: attention takes any
            token count).
        pos_grid_size: side of the learned position grid (14 in DeiT).
        the others: as for `DeiTTiny`. With custom dims, `weights` is None or a file.
    """
    dims, arguments = builder.custom_arguments(locals(), (
        "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio",
        "image_size", "pos_grid_size"))
    return _build(None, dims, arguments, attention_dropout_rate)


def _variant(variant, arguments):
    dims, arguments, (attention_dropout_rate,) = builder.variant_arguments(
        VARIANTS, variant, arguments, ("attention_dropout_rate",))
    return _build(variant, dims, arguments, attention_dropout_rate)


_DOC = """{summary}

    `{variant}`: {dims}.

    Args:
        include_top: whether to end with the classifier on the class token.
        weights: `None` (random initialisation), `"imagenet"` (FAIR's published
            checkpoint, see weights/README.md; the preset's name, e.g.
            `"deit_tiny_patch16_224.fb_in1k"`, says the same) or a path to a `.weights.h5` file or a
            DeiT/timm `.pth` checkpoint (`{{"model": state_dict}}` or a bare state
            dict; needs PyTorch).
        input_tensor: optional Keras tensor to use as the model's input.
        input_shape: `(H, W, C)` (or `(C, H, W)` with channels-first data format);
            default `(image_size, image_size, 3)`. Any size of at least one patch;
            away from 224 px the position grid is resized bilinearly on every call.
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
        drop_rate: dropout after the position embedding, the attention projection
            and inside every FF.
        drop_path_rate: stochastic depth, rising linearly from 0 over the blocks.
        attention_dropout_rate: dropout on the attention weights.
        image_size: the default input size (default {image_size}).
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


def DeiTTiny(include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
             classes=1000, classifier_activation="softmax", name=None, drop_rate=0.0,
             drop_path_rate=0.0, attention_dropout_rate=0.0, image_size=None,
             feature_blocks=None, **kwargs):
    return _variant("deit_tiny_patch16_224", locals())


def DeiTSmall(include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
              classes=1000, classifier_activation="softmax", name=None, drop_rate=0.0,
              drop_path_rate=0.0, attention_dropout_rate=0.0, image_size=None,
             feature_blocks=None, **kwargs):
    return _variant("deit_small_patch16_224", locals())


def DeiTBase(include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
             classes=1000, classifier_activation="softmax", name=None, drop_rate=0.0,
             drop_path_rate=0.0, attention_dropout_rate=0.0, image_size=None,
             feature_blocks=None, **kwargs):
    return _variant("deit_base_patch16_224", locals())


_document(DeiTTiny, "deit_tiny_patch16_224",
          "DeiT-Tiny, the attention counterpart of FF-Tiny (72.2% ImageNet top-1 in DeiT).")
_document(DeiTSmall, "deit_small_patch16_224",
          "DeiT-Small (22.1M parameters, 79.9% ImageNet top-1 in DeiT).")
_document(DeiTBase, "deit_base_patch16_224",
          "DeiT-Base, the attention counterpart of FF-Base (81.8% ImageNet top-1 in DeiT).")
for _row in PRETRAINED:
    register_preset(_row)
