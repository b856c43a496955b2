"""The table of pretrained configs (presets): one row per registered model.

Each model family declares its rows as plain literals in its own file
(`ffzoo/models/ffvit.py`, `ffzoo/models/deit.py`) and registers them here when it is
imported; this module never imports the models. A row is a dict:

- `name` (`<model>.<tag>`), `model` (the registered model name), `family`;
- `source_format`: the layout of the model's PyTorch checkpoints, which chooses the
  converter (`ffzoo.weights.convert.CONVERTERS`), also for user files of that model;
- `source_url`, `file_name`, `sha256` (of the source file; None where no maintainer has
  hashed it), `source_entry` (`"model"` or `"model_ema"` of DeiT's checkpoint dict);
- `dataset`, `classes`, `parameters`;
- `top1` (the accuracy the weights' authors report for this file) and `top1_source`;
  `top1_other`: other published figures for the same architecture, as
  `[{"top1": ..., "source": ...}]`;
- `preprocessing` (the evaluation transform the accuracy assumes), `license`, `notes`.
"""

_ROWS = {}  # model name -> row, in registration order
_ARCHITECTURES = {}  # model name -> its dims and family (ffzoo.models.registry registers them)
_BLOCK_LAYERS = {}  # family -> the name its block layers are saved under ("ff_block")

REQUIRED_KEYS = ("name", "model", "family", "source_format", "source_url", "file_name", "sha256",
                 "source_entry", "dataset", "classes", "parameters", "top1", "top1_source",
                 "top1_other", "preprocessing", "license", "notes")


def register_preset(row):
    """Adds a model family's pretrained config; one row per model name."""
    missing = [k for k in REQUIRED_KEYS if k not in row]
    if missing:
        raise ValueError(f"Preset {row.get('name')!r} lacks {', '.join(missing)}.")
    if row["model"] in _ROWS:
        raise ValueError(f"A preset for {row['model']!r} is already registered.")
    _ROWS[row["model"]] = row
    return row


def list_presets():
    """Every registered preset row (dicts; see weights/README.md for the columns)."""
    return list(_ROWS.values())


def preset_for_model(model_name):
    """The preset row of a registered model, or None when it has none."""
    return _ROWS.get(model_name)


def register_architecture(model_name, dims):
    """Records a registered model's dims (`patch_size`, `embed_dim`, `depth`, `image_size`,
    `family`...): a `.weights.h5` file of the wrong model is named from them."""
    _ARCHITECTURES[model_name] = dict(dims)


def register_block_layer(family, block_layer):
    """Records the name a family's block layers have in `.weights.h5` files."""
    _BLOCK_LAYERS[family] = block_layer


def architectures():
    """`{model name: dims}` of every registered model, and `{family: block layer name}`."""
    return dict(_ARCHITECTURES), dict(_BLOCK_LAYERS)
