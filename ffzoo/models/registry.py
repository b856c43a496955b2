"""Name -> constructor registry behind `ffzoo.create_model` and `ffzoo.list_models`."""

import difflib
import fnmatch

from ffzoo.weights import preset_for_model

_MODELS = {}
_DIMS = {}
SOURCE_FORMATS = {}  # family name -> the layout of its PyTorch checkpoints (builder.Family)


def register_model(name, constructor, family, dims):
    """Registers `constructor` under `name`; `dims` (a dict) describe the architecture."""
    if name in _MODELS:
        raise ValueError(f"A model named {name!r} is already registered.")
    _MODELS[name] = constructor
    _DIMS[name] = dict(dims, family=family)
    return constructor


def model_dims(name):
    """The registered architecture of `name`: family, patch size, width, depth..."""
    get_constructor(name)  # a clear error for unknown names
    return dict(_DIMS[name])


def pretrained_config(name):
    """The preset row of `name`, or (a model without one) `{"model", "family",
    "source_format"}`: what `ffzoo.weights.load(model, source, row)` needs for files."""
    row = preset_for_model(name)
    if row is not None:
        return row
    family = model_dims(name)["family"]
    return {"model": name, "family": family, "source_format": SOURCE_FORMATS.get(family)}


def list_models(pattern=None):
    """Sorted names of the registered models, optionally filtered by a glob pattern."""
    names = sorted(_MODELS)
    if pattern is not None:
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    return names


def get_constructor(name):
    if name not in _MODELS:
        close = difflib.get_close_matches(str(name), list(_MODELS), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(
            f"Unknown model {name!r}.{hint} Registered models: {', '.join(list_models())}."
        )
    return _MODELS[name]


def create_model(name, **kwargs):
    """Builds the registered model `name`; keyword arguments go to its constructor.

    Example: `create_model("ffvit_large_patch32_224", drop_path_rate=0.1)`.
    """
    return get_constructor(name)(**kwargs)
