"""Training configuration: a recipe (training/recipes/*.py) plus command-line overrides.

Every value a run uses is defined in one place. `SCHEMA` holds each key's type and
meaning, `validate` its range; neither holds a value. A recipe sets every key that
says what is trained and how (`RECIPE_KEYS`: model, data, schedule, optimizer,
regularization, augmentation, precision), so it reads as the whole recipe. The keys
that say where and how this run executes (`RUN_DEFAULTS`: data locations, device
choice, seed, output directory) are not a recipe's: each has its one default there.
Every key can be overridden on the command line as `--key-name value` (tuples as
`0.08,1`; None as `none`). The resolved configuration is saved in the run directory
as `config.json`.
"""

import argparse
import importlib
import json
import math
import os
import pkgutil

# name: (type, help). `tuple` values are floats.
SCHEMA = {
    # model and data
    "model": (str, "registered model name (ffzoo.list_models())"),
    "weights": (str, "initial weights: none, 'imagenet' or a .weights.h5 / .pth path"),
    "data": (str, "image folder, TFRecord glob, or TFDS name; none: scikit-learn's digits"),
    "data_dir": (str, "TFDS data_dir"),
    "manual_dir": (str, "TFDS manual download dir (the ImageNet tars)"),
    "labels_file": (str, "label file of a flat evaluation folder"),
    "train_split": (str, "training split"),
    "eval_split": (str, "evaluation split"),
    "image_size": (int, "input size"),
    "crop_pct": (float, "evaluation: shorter side resized to image_size / crop_pct"),
    # schedule and optimizer
    "epochs": (int, "epochs"),
    "steps_per_epoch": (int, "steps per epoch (none: a pass over the training split)"),
    "batch_size": (int, "global batch size (all devices)"),
    "eval_batch_size": (int, "evaluation batch size"),
    "lr": (float, "learning rate at lr_batch_reference, scaled with batch_size by lr_scaling"),
    "lr_batch_reference": (int, "batch size that lr is given for"),
    "lr_scaling": (str, ("'linear' (lr x batch / lr_batch_reference, DeiT's) or 'sqrt' "
                         "(lr x sqrt(batch / lr_batch_reference), Adam's square-root rule)")),
    "lr_schedule_unit": (str, "'epoch' (DeiT's per-epoch steps) or 'step' (smooth)"),
    "warmup_epochs": (float, "linear warmup epochs"),
    "warmup_max_fraction": (float, "warm-up lasts at most this fraction of the epochs (1: no cap)"),
    "warmup_lr": (float, "learning rate at the start of warmup"),
    "min_lr": (float, "final learning rate of the cosine"),
    "weight_decay": (float, "AdamW weight decay (not on biases, norms, class token, positions)"),
    "decay_positions": (bool, "also decay the position embeddings, as the paper's code did"),
    "adam_beta1": (float, "AdamW beta 1"),
    "adam_beta2": (float, "AdamW beta 2"),
    "adam_epsilon": (float, "AdamW epsilon"),
    "clip_norm": (float, "global gradient norm clipping (none: no clipping)"),
    "ema_decay": (float, "keep an EMA of the weights with this decay (none: no EMA)"),
    # regularization and augmentation
    "drop_rate": (float, "dropout"),
    "drop_path_rate": (float, "stochastic depth"),
    "label_smoothing": (float, "label smoothing"),
    "mixup_alpha": (float, "Mixup alpha (0: off)"),
    "cutmix_alpha": (float, "CutMix alpha (0: off)"),
    "mix_probability": (float, "probability that a batch is mixed"),
    "switch_probability": (float, "probability of CutMix rather than Mixup"),
    "randaugment": (str, "timm RandAugment policy (none: off)"),
    "random_erasing": (float, "random erasing probability"),
    "random_resized_crop": (bool, "random resized crop (False: resize and center crop)"),
    "crop_scale": (tuple, "random resized crop area range"),
    "crop_ratio": (tuple, "random resized crop aspect range"),
    "pil_exact_resize": (bool, "resize crops exactly as PIL does (slower; false: float bicubic)"),
    "hflip": (float, "horizontal flip probability"),
    "repeated_augmentation": (int, "DeiT's repeated augmentation: copies of each image per epoch"),
    # execution
    "precision": (str, "float32, mixed_bfloat16 or mixed_float16 (loss scaling)"),
    "distribute": (str, "auto, none, mirrored, multi_worker_mirrored, tpu, data_parallel"),
    "jit_compile": (str, "auto, true or false (XLA / jax.jit / torch.compile)"),
    "seed": (int, "random seed (data order, augmentation, initialization)"),
    "eval_every": (int, "evaluate every this many epochs"),
    "output": (str, "run directory (none: runs/<recipe>-<model>)"),
}

