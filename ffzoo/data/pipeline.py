"""`ffzoo.data.load`: batched `(images, labels)` tf.data pipelines for fit / evaluate."""

import dataclasses
import math
import threading
import warnings

import keras
import tensorflow as tf

from ffzoo import preprocessing
from ffzoo.data import ops, randaugment, sources

AUTOTUNE = tf.data.AUTOTUNE


@dataclasses.dataclass
class Augment:
    """The DeiT training transform; each stage is switched off by `None` / `0` / `False`.

    Stages in order: random resized crop fused with JPEG decoding (area `crop_scale`,
    aspect `crop_ratio`, bicubic resize: PIL's bit for bit with `pil_exact_resize`,
    else a faster float resize close to it, see `_train_crop`;
    `random_resized_crop=False` resizes and center-crops like evaluation),
    horizontal flip (probability `hflip`), RandAugment
    (a timm policy string), normalization, random erasing (probability), and, per
    batch, Mixup / CutMix with label smoothing producing soft labels.
    """

    random_resized_crop: bool = True
    crop_scale: tuple = (0.08, 1.0)
    crop_ratio: tuple = (3 / 4, 4 / 3)
    pil_exact_resize: bool = False
    hflip: float = 0.5
    randaugment: str = "rand-m9-mstd0.5-inc1"
    random_erasing: float = 0.25
    mixup_alpha: float = 0.8
    cutmix_alpha: float = 1.0
    mix_probability: float = 1.0
    switch_probability: float = 0.5
    label_smoothing: float = 0.1

    @classmethod
    def from_dict(cls, values):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown augmentation settings {unknown}; known: {sorted(known)}.")
        return cls(**values)

    @classmethod
    def off(cls):
        """No augmentation: resize and center-crop, hard one-hot labels."""
        return cls(random_resized_crop=False, hflip=0.0, randaugment=None, random_erasing=0.0,
                   mixup_alpha=0.0, cutmix_alpha=0.0, label_smoothing=0.0)


class SkipLog:
    """Names of the files a pipeline skipped because they could not be decoded."""

    def __init__(self):
        self.names = []
        self.reported = 0
        self._lock = threading.Lock()

    def add(self, name):  # called from tf.data through tf.py_function
        with self._lock:
            self.names.append(name.numpy().decode("utf-8", errors="replace"))
        return False

    def take_new(self):
        with self._lock:
            new = self.names[self.reported:]
            self.reported = len(self.names)
        return new


@dataclasses.dataclass
class Pipeline:
    """What `load` returns: the dataset and what is known about it."""

    dataset: tf.data.Dataset
    source: object
    split: str
    training: bool
    batch_size: int
    num_examples: int  # on this host (None when unknown)
    class_names: list
    skipped: SkipLog

    @property
    def num_classes(self):
        return len(self.class_names) if self.class_names else None

    @property
    def steps_per_epoch(self):
        if self.num_examples is None:
            return None
        if self.training:
            return self.num_examples // self.batch_size
        return math.ceil(self.num_examples / self.batch_size)

    def report_skipped(self, when=""):
        """Warns with the count and names of files skipped since the last report."""
        new = self.skipped.take_new()
        if new:
            shown = ", ".join(new[:20]) + (f", ... ({len(new)} in all)" if len(new) > 20 else "")
            warnings.warn(f"ffzoo.data: skipped {len(new)} unreadable file(s) of "
                          f"{self.source.description}{' ' + when if when else ''}: {shown}", stacklevel=2)
        return new

    def callback(self):
        """A Keras callback that reports skipped files at the end of every epoch."""
        return SkippedFilesCallback(self)


class SkippedFilesCallback(keras.callbacks.Callback):
    def __init__(self, *pipelines):
        super().__init__()
        self.pipelines = pipelines

    def on_epoch_end(self, epoch, logs=None):
        for pipeline in self.pipelines:
            pipeline.report_skipped(f"in epoch {epoch + 1}")

    def on_test_end(self, logs=None):
        for pipeline in self.pipelines:
            pipeline.report_skipped("in evaluation")


