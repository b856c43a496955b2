"""MLP-Mixer (Tolstikhin et al. 2021, arXiv 2105.01601) with Google's published weights.

The family in one file: its variant table, its pretrained configs and its constructors
(the blocks are `ffzoo.mlp_layers.MixerBlock`). Google's code (`vit_jax/models_mixer.py`)
is followed exactly: a stride-p convolution stem, blocks of a token MLP and a channel
MLP (pre-LayerNorm, epsilon 1e-6, residual), a final LayerNorm, the mean over tokens, the
classifier. GELU is Flax's default tanh approximation, as the published accuracies
assume (`gelu="erf"` gives timm's port). Google's `.npz` files load directly
(`weights="Mixer-B_16.npz"`, any backend, no PyTorch).
"""

from ffzoo import mlp_layers
from ffzoo.models import builder, mlp_docs
from ffzoo.models.registry import register_model
from ffzoo.weights import preset_for_model, register_preset

FAMILY = builder.Family(
    name="mixer", source_format="big_vision_npz", fixed_token_count=True,
    block_layer="mixer_block", class_token=False, head_pool="mean",
    head_initializer="zeros", head_dropout=True, uniform_drop_path=True)

# vit_jax/configs/models.py: get_mixer_b16_config, get_mixer_l16_config.
VARIANTS = {
    "mixer_b16_224": dict(patch_size=16, embed_dim=768, depth=12, tokens_mlp_dim=384,
                          channels_mlp_dim=3072, image_size=224),
    "mixer_l16_224": dict(patch_size=16, embed_dim=1024, depth=24, tokens_mlp_dim=512,
                          channels_mlp_dim=4096, image_size=224),
}

_BUCKET = "https://storage.googleapis.com/mixer_models/imagenet1k/"
_PAPER = ("the MLP-Mixer paper (Tolstikhin et al. 2021, arXiv 2105.01601), Table 2, "
          "pre-trained on ImageNet-1k")
_LICENSE = "not recorded here: see the LICENSE file of google-research/vision_transformer"
# vit_jax/input_pipeline.py, evaluation: the whole image resized to 224 x 224 with
# tf.image.resize (bilinear, no antialiasing; no aspect-preserving resize, no crop), then
# (x - 127.5) / 127.5.
MIXER_EVAL = {"crop_size": 224, "crop_fraction": 1.0, "resize_size": 224,
              "interpolation": "bilinear (tf.image.resize of the whole image, no crop)",
              "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
_NOTES = ("Google's Flax checkpoint (vit_jax README, 'Available Mixer models', bucket "
          "mixer_models/imagenet1k/): trained on ImageNet-1k only, per a Mixer author in timm "
          "pull request #651 (the ImageNet-21k models fine-tuned on ImageNet were not "
          "published; timm's 'in21k_ft_in1k' label for its port is disputed). sha256 not "
          "recorded (no maintainer has hashed the file yet).")

PRETRAINED = [
    dict(name="mixer_b16_224.goog_in1k", model="mixer_b16_224", family="mixer",
         source_format="big_vision_npz", source_url=_BUCKET + "Mixer-B_16.npz",
         file_name="Mixer-B_16.npz", sha256=None, source_entry=None,
         dataset="ImageNet-1k", classes=1000, parameters=59_880_472,
         top1=76.44, top1_source=_PAPER,
         top1_other=[dict(top1=76.5, source="timm pull request #651 (a Mixer author, for this "
                                             "file)")],
         preprocessing=MIXER_EVAL, license=_LICENSE, notes=_NOTES),
    dict(name="mixer_l16_224.goog_in1k", model="mixer_l16_224", family="mixer",
         source_format="big_vision_npz", source_url=_BUCKET + "Mixer-L_16.npz",
         file_name="Mixer-L_16.npz", sha256=None, source_entry=None,
         dataset="ImageNet-1k", classes=1000, parameters=208_196_168,
         top1=71.76, top1_source=_PAPER, top1_other=[],
         preprocessing=MIXER_EVAL, license=_LICENSE, notes=_NOTES),
]


def _build(variant, dims, arguments, gelu):
    num_tokens = (dims["image_size"] // dims["patch_size"]) ** 2

    def blocks(x, drop_path_rates):
        for i, rate in enumerate(drop_path_rates):
            x = mlp_layers.MixerBlock(
                num_tokens, dims["embed_dim"], dims["tokens_mlp_dim"], dims["channels_mlp_dim"],
                gelu=gelu, dropout_rate=arguments["drop_rate"], drop_path_rate=rate,
                name=f"block_{i}")(x)
        return x

    row = preset_for_model(variant) if variant else None
    # gelu="erf" keeps every shape: the published weights load (their accuracy assumes tanh)
    changes = builder.architecture_changes(dims, VARIANTS.get(variant))
    return builder.build_model_with_cfg(FAMILY, dims, row, arguments, blocks, changes)


def MLPMixer(patch_size, embed_dim, depth, tokens_mlp_dim, channels_mlp_dim, image_size=224,
             include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
             classes=1000, classifier_activation="softmax", name="mixer", drop_rate=0.0,
             drop_path_rate=0.0, gelu="tanh", feature_blocks=None, **kwargs):
    """Builds an MLP-Mixer of any dims as a functional `keras.Model`.

    Args:
        patch_size, embed_dim, depth: the patch, the width C and the block count.
        tokens_mlp_dim, channels_mlp_dim: hidden widths of the token and channel MLPs.
        image_size: the input size the token count `(image_size // patch_size) ** 2`
            comes from.
        gelu: `"tanh"` (Google's code) or `"erf"` (timm's port).
        the others: as for `MixerB16`. With custom dims, `weights` is None or a file.
    """
    dims, arguments = builder.custom_arguments(locals(), (
        "patch_size", "embed_dim", "depth", "tokens_mlp_dim", "channels_mlp_dim", "image_size"))
    return _build(None, dims, arguments, gelu)


def _variant(variant, arguments):
    dims, arguments, (gelu,) = builder.variant_arguments(VARIANTS, variant, arguments, ("gelu",))
    return _build(variant, dims, arguments, gelu)


def _document(constructor, variant, summary):
    constructor.__doc__ = mlp_docs.DOC.format(
        summary=summary, variant=variant,
        dims=builder.describe_dims(VARIANTS[variant], class_token=False),
        image_size=VARIANTS[variant]["image_size"],
        imagenet="Google's published checkpoint, see weights/README.md",
        file_kind="one of Google's Mixer `.npz` files (Flax parameter paths)",
        extra="gelu: `\"tanh\"` (Google's code, the default) or `\"erf\"` (timm's port).")
    register_model(variant, constructor, family=FAMILY.name, dims=VARIANTS[variant])
    return constructor


def MixerB16(include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
             classes=1000, classifier_activation="softmax", name=None, drop_rate=0.0,
             drop_path_rate=0.0, gelu="tanh", image_size=None, feature_blocks=None,
             **kwargs):
    return _variant("mixer_b16_224", locals())


def MixerL16(include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
             classes=1000, classifier_activation="softmax", name=None, drop_rate=0.0,
             drop_path_rate=0.0, gelu="tanh", image_size=None, feature_blocks=None,
             **kwargs):
    return _variant("mixer_l16_224", locals())


_document(MixerB16, "mixer_b16_224",
          "Mixer-B/16 (59.9M parameters, 76.44% ImageNet top-1 trained on ImageNet-1k).")
_document(MixerL16, "mixer_l16_224",
          "Mixer-L/16 (208.2M parameters, 71.76% ImageNet top-1 trained on ImageNet-1k).")
for _row in PRETRAINED:
    register_preset(_row)
