"""The `ffzoo` command line.

    ffzoo models [PATTERN]                                 list models with their sizes
    ffzoo predict photo.jpg [...] --model NAME             top-5 ImageNet classes
    ffzoo predict photo.jpg [...] --run RUN_DIR            top-5 of a trained run's own classes
    ffzoo train --recipe finetune --model NAME --data DIR --output RUN_DIR
                                                           train or fine-tune (python -m training.train)
    ffzoo evaluate RUN_DIR --data DIR                      top-1 / top-5 on a split (python -m training.evaluate)
    ffzoo convert SRC.pth DST.weights.h5 --model NAME      official checkpoint -> Keras
                                                           (ffvit_*: the paper's; deit_*, resmlp_*:
                                                           FAIR's .pth; mixer_*: Google's .npz;
                                                           gmlp_*: timm's .safetensors / .pth)

`ffzoo train` and `ffzoo evaluate` take exactly the arguments of `python -m
training.train` and `python -m training.evaluate` (`ffzoo train --help`); they need
the training extra: pip install "ffzoo[train]".

An expected failure (a bad file, an unknown model, no network...) is one line on
stderr and exit status 2; `--debug` (or FFZOO_DEBUG=1) shows the traceback instead.
"""

import argparse
import importlib
import importlib.util
import os
import sys

DEBUG_ENV = "FFZOO_DEBUG"
DEFAULT_MODEL = "ffvit_base_patch16_224"
# `ffzoo train` / `ffzoo evaluate` run these modules' main(argv, prog).
TRAINING_COMMANDS = {"train": "ffzoo.training.train", "evaluate": "ffzoo.training.evaluate"}
# What every run of each imports (tf.data pipelines; training curves); the rest of the
# training extra (tensorflow_datasets, scikit-learn for the digits, tensorboard) is
# imported when a run needs it.
_NEEDED = {"train": ("tensorflow", "matplotlib"), "evaluate": ("tensorflow",)}
_EXTRA_MODULES = {"tensorflow", "tensorflow_datasets", "matplotlib", "sklearn", "tensorboard"}
INSTALL_TRAIN = 'pip install "ffzoo[train]"'


def _cmd_models(args):
    import ffzoo

    if not ffzoo.list_models(args.pattern):
        raise ValueError(f"no registered model matches {args.pattern!r}; `ffzoo models` lists "
                         "them all.")

    if args.markdown:
        print(ffzoo.complexity.model_table(ffzoo.list_models(args.pattern)))
        return

    print(f"{'model':<28} {'parameters':>13}  {'GFLOPs/image':>12}  ImageNet weights")
    for name in ffzoo.list_models(args.pattern):
        row = ffzoo.weights.preset_for_model(name)
        published = f"{row['top1']}% top-1" if row and row["source_url"] else "none"
        flops = ffzoo.count_flops(name) / 1e9
        print(f"{name:<28} {ffzoo.count_params(name):>13,}  {flops:>12.2f}  {published}")


def _read_image(path):
    import numpy as np
    from PIL import Image

    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file.")
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))  # as torchvision's image loader does
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise ValueError(f"cannot read {path} as an image: {error}") from None


def _softmax(logits):
    import numpy as np

    logits = np.asarray(logits, np.float64)
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def _predict_run(args):
    """Top-k of a training run's model over its own classes (`ffzoo.load_run`)."""
    import numpy as np

    from ffzoo.runs import load_run

    images = [_read_image(p) for p in args.images]
    run = load_run(args.run_dir)
    activation = run.arguments.get("classifier_activation")
    if activation not in (None, "linear", "softmax"):
        raise ValueError(f"{args.run_dir}: its model ends in a {activation!r} activation; ffzoo "
                         "predict ranks logits (None) or probabilities (softmax).")
    outputs = run.model.predict(np.stack([run.preprocess(image) for image in images]), verbose=0)
    scores = np.asarray(outputs, np.float64) if activation == "softmax" else _softmax(outputs)
    names = run.class_names or [f"class {i}" for i in range(scores.shape[-1])]
    top = min(args.top, scores.shape[-1])
    for path, row in zip(args.images, scores):
        print(path)
        for rank, index in enumerate(np.argsort(-row, kind="stable")[:top], 1):
            print(f"  {rank}. {names[index]:<32} {row[index]:.4f}")