def _seeds(seed):
    """An endless dataset of `[2]` int64 stateless seeds (new ones every epoch)."""
    return tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)


# libjpeg's accurate integer IDCT (JDCT_ISLOW) with fancy upsampling: what Pillow
# decodes with, so a JPEG decodes to PIL's pixels exactly (TensorFlow's default, the
# fast IDCT, differs from PIL by up to ~20 levels). Both IDCTs cost the same here.
DCT_METHOD = "INTEGER_ACCURATE"
# Columns decoded on each side of a JPEG window and dropped: fancy upsampling of
# subsampled chroma treats the decoded region's edge as the image's edge, so without
# them the window's first and last column differ from a full decode.
_WINDOW_MARGIN = 2


def _decode_any(image_bytes):
    return tf.io.decode_image(image_bytes, channels=3, expand_animations=False)


def _decode_window(image_bytes, plan):
    """Decodes only the pixels `plan(height, width) -> (window, extra)` asks for.

    `window` is `(top, left, h, w)`; `extra` is whatever else the plan computed from
    the image size (resize taps), handed back: returns `(pixels, extra)`. JPEGs are
    decoded window-only (`decode_and_crop_jpeg`, a few columns wider, see
    `_WINDOW_MARGIN`), to exactly the pixels of PIL's full decode; other formats
    (PNG, GIF, BMP, also when named .JPEG) are decoded whole and sliced.
    """
    def from_jpeg():
        shape = tf.image.extract_jpeg_shape(image_bytes)
        (top, left, h, w), extra = plan(shape[0], shape[1])
        start = tf.maximum(left - _WINDOW_MARGIN, 0)
        stop = tf.minimum(left + w + _WINDOW_MARGIN, shape[1])
        wider = tf.image.decode_and_crop_jpeg(image_bytes, tf.stack([top, start, h, stop - start]),
                                              channels=3, dct_method=DCT_METHOD)
        return wider[:, left - start:left - start + w], extra

    def from_other():
        image = _decode_any(image_bytes)
        (top, left, h, w), extra = plan(tf.shape(image)[0], tf.shape(image)[1])
        return image[top:top + h, left:left + w], extra

    return tf.cond(tf.io.is_jpeg(image_bytes), from_jpeg, from_other)


def _mirrored(taps, flip):
    """The taps of the left-right mirrored output (`flip` a boolean tensor, or None):
    the same output columns in reverse order, so flipping costs nothing."""
    if flip is None:
        return taps
    rows, row_weights, cols, col_weights = taps
    return (rows, row_weights, tf.where(flip, tf.reverse(cols, [0]), cols),
            tf.where(flip, tf.reverse(col_weights, [0]), col_weights))


def _train_crop(image_bytes, seed, image_size, augment, flip=None):
    """Random resized crop fused with decoding, resized to `image_size` (bicubic).

    By default the resize is TensorFlow's antialiased Keys cubic (`a = -0.5`, PIL's
    bicubic kernel, widened when shrinking as PIL widens it) in float32, rounded to
    uint8 once (`ops.resize_bicubic`). PIL instead rounds and clips to uint8 between
    its horizontal and vertical pass, so the two differ by ~0.2 level on average and
    up to ~10 levels on single pixels at sharp edges; the float resize costs about a
    third of the exact integer resampling. With `augment.pil_exact_resize` the
    crop is PIL's `crop(box).resize(size, BICUBIC)` bit for bit, with the evaluation
    transform's resampling code.
    """
    tf_ops = preprocessing.tf_ops()

    def plan(height, width):
        window = ops.random_resized_crop_window(seed, height, width, augment.crop_scale, augment.crop_ratio)
        if not augment.pil_exact_resize:
            return window, ()
        # Taps in the crop's own coordinates: a resize reads every pixel of its input.
        return window, _mirrored(preprocessing.resize_taps(tf_ops, window[2], window[3], image_size, image_size), flip)

    crop, taps = _decode_window(image_bytes, plan)
    if augment.pil_exact_resize:
        return preprocessing.resample(tf_ops, crop, taps)
    image = tf.saturate_cast(tf.round(ops.resize_bicubic(crop, (image_size, image_size))), tf.uint8)
    return image if flip is None else ops.flip(image, flip)


