"""The `weights=` argument of every model: checks before building, then loading.

`weights` is one of:
- `None`: random initialisation (the reference's).
- `"imagenet"`: the model's published ImageNet weights. The authors' checkpoint is
  downloaded once into the Keras cache, converted, and the converted `.weights.h5` is
  cached beside it, so later loads need neither the network nor PyTorch.
- a path to a `.weights.h5` file (written by Keras or `ffzoo convert`).
- a path to an official `.pth` checkpoint (needs PyTorch).
"""

import json
import os

from ffzoo import files
from ffzoo.weights import convert, download, presets, pth

H5_SUFFIX = ".weights.h5"
PTH_SUFFIXES = (".pth", ".pt")


def _is_path(value):
    return isinstance(value, (str, os.PathLike))


def converted_path(preset):
    """Where the converted `.weights.h5` of a preset is cached."""
    return download.converted_path(preset)


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
        target = imagenet_weights_file(preset_model)
        try:
            load_h5(model, target)
        except ValueError as error:
            _remove(target, record_path(target))
            raise ValueError(f"{error} The cached file was removed; the next load converts "
                             "the checkpoint again.") from None
        return model
    path = os.fspath(weights)
    if path.endswith(H5_SUFFIX):
        load_h5(model, path)
    else:
        convert.load_ffvit_state_dict(model, pth.read_state_dict(path, ema=ema), source=path)
    return model


def load_h5(model, path, on_nonfinite="warn"):
    """`model.load_weights(path)`; a file that is not this model's weights is a
    `ValueError` naming it, and NaN / Inf weights are a warning naming them."""
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path} is empty (0 bytes), not a Keras .weights.h5 file.")
    import h5py

    if not h5py.is_hdf5(path):
        raise ValueError(f"{path} is not an HDF5 file, so not a Keras .weights.h5 file.")
    try:
        model.load_weights(path)
    except OSError as error:
        raise ValueError(f"Cannot read {path}: a damaged or truncated HDF5 file "
                         f"({_first_line(error)}).") from None
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path} does not hold the weights of {model.name} "
                         f"({len(model.weights)} variables): {_first_line(error)}") from None
    import keras

    convert.check_finite({w.path: keras.ops.convert_to_numpy(w) for w in model.weights},
                         path, on_nonfinite)


def _first_line(error):
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[0].strip() if lines else type(error).__name__


def record_path(weights_path):
    """The record written beside a converted file: its sha256 and its source's."""
    return weights_path + ".json"


def _remove(*paths):
    for path in paths:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass


def _read_record(target):
    try:
        with open(record_path(target)) as f:
            record = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # a damaged record: nothing it says can be trusted
    return record if isinstance(record, dict) else {}


def _cached_file_is_current(target, hashes):
    """Whether the cached converted file may be used; a file that fails its record is
    removed with a `ValueError` (the next load converts again)."""
    record = _read_record(target)
    if record is None:  # put there by hand (weights/README.md): record it from now on
        digest = download.sha256_of(target)
        try:
            _write_record(target, digest, None, None)
        except OSError:  # a read-only cache: use the file, unrecorded
            return True
        print(f"ffzoo: using {target} (placed in the cache by hand; its sha256 {digest} is "
              "recorded beside it and checked from now on)")
        return True
    source_sha256 = record.get("source_sha256")
    if source_sha256 and any(h != source_sha256 for h in hashes.values()):
        _remove(target, record_path(target))  # converted from another file than the pinned one
        return False
    actual = download.sha256_of(target)
    if actual != record.get("weights_sha256"):
        _remove(target, record_path(target))
        recorded = record.get("weights_sha256")
        why = (f"but {recorded} was recorded when they were converted" if recorded
               else f"and their record {record_path(target)} is damaged")
        raise ValueError(
            f"The cached weights {target} have sha256 {actual}, {why}: the file was changed "
            "or damaged. It was removed; the next load converts the checkpoint again."
        )
    return True


def _write_record(target, weights_sha256, source_file, source_sha256):
    record = {"weights_file": os.path.basename(target), "weights_sha256": weights_sha256,
              "source_file": source_file, "source_sha256": source_sha256}
    text = json.dumps(record, indent=2) + "\n"

    def write(path):
        with open(path, "w") as f:
            f.write(text)

    files.write_atomically(record_path(target), write)


def imagenet_weights_file(model_name, sha256=None):
    """The cached converted `.weights.h5` of a model's ImageNet preset, made if needed.

    The first call downloads the authors' checkpoint (verified against `sha256`, the
    pin variable and the manifest, each where given; atomic), converts it strictly
    into the full published model (with its 1000-class head) and writes the file
    atomically with a record of both files' sha256 beside it; every later call checks
    the file against that record. A checkpoint that does not convert is removed.
    """
    row = presets.preset_for_model(model_name)
    target = converted_path(row)
    hashes = download.expected_hashes(row, sha256)
    if os.path.exists(target) and _cached_file_is_current(target, hashes):
        return target
    _require_torch(f"Converting the {model_name} checkpoint")
    ema = row.get("source_entry") == "model_ema"

    def convert_and_save(path, digest):
        state = pth.read_state_dict(path, ema=ema)
        from ffzoo.models.registry import create_model

        published = create_model(model_name, classifier_activation=None)
        convert.load_ffvit_state_dict(published, state, source=path)
        print(f"ffzoo: converting {row['file_name']} (sha256 {digest}) -> {target}")
        if not hashes:
            print(f"ffzoo: {row['file_name']} is not pinned; to accept only this exact file "
                  f"from now on, set {download.pin_variable(row)}={digest} (or pass "
                  f"sha256=... to ffzoo.weights.imagenet_weights_file, or --sha256 to ffzoo predict)")
        _save_converted(published, target, row["file_name"], digest)
        return target

    return download.fetch(row, convert_and_save, sha256=sha256)


def _save_converted(model, target, source_file, source_sha256):
    """Writes the weights and their record so that `target` never exists without it."""
    def write(partial):
        model.save_weights(partial)
        _write_record(target, download.sha256_of(partial), source_file, source_sha256)

    files.write_atomically(target, write)


def save_weights_atomically(model, path):
    """`model.save_weights(path)` through a temporary file, so `path` is whole or absent."""
    files.write_atomically(path, model.save_weights)
