"""The `weights=` argument of every model: checks before building, then `load`.

`load(model, source, row, skip_head=False)` converts into the model it is given and
never builds one (this package does not import `ffzoo.models`).

`weights` is one of:
- `None`: random initialisation (the reference's).
- `"imagenet"`, or the name of the model's preset (`"ffvit_tiny_patch16_224.in1k"`):
  the model's published ImageNet weights. The authors' checkpoint is
  downloaded once into the Keras cache and converted into the model; when the model holds
  the whole published model (its classifier included) its weights are cached beside the
  checkpoint as `<preset>.weights.h5`, so later loads need neither the network nor
  PyTorch. (A first load with `include_top=False` or `skip_head=True` converts from the
  cached checkpoint again next time, until a full model has been loaded once.)
- a path to a `.weights.h5` file (written by Keras or `ffzoo convert`).
- a path to a PyTorch checkpoint (`.pth`) in the layout of the model's family (needs
  PyTorch): the paper's for `ffvit_*`, FAIR's DeiT (timm) for `deit_*`, FAIR's ResMLP for
  `resmlp_*`, timm's for `gmlp_*`.
- a path to one of Google's MLP-Mixer `.npz` files (`mixer_*`; no PyTorch needed), or a
  `.safetensors` file in the family's layout (timm's hub copies, `gmlp_*`; needs the
  `safetensors` package, not PyTorch).
"""

import json
import os
import re
import shutil
import tempfile

import numpy as np

from ffzoo import files
from ffzoo.weights import convert, download, presets, pth, readers

H5_SUFFIX = ".weights.h5"
PTH_SUFFIXES = (".pth", ".pt")
CHECKPOINT_SUFFIXES = PTH_SUFFIXES + (readers.NPZ_SUFFIX, readers.SAFETENSORS_SUFFIX)


def _is_path(value):
    return isinstance(value, (str, os.PathLike))


def converted_path(preset):
    """Where the converted `.weights.h5` of a preset is cached."""
    return download.converted_path(preset)


def _require_torch(what):
    if not pth.have_torch():
        raise ImportError(f"{what}: {pth.PTH_EXTRA_HINT}")


def _require_reader(path, what):
    """ImportError when the package that reads the checkpoint `path` is missing."""
    if path.endswith(PTH_SUFFIXES):
        _require_torch(f"{what} is a PyTorch checkpoint")
    elif path.endswith(readers.SAFETENSORS_SUFFIX) and not readers.have_safetensors():
        raise ImportError(f"{what}: {readers.SAFETENSORS_EXTRA_HINT}")


def read_checkpoint(path, ema=False, file_name=None):
    """`{name: array}` of an authors' checkpoint, read by the extension of `file_name`
    (default `path`; a download in progress has a temporary name): `.pth` / `.pt`
    (PyTorch), `.npz` (NumPy), `.safetensors` (the safetensors package)."""
    kind = file_name or path
    if kind.endswith(readers.NPZ_SUFFIX):
        return readers.read_npz(path)
    if kind.endswith(readers.SAFETENSORS_SUFFIX):
        return readers.read_safetensors(path)
    return pth.read_state_dict(path, ema=ema)


def _check_imagenet(row, *, include_top, classes, classifier_activation, channels,
                    architecture_changes, skip_head):
    model = row.get("model") if row else None
    if row is None or row.get("source_url") is None:
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
    if include_top and classes != row["classes"] and not skip_head:
        raise ValueError(
            f"classes={classes} with weights='imagenet' and include_top=True: the pretrained "
            f"classifier has {row['classes']} classes. For another label set use "
            "include_top=False and add your own head, or fine-tune: build with weights=None "
            "and call ffzoo.weights.load(model, 'imagenet', row, skip_head=True), as "
            "training/ does."
        )
    if include_top and not skip_head and classifier_activation not in (None, "softmax"):
        import keras

        if keras.activations.get(classifier_activation) not in (
            keras.activations.get("softmax"), keras.activations.get(None)):
            raise ValueError(
                "With weights='imagenet' and include_top=True, classifier_activation must "
                f"be None (logits) or 'softmax'; got {classifier_activation!r}."
            )
    if not os.path.exists(converted_path(row)):
        _require_reader(row["file_name"], f"The first load of {model}'s ImageNet weights "
                                          f"converts the authors' checkpoint; {row['file_name']}")


