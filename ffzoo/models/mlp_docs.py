"""The docstring the all-MLP families' (MLP-Mixer, ResMLP, gMLP) variant constructors share.

They are built by `builder.build_model_with_cfg` like every family; what sets them
apart (no class token, no position embedding, the classifier on the mean over the
tokens, one drop-path rate in every block) is declared in their `builder.Family`.
"""

DOC = """{summary}

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
        feature_blocks: with `include_top=False` (and `pooling=None`), the indices of
            the blocks whose outputs the model returns instead, as a list of feature
            maps in the order given (timm's `features_only` / `out_indices`);
            negative indices count from the end (`-1`: the last block). Each map is
            the block's tokens as a grid, `(B, H / patch, W / patch, width)`
            (`(B, width, H / patch, W / patch)` with channels-first data format),
            before the final norm. Works with `weights=` (pretrained features).
        classes: number of classes of the classifier.
        classifier_activation: activation of the classifier (`None` for logits).
        name: model name (default the variant's).
        drop_rate: dropout inside every MLP and before the classifier.
        drop_path_rate: stochastic depth, the same rate in every block (as the
            authors' code).
        {extra}
        image_size: build for another input size (default {image_size}; pretrained
            weights then do not fit).
        **kwargs: none are accepted; an unknown argument is a `ValueError` naming
            the accepted ones (and ffzoo's spelling of timm's: `classes=` for
            `num_classes=`, `weights="imagenet"` / `weights=None` for `pretrained=`).

    Returns:
        A `keras.Model` (with `feature_blocks`, one whose outputs are a list; with
        one index, Keras returns that one output itself).
    """
