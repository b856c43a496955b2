"""Evaluate an ffzoo model on a whole split: top-1, top-5, exact example count, images/s.

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

import keras

import ffzoo
from training import digits
from training.callbacks import write_json
from training.config import ConfigError
from training.train import EXPECTED_ERRORS, debugging, evaluate, one_line


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
    result.add_argument("--crop-pct", type=float, default=None, help="default: 0.875 (DeiT)")
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
    crop_pct = args.crop_pct if args.crop_pct is not None else (1.0 if args.data is None else 0.875)
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
    try:
        validate(args)
        run(args)
    except EXPECTED_ERRORS as error:  # one line; --debug / FFZOO_DEBUG=1: the traceback
        if debugging(argv):
            raise
        print(f"training.evaluate: {one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debugging(argv):
            raise
        print("training.evaluate: interrupted.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