def preset_alias(weights, row):
    """`weights`, with the name of the model's own preset (`row["name"]`, e.g.
    `"ffvit_tiny_patch16_224.in1k"`) read as `"imagenet"`; another model's preset name
    is a `ValueError` naming the model it belongs to."""
    if not isinstance(weights, str) or weights == "imagenet":
        return weights
    owner = next((r for r in presets.list_presets() if r["name"] == weights), None)
    if owner is None:
        return weights
    model = (row or {}).get("model")
    if owner["model"] == model:
        return "imagenet"
    raise ValueError(
        f"weights={weights!r} is the preset of {owner['model']}, not of {model or 'this model'}: "
        f"build that model (ffzoo.create_model({owner['model']!r}, weights={weights!r})), or pass "
        + (f"weights='imagenet' for {model}'s own." if model else "a weights file for this one.")
    )


def check_weights_argument(weights, *, row, include_top, classes, classifier_activation,
                           channels, architecture_changes=(), skip_head=False):
    """Raises before anything is built when `weights` cannot work with these arguments.

    Args:
        row: the preset row of the model the weights are for (None for custom dims).
        architecture_changes: descriptions of arguments that differ from the
            registered model's published architecture (e.g. `"image_size=384"`).
        skip_head: the classifier will not be loaded (so its class count is free).
    """
    weights = preset_alias(weights, row)
    if weights is None:
        return
    if isinstance(weights, str) and weights == "imagenet":
        _check_imagenet(row, include_top=include_top, classes=classes,
                        classifier_activation=classifier_activation, channels=channels,
                        architecture_changes=architecture_changes, skip_head=skip_head)
        return
    path = _checked_path(weights)
    _require_reader(path, f"weights={path!r}")


def _checked_path(weights):
    """`weights` as a path to an existing `.weights.h5` / checkpoint file; `ValueError` otherwise."""
    if not _is_path(weights):
        raise ValueError(
            "weights must be None, 'imagenet', or a path to a .weights.h5 file or a .pth, "
            f".npz or .safetensors checkpoint; got {weights!r}."
        )
    path = os.fspath(weights)
    if not (path.endswith(H5_SUFFIX) or path.endswith(CHECKPOINT_SUFFIXES)):
        raise ValueError(
            f"weights={path!r}: expected a file ending in .weights.h5 (Keras) or .pth (an "
            "official PyTorch checkpoint), or a .npz (Google's MLP-Mixer files) or "
            ".safetensors checkpoint."
        )
    if not os.path.isfile(path):
        raise ValueError(f"weights={path!r}: no such file.")
    return path


def load(model, source, row, skip_head=False, ema=False):
    """Loads `source` into the built model `model`; builds nothing and returns `model`.

    Args:
        model: an ffzoo model (any `include_top`, class count or activation).
        source: `None` (nothing to load), `"imagenet"` (the preset's published weights,
            downloaded and converted once into the cache), a `.weights.h5` file, or a
            checkpoint (`.pth` / `.pt`, `.npz`, `.safetensors`) in the layout
            `row["source_format"]`.
        row: the model's preset row (`ffzoo.weights.preset_for_model(name)`); for a model
            without a preset, a dict with at least `source_format`.
        skip_head: load everything but the classifier, which keeps the values it has
            (its initialisation): for fine-tuning with another class count.
        ema: read a DeiT checkpoint's `model_ema` entry (`.pth` files only).

    Raises:
        ValueError (`ConversionError` for a file that does not fit the model; it names
        the layout it looks like when it is another family's) and, for `.pth` files
        without PyTorch, ImportError.
    """
    source = preset_alias(source, row)
    if source is None:
        return model
    if isinstance(source, str) and source == "imagenet":
        _load_imagenet(model, row, skip_head)
        return model
    path = _checked_path(source)
    if path.endswith(H5_SUFFIX):
        load_h5(model, path, skip_head=skip_head)
    else:
        _require_reader(path, f"weights={path!r}")
        if not (row or {}).get("source_format"):
            raise ValueError(f"weights={path!r}: a checkpoint file needs the model's source "
                             "format (row['source_format'], e.g. 'ff_pth'); none was given.")
        convert.load_state_dict(model, read_checkpoint(path, ema=ema), row["source_format"],
                                skip_head=skip_head, source=path)
    return model


def head_classes(source, row):
    """The class count of the classifier that `source` holds, or None when it holds none.

    Reads only shapes: for `"imagenet"` the preset's, for a checkpoint its `head.bias`
    (`head/bias` in Google's `.npz`), for a `.weights.h5` file its classifier's bias. With it, a caller
    decides `skip_head` without trying a load (see `training/train.py`'s `build_model`).
    """
    source = preset_alias(source, row)
    if isinstance(source, str) and source == "imagenet":
        return (row or {}).get("classes")
    path = _checked_path(source)
    if path.endswith(CHECKPOINT_SUFFIXES):
        _require_reader(path, f"weights={path!r}")
        state = read_checkpoint(path)
        head = state.get("head.bias", state.get("head/bias"))
        return None if head is None else int(head.shape[0])
    import h5py

    with h5py.File(path, "r") as f:
        group = _h5_head_group(f, path)
        return None if group is None else int(f[group]["1"].shape[0])


