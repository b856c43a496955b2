"""Name -> constructor registry behind `ffzoo.create_model` and `ffzoo.list_models`."""

import difflib
import fnmatch
import inspect

from ffzoo.weights import preset_for_model, presets

_MODELS = {}
_DIMS = {}
SOURCE_FORMATS = {}  # family name -> the layout of its PyTorch checkpoints (builder.Family)


def register_model(name, constructor, family, dims):
    """Registers `constructor` under `name`; `dims` (a dict) describe the architecture."""
    if name in _MODELS:
        raise ValueError(f"A model named {name!r} is already registered.")
    _MODELS[name] = constructor
    _DIMS[name] = dict(dims, family=family)
    presets.register_architecture(name, _DIMS[name])
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


# timm's names for arguments that ffzoo spells the keras.applications way.
TIMM_SPELLINGS = {
    "num_classes": "classes=<number of classes>",
    "pretrained": 'weights="imagenet" (for pretrained=True) or weights=None (pretrained=False)',
    "features_only": "include_top=False, feature_blocks=(...)",
    "out_indices": "feature_blocks=(...) with include_top=False",
    "global_pool": "pooling= ('token', 'avg' or 'max', with include_top=False)",
    "img_size": "image_size=<pixels>",
    "in_chans": "input_shape=(height, width, channels)",
    "drop_path": "drop_path_rate=",
    "pretrained_cfg": 'weights="<preset name>" (see ffzoo.weights.list_presets())',
}


def check_arguments(given, accepted):
    """A one-line `ValueError` for the first keyword in `given` not in `accepted`."""
    unknown = [key for key in given if key not in accepted]
    if not unknown:
        return
    key = unknown[0]
    if key in TIMM_SPELLINGS:
        hint = f" ffzoo spells it {TIMM_SPELLINGS[key]} ({key}= is timm's spelling)."
    else:
        close = difflib.get_close_matches(key, list(accepted), n=1, cutoff=0.6)
        hint = f" Did you mean {close[0]}=?" if close else ""
    raise ValueError(f"Unknown argument {key}={given[key]!r}.{hint} Accepted arguments: "
                     f"{', '.join(accepted)}.")


def create_model(name, **kwargs):
    """Builds the registered model `name`; keyword arguments go to its constructor.

    Example: `create_model("ffvit_large_patch32_224", drop_path_rate=0.1)`. An argument
    the constructor does not take is a `ValueError` naming the ones it takes (and
    ffzoo's spelling of timm's: `classes=` for `num_classes=`, `weights=` for
    `pretrained=`).
    """
    constructor = get_constructor(name)
    parameters = inspect.signature(constructor).parameters
    # A constructor with **kwargs checks them itself (ffzoo's do: builder.variant_arguments).
    if not any(p.kind == p.VAR_KEYWORD for p in parameters.values()):
        check_arguments(kwargs, [key for key, p in parameters.items()
                                 if p.kind != p.VAR_POSITIONAL])
    return constructor(**kwargs)