# The keys that describe this run rather than the recipe, each with its one default.
# A recipe does not set them; the command line does.
RUN_DEFAULTS = {
    "data_dir": None,
    "manual_dir": None,
    "labels_file": None,
    "steps_per_epoch": None,  # a pass over the training split
    "pil_exact_resize": False,  # the faster float bicubic crop (see ffzoo/data/README.md)
    "distribute": "auto",
    "jit_compile": "auto",
    "seed": 0,
    "eval_every": 1,
    "output": None,  # runs/<recipe>-<model>
}

# What every recipe sets: everything else.
RECIPE_KEYS = tuple(key for key in SCHEMA if key not in RUN_DEFAULTS)


class ConfigError(ValueError):
    pass


def recipe_names():
    from . import recipes

    return sorted(m.name for m in pkgutil.iter_modules(recipes.__path__) if not m.name.startswith("_"))


def load_recipe(name):
    """The recipe's values, and `RUN_DEFAULTS` for the keys no recipe sets."""
    if name not in recipe_names():
        raise ConfigError(f"Unknown recipe {name!r}; recipes: {', '.join(recipe_names())}.")
    recipe = importlib.import_module(f".recipes.{name}", __package__).RECIPE
    unknown = sorted(set(recipe) - set(SCHEMA))
    if unknown:
        raise ConfigError(f"Recipe {name!r} sets unknown keys {unknown}.")
    run_keys = sorted(set(recipe) & set(RUN_DEFAULTS))
    if run_keys:
        raise ConfigError(f"Recipe {name!r} sets {run_keys}, which describe a run, not a recipe "
                          "(training/config.py RUN_DEFAULTS); pass them on the command line.")
    missing = [key for key in RECIPE_KEYS if key not in recipe]
    if missing:
        raise ConfigError(f"Recipe {name!r} does not set {missing}: a recipe states every value "
                          "of what it trains.")
    values = {**RUN_DEFAULTS, **recipe}
    return {key: values[key] for key in SCHEMA}


# Keys whose value is a name that can itself be "none" (never None).
_NAMES = {"model", "distribute", "precision", "jit_compile", "lr_schedule_unit", "lr_scaling"}


def _parse(kind, key):
    def parse(text):
        if text.lower() in ("none", "null") and key not in _NAMES:
            return None
        if kind is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
        if kind is tuple:
            return tuple(float(v) for v in text.split(","))
        return kind(text)
    parse.__name__ = "low,high" if kind is tuple else kind.__name__  # argparse: "invalid int value"
    return parse


