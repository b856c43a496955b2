"""The `weights=` argument of every model: checks before building, then loading.

`weights` is one of:
- `None`: random initialisation (the reference's).
- `"imagenet"`: the model's published ImageNet weights. The authors' checkpoint is
  downloaded once into the Keras cache, converted, and the converted `.weights.h5` is
  cached beside it, so later loads need neither the network nor PyTorch.
- a path to a `.weights.h5` file (written by Keras or `ffzoo convert`).
- a path to an official `.pth` checkpoint (needs PyTorch).
"""

import os

from ffzoo.weights import convert, download, presets, pth

H5_SUFFIX = ".weights.h5"
PTH_SUFFIXES = (".pth", ".pt")


def _is_path(value):
    return isinstance(value, (str, os.PathLike))


def converted_path(preset):
    """Where the converted `.weights.h5` of a preset is cached."""
    return os.path.join(download.cache_dir(), preset["name"] + H5_SUFFIX)


def _require_torch(what):
    if not pth.have_torch():
        raise ImportError(f"{what}: {pth.PTH_EXTRA_HINT}")


def _check_imagenet(model, *, include_top, classes, classifier_activation, channels,
                    architecture_changes):
    row = presets.preset_for_model(model) if model else None
    if row is None or row["source_url"] is None:
        why = f" {row['notes']}" if row and row.get("notes") else ""
        raise ValueError(
            f"{model or 'This model'} has no published ImageNet weights.{why} Use weights=None "
            "to train it, or a path to your own .weights.h5 / .pth file. Models with "
            "weights: " + ", ".join(r["model"] for r in presets.list_presets() if r["source_url"])
        )
    if architecture_changes:
        raise ValueError(
            f"weights='imagenet' fit {model} as published, but these arguments change its "
            f"weights' shapes: {', '.join(architecture_changes)}. Build it with weights=None."
        )
    if channels != 3:
        raise ValueError(f"weights='imagenet' need RGB input (3 channels); input_shape has {channels}.")
    if include_top and classes != row["classes"]:
        raise ValueError(
            f"classes={classes} with weights='imagenet' and include_top=True: the pretrained "
            f"classifier has {row['classes']} classes. For another label set use "
            "include_top=False and add your own head (or fine-tune: training/recipes/finetune)."
        )
    if include_top and classifier_activation not in (None, "softmax"):
        import keras

        if keras.activations.get(classifier_activation) not in (
            keras.activations.get("softmax"), keras.activations.get(None)):
            raise ValueError(
                "With weights='imagenet' and include_top=True, classifier_activation must "
                f"be None (logits) or 'softmax'; got {classifier_activation!r}."
            )
    if not os.path.exists(converted_path(row)):
        _require_torch(f"The first load of {model}'s ImageNet weights converts the authors' "
                       "PyTorch checkpoint")


def check_weights_argument(weights, *, model, include_top, classes, classifier_activation,
                           channels, architecture_changes=()):
    """Raises before anything is built when `weights` cannot work with these arguments.

    Args:
        model: the registered model name the weights are for (None for custom dims).
        architecture_changes: descriptions of arguments that differ from the
            registered model's published architecture (e.g. `"image_size=384"`).
    """
    if weights is None:
        return
    if isinstance(weights, str) and weights == "imagenet":
        _check_imagenet(model, include_top=include_top, classes=classes,
                        classifier_activation=classifier_activation, channels=channels,
                        architecture_changes=architecture_changes)
        return
    if not _is_path(weights):
        raise ValueError(
            "weights must be None, 'imagenet', or a path to a .weights.h5 file or a .pth "
            f"checkpoint; got {weights!r}."
        )
    path = os.fspath(weights)
    if not (path.endswith(H5_SUFFIX) or path.endswith(PTH_SUFFIXES)):
        raise ValueError(
            f"weights={path!r}: expected a file ending in .weights.h5 (Keras) or .pth "
            "(an official PyTorch checkpoint)."
        )
    if not os.path.isfile(path):
        raise ValueError(f"weights={path!r}: no such file.")
    if path.endswith(PTH_SUFFIXES):
        _require_torch(f"weights={path!r} is a PyTorch checkpoint")


def load_into(model, weights, *, preset_model=None, ema=False):
    """Loads `weights` (see the module docstring) into a built ffzoo model."""
    if isinstance(weights, str) and weights == "imagenet":
        model.load_weights(imagenet_weights_file(preset_model))
        return model
    path = os.fspath(weights)
    if path.endswith(H5_SUFFIX):
        model.load_weights(path)
    else:
        convert.load_ffvit_state_dict(model, pth.read_state_dict(path, ema=ema))
    return model


def imagenet_weights_file(model_name):
    """The cached converted `.weights.h5` of a model's ImageNet preset, made if needed.

    The first call downloads the authors' checkpoint (verified, atomic), converts it
    strictly into the full published model (with its 1000-class head) and writes the
    file atomically, so the cache holds a whole file or none.
    """
    row = presets.preset_for_model(model_name)
    target = converted_path(row)
    if os.path.exists(target):
        return target
    _require_torch(f"Converting the {model_name} checkpoint")
    ema = row.get("source_entry") == "model_ema"
    state = download.fetch(row, read=lambda path: pth.read_state_dict(path, ema=ema))
    print(f"ffzoo: converting {row['file_name']} -> {target}")
    from ffzoo.models.registry import create_model

    published = create_model(model_name, classifier_activation=None)
    convert.load_ffvit_state_dict(published, state)
    save_weights_atomically(published, target)
    return target


def save_weights_atomically(model, path):
    """`model.save_weights(path)` through a temporary file, so `path` is whole or absent."""
    directory = os.path.dirname(os.path.abspath(path))
    partial = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.part{H5_SUFFIX}")
    try:
        model.save_weights(partial)
        os.replace(partial, path)
    except BaseException:
        if os.path.exists(partial):
            os.remove(partial)
        raise
