"""The one builder of every model family (timm's `build_model_with_cfg` is the anchor).

`build_model_with_cfg` checks the keras.applications arguments before any layer is
created (a bad call fails fast with a message that says what would work), builds the
stem, the family's blocks and the head, and hands the built model and its preset row
to `ffzoo.weights.load`, which converts into it. A family file supplies a `Family`,
its variant table, its preset rows and its constructors; nothing here knows a family.
"""

import dataclasses

import keras
import numpy as np

from ffzoo import layers as ffl
from ffzoo import weights as ffweights
from ffzoo.models import registry

# DeiT's evaluation transform, which the published accuracies of the FF and DeiT
# weights assume (`ffzoo.preprocess_image` reproduces it): resize the shorter side to
# int(224 / 0.875) = 256, center-crop 224, ImageNet mean and std.
DEIT_EVAL = {"crop_size": 224, "crop_fraction": 0.875, "resize_size": 256,
             "interpolation": "bicubic (PIL, antialiased)",
             "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


@dataclasses.dataclass(frozen=True)
class Family:
    """What the builder needs to know of a model family.

    name: the family's name in the registry (`"ffvit"`, `"deit"`).
    source_format: the layout of its PyTorch checkpoints (a key of
        `ffzoo.weights.convert.CONVERTERS`), used for `.pth` files of models without
        a preset row.
    fixed_token_count: whether the blocks only accept the token count they were built
        for (the token FF, the MLP families' token mixers), so the input size is fixed
        up to the patch rounding.
    token_count_hint: said after the error for an input of another token count.
    block_layer: the name Keras saves the family's block layers under in a
        `.weights.h5` file (its block class in snake case, `"ff_block"`), by which a
        file of the wrong family is recognised; `""` matches a file by its dims only.

    class_token: whether the stem prepends a class token and adds a learned position
        embedding (the ViT stem, `pos_embed`); False: the patch tokens alone (the
        all-MLP families, whose stem ends in a `Reshape` named `tokens`).
    head_pool: what the classifier reads, `"token"` (the class token) or `"mean"`
        (the mean over all tokens).
    head_initializer: the classifier kernel's initializer (a Keras name, e.g.
        `"zeros"` as timm's Mixer and gMLP); None: normal with std 0.02, as the
        reference ViT code.
    head_dropout: dropout at `drop_rate` before the classifier (the MLP families);
        the ViT stem always has its own after the position embedding.
    uniform_drop_path: the same stochastic-depth rate in every block (as the MLP
        authors' code) instead of one rising linearly from 0.

    The family's `blocks` function (see `build_model_with_cfg`) names its blocks
    `block_0`, `block_1`, ...: `feature_blocks=` reads their outputs by these names.
    """

    name: str
    source_format: str
    fixed_token_count: bool
    token_count_hint: str = ""
    block_layer: str = ""
    class_token: bool = True
    head_pool: str = "token"
    head_initializer: str = None
    head_dropout: bool = False
    uniform_drop_path: bool = False

    def __post_init__(self):
        if self.head_pool not in ("token", "mean") or (self.head_pool == "token"
                                                       and not self.class_token):
            raise ValueError(f"Family {self.name}: head_pool must be 'token' (with a class "
                             f"token) or 'mean'; got {self.head_pool!r}.")
        registry.SOURCE_FORMATS[self.name] = self.source_format
        if self.block_layer:
            ffweights.presets.register_block_layer(self.name, self.block_layer)


@dataclasses.dataclass
class ModelSpec:
    """The checked, normalized arguments of one model build."""

    name: str
    include_top: bool
    input_tensor: object
    input_shape: tuple  # as the user gives it, in the global image data format
    channels_first: bool
    pooling: str
    classes: int
    classifier_activation: object
    feature_blocks: tuple = None  # normalized block indices (0 .. depth - 1), or None


def describe_dims(dims, class_token=True):
    size, patch = dims["image_size"], dims["patch_size"]
    tokens = int(class_token) + (size // patch) ** 2
    heads = f", {dims['num_heads']} heads" if "num_heads" in dims else ""
    ratio = f", MLP ratio {dims['mlp_ratio']:g}" if "mlp_ratio" in dims else ""
    count = f"{tokens} tokens" if class_token else f"{tokens} tokens, no class token"
    return (f"patch {patch}, width {dims['embed_dim']}, depth {dims['depth']}{heads}{ratio}, "
            f"{size} px input ({count})")


# The keras.applications arguments (and the two regularization rates) every family's
# constructors take and the builder checks.
MODEL_ARGUMENTS = ("include_top", "weights", "input_tensor", "input_shape", "pooling", "classes",
                   "classifier_activation", "name", "drop_rate", "drop_path_rate",
                   "feature_blocks")


def _reject_unknown(values):
    """Pops a constructor's `**kwargs` from its `locals()`; any entry is a `ValueError`
    naming ffzoo's spelling (timm's `num_classes`, `pretrained`...) and the accepted ones."""
    values = dict(values)
    registry.check_arguments(values.pop("kwargs", None) or {}, list(values))
    return values


def custom_arguments(values, dim_keys):
    """Splits a custom-dims constructor's arguments (its `locals()`, with `**kwargs`
    for the unknown ones) into its dims and the `MODEL_ARGUMENTS`."""
    values = _reject_unknown(values)
    return ({key: values[key] for key in dim_keys},
            {key: values[key] for key in MODEL_ARGUMENTS if key in values})


def variant_arguments(variants, variant, arguments, family_arguments):
    """Splits a variant constructor's arguments (its `locals()`, with `**kwargs` for the
    unknown ones) into the variant's dims (with `image_size` applied when given), the
    keras.applications arguments (`name` defaulting to the variant's) and the values
    of the family's own `family_arguments`."""
    arguments = _reject_unknown(arguments)
    own = tuple(arguments.pop(key) for key in family_arguments)
    image_size = arguments.pop("image_size")
    dims = dict(variants[variant])
    if image_size is not None:
        dims["image_size"] = image_size
    arguments["name"] = arguments["name"] or variant
    return dims, arguments, own


def drop_path_rates(drop_path_rate, depth, uniform=False):
    """Stochastic depth per block, rising linearly from 0 to `drop_path_rate` (or
    `drop_path_rate` in every block with `uniform`)."""
    if uniform:
        return [float(drop_path_rate)] * depth
    return [float(r) for r in np.linspace(0.0, drop_path_rate, depth)]


def check_rate(label, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{label} must be a number in [0, 1); got {value!r}.")


def _check_activation(value):
    if value is None or callable(value):
        return
    try:
        keras.activations.get(value)
    except (ValueError, TypeError):
        raise ValueError(
            f"classifier_activation={value!r} is not an activation Keras knows. Use None "
            "(logits), 'softmax', another name from keras.activations, or a callable."
        ) from None


def _resolve_input_shape(input_tensor, input_shape, image_size, channels_first):
    if input_tensor is not None:
        if not isinstance(input_tensor, keras.KerasTensor):
            raise ValueError(
                "input_tensor must be a Keras tensor (from keras.Input or a layer's output); "
                f"got {type(input_tensor).__name__}."
            )
        tensor_shape = tuple(input_tensor.shape[1:])
        if input_shape is not None and tuple(input_shape) != tensor_shape:
            raise ValueError(
                f"input_shape {tuple(input_shape)} does not match input_tensor's shape "
                f"{tensor_shape}; pass one of them."
            )
        input_shape = tensor_shape
    if input_shape is None:
        input_shape = (3, image_size, image_size) if channels_first else (image_size, image_size, 3)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(
            f"input_shape must have 3 entries (height, width, channels); got {input_shape}."
        )
    if any(d is None for d in input_shape):
        raise ValueError(
            f"input_shape {input_shape} has an unknown size: these models need a fixed "
            "input size (the patch grid decides the token count)."
        )
    return input_shape


# The poolings of a family without a class token (`include_top=False`).
POOLING_MODES_NO_TOKEN = ("avg", "max")


def check_feature_blocks(feature_blocks, depth, include_top, pooling):
    """`feature_blocks` as a tuple of block indices in 0 .. depth - 1 (negative ones
    count from the end, as in Python), or None; raises `ValueError`."""
    if feature_blocks is None:
        return None
    if include_top:
        raise ValueError("feature_blocks needs include_top=False: the model then returns the "
                         "chosen blocks' feature maps instead of class scores.")
    if pooling is not None:
        raise ValueError(f"feature_blocks returns feature maps, pooling={pooling!r} pools the "
                         "final tokens: pass one of them.")
    if isinstance(feature_blocks, (str, bytes)) or not isinstance(feature_blocks, (list, tuple)) \
            or not feature_blocks:
        raise ValueError("feature_blocks must be a non-empty list or tuple of block indices, "
                         f"e.g. (3, 7, 11) or (-1,); got {feature_blocks!r}.")
    normalized = []
    for index in feature_blocks:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise ValueError(f"feature_blocks holds {index!r}; block indices are integers.")
        if not -depth <= index < depth:
            raise ValueError(f"feature_blocks index {index} is out of range: the model has {depth} "
                             f"blocks (0 to {depth - 1}, or -{depth} to -1 from the end).")
        block = int(index) % depth
        if block in normalized:
            raise ValueError(f"feature_blocks names block {block} twice ({tuple(feature_blocks)}); "
                             "name each block once.")
        normalized.append(block)
    return tuple(normalized)


def validate_arguments(family, dims, row, arguments, architecture_changes=(), skip_head=False):
    """Checks a model's arguments (`arguments`: the keras.applications ones, `drop_rate`
    and `drop_path_rate`) and returns a `ModelSpec`; raises `ValueError`.

    `architecture_changes` lists arguments that make the model differ from the model of
    its preset row (pretrained weights would not fit).
    """
    include_top, pooling, classes = (arguments[k] for k in ("include_top", "pooling", "classes"))
    classifier_activation = arguments["classifier_activation"]
    patch_size, image_size = dims["patch_size"], dims["image_size"]
    extra = int(family.class_token)  # the class token
    num_tokens = extra + (image_size // patch_size) ** 2 if isinstance(image_size, int) else None

    if not isinstance(include_top, bool):
        raise ValueError(f"include_top must be True or False; got {include_top!r}.")
    if family.class_token and pooling is not None and pooling not in ffl.POOLING_MODES:
        raise ValueError(
            f"pooling={pooling!r} is not supported; use None, "
            + ", ".join(repr(m) for m in ffl.POOLING_MODES)
            + "."
        )
    if not family.class_token and pooling is not None and pooling not in POOLING_MODES_NO_TOKEN:
        raise ValueError(
            f"pooling={pooling!r} is not supported by {arguments['name']} (it has no class "
            "token); use None (all tokens), 'avg' or 'max'.")
    head_pooling = "token" if family.head_pool == "token" else "avg"
    if include_top and pooling not in (None, head_pooling):
        reads, other = (("the class token", "pooled") if family.head_pool == "token"
                        else ("the mean over the tokens", "max-pooled"))
        raise ValueError(
            f"pooling={pooling!r} needs include_top=False: the classifier reads {reads}. "
            f"Use include_top=False to get {other} features."
        )
    if include_top and not family.class_token:
        pooling = None  # the classifier's own pooling
    if isinstance(classes, bool) or not isinstance(classes, (int, np.integer)) or classes < 1:
        raise ValueError(f"classes must be an integer >= 1; got {classes!r}.")
    feature_blocks = check_feature_blocks(arguments.get("feature_blocks"), dims["depth"],
                                          include_top, pooling)
    _check_activation(classifier_activation)
    check_rate("drop_rate", arguments["drop_rate"])
    check_rate("drop_path_rate", arguments["drop_path_rate"])
    if not isinstance(image_size, int) or image_size < patch_size:
        raise ValueError(f"image_size must be an integer >= patch size {patch_size}; got {image_size!r}.")

    channels_first = keras.config.image_data_format() == "channels_first"
    input_tensor = arguments["input_tensor"]
    shape = _resolve_input_shape(input_tensor, arguments["input_shape"], image_size, channels_first)
    height, width, channels = (shape[1], shape[2], shape[0]) if channels_first else shape
    if channels < 1:
        raise ValueError(f"input_shape {shape} has no channels.")
    if height < patch_size or width < patch_size:
        raise ValueError(
            f"input_shape {shape} is smaller than one {patch_size} x {patch_size} patch."
        )
    grid = (height // patch_size, width // patch_size)
    if family.fixed_token_count and extra + grid[0] * grid[1] != num_tokens:
        side = image_size // patch_size
        counted = "a class token and " if extra else ""
        raise ValueError(
            f"{arguments['name']} mixes exactly {num_tokens} tokens ({counted}{side} x {side} "
            f"patches of {patch_size} px), but input_shape {shape} gives a "
            f"{grid[0]} x {grid[1]} patch grid ({extra + grid[0] * grid[1]} tokens). Inputs of "
            f"{side * patch_size} to {(side + 1) * patch_size - 1} px per side work (any "
            f"height and width with (h // {patch_size}) * (w // {patch_size}) == {side * side}). "
            f"{family.token_count_hint}To build an untrained model for another input size, "
            "pass image_size=<pixels>."
        )

    ffweights.check_weights_argument(
        arguments["weights"],
        row=row,
        include_top=include_top,
        classes=classes,
        classifier_activation=classifier_activation,
        channels=channels,
        architecture_changes=architecture_changes,
        skip_head=skip_head,
    )
    return ModelSpec(
        name=arguments["name"],
        include_top=include_top,
        input_tensor=input_tensor,
        input_shape=shape,
        channels_first=channels_first,
        pooling=pooling,
        classes=int(classes),
        classifier_activation=classifier_activation,
        feature_blocks=feature_blocks,
    )


def _embed_patches(spec, family, dims, drop_rate):
    """Input -> patch embedding -> the tokens: with the family's class token, the class
    token and positions, then dropout; without, the patches as a token sequence.

    Returns `(model_inputs, tokens)`.
    """
    if spec.input_tensor is None:
        inputs = keras.Input(shape=spec.input_shape, name="images")
        x = inputs
    else:
        sources = keras.utils.get_source_inputs(spec.input_tensor)
        inputs = sources[0] if len(sources) == 1 else sources
        x = spec.input_tensor
    if spec.channels_first:
        x = keras.layers.Permute((2, 3, 1), name="to_channels_last")(x)
    x = ffl.PatchEmbedding(dims["patch_size"], dims["embed_dim"], name="patch_embed")(x)
    if not family.class_token:
        num_tokens = (dims["image_size"] // dims["patch_size"]) ** 2
        return inputs, keras.layers.Reshape((num_tokens, dims["embed_dim"]), name="tokens")(x)
    pos_grid_size = dims["pos_grid_size"]
    x = ffl.ClassTokenPositionEmbedding(
        grid_size=(pos_grid_size, pos_grid_size), name="pos_embed"
    )(x)
    if drop_rate > 0.0:
        x = keras.layers.Dropout(drop_rate, name="pos_drop")(x)
    return inputs, x


def _head_dtype():
    policy = keras.config.dtype_policy()
    if policy.compute_dtype in ("float16", "bfloat16") and policy.variable_dtype == "float32":
        return "float32"  # logits (and softmax) in float32 under mixed precision
    return policy


def _pool(family, mode):
    if family.class_token:
        return ffl.TokenPooling(mode, name="pool")
    pooling = {"avg": keras.layers.GlobalAveragePooling1D,
               "max": keras.layers.GlobalMaxPooling1D}[mode]
    return pooling(data_format="channels_last", name="pool")


def _layer_norm(name):
    return keras.layers.LayerNormalization(epsilon=ffl.LAYER_NORM_EPSILON, name=name)


def _finish_model(spec, family, inputs, tokens, final_norm, drop_rate):
    """Final norm, then the classifier or the requested pooling; a `keras.Model`."""
    x = final_norm("norm")(tokens)
    if spec.include_top:
        x = _pool(family, "token" if family.head_pool == "token" else "avg")(x)
        if family.head_dropout and drop_rate > 0.0:
            x = keras.layers.Dropout(drop_rate, name="head_drop")(x)
        initializer = family.head_initializer or keras.initializers.RandomNormal(
            stddev=ffl.REFERENCE_STD)
        x = keras.layers.Dense(
            spec.classes,
            activation=spec.classifier_activation,
            kernel_initializer=initializer,
            bias_initializer="zeros",
            dtype=_head_dtype(),
            name="head",
        )(x)
    elif spec.pooling is not None:
        x = _pool(family, spec.pooling)(x)
    return keras.Model(inputs, x, name=spec.name)


def _feature_model(spec, model, patch_size):
    """The model whose outputs are the chosen blocks' patch tokens as grids (a list)."""
    height, width = spec.input_shape[1:] if spec.channels_first else spec.input_shape[:2]
    grid = (height // patch_size, width // patch_size)
    outputs = [ffl.PatchGrid(grid, channels_first=spec.channels_first, name=f"features_{i}")(
        model.get_layer(f"block_{i}").output) for i in spec.feature_blocks]
    return keras.Model(model.input, outputs, name=spec.name)


APPLICATION_DEFAULTS = dict(include_top=True, weights=None, input_tensor=None, input_shape=None,
                            pooling=None, classes=1000, classifier_activation="softmax",
                            name=None, drop_rate=0.0, drop_path_rate=0.0, feature_blocks=None)


def build_model_with_cfg(family, dims, row, arguments, blocks, architecture_changes=(),
                         skip_head=False, final_norm=_layer_norm):
    """Builds one model of `family` and loads its weights; returns a `keras.Model`.

    Args:
        family: the `Family`.
        dims: the architecture (`patch_size`, `embed_dim`, `depth`, `image_size`,
            `pos_grid_size` with a class token, and what the family's blocks read).
        row: the preset row of the registered model these dims come from (None for
            custom dims), read once by the constructor and handed on to the loader.
        arguments: the keras.applications arguments, `drop_rate` and `drop_path_rate`
            (the keys of `APPLICATION_DEFAULTS`; missing ones take its values).
        blocks: `blocks(tokens, drop_path_rates) -> tokens`, the family's blocks.
        architecture_changes: how these dims differ from the row's model (e.g.
            `"image_size=384"`); pretrained weights then do not fit.
        skip_head: load every weight but the classifier (fine-tuning with another
            class count; see `ffzoo.weights.load`).
        final_norm: `final_norm(name) -> layer`, the norm before the head (default
            LayerNorm, epsilon 1e-6; ResMLP's is an `Affine`).

    With `feature_blocks`, the whole model without its head is built and loaded (so
    `weights=` give pretrained features), then cut to the chosen blocks' outputs.
    """
    arguments = {**APPLICATION_DEFAULTS, **arguments}
    spec = validate_arguments(family, dims, row, arguments, architecture_changes, skip_head)
    drop_rate = arguments["drop_rate"]
    inputs, x = _embed_patches(spec, family, dims, drop_rate)
    x = blocks(x, drop_path_rates(arguments["drop_path_rate"], dims["depth"],
                                  family.uniform_drop_path))
    model = _finish_model(spec, family, inputs, x, final_norm, drop_rate)
    source_row = row if row is not None else {"model": None, "source_format": family.source_format}
    ffweights.load(model, arguments["weights"], source_row, skip_head=skip_head)
    if spec.feature_blocks is not None:
        model = _feature_model(spec, model, dims["patch_size"])
    return model


def architecture_changes(dims, published):
    """`["key=value", ...]` for each entry of `dims` that differs from `published`."""
    if published is None:
        return []
    return [f"{k}={v}" for k, v in dims.items() if k in published and v != published[k]]