def _eval_crop(image_bytes, image_size, crop_pct, flip=None):
    """DeiT's evaluation resize and center crop: the code of `ffzoo.preprocess_image`."""
    tf_ops = preprocessing.tf_ops()
    resize = preprocessing.eval_resize_size(image_size, crop_pct)

    def plan(height, width):
        taps = _mirrored(preprocessing.center_crop_taps(tf_ops, height, width, image_size, resize), flip)
        window = preprocessing.input_window(tf_ops, taps)
        return window, (taps, window[:2])

    pixels, (taps, origin) = _decode_window(image_bytes, plan)
    return preprocessing.resample(tf_ops, pixels, taps, origin=origin)


_TAIL = 4096  # a JPEG's end marker / a PNG's IEND chunk must lie in the last 4 KiB


def _bytes_at(data, start, length):
    return tf.io.decode_raw(tf.strings.substr(data, start, length), tf.uint8)


def _contains(haystack, needle):
    """Whether the uint8 vector `haystack` contains the byte sequence `needle`."""
    n = len(needle)
    size = tf.shape(haystack)[0] - n + 1
    found = tf.ones([tf.maximum(size, 0)], tf.bool)
    for i, byte in enumerate(needle):
        found &= haystack[i: i + tf.maximum(size, 0)] == byte
    return tf.reduce_any(found)


def _starts(head, prefix):
    n = len(prefix)
    enough = tf.shape(head)[0] >= n
    padded = tf.concat([head, tf.zeros([n], tf.uint8)], 0)[:n]
    return enough & tf.reduce_all(tf.equal(padded, tf.constant(list(prefix), tf.uint8)))


def _complete(data):
    """The full check (see `readable`)."""
    length = tf.strings.length(data)
    head = _bytes_at(data, 0, 12)
    tail = _bytes_at(data, tf.maximum(length - _TAIL, 0), _TAIL)
    is_jpeg = _starts(head, b"\xff\xd8\xff")
    is_png = _starts(head, b"\x89PNG\r\n\x1a\n")
    other = _starts(head, b"GIF8") | _starts(head, b"BM") | (_starts(head, b"RIFF") & _starts(head[8:], b"WEBP"))
    complete_jpeg = is_jpeg & _contains(tail, b"\xff\xd9")
    complete_png = is_png & _contains(tail, b"IEND")
    return (length > 0) & (complete_jpeg | complete_png | other)


def readable(data):
    """A cheap check of encoded image bytes, before decoding (which would raise).

    False for empty files, unknown formats, JPEGs without their end-of-image marker
    and PNGs without their IEND chunk (the signature of a truncated file). A JPEG
    that starts and ends with its markers passes at once; anything else is looked
    at more closely (markers anywhere in the last 4 KiB, other formats).
    """
    length = tf.strings.length(data)
    plain_jpeg = ((tf.strings.substr(data, 0, 3) == b"\xff\xd8\xff")
                  & (tf.strings.substr(data, tf.maximum(length - 2, 0), 2) == b"\xff\xd9"))
    return tf.cond(plain_jpeg, lambda: tf.constant(True), lambda: _complete(data))


def _drop_unreadable(examples, skipped):
    """Drops `(image, label, readable, name)` examples that failed `readable`, logging
    their names in `skipped`; yields `(image, label)`."""

    def keep(image, label, ok, name):
        return tf.cond(ok, lambda: tf.constant(True), lambda: tf.py_function(skipped.add, [name], tf.bool))

    return examples.filter(keep).map(lambda image, label, ok, name: (image, label))


