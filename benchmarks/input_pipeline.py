"""Input-pipeline throughput: ffzoo.data against a PyTorch DataLoader doing the same work.

    python -m benchmarks.input_pipeline [--images 2000] [--folder .cache/bench_images]

On a generated folder of ImageNet-like JPEGs (500 x 375, quality 90, made from real
photos shipped by scikit-image), it times one epoch at a time, alternating:
- ffzoo.data's training transform with only crop / flip / resize / normalize on (also
  with `pil_exact_resize`), and its evaluation transform (resize 256, center crop 224,
  normalize);
- the baseline a PyTorch user would write: `torch.utils.data.DataLoader` with one worker
  per core doing the same steps with PIL (torchvision's algorithms, no torchvision);
- ffzoo's full DeiT training transform (RandAugment, erasing, Mixup/CutMix), for scale.
Then FF-Tiny training steps/s at batch 64, fed by the pipeline and by the same batches
held in memory. Prints a table and writes a JSON result.
"""

import argparse
import dataclasses
import datetime
import json
import math
import os
import random
import time

import numpy as np

from benchmarks import harness

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
TRAIN, TORCH_TRAIN = "ffzoo train (crop/flip/resize/normalize)", "PyTorch DataLoader + PIL, train"
EVAL, TORCH_EVAL = "ffzoo eval (resize 256, crop 224)", "PyTorch DataLoader + PIL, eval"


def make_folder(folder, count, size=(500, 375), quality=90, classes=10):
    """`count` JPEGs from random crops, flips and scales of scikit-image's photos."""
    import skimage.data
    from PIL import Image

    if os.path.isdir(folder) and sum(len(f) for _, _, f in os.walk(folder)) >= count:
        return
    photos = [getattr(skimage.data, n)() for n in
              ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "motorcycle_left")
              if hasattr(skimage.data, n)]
    photos = [p if p.ndim == 3 else np.stack([p] * 3, -1) for p in photos]
    rng = np.random.default_rng(0)
    harness.log(f"[input_pipeline] writing {count} JPEGs to {folder}")
    for i in range(count):
        photo = photos[i % len(photos)]
        scale = rng.uniform(1.0, 2.0)
        image = Image.fromarray(photo).resize((int(photo.shape[1] * scale), int(photo.shape[0] * scale)))
        left = int(rng.integers(0, max(1, image.width - size[0])))
        top = int(rng.integers(0, max(1, image.height - size[1])))
        image = image.crop((left, top, left + size[0], top + size[1]))
        if rng.random() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        target = os.path.join(folder, "train", f"n{i % classes:08d}")
        os.makedirs(target, exist_ok=True)
        image.save(os.path.join(target, f"{i:06d}.JPEG"), quality=quality)


class PILDataset:
    """What a PyTorch user writes without torchvision: PIL decode, crop, resize, normalize."""

    def __init__(self, files, training, size=224):
        self.files, self.training, self.size = files, training, size

    def __len__(self):
        return len(self.files)

    def _crop_box(self, width, height):  # torchvision's RandomResizedCrop.get_params
        area = width * height
        for _ in range(10):
            target = area * random.uniform(0.08, 1.0)
            aspect = math.exp(random.uniform(math.log(3 / 4), math.log(4 / 3)))
            w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                top, left = random.randint(0, height - h), random.randint(0, width - w)
                return left, top, left + w, top + h
        return 0, 0, width, height

    def __getitem__(self, index):
        import torch
        from PIL import Image

        with Image.open(self.files[index]) as image:
            image = image.convert("RGB")
            if self.training:
                image = image.crop(self._crop_box(*image.size)).resize((self.size, self.size), Image.BICUBIC)
                if random.random() < 0.5:
                    image = image.transpose(Image.FLIP_LEFT_RIGHT)
            else:
                w, h = image.size
                short = int(self.size / 0.875)
                new = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
                image = image.resize(new, Image.BICUBIC)
                left = int(round((new[0] - self.size) / 2.0))
                top = int(round((new[1] - self.size) / 2.0))
                image = image.crop((left, top, left + self.size, top + self.size))
            pixels = (np.asarray(image, np.float32) / 255.0 - MEAN) / STD
        return torch.from_numpy(pixels.transpose(2, 0, 1).copy()), 0


def torch_loader(files, training, batch):
    import torch

    return torch.utils.data.DataLoader(PILDataset(files, training), batch_size=batch,
                                       num_workers=os.cpu_count(), shuffle=training,
                                       persistent_workers=True, drop_last=training)


