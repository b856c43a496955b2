"""Fine-tuning from a converted checkpoint against training from scratch, on two small folders.

    python -m benchmarks.finetune [--work .cache/finetune] [--epochs N] [--quick]
    python -m benchmarks.finetune --collect-only   # the result from the finished runs in --work

No network is needed (nor reachable): the paper's ImageNet checkpoints are replaced by
one made here, honestly, the way a user meets a foreign checkpoint:

1. Source task S: FF-Tiny (`ffvit_tiny_patch16_224`) trained from scratch, with
   `python -m training.train`, to tell which of 16 scikit-image photos a crop comes
   from. None of S's photos is a target's photo, and none of S is a digit.
2. The trained weights are written out in the paper's own `.pth` layout (the key
   names and tensor layouts of `vision_transformer_linear.py`: `references/torch_ffvit.py`
   loads the file strictly and must give the Keras model's logits), then converted
   with `ffzoo convert` like any official checkpoint.
3. Each target is trained twice with the `finetune` recipe's defaults (30 epochs,
   batch 16, lr 1e-4 with the square-root rule, warm-up at most a tenth of the run),
   differing only in `--weights`: the checkpoint (T1 reads the `.pth` directly, T2 the
   `ffzoo convert` output) or none (from scratch). Same steps, same data order.
   - T1: crops of 4 other scikit-image photos (astronaut, coffee, chelsea, rocket),
     the class being the photo: 100 images, 64 to train on, 36 held out.
   - T2: scikit-learn's digits (the `digits` recipe's folder, written at 224 x 224),
     6 training images per digit (60) and 10 held-out per digit (100), at 224 px.
   T1 is also fine-tuned once with the old default rule (DeiT's linear scaling from
   1e-4 at batch 512: 3.1e-6 at batch 16) to show what the rule changed.

Prints each run's held-out top-1 and wall time (the run's own clock, `summary.json`'s
`wall_time_s`, for a run reported or collected; the whole `training.train` process,
start-up included, for one trained by this call) and writes
benchmarks/results/finetune.json. Cost: FF-Tiny trains at about 5 images/s with
TensorFlow on 2 idle CPU cores (about 1 on this shared machine), so the 30-epoch
default is ~8 minutes a photos run there; `--epochs` sets every target run's epochs
(the source model's are fixed), and the source model, once trained in --work, is reused.
"""

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np

from benchmarks import harness

MODEL = "ffvit_tiny_patch16_224"
SOURCE_PHOTOS = ("hubble_deep_field", "immunohistochemistry", "colorwheel", "logo", "camera",
                 "coins", "moon", "horse", "page", "text", "clock", "brick", "grass", "gravel",
                 "retina", "cell")
TARGET_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")  # skimage's "cat" is chelsea: not in S


def photo(name):
    """A scikit-image photo as RGB uint8 (grey repeated, RGBA composited on white)."""
    import skimage.data

    image = np.asarray(getattr(skimage.data, name)())
    if image.dtype != np.uint8:
        image = (255 * (image.astype(np.float64) / max(image.max(), 1))).astype(np.uint8)
    if image.ndim == 2:
        image = np.stack([image] * 3, -1)
    if image.shape[-1] == 4:
        alpha = image[..., 3:].astype(np.float64) / 255
        image = (image[..., :3] * alpha + 255 * (1 - alpha)).round().astype(np.uint8)
    return image


def write_crops(folder, names, train_per_class, val_per_class, seed):
    """Random square crops (a quarter to a half of the shorter side) of each photo, saved
    as 256 x 256 JPEGs in `train/<photo>/` and `val/<photo>/`."""
    from PIL import Image

    if os.path.exists(os.path.join(folder, "COMPLETE")):
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    rng = np.random.default_rng(seed)
    for name in names:
        image = photo(name)
        height, width = image.shape[:2]
        for split, count in (("train", train_per_class), ("val", val_per_class)):
            os.makedirs(os.path.join(folder, split, name))
            for index in range(count):
                side = int(rng.uniform(0.25, 0.5) * min(height, width))
                top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
                crop = Image.fromarray(image[top:top + side, left:left + side])
                crop.resize((256, 256), Image.BICUBIC).save(
                    os.path.join(folder, split, name, f"{index:03d}.jpg"), quality=90)
    open(os.path.join(folder, "COMPLETE"), "w").close()
    return folder


