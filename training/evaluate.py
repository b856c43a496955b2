"""Evaluate an ffzoo model on a whole split: top-1, top-5, exact example count, images/s.

`evaluate(model, pipeline)` is the count itself (`training.train` evaluates its final
weights with it); `python -m training.evaluate` builds a model and a pipeline for it:

    python -m training.evaluate --model ffvit_base_patch16_224 --weights imagenet \
        --data imagenet2012 --data-dir D --output result.json
    python -m training.evaluate --model ffvit_micro_patch4_32 \
        --weights runs/digits-ffvit_micro_patch4_32/model.weights.h5 --image-size 32 --crop-pct 1

`--weights` is "imagenet" (the published weights), an official `.pth` checkpoint, or a
`.weights.h5` file (for example a training run's `model.weights.h5`; its class count
is the data's). Every example of the split is counted exactly once: the last batch is
kept whatever its size. The evaluation transform is `ffzoo.preprocess_image`'s
(DeiT's: resize to image_size / crop_pct with antialiased bicubic, center crop).
Without `--data`, the held-out split of the embedded digits set is used.
"""

import argparse
import sys
import time

import keras
import numpy as np

import ffzoo
from ffzoo.preprocessing import DEFAULT_CROP_PCT
from training import digits, errors
from training.callbacks import write_json
from training.config import ConfigError


def evaluate(model, pipeline, progress=True):
    """Top-1 / top-5 over the whole split (every example once, padding excluded), images/s."""
    predict = _inference_function(model)
    correct1 = correct5 = seen = 0
    bar = keras.utils.Progbar(pipeline.steps_per_epoch, unit_name="batch") if progress else None
    start = time.perf_counter()
    for step, batch in enumerate(pipeline.dataset.as_numpy_iterator()):
        images, labels = batch[0], batch[1]
        weights = batch[2] if len(batch) > 2 else np.ones(len(images))
        logits = np.asarray(keras.ops.convert_to_numpy(predict(images)), np.float32)
        truth = labels.argmax(-1) if labels.ndim == 2 else labels
        top5 = np.argsort(-logits, axis=-1)[:, :5]
        keep = weights > 0
        correct1 += int(np.sum((top5[:, 0] == truth) & keep))
        correct5 += int(np.sum(np.any(top5 == truth[:, None], axis=-1) & keep))
        seen += int(keep.sum())
        if bar is not None:
            bar.update(step + 1, [("top1", correct1 / max(seen, 1))])
    elapsed = time.perf_counter() - start
    return {"top1": correct1 / max(seen, 1), "top5": correct5 / max(seen, 1), "examples": seen,
            "images_per_s": seen / elapsed, "seconds": elapsed}


def _inference_function(model):
    """`images -> logits` on this process's devices. On TensorFlow, a plain graph
    function: under a tf.distribute strategy `predict_on_batch` would spread (and
    here duplicate) each batch over the replicas, but evaluation counts exactly
    the examples this process reads."""
    if keras.backend.backend() != "tensorflow":
        return model.predict_on_batch
    import tensorflow as tf

    return tf.function(lambda images: model(images, training=False), reduce_retracing=True)


def parser():
    result = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n")[0])
    result.add_argument("--model", required=True, help="registered model name (ffzoo.list_models())")
    result.add_argument("--weights", required=True, help="imagenet, a .pth checkpoint or a .weights.h5 file")
    result.add_argument("--data", help="image folder, TFRecord glob or TFDS name (default: the digits)")
    result.add_argument("--split", default=None, help="split to evaluate (default: validation; val for folders)")
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
    if args.batch_size < 1:
        problems.append(f"--batch-size must be an integer >= 1; got {args.batch_size}")
    if args.image_size is not None and args.image_size < 1:
        problems.append(f"--image-size must be an integer >= 1; got {args.image_size}")
    if args.crop_pct is not None and not 0 < args.crop_pct <= 1:  # NaN fails too
        problems.append(f"--crop-pct must be a number in (0, 1]; got {args.crop_pct}")
    if problems:
        raise ConfigError("; ".join(problems) + ".")


def run(args):
    import ffzoo.data as fd
    from ffzoo.models.registry import model_dims

    keras.config.set_dtype_policy(args.precision)
    source = args.data or digits.write_folder()
    split = args.split or ("val" if args.data is None else "validation")
    image_size = args.image_size or model_dims(args.model)["image_size"]
    crop_pct = args.crop_pct if args.crop_pct is not None else (1.0 if args.data is None else DEFAULT_CROP_PCT)
    pipeline = fd.load(source, split, training=False, batch_size=args.batch_size,
                       image_size=image_size, crop_pct=crop_pct, data_dir=args.data_dir,
                       manual_dir=args.manual_dir, labels_file=args.labels_file)
    classes = 1000 if args.weights == "imagenet" else pipeline.num_classes
    if args.weights == "imagenet" and pipeline.num_classes not in (None, 1000):
        raise ValueError(f"The ImageNet weights predict 1000 classes; {source} has "
                         f"{pipeline.num_classes}.")
    model = ffzoo.create_model(args.model, weights=args.weights, classes=classes,
                               image_size=image_size, classifier_activation=None)
    print(f"Evaluating {args.model} ({args.weights}) on {pipeline.source.description}, "
          f"split {split}: {pipeline.num_examples} images, backend {keras.backend.backend()}.")
    result = evaluate(model, pipeline)
    result.update(model=args.model, weights=args.weights, data=str(source), split=split,
                  backend=keras.backend.backend(), precision=args.precision,
                  image_size=image_size, crop_pct=crop_pct, skipped_files=len(pipeline.skipped.names))
    pipeline.report_skipped("in evaluation")
    if args.output:
        write_json(args.output, result)
    print(f"top-1 {result['top1']:.2%}  top-5 {result['top5']:.2%}  over {result['examples']} "
          f"images, {result['images_per_s']:.1f} images/s")
    return result


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser().parse_args(argv)

    def evaluate_command():
        validate(args)
        run(args)
    return errors.command("training.evaluate", argv, evaluate_command, "interrupted.")


if __name__ == "__main__":
    sys.exit(main())
