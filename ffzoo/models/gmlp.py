"""gMLP (Liu et al. 2021, "Pay Attention to MLPs", arXiv 2105.08050) with the published
gMLP-S/16 weights.

The family in one file: its variant table, its pretrained configs and its constructors
(the blocks are `ffzoo.mlp_layers.GatingBlock`). The only published ImageNet weights of
a gMLP image model are timm's `gmlp_s16_224.ra3_in1k`, trained by timm with its code, so
timm's `mlp_mixer.py` layout is followed exactly: a stride-p convolution stem, blocks of
LayerNorm -> fc1 (6 E) -> GELU -> spatial gating unit (LayerNorm epsilon 1e-5, one linear
layer over the tokens) -> fc2, a final LayerNorm, the mean over patches, the classifier.
The hub copy (`model.safetensors`) loads without PyTorch (`pip install 'ffzoo[safetensors]'`);
timm's `.pth` release has the same keys. gMLP-Ti/16 and gMLP-B/16 have no public weights.
"""

from ffzoo import mlp_layers
from ffzoo.models import builder, mlp_docs
from ffzoo.models.registry import register_model
from ffzoo.weights import preset_for_model, register_preset

FAMILY = builder.Family(
    name="gmlp", source_format="timm_gmlp", fixed_token_count=True,
    block_layer="gating_block", class_token=False, head_pool="mean",
    head_initializer="zeros", head_dropout=True, uniform_drop_path=True)

# The paper's Table 1 (and timm's gmlp_ti16_224 / gmlp_s16_224 / gmlp_b16_224): 30 blocks.
VARIANTS = {
    "gmlp_ti16_224": dict(patch_size=16, embed_dim=128, depth=30, mlp_ratio=6.0, image_size=224),
    "gmlp_s16_224": dict(patch_size=16, embed_dim=256, depth=30, mlp_ratio=6.0, image_size=224),
    "gmlp_b16_224": dict(patch_size=16, embed_dim=512, depth=30, mlp_ratio=6.0, image_size=224),
}

_PAPER = "the gMLP paper (Liu et al. 2021, arXiv 2105.08050), Table 2"
_TIMM = ("timm's results table (results-imagenet.csv) for gmlp_s16_224.ra3_in1k, "
         "trained by timm")
