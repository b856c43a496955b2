"""Training configuration: a recipe (training/recipes/*.py) plus command-line overrides.

Every key below can be set by a recipe and overridden on the command line as
`--key-name value` (tuples as `0.08,1`; None as `none`). The resolved configuration
is saved in the run directory as `config.json`.
"""

import argparse
import importlib
import json
import math
import os
import pkgutil

# name: (type, default, help). `tuple` values are floats.
SCHEMA = {
    # model and data
    "model": (str, "ffvit_tiny_patch16_224", "registered model name (ffzoo.list_models())"),
    "weights": (str, None, "initial weights: none, 'imagenet' or a .weights.h5 / .pth path"),
    "data": (str, None, "image folder, TFRecord glob, or TFDS name; none: scikit-learn's digits"),
    "data_dir": (str, None, "TFDS data_dir"),
    "manual_dir": (str, None, "TFDS manual download dir (the ImageNet tars)"),
    "labels_file": (str, None, "label file of a flat evaluation folder"),
    "train_split": (str, "train", "training split"),
    "eval_split": (str, "validation", "evaluation split"),
    "image_size": (int, 224, "input size"),
    "crop_pct": (float, 0.875, "evaluation: shorter side resized to image_size / crop_pct"),
    # schedule and optimizer
    "epochs": (int, 300, "epochs"),
    "steps_per_epoch": (int, None, "steps per epoch (default: a pass over the training split)"),
    "batch_size": (int, 1024, "global batch size (all devices)"),
    "eval_batch_size": (int, 256, "evaluation batch size"),
    "lr": (float, 5e-4, "learning rate at lr_batch_reference; scaled linearly with batch_size"),
    "lr_batch_reference": (int, 512, "batch size that lr is given for"),
    "lr_schedule_unit": (str, "epoch", "'epoch' (DeiT's per-epoch steps) or 'step' (smooth)"),
    "warmup_epochs": (float, 5, "linear warmup epochs"),
    "warmup_lr": (float, 1e-6, "learning rate at the start of warmup"),
    "min_lr": (float, 1e-5, "final learning rate of the cosine"),
    "weight_decay": (float, 0.05, "AdamW weight decay (not on biases, norms, class token, positions)"),
    "decay_positions": (bool, False, "also decay the position embeddings, as the paper's code did"),
    "adam_beta1": (float, 0.9, "AdamW beta 1"),
    "adam_beta2": (float, 0.999, "AdamW beta 2"),
    "adam_epsilon": (float, 1e-8, "AdamW epsilon"),
    "clip_norm": (float, None, "global gradient norm clipping (DeiT: none)"),
    "ema_decay": (float, None, "keep an EMA of the weights with this decay (DeiT: 0.99996)"),
    # regularization and augmentation
    "drop_rate": (float, 0.1, "dropout (the FF runs used 0.1)"),
    "drop_path_rate": (float, 0.1, "stochastic depth"),
    "label_smoothing": (float, 0.1, "label smoothing"),
    "mixup_alpha": (float, 0.8, "Mixup alpha (0: off)"),
    "cutmix_alpha": (float, 1.0, "CutMix alpha (0: off)"),
    "mix_probability": (float, 1.0, "probability that a batch is mixed"),
    "switch_probability": (float, 0.5, "probability of CutMix rather than Mixup"),
    "randaugment": (str, "rand-m9-mstd0.5-inc1", "timm RandAugment policy (none: off)"),
    "random_erasing": (float, 0.25, "random erasing probability"),
    "random_resized_crop": (bool, True, "random resized crop (False: resize and center crop)"),
    "crop_scale": (tuple, (0.08, 1.0), "random resized crop area range"),
    "crop_ratio": (tuple, (3 / 4, 4 / 3), "random resized crop aspect range"),
    "pil_exact_resize": (bool, False, "resize crops exactly as PIL does (slower; default: float bicubic)"),
    "hflip": (float, 0.5, "horizontal flip probability"),
    "repeated_augmentation": (int, 3, "DeiT's repeated augmentation: copies of each image per epoch"),
    # execution
    "precision": (str, "float32", "float32, mixed_bfloat16 or mixed_float16 (loss scaling)"),
    "distribute": (str, "auto", "auto, none, mirrored, multi_worker_mirrored, tpu, data_parallel"),
    "jit_compile": (str, "auto", "auto, true or false (XLA / jax.jit / torch.compile)"),
    "seed": (int, 0, "random seed (data order, augmentation, initialization)"),
    "eval_every": (int, 1, "evaluate every this many epochs"),
    "output": (str, None, "run directory (default: runs/<recipe>-<model>)"),
}


class ConfigError(ValueError):
    pass


def recipe_names():
    from training import recipes

    return sorted(m.name for m in pkgutil.iter_modules(recipes.__path__) if not m.name.startswith("_"))


def load_recipe(name):
    """The recipe's values over the schema's defaults."""
    if name not in recipe_names():
        raise ConfigError(f"Unknown recipe {name!r}; recipes: {', '.join(recipe_names())}.")
    recipe = importlib.import_module(f"training.recipes.{name}").RECIPE
    unknown = sorted(set(recipe) - set(SCHEMA))
    if unknown:
        raise ConfigError(f"Recipe {name!r} sets unknown keys {unknown}.")
    config = {key: default for key, (_, default, _) in SCHEMA.items()}
    config.update(recipe)
    return config


# Keys whose value is a name that can itself be "none" (never None).
_NAMES = {"model", "distribute", "precision", "jit_compile", "lr_schedule_unit"}


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


def parser():
    result = argparse.ArgumentParser(
        prog="python -m training.train",
        description="Train an ffzoo model with keras.Model.fit. Every recipe value can be "
                    "overridden with --key-name value.")
    result.add_argument("--recipe", default=None,
                        help=f"one of {', '.join(recipe_names())} (default: deit, on ImageNet)")
    result.add_argument("--fresh", action="store_true",
                        help="start over: remove what a run wrote in the output directory (a "
                             "directory a run marked as its own) instead of resuming it")
    result.add_argument("--debug", action="store_true",
                        help="show the traceback of a failure (also FFZOO_DEBUG=1)")
    for key, (kind, _, text) in SCHEMA.items():
        result.add_argument("--" + key.replace("_", "-"), dest=key, type=_parse(kind, key),
                            default=argparse.SUPPRESS, help=text)
    return result


def resolve(argv=None):
    """`(config, args)` from the command line."""
    args = parser().parse_args(argv)
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
    for key, high in (("crop_scale", 1), ("crop_ratio", None)):
        value = c[key]
        need(isinstance(value, (tuple, list)) and len(value) == 2 and all(_finite(v) for v in value)
             and 0 < value[0] <= value[1] and (high is None or value[1] <= high), key,
             "two numbers low,high with 0 < low <= high" + (f" <= {high}" if high else ""))
    if problems:
        raise ConfigError("; ".join(problems) + ".")


def saved_differences(config, path):
    """Keys whose values differ from the config saved at `path` (for resuming)."""
    with open(path) as f:
        saved = json.load(f)
    normal = json.loads(json.dumps(config))
    if not isinstance(saved, dict):
        raise ValueError("not a configuration")
    # The output directory is where the run is, whatever its spelling (relative,
    # absolute, trailing /), not part of what the run is.
    keys = (set(saved) | set(normal)) - {"output"}
    return sorted(k for k in keys if saved.get(k) != normal.get(k))