def _spelled(value):
    """A value as the command line spells it."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def parser(prog="python -m training.train"):
    result = argparse.ArgumentParser(
        prog=prog,
        description="Train an ffzoo model with keras.Model.fit. Every recipe value can be "
                    "overridden with --key-name value.")
    result.add_argument("--recipe", default=None,
                        help=f"one of {', '.join(recipe_names())} (default: deit, on ImageNet)")
    result.add_argument("--fresh", action="store_true",
                        help="start over: remove what a run wrote in the output directory (a "
                             "directory a run marked as its own) instead of resuming it")
    result.add_argument("--debug", action="store_true",
                        help="show the traceback of a failure (also FFZOO_DEBUG=1)")
    for key, (kind, text) in SCHEMA.items():
        if key in RUN_DEFAULTS:
            text += f" (default: {_spelled(RUN_DEFAULTS[key])})"
        result.add_argument("--" + key.replace("_", "-"), dest=key, type=_parse(kind, key),
                            default=argparse.SUPPRESS, help=text)
    return result


def resolve(argv=None, prog="python -m training.train"):
    """`(config, args)` from the command line (`prog`: the command's name in its usage)."""
    args = parser(prog).parse_args(argv)
    chosen = args.recipe is not None or hasattr(args, "data")
    args.recipe = args.recipe or "deit"
    config = load_recipe(args.recipe)
    for key in SCHEMA:
        if hasattr(args, key):
            config[key] = getattr(args, key)
    config["recipe"] = args.recipe
    if config["output"] is None:
        config["output"] = os.path.join("runs", f"{args.recipe}-{config['model']}")
    validate(config)
    if not chosen:
        raise ConfigError(NO_DATA)
    return config, args


NO_DATA = (
    "No data given: the default recipe (deit) trains on ImageNet. Pass --data imagenet2012 "
    "--manual-dir DIR (DIR holding ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar, which "
    "TFDS prepares once; --data-dir says where), or --data FOLDER (train/ and validation/ "
    "folders of class sub-folders; --eval-split names another). For the embedded run on "
    "scikit-learn's digits (no download): bin/demo, or --recipe digits.")


def _finite(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and abs(value) <= _FLOAT32_MAX


_FLOAT32_MAX = 3.4028234663852886e38


def _integer(value):
    return isinstance(value, int) and not isinstance(value, bool)


def validate(config):
    """Refuses every value out of its range, naming the flag (ConfigError, one line)."""
    c = config
    flag = lambda key: "--" + key.replace("_", "-")
    problems = []

    def need(ok, key, what):
        if not ok:
            problems.append(f"{flag(key)} must be {what}; got {c[key]!r}")

    def number(key, low, high, low_open=False, high_open=False, optional=False):
        value = c[key]
        if value is None and optional:
            return
        ok = _finite(value) and (value > low if low_open else value >= low) and (
            high is None or (value < high if high_open else value <= high))
        if high is None:
            interval = ("> " if low_open else ">= ") + f"{low}"
        else:
            interval = "in " + ("(" if low_open else "[") + f"{low}, {high}" + (")" if high_open else "]")
        need(ok, key, f"a finite number {interval}" + (" or none" if optional else ""))

    need(c["precision"] in ("float32", "mixed_bfloat16", "mixed_float16"), "precision",
         "float32, mixed_bfloat16 or mixed_float16")
    need(c["lr_schedule_unit"] in ("epoch", "step"), "lr_schedule_unit", "epoch or step")
    need(c["lr_scaling"] in ("linear", "sqrt"), "lr_scaling", "linear or sqrt")
    need(c["jit_compile"] in ("auto", "true", "false"), "jit_compile", "auto, true or false")
    for key in ("epochs", "batch_size", "eval_batch_size", "repeated_augmentation", "eval_every",
                "image_size", "lr_batch_reference"):
        need(_integer(c[key]) and c[key] >= 1, key, "an integer >= 1")
    need(c["steps_per_epoch"] is None or (_integer(c["steps_per_epoch"])
                                          and c["steps_per_epoch"] >= 1),
         "steps_per_epoch", "an integer >= 1 or none")
    number("lr", 0, None, low_open=True)
    for key in ("warmup_lr", "min_lr", "weight_decay", "warmup_epochs", "mixup_alpha", "cutmix_alpha"):
        number(key, 0, None)
    number("adam_epsilon", 0, None, low_open=True)
    number("clip_norm", 0, None, low_open=True, optional=True)
    for key in ("adam_beta1", "adam_beta2", "label_smoothing", "drop_rate", "drop_path_rate"):
        number(key, 0, 1, high_open=True)
    number("ema_decay", 0, 1, high_open=True, optional=True)
    for key in ("mix_probability", "switch_probability", "random_erasing", "hflip"):
        number(key, 0, 1)
    number("crop_pct", 0, 1, low_open=True)
    number("warmup_max_fraction", 0, 1)
    for key, high in (("crop_scale", 1), ("crop_ratio", None)):
        value = c[key]
        need(isinstance(value, (tuple, list)) and len(value) == 2 and all(_finite(v) for v in value)
             and 0 < value[0] <= value[1] and (high is None or value[1] <= high), key,
             "two numbers low,high with 0 < low <= high" + (f" <= {high}" if high else ""))
    if problems:
        raise ConfigError("; ".join(problems) + ".")


# Keys added after runs were saved without them, with the value that behaves as before
# they existed: a run saved before resumes under a recipe that states them so.
ADDED_KEYS = {"lr_scaling": "linear", "warmup_max_fraction": 1.0}


def saved_differences(config, path):
    """Keys whose values differ from the config saved at `path` (for resuming)."""
    with open(path) as f:
        saved = json.load(f)
    normal = json.loads(json.dumps(config))
    if not isinstance(saved, dict):
        raise ValueError("not a configuration")
    saved = {**ADDED_KEYS, **saved}
    # The output directory is where the run is, whatever its spelling (relative,
    # absolute, trailing /), not part of what the run is.
    keys = (set(saved) | set(normal)) - {"output"}
    return sorted(k for k in keys if saved.get(k) != normal.get(k))
