"""ResMLP (Touvron et al. 2021, arXiv 2105.03404) with FAIR's published weights.

The family in one file: its variant table, its pretrained configs and its constructors
(the blocks are `ffzoo.mlp_layers.ResMLPBlock`). FAIR's `resmlp_models.py` is followed
exactly: a stride-p convolution stem, blocks of a linear token mixer and a channel MLP,
each behind an `Affine` (`alpha * x + beta`, no statistics) and scaled by a LayerScale
vector, a final `Affine`, the mean over patches, the classifier. FAIR's `.pth` files load
directly (`weights="resmlp_12_no_dist.pth"`, needs PyTorch to read).
"""

from ffzoo import mlp_layers
from ffzoo.models import builder, mlp_docs
from ffzoo.models.registry import register_model
from ffzoo.weights import preset_for_model, register_preset

FAMILY = builder.Family(
    name="resmlp", source_format="resmlp_pth", fixed_token_count=True,
    block_layer="res_mlp_block", class_token=False, head_pool="mean",
    head_initializer=None, head_dropout=True, uniform_drop_path=True)

# FAIR's resmlp_12 / resmlp_24 / resmlp_36 / resmlpB_24 (init_scale: LayerScale's start).
VARIANTS = {
    "resmlp_12_224": dict(patch_size=16, embed_dim=384, depth=12, mlp_ratio=4.0, init_scale=0.1,
                          image_size=224),
    "resmlp_24_224": dict(patch_size=16, embed_dim=384, depth=24, mlp_ratio=4.0, init_scale=1e-5,
                          image_size=224),
    "resmlp_36_224": dict(patch_size=16, embed_dim=384, depth=36, mlp_ratio=4.0, init_scale=1e-6,
                          image_size=224),
    "resmlp_big_24_224": dict(patch_size=8, embed_dim=768, depth=24, mlp_ratio=4.0,
                              init_scale=1e-6, image_size=224),
}

_FAIR = "https://dl.fbaipublicfiles.com/deit/"
_README = ("FAIR's README_resmlp.md (facebookresearch/deit), Touvron et al. 2021, "
           "arXiv 2105.03404, trained on ImageNet-1k without distillation")
