"""Evaluate an ffzoo model on a whole split: top-1, top-5, exact example count, images/s.

`evaluate(model, pipeline)` is the count itself (`training.train` evaluates its final
weights with it); `python -m training.evaluate` builds a model and a pipeline for it:

    python -m training.evaluate runs/flowers --data ~/flowers
    python -m training.evaluate --model ffvit_base_patch16_224 --weights imagenet \
        --data imagenet2012 --data-dir D --output result.json

A training run's directory is enough (`ffzoo.runs.load_run`): its model.json gives the
model, its class names (the data's classes are read in that order) and its evaluation
preprocessing, and without `--data` the run's own data is evaluated. Otherwise
`--model` and `--weights` say what to build: "imagenet" (the published weights), an
official `.pth` checkpoint, or a `.weights.h5` file (its class count is the data's).
Every example of the split is counted exactly once: the last batch is kept whatever
its size. The evaluation transform is `ffzoo.preprocess_image`'s (DeiT's: resize to
image_size / crop_pct with antialiased bicubic, center crop). Without `--data` (and
without a run), the held-out split of the embedded digits set is used. Top-5 is not
reported for fewer than 6 classes.
"""

import argparse
import sys
import time

import keras
import numpy as np

import ffzoo
from ffzoo.preprocessing import DEFAULT_CROP_PCT

from . import digits, errors
from .callbacks import Progress, write_json
from .config import ConfigError

DEFAULT_SPLIT = "validation"
TOP5_MIN_CLASSES = 6  # with 5 classes or fewer every label is in the top 5


def evaluate(model, pipeline, progress=True):
    """Top-1 / top-5 over the whole split (every example once, padding excluded), images/s.

    `top5` is None when the model has fewer than 6 classes (it would be 100%).
    """
    predict = _inference_function(model)
    correct1 = correct5 = seen = 0
    classes = None
    bar = Progress(pipeline.steps_per_epoch, "evaluation", unit="batch") if progress else None
    start = time.perf_counter()
    for step, batch in enumerate(pipeline.dataset.as_numpy_iterator()):
        images, labels = batch[0], batch[1]
        weights = batch[2] if len(batch) > 2 else np.ones(len(images))
        logits = np.asarray(keras.ops.convert_to_numpy(predict(images)), np.float32)
        classes = logits.shape[-1]
        truth = labels.argmax(-1) if labels.ndim == 2 else labels
        top5 = np.argsort(-logits, axis=-1)[:, :5]
        keep = weights > 0
        correct1 += int(np.sum((top5[:, 0] == truth) & keep))
        correct5 += int(np.sum(np.any(top5 == truth[:, None], axis=-1) & keep))
        seen += int(keep.sum())
        if bar is not None:
            bar.update(step + 1, int(keep.sum()), {"top1": correct1 / max(seen, 1)})
    elapsed = time.perf_counter() - start
    if bar is not None:
        bar.finish()
    top5 = correct5 / max(seen, 1) if classes is None or classes >= TOP5_MIN_CLASSES else None
    return {"top1": correct1 / max(seen, 1), "top5": top5, "examples": seen,
            "images_per_s": seen / elapsed, "seconds": elapsed}


def describe(result):
    """`top-1 x%  top-5 y%` (without top-5 when there is none)."""
    text = f"top-1 {result['top1']:.2%}"
    return text if result.get("top5") is None else f"{text}  top-5 {result['top5']:.2%}"


def _inference_function(model):
    """`images -> logits` on this process's devices. On TensorFlow, a plain graph
    function: under a tf.distribute strategy `predict_on_batch` would spread (and
    here duplicate) each batch over the replicas, but evaluation counts exactly
    the examples this process reads."""
    if keras.backend.backend() != "tensorflow":
        return model.predict_on_batch
    import tensorflow as tf

    return tf.function(lambda images: model(images, training=False), reduce_retracing=True)


def parser(prog="python -m training.evaluate"):
    result = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    result.add_argument("run", nargs="?", default=None,
                        help="a training run's directory (instead of --model and --weights)")
    result.add_argument("--model", help="registered model name (ffzoo.list_models())")
    result.add_argument("--weights", help="imagenet, a .pth checkpoint or a .weights.h5 file")
    result.add_argument("--data", help="image folder, TFRecord glob or TFDS name (default: the "
                                        "run's data; without a run, the digits)")
    result.add_argument("--split", default=None,
                        help=f"split to evaluate (default: {DEFAULT_SPLIT}; for a folder its val/ "
                             "or validation/ folder, or the held-out part of a folder of class "
                             "folders; with a run and no --data, the run's evaluation split)")
    result.add_argument("--data-dir", help="TFDS data_dir")
    result.add_argument("--manual-dir", help="TFDS manual download dir")
    result.add_argument("--labels-file", help="label file of a flat evaluation folder")
    result.add_argument("--batch-size", type=int, default=128)
    result.add_argument("--image-size", type=int, default=None, help="default: the model's")
    result.add_argument("--crop-pct", type=float, default=None,
                        help=f"default: {DEFAULT_CROP_PCT} (DeiT's; 1 for the digits)")
    result.add_argument("--precision", default="float32", choices=["float32", "mixed_bfloat16", "mixed_float16"])
    result.add_argument("--output", help="write the result as JSON here")
    result.add_argument("--debug", action="store_true",
                        help="show the traceback of a failure (also FFZOO_DEBUG=1)")
    return result