# timm mlp_mixer.py `_cfg`, kept by gmlp_s16_224.ra3_in1k: crop_pct 0.875, bicubic,
# mean = std = 0.5: shorter side to int(224 / 0.875) = 256, centre crop 224.
GMLP_EVAL = {"crop_size": 224, "crop_fraction": 0.875, "resize_size": 256,
             "interpolation": "bicubic (PIL, antialiased)",
             "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
_UNPUBLISHED = ("No public weights: the paper's authors released none, and timm lists this "
                "model untrained.")

PRETRAINED = [
    dict(name="gmlp_s16_224.ra3_in1k", model="gmlp_s16_224", family="gmlp",
         source_format="timm_gmlp",
         source_url="https://huggingface.co/timm/gmlp_s16_224.ra3_in1k/resolve/main/model.safetensors",
         file_name="gmlp_s16_224.ra3_in1k.safetensors", sha256=None, source_entry=None,
         dataset="ImageNet-1k", classes=1000, parameters=19_422_656,
         top1=79.6, top1_source=_TIMM,
         top1_other=[dict(top1=79.6, source=_PAPER + " (the authors' own gMLP-S, not published)")],
         preprocessing=GMLP_EVAL, license="Apache-2.0 (timm's model card)",
         notes=("timm's weights (model.safetensors of the Hugging Face repository "
                "timm/gmlp_s16_224.ra3_in1k; first released as gmlp_s16_224_raa-10536d42.pth "
                "with the same keys), trained by Ross Wightman with timm's RandAugment recipe "
                "'ra3'. A mirror (FFZOO_WEIGHTS_MIRROR) must serve the file under the name "
                "gmlp_s16_224.ra3_in1k.safetensors. sha256 not recorded (no maintainer has "
                "hashed the file yet).")),
    dict(name="gmlp_ti16_224.none", model="gmlp_ti16_224", family="gmlp",
         source_format="timm_gmlp", source_url=None, file_name=None, sha256=None,
         source_entry=None, dataset="ImageNet-1k", classes=1000, parameters=5_867_328,
         top1=72.3, top1_source=_PAPER, top1_other=[], preprocessing=None, license=None,
         notes=_UNPUBLISHED),
    dict(name="gmlp_b16_224.none", model="gmlp_b16_224", family="gmlp",
         source_format="timm_gmlp", source_url=None, file_name=None, sha256=None,
         source_entry=None, dataset="ImageNet-1k", classes=1000, parameters=73_075_392,
         top1=81.6, top1_source=_PAPER, top1_other=[], preprocessing=None, license=None,
         notes=_UNPUBLISHED),
]


def _build(variant, dims, arguments):
    num_tokens = (dims["image_size"] // dims["patch_size"]) ** 2

    def blocks(x, drop_path_rates):
        for i, rate in enumerate(drop_path_rates):
            x = mlp_layers.GatingBlock(
                num_tokens, dims["embed_dim"], int(dims["embed_dim"] * dims["mlp_ratio"]),
                dropout_rate=arguments["drop_rate"], drop_path_rate=rate, name=f"block_{i}")(x)
        return x

    row = preset_for_model(variant) if variant else None
    changes = builder.architecture_changes(dims, VARIANTS.get(variant))
    return builder.build_model_with_cfg(FAMILY, dims, row, arguments, blocks, changes)


def GMLP(patch_size, embed_dim, depth, mlp_ratio=6.0, image_size=224, include_top=True,
         weights=None, input_tensor=None, input_shape=None, pooling=None, classes=1000,
         classifier_activation="softmax", name="gmlp", drop_rate=0.0, drop_path_rate=0.0,
         feature_blocks=None, **kwargs):
    """Builds a gMLP of any dims as a functional `keras.Model`.

    Args:
        patch_size, embed_dim, depth, mlp_ratio: the dims (`fc1` is
            `mlp_ratio * embed_dim` wide, which must be even: the gate halves it).
        image_size: the input size the token count `(image_size // patch_size) ** 2`
            comes from.
        the others: as for `GMLPSmall16`. With custom dims, `weights` is None or a file.
    """
    dims, arguments = builder.custom_arguments(locals(), (
        "patch_size", "embed_dim", "depth", "mlp_ratio", "image_size"))
    return _build(None, dims, arguments)


def _variant(variant, arguments):
    dims, arguments, () = builder.variant_arguments(VARIANTS, variant, arguments, ())
    return _build(variant, dims, arguments)


def _document(constructor, variant, summary):
    published = variant in {r["model"] for r in PRETRAINED if r["source_url"]}
    constructor.__doc__ = mlp_docs.DOC.format(
        summary=summary, variant=variant,
        dims=builder.describe_dims(VARIANTS[variant], class_token=False),
        image_size=VARIANTS[variant]["image_size"],
        imagenet=("timm's published weights, see weights/README.md" if published
                  else "not available: this model has no public weights"),
        file_kind=("a `.safetensors` or `.pth` file with timm's gMLP names (`.safetensors` "
                   "needs the safetensors package, `.pth` PyTorch)"),
        extra="(The spatial gating unit's LayerNorm uses epsilon 1e-5, as timm's.)")
    register_model(variant, constructor, family=FAMILY.name, dims=VARIANTS[variant])
    return constructor


def GMLPTiny16(include_top=True, weights=None, input_tensor=None, input_shape=None,
               pooling=None, classes=1000, classifier_activation="softmax", name=None,
               drop_rate=0.0, drop_path_rate=0.0, image_size=None, feature_blocks=None,
               **kwargs):
    return _variant("gmlp_ti16_224", locals())


def GMLPSmall16(include_top=True, weights=None, input_tensor=None, input_shape=None,
                pooling=None, classes=1000, classifier_activation="softmax", name=None,
                drop_rate=0.0, drop_path_rate=0.0, image_size=None, feature_blocks=None,
                **kwargs):
    return _variant("gmlp_s16_224", locals())


def GMLPBase16(include_top=True, weights=None, input_tensor=None, input_shape=None,
               pooling=None, classes=1000, classifier_activation="softmax", name=None,
               drop_rate=0.0, drop_path_rate=0.0, image_size=None, feature_blocks=None,
               **kwargs):
    return _variant("gmlp_b16_224", locals())


_document(GMLPTiny16, "gmlp_ti16_224",
          "gMLP-Ti/16 (5.9M parameters, 72.3% ImageNet top-1 in the paper; no public weights).")
_document(GMLPSmall16, "gmlp_s16_224",
          "gMLP-S/16 (19.4M parameters, 79.6% ImageNet top-1 with timm's weights).")
_document(GMLPBase16, "gmlp_b16_224",
          "gMLP-B/16 (73.1M parameters, 81.6% ImageNet top-1 in the paper; no public weights).")
for _row in PRETRAINED:
    register_preset(_row)