def write_digits(folder, train_per_class, val_per_class):
    """The first files of each digit of the `digits` recipe's folder (same split), written
    at 224 x 224."""
    from training import digits

    if os.path.exists(os.path.join(folder, "COMPLETE")):
        return folder
    full = digits.write_folder(folder + "-all", size=224)
    shutil.rmtree(folder, ignore_errors=True)
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for label in range(10):
            source = os.path.join(full, split, str(label))
            os.makedirs(os.path.join(folder, split, str(label)))
            for name in sorted(os.listdir(source))[:count]:
                shutil.copy(os.path.join(source, name), os.path.join(folder, split, str(label), name))
    open(os.path.join(folder, "COMPLETE"), "w").close()
    return folder


def count_images(folder, split):
    return sum(len(files) for _, _, files in os.walk(os.path.join(folder, split)))


# ffzoo weight path -> (paper key, layout change): the inverse of ffzoo's "ff_pth" rules.
_TO_PAPER = [
    (r"patch_embed/kernel", "patch_embed.proj.weight", lambda w: w.transpose(3, 2, 0, 1)),
    (r"patch_embed/bias", "patch_embed.proj.bias", None),
    (r"pos_embed/class_token", "cls_token", lambda w: w.reshape(1, 1, -1)),
    (r"pos_embed/class_position", "pos_encoding.cls_pos_embed", lambda w: w.reshape(1, 1, -1)),
    (r"pos_embed/position_grid", "pos_encoding.pos_embed", lambda w: w.transpose(2, 0, 1)[None]),
    (r"block_(\d+)/feature_ff/norm/gamma", "blocks.{0}.norm1.weight", None),
    (r"block_(\d+)/feature_ff/norm/beta", "blocks.{0}.norm1.bias", None),
    (r"block_(\d+)/feature_ff/ff/(fc[12])/kernel", "blocks.{0}.mlp1.{1}.weight", np.transpose),
    (r"block_(\d+)/feature_ff/ff/(fc[12])/bias", "blocks.{0}.mlp1.{1}.bias", None),
    (r"block_(\d+)/token_ff/norm/gamma", "blocks.{0}.norm2.weight", None),
    (r"block_(\d+)/token_ff/norm/beta", "blocks.{0}.norm2.bias", None),
    (r"block_(\d+)/token_ff/ff/(fc[12])/kernel", "blocks.{0}.mlp2.{1}.weight", np.transpose),
    (r"block_(\d+)/token_ff/ff/(fc[12])/bias", "blocks.{0}.mlp2.{1}.bias", None),
    (r"norm/gamma", "norm.weight", None),
    (r"norm/beta", "norm.bias", None),
    (r"head/kernel", "head.weight", np.transpose),
    (r"head/bias", "head.bias", None),
]


