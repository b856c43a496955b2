"""A finished training run's model, rebuilt from its run directory alone.

`python -m training.train` ends by writing, in its run directory, `model.weights.h5`
(the final weights, without optimizer state) and `model.json`, which says how to use
them (`MODEL_FILE`):

    {"format": 1,
     "model": "ffvit_tiny_patch16_224",             # the registered name
     "arguments": {"classes": 5, "classifier_activation": null, ...},
     "class_names": ["daisy", "rose", ...],         # output i is class_names[i]
     "preprocessing": {"image_size": 224, "crop_pct": 0.875, "mean": [...],
                       "std": [...], "interpolation": "bicubic"},
     "weights": "model.weights.h5",
     "ema_weights": "model_ema.weights.h5"}          # with --ema-decay only

`load_run(path)` rebuilds that model with `ffzoo.create_model(model, **arguments,
weights=None)` and `model.load_weights(...)`, and returns a `Run`:

    from ffzoo.runs import load_run

    run = load_run("runs/flowers")
    logits = run.model.predict(run.preprocess(image)[None])   # the model outputs logits
    print(run.class_names[logits[0].argmax()])

The preprocessing is DeiT's evaluation transform (`ffzoo.preprocess_image`: resize the
shorter side to `int(image_size / crop_pct)` with PIL's antialiased bicubic filter,
center crop, normalize by mean and std), the one the run was evaluated with.
"""

import dataclasses
import json
import os

MODEL_FILE = "model.json"
FORMAT = 1
PREPROCESSING_KEYS = ("image_size", "crop_pct", "mean", "std", "interpolation")


@dataclasses.dataclass
class Run:
    """A trained model and what using it needs (see the module docstring)."""

    model: object  # keras.Model, outputs logits unless arguments say otherwise
    model_name: str
    arguments: dict
    class_names: list  # None when the training data named no classes
    preprocessing: dict  # PREPROCESSING_KEYS
    directory: str

    def preprocess(self, image):
        """One image (uint8 array or PIL image) as the model's input `(S, S, 3)`."""
        from ffzoo.preprocessing import preprocess_image

        p = self.preprocessing
        return preprocess_image(image, image_size=p["image_size"], crop_pct=p["crop_pct"],
                                mean=tuple(p["mean"]), std=tuple(p["std"]))


def describe(model_name, arguments, class_names, preprocessing, ema=False):
    """The content of `model.json` (what `training.train` writes)."""
    if set(preprocessing) != set(PREPROCESSING_KEYS):
        raise ValueError(f"preprocessing must hold exactly {', '.join(PREPROCESSING_KEYS)}; "
                         f"got {', '.join(sorted(preprocessing))}.")
    info = {"format": FORMAT, "model": model_name, "arguments": dict(arguments),
            "class_names": None if class_names is None else [str(c) for c in class_names],
            "preprocessing": {k: list(v) if isinstance(v, tuple) else v
                              for k, v in preprocessing.items()},
            "weights": "model.weights.h5"}
    if ema:
        info["ema_weights"] = "model_ema.weights.h5"
    return info


def read_info(path):
    """The checked content of `path`/model.json; a one-line ValueError or
    FileNotFoundError saying what is missing otherwise."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path} is not a directory: load_run takes a training run's "
                                "directory (the --output of python -m training.train).")
    file = os.path.join(path, MODEL_FILE)
    if not os.path.exists(file):
        started = os.path.exists(os.path.join(path, "config.json"))
        raise FileNotFoundError(
            f"{path} holds no {MODEL_FILE}: " + (
                "its training run has not finished (rerun the same training command to finish it)."
                if started else "it is not a training run's directory."))
    try:
        with open(file) as f:
            info = json.load(f)
        if not isinstance(info, dict):
            raise ValueError("not a JSON object")
        missing = [k for k in ("model", "arguments", "class_names", "preprocessing", "weights")
                   if k not in info]
        if missing:
            raise ValueError(f"it lacks {', '.join(missing)}")
        if info.get("format") != FORMAT:
            raise ValueError(f"format {info.get('format')!r}, not {FORMAT}")
        missing = [k for k in PREPROCESSING_KEYS if k not in info["preprocessing"]]
        if missing:
            raise ValueError(f"its preprocessing lacks {', '.join(missing)}")
    except ValueError as error:
        raise ValueError(f"{file} is not a run's model description ({error}).") from None
    classes, names = info["arguments"].get("classes"), info["class_names"]
    if names is not None and classes != len(names):
        raise ValueError(f"{file} names {len(names)} classes but its model has {classes} outputs.")
    return info


def load_run(path, ema=False):
    """The trained model of the run directory `path`, as a `Run`.

    Args:
        path: a finished run's directory (the `--output` of `python -m training.train`).
        ema: load the EMA weights (`model_ema.weights.h5`, runs with `--ema-decay`)
            instead of the final raw weights.

    Raises:
        FileNotFoundError: `path` is not a directory, holds no `model.json` (an
            unfinished run, or not a run), or lacks the weights file.
        ValueError: `model.json` is not one, or the weights do not fit its model.
    """
    import ffzoo

    path = os.fspath(path)
    info = read_info(path)
    key = "ema_weights" if ema else "weights"
    if key not in info:
        raise FileNotFoundError(f"{path} holds no EMA weights: its run was trained without "
                                "--ema-decay.")
    weights = os.path.join(path, os.path.basename(info[key]))
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"{weights} is missing: {MODEL_FILE} names it as the run's weights.")
    model = ffzoo.create_model(info["model"], **info["arguments"], weights=None)
    model.load_weights(weights)
    return Run(model=model, model_name=info["model"], arguments=info["arguments"],
               class_names=info["class_names"], preprocessing=dict(info["preprocessing"]),
               directory=path)