def _h5_head_group(f, path):
    """The `vars` group of the classifier in a Keras `.weights.h5` file, or None.

    Keras names the groups of a functional model's layers after their classes: the
    classifier is the model's only top-level `Dense`, saved as `layers/dense/vars`.
    """
    layers = f.get("layers")
    names = [n for n in (layers or {}) if n == "dense" or n.startswith("dense_")]
    if len(names) > 1:
        raise ValueError(f"{path} has {len(names)} top-level Dense layers ({', '.join(names)}); "
                         "an ffzoo model has one (its classifier).")
    if not names or "0" not in layers[names[0]].get("vars", {}):
        return None
    return f"layers/{names[0]}/vars"


def _load_imagenet(model, row, skip_head):
    if row is None or not row.get("source_url"):
        name = (row or {}).get("model") or "This model"
        why = f" {row['notes']}" if row and row.get("notes") else ""
        raise ValueError(f"{name} has no published ImageNet weights.{why}")
    target = converted_path(row)
    hashes = download.expected_hashes(row)
    if os.path.exists(target) and _cached_file_is_current(target, hashes):
        try:
            load_h5(model, target, skip_head=skip_head)
        except ValueError as error:
            _remove(target, record_path(target))
            raise ValueError(f"{error} The cached file was removed; the next load converts "
                             "the checkpoint again.") from None
        return
    _require_reader(row["file_name"], f"Converting the {row['model']} checkpoint "
                                      f"{row['file_name']}")
    ema = row.get("source_entry") == "model_ema"

    def convert_into_model(path, digest):
        state = read_checkpoint(path, ema=ema, file_name=row["file_name"])
        convert.load_state_dict(model, state, row["source_format"], skip_head=skip_head,
                                source=path)
        if not hashes:
            print(f"ffzoo: {row['file_name']} is not pinned; to accept only this exact file "
                  f"from now on, set {download.pin_variable(row)}={digest} (or pass "
                  f"--sha256 to ffzoo predict)")
        if _holds_published_weights(model, row, skip_head):
            print(f"ffzoo: converted {row['file_name']} (sha256 {digest}) -> {target}")
            _save_converted(model, target, row["file_name"], digest)
        return target

    download.fetch(row, convert_into_model)


def _holds_published_weights(model, row, skip_head):
    """Whether `model` now holds the whole published model in float32 (so its weights
    can be cached as the preset's converted file): its classifier included."""
    names = {w.path: w for w in model.weights}
    head = names.get("head/bias")
    return (not skip_head and head is not None and tuple(head.shape) == (row["classes"],)
            and all(w.dtype == "float32" for w in model.weights))


def load_h5(model, path, on_nonfinite="warn", skip_head=False):
    """`model.load_weights(path)`; a file that is not this model's weights is a
    `ValueError` naming it, and NaN / Inf weights are a warning naming them.

    With `skip_head=True` the file's classifier (any class count, or none) is left out
    and the model's keeps its values: Keras then loads every other weight strictly from
    a temporary copy of the file whose classifier is the model's own.
    """
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path} is empty (0 bytes), not a Keras .weights.h5 file.")
    import h5py

    if not h5py.is_hdf5(path):
        raise ValueError(f"{path} is not an HDF5 file, so not a Keras .weights.h5 file.")
    if skip_head and _model_head(model) is not None:
        with tempfile.TemporaryDirectory() as scratch:
            copy = os.path.join(scratch, "without_head" + H5_SUFFIX)
            shutil.copyfile(path, copy)
            _put_model_head(model, copy, path)
            _load_h5_strict(model, copy, path, on_nonfinite)
        return
    _load_h5_strict(model, path, path, on_nonfinite)


def _model_head(model):
    try:
        return model.get_layer("head")
    except ValueError:
        return None


def _put_model_head(model, copy, path):
    import h5py

    kernel, bias = (np.asarray(keras_to_numpy(w)) for w in _model_head(model).weights)
    with h5py.File(copy, "r+") as f:
        group = _h5_head_group(f, path) or "layers/dense/vars"
        if group in f:
            del f[group]
        vars_group = f.require_group(group)
        vars_group.create_dataset("0", data=kernel)
        vars_group.create_dataset("1", data=bias)


def keras_to_numpy(x):
    import keras

    return keras.ops.convert_to_numpy(x)