def eval_preprocessing(model_name):
    """`ffzoo.preprocess_image`'s arguments for `model_name`'s pretrained weights: its
    preset row's evaluation transform (crop size, crop fraction, mean, std), or DeiT's
    (`preprocess_image`'s defaults) for a model whose row records none.

    `preprocess_image` resizes the shorter side (bicubic, antialiased) and crops the
    centre; the Mixer presets' own transform (the whole image squashed to 224 x 224,
    bilinear) is the same crop on square images, with another interpolation."""
    import ffzoo

    row = ffzoo.weights.preset_for_model(model_name)
    preprocessing = (row or {}).get("preprocessing")
    if not preprocessing:
        return {}
    return {"image_size": preprocessing["crop_size"], "crop_pct": preprocessing["crop_fraction"],
            "mean": tuple(preprocessing["mean"]), "std": tuple(preprocessing["std"])}


def _cmd_predict(args):
    import numpy as np

    import ffzoo

    if args.top < 1:
        raise ValueError(f"--top must be at least 1; got {args.top}.")
    if args.run_dir is not None:
        given = [flag for flag, value in (("--model", args.model), ("--weights", args.weights),
                                          ("--sha256", args.sha256)) if value is not None]
        if given:
            raise ValueError(f"--run gives the model and its weights: pass {' and '.join(given)} "
                             "only without --run.")
        return _predict_run(args)
    args.model = args.model or DEFAULT_MODEL
    args.weights = args.weights or "imagenet"
    ffzoo.models.registry.get_constructor(args.model)  # an unknown name fails before any work
    if args.sha256:
        if args.weights != "imagenet":
            raise ValueError("--sha256 pins the download of --weights imagenet; a local file "
                             "needs no pin.")
        row = ffzoo.weights.preset_for_model(args.model)
        if row is None or row["source_url"] is None:
            raise ValueError(f"{args.model} has no published weights to pin.")
        os.environ[ffzoo.weights.pin_variable(row)] = args.sha256
    settings = eval_preprocessing(args.model)
    batch = np.stack([ffzoo.preprocess_image(_read_image(p), **settings) for p in args.images])
    model = ffzoo.create_model(args.model, weights=args.weights)
    results = ffzoo.decode_predictions(model.predict(batch, verbose=0), top=args.top)
    for path, result in zip(args.images, results):
        print(path)
        for rank, (wnid, name, score) in enumerate(result, 1):
            print(f"  {rank}. {name:<32} {wnid}  {score:.4f}")


_MAX_CLASSES = 100_000  # ImageNet-21k has 21,843


def _cmd_convert(args):
    import ffzoo
    from ffzoo.weights import convert, loading

    if not args.destination.endswith(".weights.h5"):
        raise SystemExit("ffzoo convert: the destination must end in .weights.h5")
    ffzoo.models.registry.get_constructor(args.model)  # an unknown name fails before reading
    row = ffzoo.weights.preset_for_model(args.model)
    state = loading.read_checkpoint(args.source, ema=args.ema)  # .pth, .npz or .safetensors
    convert.check_format(state, row["source_format"], args.source, args.model)
    head = state.get("head.weight")
    if head is None and "head/kernel" in state:  # Flax's (width, classes) kernel
        head = state["head/kernel"].T
    if head is not None and not (head.ndim == 2 and 1 <= head.shape[0] <= _MAX_CLASSES):
        raise ValueError(f"{args.source}: head.weight has shape {tuple(head.shape)}, not "
                         f"(classes, width) with at most {_MAX_CLASSES:,} classes.")
    model = ffzoo.create_model(
        args.model,
        include_top=head is not None,
        classes=head.shape[0] if head is not None else 1000,
        classifier_activation=None,
    )
    convert.load_state_dict(model, state, row["source_format"], on_nonfinite="error",
                            source=args.source)
    loading.save_weights_atomically(model, args.destination)
    entry = "model_ema" if args.ema else "model"
    print(f"converted {len(state)} tensors ({model.count_params():,} parameters, entry "
          f"'{entry}') from {args.source} into {args.model}: {args.destination}")