def validate(args):
    """Refuses out-of-range values up front, naming the flag (ConfigError, one line)."""
    problems = []
    if args.run is not None and (args.model or args.weights):
        problems.append("a run directory gives the model and its weights: pass --model and "
                        "--weights only without one")
    elif args.run is None and not (args.model and args.weights):
        problems.append("pass a training run's directory, or --model and --weights")
    if args.batch_size < 1:
        problems.append(f"--batch-size must be an integer >= 1; got {args.batch_size}")
    if args.image_size is not None and args.image_size < 1:
        problems.append(f"--image-size must be an integer >= 1; got {args.image_size}")
    if args.crop_pct is not None and not 0 < args.crop_pct <= 1:  # NaN fails too
        problems.append(f"--crop-pct must be a number in (0, 1]; got {args.crop_pct}")
    if problems:
        raise ConfigError("; ".join(problems) + ".")


def _run_data(directory):
    """`(data, split)` that the run in `directory` was evaluated on (its config.json)."""
    import json
    import os

    path = os.path.join(directory, "config.json")
    try:
        with open(path) as f:
            config = json.load(f)
        return config["data"], config["eval_split"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path} does not say what the run trained on ({error}): pass --data.") \
            from None


def run(args):
    import ffzoo.data as fd
    from ffzoo.models.registry import model_dims
    from ffzoo.runs import load_run

    keras.config.set_dtype_policy(args.precision)
    data, default_split, trained = args.data, DEFAULT_SPLIT, None
    if args.run is not None:
        trained = load_run(args.run)
        if data is None:
            data, default_split = _run_data(args.run)
    source = data or digits.write_folder()
    split = args.split or default_split
    if trained is not None:
        p = trained.preprocessing
        image_size = args.image_size or p["image_size"]
        crop_pct = args.crop_pct if args.crop_pct is not None else p["crop_pct"]
        name, weights, normalization = trained.model_name, args.run, dict(mean=p["mean"], std=p["std"])
    else:
        name, weights, normalization = args.model, args.weights, {}
        image_size = args.image_size or model_dims(args.model)["image_size"]
        crop_pct = args.crop_pct if args.crop_pct is not None else (1.0 if data is None else DEFAULT_CROP_PCT)
    pipeline = fd.load(source, split, training=False, batch_size=args.batch_size,
                       image_size=image_size, crop_pct=crop_pct, data_dir=args.data_dir,
                       manual_dir=args.manual_dir, labels_file=args.labels_file,
                       class_names=trained.class_names if trained else None, **normalization)
    if trained is not None:
        model = trained.model
        classes = model.output_shape[-1]
        if pipeline.num_classes not in (None, classes):
            raise ValueError(f"The run's model predicts {classes} classes; {source} has "
                             f"{pipeline.num_classes}.")
    else:
        classes = 1000 if args.weights == "imagenet" else pipeline.num_classes
        if args.weights == "imagenet" and pipeline.num_classes not in (None, 1000):
            raise ValueError(f"The ImageNet weights predict 1000 classes; {source} has "
                             f"{pipeline.num_classes}.")
        model = ffzoo.create_model(args.model, weights=args.weights, classes=classes,
                                   image_size=image_size, classifier_activation=None)
    print(f"Evaluating {name} ({weights}) on {pipeline.source.description}, "
          f"split {split}: {pipeline.num_examples} images, backend {keras.backend.backend()}.")
    result = evaluate(model, pipeline)
    result.update(model=name, weights=weights, data=str(source), split=split,
                  backend=keras.backend.backend(), precision=args.precision,
                  image_size=image_size, crop_pct=crop_pct, skipped_files=len(pipeline.skipped.names))
    pipeline.report_skipped("in evaluation")
    if args.output:
        write_json(args.output, result)
    print(f"{describe(result)}  over {result['examples']} "
          f"images, {result['images_per_s']:.1f} images/s")
    return result


def main(argv=None, prog="python -m training.evaluate"):
    """The command; `prog` is its name in usage and error lines (`ffzoo evaluate` runs this)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser(prog).parse_args(argv)

    def evaluate_command():
        validate(args)
        run(args)
    return errors.command(prog.removeprefix("python -m "), argv, evaluate_command, "interrupted.")


if __name__ == "__main__":
    sys.exit(main())