def epoch_rate(iterable, skip=2):
    """Images per second over one epoch, after `skip` warm-up batches.

    The clock stops at the last batch, while the iterator is still held: tearing a
    tf.data iterator down sometimes waits ~2 s for its autotuning thread, a cost
    per epoch, not per image, that would halve the rate of a 2,000-image epoch.
    """
    iterator = iter(iterable)
    count, start, end = 0, None, None
    for i, batch in enumerate(iterator):
        if i == skip:
            start = time.perf_counter()
        elif i > skip:
            count += len(batch[0])
            end = time.perf_counter()
    return count / (end - start)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--folder", default=os.path.join(harness.ROOT, ".cache", "bench_images"))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--train-steps", type=int, default=4)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    make_folder(args.folder, args.images)

    import keras

    import ffzoo
    import ffzoo.data as fd

    basic = fd.Augment(randaugment=None, random_erasing=0.0, mixup_alpha=0.0, cutmix_alpha=0.0,
                       label_smoothing=0.0)
    ffzoo_train = fd.load(args.folder, "train", batch_size=args.batch, augment=basic, num_classes=10)
    ffzoo_exact = fd.load(args.folder, "train", batch_size=args.batch, num_classes=10,
                          augment=dataclasses.replace(basic, pil_exact_resize=True))
    ffzoo_deit = fd.load(args.folder, "train", batch_size=args.batch, num_classes=10)
    ffzoo_eval = fd.load(args.folder, "train", training=False, batch_size=args.batch)
    files = ffzoo_eval.source.files
    contenders = {
        TRAIN: lambda: epoch_rate(ffzoo_train.dataset),
        TORCH_TRAIN: lambda: epoch_rate(baseline_train),
        "ffzoo train, PIL-exact resize": lambda: epoch_rate(ffzoo_exact.dataset),
        EVAL: lambda: epoch_rate(ffzoo_eval.dataset),
        TORCH_EVAL: lambda: epoch_rate(baseline_eval),
        "ffzoo train, full DeiT recipe": lambda: epoch_rate(ffzoo_deit.dataset),
    }
    baseline_train = torch_loader(files, True, args.batch)
    baseline_eval = torch_loader(files, False, args.batch)
    rates = {name: [] for name in contenders}
    for round_ in range(args.rounds):
        for name, run in contenders.items():
            rates[name].append(run())
            harness.log(f"[input_pipeline] round {round_ + 1}: {name}: {rates[name][-1]:.0f} images/s")
    best = {name: max(values) for name, values in rates.items()}

    # FF-Tiny training, fed by the pipeline vs by the same batches already in memory,
    # in steady state (warm iterators), interleaved round by round.
    model = ffzoo.FFViTTiny(classes=10, classifier_activation=None)
    model.compile(optimizer=keras.optimizers.AdamW(1e-4),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    memory = [(x.numpy(), y.numpy()) for x, y in ffzoo_deit.dataset.take(args.train_steps)]
    model.train_on_batch(*memory[0])
    feeds = {"in memory": lambda: iter(memory * 1000),
             "pipeline": lambda: ffzoo_deit.dataset.repeat().as_numpy_iterator()}
    iterators = {name: make() for name, make in feeds.items()}
    for iterator in iterators.values():
        next(iterator)

    def steps_per_s(iterator):
        start = time.perf_counter()
        for _ in range(args.train_steps):
            model.train_on_batch(*next(iterator))
        return args.train_steps / (time.perf_counter() - start)

    fed = {name: [] for name in feeds}
    for round_ in range(args.rounds):
        for name, iterator in iterators.items():
            fed[name].append(steps_per_s(iterator))
            harness.log(f"[input_pipeline] round {round_ + 1}: FF-Tiny training fed {name}: "
                        f"{fed[name][-1]:.3f} steps/s")
    fed = {k: max(v) for k, v in fed.items()}
    result = {
        "machine": harness.machine_description(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "backend": keras.backend.backend(),
        "images": args.images,
        "batch": args.batch,
        "images_per_s": best,
        "train_ratio_vs_pytorch": best[TRAIN] / best[TORCH_TRAIN],
        "eval_ratio_vs_pytorch": best[EVAL] / best[TORCH_EVAL],
        # each round's ffzoo rate over the baseline's rate of the same round
        "train_ratio_per_round": [a / b for a, b in zip(rates[TRAIN], rates[TORCH_TRAIN])],
        "eval_ratio_per_round": [a / b for a, b in zip(rates[EVAL], rates[TORCH_EVAL])],
        "fit_steps_per_s": fed,
        "fit_pipeline_over_memory": fed["pipeline"] / fed["in memory"],
    }
    print(json.dumps(result, indent=2))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