def build_parser():
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help=f"show the traceback of a failure (or set {DEBUG_ENV}=1)")
    parser = argparse.ArgumentParser(prog="ffzoo", description=__doc__, parents=[debug],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    def add_command(name, **kwargs):
        return commands.add_parser(name, parents=[debug], **kwargs)

    models = add_command("models", help="list the registered models")
    models.add_argument("pattern", nargs="?", default=None, help="glob, e.g. 'ffvit_*'")
    models.add_argument("--markdown", action="store_true", help="the README's model table")
    models.set_defaults(run=_cmd_models)

    predict = add_command("predict", help="classify images with a pretrained model or a "
                                          "trained run's model")
    predict.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...)")
    predict.add_argument("--run", dest="run_dir", metavar="RUN_DIR", default=None,
                         help="a training run's directory (ffzoo train's --output): its model, "
                              "preprocessing and class names, instead of --model and --weights")
    predict.add_argument("--model", default=None,
                         help=f"registered model name (default: {DEFAULT_MODEL}); the images "
                              "get its preset's evaluation preprocessing (mean, std, crop)")
    predict.add_argument("--weights", default=None,
                         help="'imagenet' (default) or a .weights.h5 / .pth path")
    predict.add_argument("--top", type=int, default=5,
                         help="classes shown per image (at most the model's class count)")
    predict.add_argument("--sha256", default=None,
                         help="the sha256 the downloaded checkpoint must have (pins it, as "
                              "FFZOO_WEIGHTS_SHA256_<PRESET> does)")
    predict.set_defaults(run=_cmd_predict)

    convert = add_command("convert", help="convert an official .pth / .npz / .safetensors checkpoint")
    convert.add_argument("source", help="the authors' .pth checkpoint ({'model': state_dict} as "
                                        "DeiT's main.py saves it, or a bare state dict), .npz "
                                        "(Google's Mixer) or .safetensors file in the layout of "
                                        "the model's family")
    convert.add_argument("destination", help="the Keras weights file to write (.weights.h5)")
    convert.add_argument("--model", required=True, help="registered model name, e.g. ffvit_tiny_patch16_224")
    convert.add_argument("--ema", action="store_true", help="convert the checkpoint's EMA weights")
    convert.set_defaults(run=_cmd_convert)

    # Listed here for --help; main() hands their arguments to the training modules.
    add_command("train", add_help=False, help="train or fine-tune a model (the arguments of "
                                              "python -m training.train; ffzoo train --help)")
    add_command("evaluate", add_help=False, help="evaluate a run or a model on a split (the "
                                                 "arguments of python -m training.evaluate)")
    return parser


def _training_command(command, argv):
    """Runs `python -m training.<command>`'s main on `argv` as `ffzoo <command>`; without
    the training extra, one line saying how to install it."""
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    missing = [name for name in _NEEDED[command] if importlib.util.find_spec(name) is None]
    try:
        if missing:
            raise ModuleNotFoundError(f"No module named {missing[0]!r}", name=missing[0])
        module = importlib.import_module(TRAINING_COMMANDS[command])
        return module.main(argv, prog=f"ffzoo {command}")
    except ModuleNotFoundError as error:
        if debug or (error.name or "").split(".")[0] not in _EXTRA_MODULES:
            raise
        print(f"ffzoo {command}: needs {error.name}, which the training extra installs: "
              f"{INSTALL_TRAIN}", file=sys.stderr)
        return 2


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    commands = [i for i, arg in enumerate(argv) if not arg.startswith("-")]
    if commands and argv[commands[0]] in TRAINING_COMMANDS and all(
            arg == "--debug" for arg in argv[:commands[0]]):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        i = commands[0]
        return _training_command(argv[i], argv[:i] + argv[i + 1:])
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    debug = getattr(args, "debug", False) or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        return args.run(args) or 0
    except (ValueError, ImportError, OSError) as error:  # OSError: missing files, downloads
        if debug:
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"ffzoo {args.command}: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"ffzoo {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