def load(source, split="train", *, training=None, batch_size=128, image_size=224,
         augment=None, crop_pct=preprocessing.DEFAULT_CROP_PCT, mean=preprocessing.IMAGENET_MEAN,
         std=preprocessing.IMAGENET_STD, seed=None, shuffle=None, shuffle_buffer=10_000,
         drop_remainder=None, shard=None, pad_final_batch=False, one_hot_labels=None,
         repeats=1, data_dir=None, manual_dir=None, labels_file=None, label_offset=-1,
         class_names=None, num_classes=1000, skip_bad_files=True, parallel=AUTOTUNE):
    """Batched `(images, labels)` for `model.fit` / `model.evaluate`, on any Keras backend.

    Args:
        source: a folder of images (`<split>/<class>/*.JPEG`, or a flat split folder
            with `labels_file`); a glob of TFRecord shards or a folder of `<split>-*`
            shards (`"tfrecord:"` prefix to force); a TFDS dataset name such as
            `"imagenet2012"` (`"tfds:"` prefix to force); or a source object from
            `ffzoo.data.sources`.
        split: `"train"`, `"validation"`, a folder name, or a TFDS split.
        training: the DeiT training transform (default: `split == "train"`); else the
            evaluation transform (resize shorter side to `int(image_size / crop_pct)`,
            center crop), identical to `ffzoo.preprocess_image`.
        batch_size: examples per batch (global batch on one host).
        augment: an `Augment`, a dict of its fields, or None (the DeiT defaults).
        seed: with a seed, the order and every augmentation repeat run to run.
        shuffle: file- and example-level shuffling (default: when training).
        drop_remainder: default True when training; evaluation keeps the last partial
            batch so every example is seen exactly once.
        shard: `(host_index, host_count)` for multi-host input.
        pad_final_batch: evaluation only: pad the last batch to `batch_size` and yield
            `(images, labels, sample_weights)` with weight 0 on the padding.
        one_hot_labels: dense labels for evaluation (training labels are always dense,
            soft when mixing or smoothing).
        repeats: DeiT's repeated augmentation (training): an epoch keeps its length but
            holds `ceil(N / repeats)` images, each `repeats` times, augmented apart.
        labels_file, label_offset, class_names, num_classes, data_dir, manual_dir:
            source options (see `ffzoo.data.sources`).
        skip_bad_files: drop unreadable files (empty, unknown format, truncated: see
            `readable`) and report them by name (`Pipeline.callback()`). A file that
            passes the check but still fails to decode (corrupt data inside) stops
            the pipeline with TensorFlow's error, as every file does with False.

    Returns:
        A `Pipeline` (`.dataset`, `.num_examples`, `.class_names`, `.steps_per_epoch`,
        `.callback()`).
    """
    training = split == "train" if training is None else training
    shuffle = training if shuffle is None else shuffle
    drop_remainder = training if drop_remainder is None else drop_remainder
    if pad_final_batch and training:
        raise ValueError("pad_final_batch is for evaluation pipelines (training=False).")
    if isinstance(augment, dict):
        augment = Augment.from_dict(augment)
    augment = augment or Augment()
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
    source = sources.resolve(source, split, data_dir=data_dir, manual_dir=manual_dir,
                             labels_file=labels_file, label_offset=label_offset,
                             class_names=class_names, num_classes=num_classes)
    if hasattr(source, "prepare"):
        source.prepare()
    deterministic = seed is not None
    names = list(source.class_names) if source.class_names else None
    classes = len(names) if names else num_classes

    records = source.dataset(shuffle_files=shuffle, seed=seed, shard=shard, parallel=parallel)
    if shuffle and not source.files_are_examples:
        records = records.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    count = source.examples_in_shard(shard)
    if repeats > 1:
        if not training:
            raise ValueError("repeats (repeated augmentation) is for training pipelines.")
        distinct = records if count is None else records.take(math.ceil(count / repeats))
        records = distinct.flat_map(lambda r: tf.data.Dataset.from_tensors(r).repeat(repeats))
        if count is not None:
            records = records.take(count)
    records = tf.data.Dataset.zip(records, _seeds(seed))
    # Random erasing works on single normalized images; without it the images are
    # batched as uint8 and normalized a batch at a time.
    erase = training and augment.random_erasing

    def normalized(images):
        return images if erase else ops.normalize(images, mean, std)

    def transform(image_bytes, seed):
        crop_seed, flip_seed, augment_seed, erase_seed = ops.split_seed(seed, 4)
        flip = ops.flip_coin(flip_seed, augment.hflip) if training and augment.hflip else None
        if training and augment.random_resized_crop:
            image = _train_crop(image_bytes, crop_seed, image_size, augment, flip)
        else:
            image = _eval_crop(image_bytes, image_size, crop_pct, flip)
        if training and augment.randaugment:
            image = randaugment.rand_augment(image, augment_seed, **randaugment.parse_policy(augment.randaugment))
        if erase:
            image = ops.random_erasing(ops.normalize(image, mean, std), erase_seed, augment.random_erasing)
        return tf.ensure_shape(image, (image_size, image_size, 3))

    def per_image(record, seed):
        if not skip_bad_files:
            return transform(record["image"], seed), record["label"]
        # Checked here, in parallel, rather than in a (sequential) filter before.
        ok = readable(record["image"])
        blank = tf.zeros((image_size, image_size, 3), tf.float32 if erase else tf.uint8)
        image = tf.cond(ok, lambda: transform(record["image"], seed), lambda: blank)
        return image, record["label"], ok, record["name"]

    skipped = SkipLog()
    batches = records.map(per_image, num_parallel_calls=parallel, deterministic=deterministic)
    if skip_bad_files:
        batches = _drop_unreadable(batches, skipped)

    batches = batches.batch(batch_size, drop_remainder=drop_remainder,
                            num_parallel_calls=parallel, deterministic=deterministic)
    if training:
        def mix(images, labels, seed):
            return ops.mixup_cutmix(normalized(images), labels, seed, classes, augment.mixup_alpha,
                                    augment.cutmix_alpha, augment.switch_probability,
                                    augment.mix_probability, augment.label_smoothing)
        batches = tf.data.Dataset.zip(batches, _seeds(None if seed is None else seed + 1))
        batches = batches.map(lambda b, s: mix(b[0], b[1], s), num_parallel_calls=parallel,
                              deterministic=deterministic)
    elif one_hot_labels:
        batches = batches.map(lambda x, y: (normalized(x), tf.one_hot(y, classes)),
                              num_parallel_calls=parallel, deterministic=deterministic)
    else:
        batches = batches.map(lambda x, y: (normalized(x), y), num_parallel_calls=parallel,
                              deterministic=deterministic)
    if pad_final_batch:
        batches = batches.map(lambda x, y: _pad_batch(x, y, batch_size))
    options = tf.data.Options()
    options.deterministic = deterministic
    batches = batches.with_options(options).prefetch(AUTOTUNE)
    return Pipeline(dataset=batches, source=source, split=split, training=training,
                    batch_size=batch_size, num_examples=count,
                    class_names=names, skipped=skipped)


def _pad_batch(images, labels, batch_size):
    count = tf.shape(images)[0]
    missing = batch_size - count
    pad = lambda t: tf.concat([t, tf.zeros(tf.concat([[missing], tf.shape(t)[1:]], 0), t.dtype)], 0)
    weights = tf.concat([tf.ones([count]), tf.zeros([missing])], 0)
    return pad(images), pad(labels), weights