_LICENSE = "not recorded here: see the LICENSE file of facebookresearch/deit"
# README_resmlp.md, evaluation transforms: Resize(int(224 / 0.9)) bicubic of the shorter
# side, CenterCrop(224), ImageNet mean and std.
RESMLP_EVAL = {"crop_size": 224, "crop_fraction": 0.9, "resize_size": 248,
               "interpolation": "bicubic (PIL, antialiased)",
               "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
_NOTES = ("FAIR's checkpoint (a bare state dict with FAIR's ResMLP names), trained on "
          "ImageNet-1k without distillation. FAIR also publishes _dist (distilled) files, and "
          "resmlpB_24_22k.pth, not presets here yet. sha256 not recorded (no maintainer has "
          "hashed the file yet).")


def _row(model, file_name, parameters, top1):
    return dict(name=f"{model}.fb_in1k", model=model, family="resmlp", source_format="resmlp_pth",
                source_url=_FAIR + file_name, file_name=file_name, sha256=None, source_entry=None,
                dataset="ImageNet-1k", classes=1000, parameters=parameters, top1=top1,
                top1_source=_README, top1_other=[], preprocessing=RESMLP_EVAL,
                license=_LICENSE, notes=_NOTES)


PRETRAINED = [
    _row("resmlp_12_224", "resmlp_12_no_dist.pth", 15_350_872, 76.6),
    _row("resmlp_24_224", "resmlp_24_no_dist.pth", 30_020_680, 79.4),
    _row("resmlp_36_224", "resmlp_36_no_dist.pth", 44_690_488, 79.7),
    _row("resmlp_big_24_224", "resmlpB_24_no_dist.pth", 129_138_280, 81.0),
]


def _build(variant, dims, arguments):
    num_tokens = (dims["image_size"] // dims["patch_size"]) ** 2

    def blocks(x, drop_path_rates):
        for i, rate in enumerate(drop_path_rates):
            x = mlp_layers.ResMLPBlock(
                num_tokens, dims["embed_dim"], int(dims["embed_dim"] * dims["mlp_ratio"]),
                init_scale=dims["init_scale"], dropout_rate=arguments["drop_rate"],
                drop_path_rate=rate, name=f"block_{i}")(x)
        return x

    def final_norm(name):
        return mlp_layers.Affine(name=name)

    row = preset_for_model(variant) if variant else None
    # init_scale changes the initialisation only, not the weights' shapes
    changes = builder.architecture_changes(
        {k: v for k, v in dims.items() if k != "init_scale"}, VARIANTS.get(variant))
    return builder.build_model_with_cfg(FAMILY, dims, row, arguments, blocks, changes,
                                        final_norm=final_norm)


def ResMLP(patch_size, embed_dim, depth, mlp_ratio=4.0, init_scale=1e-4, image_size=224,
           include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
           classes=1000, classifier_activation="softmax", name="resmlp", drop_rate=0.0,
           drop_path_rate=0.0, feature_blocks=None, **kwargs):
    """Builds a ResMLP of any dims as a functional `keras.Model`.

    Args:
        patch_size, embed_dim, depth, mlp_ratio: the dims (the channel MLP is
            `mlp_ratio * embed_dim` wide).
        init_scale: the LayerScale vectors' initial value.
        image_size: the input size the token count `(image_size // patch_size) ** 2`
            comes from.
        the others: as for `ResMLP12`. With custom dims, `weights` is None or a file.
    """
    dims, arguments = builder.custom_arguments(locals(), (
        "patch_size", "embed_dim", "depth", "mlp_ratio", "init_scale", "image_size"))
    return _build(None, dims, arguments)


def _variant(variant, arguments):
    dims, arguments, () = builder.variant_arguments(VARIANTS, variant, arguments, ())
    return _build(variant, dims, arguments)


def _document(constructor, variant, summary):
    constructor.__doc__ = mlp_docs.DOC.format(
        summary=summary, variant=variant,
        dims=builder.describe_dims(VARIANTS[variant], class_token=False),
        image_size=VARIANTS[variant]["image_size"],
        imagenet="FAIR's published checkpoint, see weights/README.md",
        file_kind="one of FAIR's ResMLP `.pth` files (a bare state dict; needs PyTorch)",
        extra=f"(LayerScale starts at {VARIANTS[variant]['init_scale']:g}, as FAIR's code.)")
    register_model(variant, constructor, family=FAMILY.name, dims=VARIANTS[variant])
    return constructor


def ResMLP12(include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
             classes=1000, classifier_activation="softmax", name=None, drop_rate=0.0,
             drop_path_rate=0.0, image_size=None, feature_blocks=None,
             **kwargs):
    return _variant("resmlp_12_224", locals())


def ResMLP24(include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
             classes=1000, classifier_activation="softmax", name=None, drop_rate=0.0,
             drop_path_rate=0.0, image_size=None, feature_blocks=None,
             **kwargs):
    return _variant("resmlp_24_224", locals())


def ResMLP36(include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
             classes=1000, classifier_activation="softmax", name=None, drop_rate=0.0,
             drop_path_rate=0.0, image_size=None, feature_blocks=None,
             **kwargs):
    return _variant("resmlp_36_224", locals())


def ResMLPBig24(include_top=True, weights=None, input_tensor=None, input_shape=None,
                pooling=None, classes=1000, classifier_activation="softmax", name=None,
                drop_rate=0.0, drop_path_rate=0.0, image_size=None, feature_blocks=None,
                **kwargs):
    return _variant("resmlp_big_24_224", locals())


_document(ResMLP12, "resmlp_12_224", "ResMLP-S12 (15.4M parameters, 76.6% ImageNet top-1).")
_document(ResMLP24, "resmlp_24_224", "ResMLP-S24 (30.0M parameters, 79.4% ImageNet top-1).")
_document(ResMLP36, "resmlp_36_224", "ResMLP-S36 (44.7M parameters, 79.7% ImageNet top-1).")
_document(ResMLPBig24, "resmlp_big_24_224",
          "ResMLP-B24/8 (129.1M parameters, 81.0% ImageNet top-1; 8 px patches, 784 tokens).")
for _row_ in PRETRAINED:
    register_preset(_row_)
