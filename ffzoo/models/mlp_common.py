"""The build path of the all-MLP families (MLP-Mixer, ResMLP, gMLP).

They differ from the ViT-shaped families of `builder.build_model_with_cfg` in their
stem and head: no class token and no position embedding (patches -> tokens), and the
classifier reads the mean over all tokens. The argument checks and the weight loading
are the builder's own (`builder.validate_arguments`, `ffzoo.weights.load`); this module
adds the token-count check, the stem and the head.
"""

import keras

from ffzoo import layers as ffl
from ffzoo import weights as ffweights
from ffzoo.models import builder

POOLING_MODES = ("avg", "max")


def describe_dims(dims):
    size, patch = dims["image_size"], dims["patch_size"]
    tokens = (size // patch) ** 2
    return (f"patch {patch}, width {dims['embed_dim']}, depth {dims['depth']}, "
            f"{size} px input ({tokens} tokens, no class token)")


def _check_pooling(arguments):
    pooling, include_top = arguments["pooling"], arguments["include_top"]
    if pooling is not None and pooling not in POOLING_MODES:
        raise ValueError(
            f"pooling={pooling!r} is not supported by {arguments['name']} (it has no class "
            "token); use None (all tokens), 'avg' or 'max'.")
    if include_top is True and pooling not in (None, "avg"):
        raise ValueError(
            f"pooling={pooling!r} needs include_top=False: the classifier reads the mean over "
            "the tokens. Use include_top=False to get max-pooled features.")


def build_mlp_model(family, dims, row, arguments, blocks, final_norm, architecture_changes=(),
                    skip_head=False, head_initializer="zeros"):
    """Builds one all-MLP model and loads its weights; returns a `keras.Model`.

    Args:
        family: the `builder.Family` (`fixed_token_count=False`: the token count is
            checked here, without a class token).
        dims: `patch_size`, `embed_dim`, `depth`, `image_size` and the family's own.
        row, arguments, architecture_changes, skip_head: as for
            `builder.build_model_with_cfg`.
        blocks: `blocks(tokens, num_tokens, drop_path_rates) -> tokens`.
        final_norm: `final_norm(name) -> layer`, the norm before pooling.
        head_initializer: the classifier kernel's initializer (zeros in timm's Mixer
            and gMLP; ResMLP draws it).
    """
    _check_pooling(arguments)
    checked = dict(arguments, pooling=None if arguments["include_top"] is True
                   else arguments["pooling"])
    spec = builder.validate_arguments(family, dims, row, checked, architecture_changes, skip_head)
    patch, size = dims["patch_size"], dims["image_size"]
    shape = spec.input_shape
    height, width = (shape[1], shape[2]) if spec.channels_first else shape[:2]
    grid = (height // patch, width // patch)
    num_tokens = (size // patch) ** 2
    if grid[0] * grid[1] != num_tokens:
        side = size // patch
        raise ValueError(
            f"{spec.name} mixes exactly {num_tokens} tokens ({side} x {side} patches of {patch} "
            f"px), but input_shape {shape} gives a {grid[0]} x {grid[1]} patch grid "
            f"({grid[0] * grid[1]} tokens). Inputs of {side * patch} to {(side + 1) * patch - 1} "
            f"px per side work. To build an untrained model for another input size, pass "
            "image_size=<pixels>.")

    if spec.input_tensor is None:
        inputs = keras.Input(shape=spec.input_shape, name="images")
        x = inputs
    else:
        sources = keras.utils.get_source_inputs(spec.input_tensor)
        inputs = sources[0] if len(sources) == 1 else sources
        x = spec.input_tensor
    if spec.channels_first:
        x = keras.layers.Permute((2, 3, 1), name="to_channels_last")(x)
    x = ffl.PatchEmbedding(patch, dims["embed_dim"], name="patch_embed")(x)
    x = keras.layers.Reshape((num_tokens, dims["embed_dim"]), name="tokens")(x)
    # One stochastic-depth rate in every block, as the three authors' codes do.
    x = blocks(x, num_tokens, [float(arguments["drop_path_rate"])] * dims["depth"])
    x = final_norm("norm")(x)
    if spec.include_top:
        x = keras.layers.GlobalAveragePooling1D(data_format="channels_last", name="pool")(x)
        if arguments["drop_rate"] > 0.0:
            x = keras.layers.Dropout(arguments["drop_rate"], name="head_drop")(x)
        x = keras.layers.Dense(
            spec.classes, activation=spec.classifier_activation,
            kernel_initializer=head_initializer, bias_initializer="zeros",
            dtype=builder._head_dtype(), name="head")(x)
    elif spec.pooling == "avg":
        x = keras.layers.GlobalAveragePooling1D(data_format="channels_last", name="pool")(x)
    elif spec.pooling == "max":
        x = keras.layers.GlobalMaxPooling1D(data_format="channels_last", name="pool")(x)
    model = keras.Model(inputs, x, name=spec.name)
    source_row = row if row is not None else {"model": None, "source_format": family.source_format}
    ffweights.load(model, arguments["weights"], source_row, skip_head=skip_head)
    return model


_DOC = """{summary}

    `{variant}`: {dims}.

    Args:
        include_top: whether to end with the classifier on the mean over the tokens.
        weights: `None` (random initialisation), `"imagenet"` ({imagenet}) or a path to
            a `.weights.h5` file or {file_kind}.
        input_tensor: optional Keras tensor to use as the model's input.
        input_shape: `(H, W, C)` (or `(C, H, W)` with channels-first data format);
            default `(image_size, image_size, 3)`. The token mixers are sized by the
            token count, so only sizes with the same patch grid work.
        pooling: with `include_top=False`, `None` returns all tokens `(B, N, E)` after
            the final norm; `"avg"` / `"max"` pool them. With `include_top=True` only
            `None` (or `"avg"`, the classifier's own pooling).
        classes: number of classes of the classifier.
        classifier_activation: activation of the classifier (`None` for logits).
        name: model name (default the variant's).
        drop_rate: dropout inside every MLP and before the classifier.
        drop_path_rate: stochastic depth, the same rate in every block (as the
            authors' code).
        {extra}
        image_size: build for another input size (default {image_size}; pretrained
            weights then do not fit).

    Returns:
        A `keras.Model`.
    """