def _load_h5_strict(model, path, name, on_nonfinite):
    try:
        model.load_weights(path)
    except OSError as error:
        raise ValueError(f"Cannot read {name}: a damaged or truncated HDF5 file "
                         f"({_first_line(error)}).") from None
    except (ValueError, KeyError, TypeError) as error:
        held = _other_architecture(model, path)
        if held:
            raise ValueError(f"{name} does not hold the weights of {model.name}: it seems to "
                             f"hold {held}.") from None
        raise ValueError(f"{name} does not hold the weights of {model.name} "
                         f"({len(model.weights)} variables): {_first_line(error)}") from None
    convert.check_finite({w.path: keras_to_numpy(w) for w in model.weights}, name, on_nonfinite)


def _snake_case(name):
    """A layer class name as Keras names its group in a `.weights.h5` file."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _architecture(shapes):
    """`(block layer, patch size, width, depth, token count or None)` of a model from its
    weights' `{path: shape}` as a `.weights.h5` file stores them, or None.

    The patch embedding is the one 4-D kernel (`(p, p, channels, width)`); the blocks
    are the most numerous kind of top-level layer (`ff_block`, `ff_block_1`, ...); a
    token FF's LayerNorm (`token_ff/norm`) gives the token count.
    """
    kernels = [shape for path, shape in shapes.items() if len(shape) == 4]
    if len(kernels) != 1:
        return None
    patch, _, _, width = kernels[0]
    groups = {}
    for path in shapes:
        top = path.split("/")[1] if path.startswith("layers/") else None
        if top:
            groups.setdefault(re.sub(r"_\d+$", "", top), set()).add(top)
    if not groups:
        return None
    block, members = max(groups.items(), key=lambda item: len(item[1]))
    tokens = next((shape[0] for path, shape in shapes.items()
                   if path.startswith(f"layers/{block}/") and "/token_ff/norm/vars/0" in path),
                  None)
    return block, int(patch), int(width), len(members), None if tokens is None else int(tokens)


def _model_shapes(model):
    """A built model's weights as `_architecture` reads a file: `{path: shape}`, with the
    top-level layers named as Keras names their groups (class name in snake case)."""
    shapes, seen = {}, {}
    for layer in model.layers:
        base = _snake_case(type(layer).__name__)
        seen[base] = seen.get(base, -1) + 1
        group = base if seen[base] == 0 else f"{base}_{seen[base]}"
        counts = {}
        for variable in layer.weights:
            inner = os.path.dirname(variable.path.split("/", 1)[1]) if "/" in variable.path else ""
            owner = f"layers/{group}/{inner}".rstrip("/")
            counts[owner] = counts.get(owner, -1) + 1
            shapes[f"{owner}/vars/{counts[owner]}"] = tuple(variable.shape)
    return shapes


def _describe(architecture):
    block, patch, width, depth, tokens = architecture
    tokens = f", {tokens} tokens" if tokens else ""
    return f"patch {patch}, width {width}, depth {depth}{tokens}, {block} blocks"


def _other_architecture(model, path):
    """What the `.weights.h5` file at `path` seems to hold when it is another model's
    weights than `model`'s: the registered models of its dims, and the dims; else None."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            shapes = {}
            f.visititems(lambda name, item: shapes.__setitem__(name, tuple(item.shape))
                         if isinstance(item, h5py.Dataset) else None)
    except OSError:
        return None
    held, own = _architecture(shapes), _architecture(_model_shapes(model))
    if held is None or held == own:
        return None  # the same architecture: something else differs
    block, patch, width, depth, tokens = held
    dims, block_layers = presets.architectures()
    matches = []
    for name, d in dims.items():
        family_block = block_layers.get(d.get("family"))
        if family_block and family_block != block:
            continue
        if (d.get("patch_size"), d.get("embed_dim"), d.get("depth")) != (patch, width, depth):
            continue
        if tokens is not None and isinstance(d.get("image_size"), int):
            if 1 + (d["image_size"] // patch) ** 2 != tokens:
                continue
        matches.append(name)
    if not matches:
        return f"a model of {_describe(held)} (no registered model has these dims)"
    return f"{' or '.join(matches)} ({_describe(held)})"


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


def _save_converted(model, target, source_file, source_sha256):
    """Writes the weights and their record so that `target` never exists without it."""
    def write(partial):
        model.save_weights(partial)
        _write_record(target, download.sha256_of(partial), source_file, source_sha256)

    files.write_atomically(target, write)


def save_weights_atomically(model, path):
    """`model.save_weights(path)` through a temporary file, so `path` is whole or absent."""
    files.write_atomically(path, model.save_weights)