def export_paper_checkpoint(weights_file, classes, path, check_folder):
    """Writes the run's final weights as `{"model": state_dict}` in the paper's layout;
    returns the largest logit difference between the paper-layout PyTorch model (loaded
    strictly from the file) and the Keras model on a few held-out source images."""
    import keras
    import torch

    import ffzoo
    sys.path.insert(0, os.path.join(harness.ROOT, "references"))
    from torch_ffvit import FFViT

    model = ffzoo.create_model(MODEL, classes=classes, classifier_activation=None, weights=weights_file)
    state = {}
    for variable in model.weights:
        value = keras.ops.convert_to_numpy(variable)
        for pattern, key, change in _TO_PAPER:
            match = re.fullmatch(pattern, variable.path)
            if match:
                state[key.format(*match.groups())] = torch.from_numpy(
                    np.ascontiguousarray(change(value) if change else value))
                break
        else:
            raise ValueError(f"no paper key for {variable.path}")
    torch.save({"model": state}, path)
    reference = FFViT(num_classes=classes).eval()
    reference.load_state_dict(torch.load(path, weights_only=True)["model"], strict=True)
    import ffzoo.data as fd
    images = next(iter(fd.load(check_folder, "val", training=False, batch_size=8).dataset))[0].numpy()
    ours = keras.ops.convert_to_numpy(model(images, training=False))
    with torch.no_grad():
        theirs = reference(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
    return float(np.max(np.abs(ours - theirs)))


def train(name, argv, work, env, fresh=True):
    """Runs `python -m training.train` as a user would; returns its summary and wall time
    (`fresh=False`: a finished run of the same command is reported, not trained again)."""
    output = os.path.join(work, "runs", name)
    command = [sys.executable, "-m", "training.train", *argv, "--output", output] + (
        ["--fresh"] if fresh else [])
    harness.log(f"[finetune] {name}: {' '.join(command[1:])}")
    started = time.perf_counter()
    with open(os.path.join(work, f"{name}.log"), "w") as log:
        done = subprocess.run(command, env=env, cwd=harness.ROOT, stdout=log, stderr=subprocess.STDOUT,
                              check=False)
    wall = time.perf_counter() - started
    if done.returncode:
        with open(os.path.join(work, f"{name}.log")) as f:
            raise SystemExit(f"[finetune] {name} failed (exit {done.returncode}); see "
                             f"{work}/{name}.log:\n" + f.read()[-2000:])
    row = collect(name, work)
    if not row["reported"]:  # trained here, not a finished run reported: the process's time
        row["wall_s"] = wall
    harness.log(f"[finetune] {name}: top-1 {row['top1']:.2%} of {row['eval_examples']}, "
                f"{row['wall_s']:.0f} s" + (f"; warned: {row['cannot_learn_warnings']}"
                                            if row["cannot_learn_warnings"] else ""))
    return row


def collect(name, work):
    """A finished run's figures from its directory and log. `wall_s` is the run's own
    clock (`summary.json`'s `wall_time_s`: from the start of `training.train`'s run to its
    summary, without the Python and TensorFlow start-up)."""
    output = os.path.join(work, "runs", name)
    with open(os.path.join(work, f"{name}.log")) as f:
        text = f.read()
    with open(os.path.join(output, "summary.json")) as f:
        summary = json.load(f)
    peak = re.search(r"Learning rate: peak (\S+)", text)
    return dict(run=name, top1=summary["top1"], eval_examples=summary["eval_examples"],
                wall_s=summary["wall_time_s"], train_images_per_s=summary["train_images_per_s"],
                epochs=summary["epochs"], peak_lr=float(peak.group(1)) if peak else None,
                cannot_learn_warnings=re.findall(r"Warning: this run cannot learn: (.*)", text),
                reported="is a finished run" in text, output=output)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", default=os.path.join(harness.ROOT, ".cache", "finetune"))
    parser.add_argument("--result", default=os.path.join(harness.ROOT, "benchmarks", "results",
                                                         "finetune.json"))
    parser.add_argument("--quick", action="store_true", help="a smoke run: a few images, 1 epoch")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs of every target run (default: the finetune recipe's)")
    parser.add_argument("--targets", default="photos,digits", help="the targets to train")
    parser.add_argument("--collect-only", action="store_true",
                        help="train nothing: the result from the finished runs in --work")
    parser.add_argument("--no-linear-rule", action="store_true",
                        help="skip the run with the old linear learning-rate rule")
    args = parser.parse_args(argv)
    quick = args.quick
    os.makedirs(args.work, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=harness.ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    env.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ["KERAS_BACKEND"] = env["KERAS_BACKEND"]
    started = time.perf_counter()
    tag = "-quick" if quick else ""
    source = write_crops(os.path.join(args.work, "source" + tag), SOURCE_PHOTOS,
                         2 if quick else 16, 1 if quick else 4, seed=1)
    photos = write_crops(os.path.join(args.work, "photos" + tag), TARGET_PHOTOS,
                         4 if quick else 16, 2 if quick else 9, seed=2)
    digits = write_digits(os.path.join(args.work, "digits224" + tag), 2 if quick else 6,
                          1 if quick else 10)
    harness.log(f"[finetune] machine: {harness.machine_description()}; backend {env['KERAS_BACKEND']}")

    epochs = ["--epochs", "1"] if quick else ["--epochs", str(args.epochs)] if args.epochs else []
    # 1. The source model: from scratch on S (its own settings: not a recipe default).
    source_argv = ["--recipe", "finetune", "--model", MODEL, "--weights", "none",
                   "--data", source, "--epochs", "1" if quick else "5", "--lr", "3e-4",
                   "--warmup-epochs", "1", "--randaugment", "none",
                   "--random-erasing", "0", "--drop-path-rate", "0",
                   "--crop-scale", "0.35,1"]
    pretrain = collect("source", args.work) if args.collect_only else \
        train("source", source_argv, args.work, env, fresh=False)
    # 2. The paper-layout checkpoint, then `ffzoo convert` as a user runs it.
    pth = os.path.join(args.work, "source_ffvit_tiny.pth")
    check = os.path.join(args.work, "source_export.json")
    if os.path.exists(check):  # written by an earlier run of the same source model
        with open(check) as f:
            export_diff = json.load(f)["max_logit_diff"]
    else:
        export_diff = export_paper_checkpoint(os.path.join(pretrain["output"], "model.weights.h5"),
                                              len(SOURCE_PHOTOS), pth, source)
        with open(check, "w") as f:
            json.dump({"max_logit_diff": export_diff}, f)
    harness.log(f"[finetune] {pth}: paper-layout PyTorch model vs Keras: max logit diff "
                f"{export_diff:.2e}")
    converted = os.path.join(args.work, "source_ffvit_tiny.weights.h5")
    if not os.path.exists(converted):
        subprocess.run([sys.executable, "-m", "ffzoo.cli", "convert", pth, converted, "--model", MODEL],
                       env=env, cwd=harness.ROOT, check=True)
    result = {
        "benchmark": "finetune", "quick": quick, "model": MODEL,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": harness.machine_description(), "backend": env["KERAS_BACKEND"],
        "versions": harness.library_versions(),
        "source": dict(photos=SOURCE_PHOTOS, train_images=count_images(source, "train"),
                       top1=pretrain["top1"], eval_examples=pretrain["eval_examples"],
                       wall_s=pretrain["wall_s"], export_max_logit_diff=export_diff),
        "targets": {"photos": dict(photos=TARGET_PHOTOS, train=count_images(photos, "train"),
                                   val=count_images(photos, "val")),
                    "digits": dict(train=count_images(digits, "train"), val=count_images(digits, "val"),
                                   image_size=224)},
        "target_epochs": args.epochs or "the finetune recipe's (30)",
        "runs": [],
    }

    def write():  # after every run: a stopped benchmark keeps what it measured
        result["total_s"] = time.perf_counter() - started
        if not quick:
            os.makedirs(os.path.dirname(args.result), exist_ok=True)
            with open(args.result, "w") as f:
                json.dump(result, f, indent=2)

    # 3. Each target from the checkpoint and from scratch, the recipe's defaults otherwise.
    common = ["--recipe", "finetune", "--model", MODEL, "--eval-split", "val", *epochs]
    contenders = [(f"{target}-{start}", target, start, folder, ["--weights", weights])
                  for target, folder, checkpoint in (("photos", photos, pth), ("digits", digits, converted))
                  for start, weights in (("checkpoint", checkpoint), ("scratch", "none"))
                  if target in args.targets.split(",")]
    if not args.no_linear_rule and "photos" in args.targets.split(","):
        contenders.append(("photos-checkpoint-linear-rule", "photos", "checkpoint, old linear LR rule",
                           photos, ["--weights", pth, "--lr-scaling", "linear",
                                    "--lr-batch-reference", "512"]))
    for name, target, start, folder, extra in contenders:
        if args.collect_only:
            if not os.path.exists(os.path.join(args.work, "runs", name, "summary.json")):
                harness.log(f"[finetune] {name}: not run")
                continue
            row = collect(name, args.work)
        else:
            row = train(name, common + ["--data", folder, *extra], args.work, env)
        row = {k: v for k, v in row.items() if k != "output"}
        result["runs"].append(dict(row, target=target, start=start,
                                   train_images=count_images(folder, "train")))
        write()

    print(f"Fine-tuning {MODEL} from a converted checkpoint vs from scratch (finetune recipe "
          f"defaults; backend {env['KERAS_BACKEND']}; {harness.machine_description()})")
    print(f"source: {count_images(source, 'train')} crops of {len(SOURCE_PHOTOS)} photos, "
          f"top-1 {pretrain['top1']:.2%} on {pretrain['eval_examples']} held out, "
          f"{pretrain['wall_s']:.0f} s; export check: max logit diff {export_diff:.2e}")
    print(f"{'target':8} {'start':32} {'train':>5} {'held out':>8} {'top-1':>7} {'peak lr':>8} "
          f"{'wall s':>7}")
    for r in result["runs"]:
        print(f"{r['target']:8} {r['start']:32} {r['train_images']:5d} {r['eval_examples']:8d} "
              f"{r['top1']:7.2%} {r['peak_lr']:8.2g} {r['wall_s']:7.0f}")
    if not quick:
        print(f"wrote {args.result}")
    return result


if __name__ == "__main__":
    main()
