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
    """The training transform of `load`; each stage is switched off by `None` / `0` / `False`.

    Stages in order: random resized crop fused with JPEG decoding (area `crop_scale`,
    aspect `crop_ratio`, bicubic resize: PIL's bit for bit with `pil_exact_resize`,
    else a faster float resize close to it, see `_train_crop`;
    `random_resized_crop=False` resizes and center-crops like evaluation),
    horizontal flip (probability `hflip`), RandAugment
    (a timm policy string), normalization, random erasing (probability), and, per
    batch, Mixup / CutMix with label smoothing producing soft labels.

    The defaults are what `load` applies when it is given no `augment`: DeiT's training
    transform (facebookresearch/deit `main.py`'s argument defaults, which the paper's
    runs used), with the faster float crop resize. They are this library's default,
    not a training recipe: `python -m training.train` sets every field from its recipe
    (training/recipes/*.py), and a test checks that these defaults equal the `deit`
    recipe's values (tests/test_training_recipes.py).
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
    """The files a pipeline skipped because they could not be decoded, each listed once
    (in the order first skipped), and why (`reasons[i]`, from `SKIP_REASONS`).

    A file skipped again (in every epoch, or once per copy under repeated augmentation)
    is not listed again; records without a name (TFRecords lacking `image/filename`)
    are listed every time, as `""`.
    """

    def __init__(self):
        self.names = []
        self.reasons = []
        self.reported = 0
        self._seen = set()
        self._lock = threading.Lock()

    def add(self, name, code=None):  # called from tf.data through tf.py_function
        name = name.numpy().decode("utf-8", errors="backslashreplace")
        with self._lock:
            if name and name in self._seen:
                return False
            self._seen.add(name)
            self.names.append(name)
            self.reasons.append(SKIP_REASONS.get(int(code), "unreadable") if code is not None else "unreadable")
        return False

    def take_new(self, with_reasons=False):
        with self._lock:
            new = self.names[self.reported:]
            why = self.reasons[self.reported:]
            self.reported = len(self.names)
        return list(zip(new, why)) if with_reasons else new


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
        """Warns with the count and names of the files first skipped since the last
        report (each file is reported once), naming this pipeline's split."""
        new = self.skipped.take_new(with_reasons=True)
        if new:
            shown = ", ".join(f"{name} ({why})" for name, why in new[:20])
            shown += f", ... ({len(new)} in all)" if len(new) > 20 else ""
            warnings.warn(f"ffzoo.data: skipped {len(new)} unreadable file(s) of the {self.split!r} split "
                          f"({self.source.description}){' ' + when if when else ''}: {shown}", stacklevel=2)
        return [name for name, _ in new]

    def callback(self):
        """A Keras callback that reports skipped files at the end of every epoch."""
        return SkippedFilesCallback(self)


class SkippedFilesCallback(keras.callbacks.Callback):
    """Reports the files `pipelines` skipped: evaluation pipelines when an evaluation
    ends (`fit`'s validation, `evaluate`), every pipeline at the end of an epoch (a
    training pipeline's files then, not as "in evaluation" when `fit` validates
    before the epoch ends)."""

    def __init__(self, *pipelines):
        super().__init__()
        self.pipelines = pipelines

    def on_epoch_end(self, epoch, logs=None):
        for pipeline in self.pipelines:
            pipeline.report_skipped(f"in epoch {epoch + 1}")

    def on_test_end(self, logs=None):
        for pipeline in self.pipelines:
            if not pipeline.training:
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


# Pillow's default Image.MAX_IMAGE_PIXELS (its decompression-bomb limit): about 0.25 GiB
# of RGB pixels. A 1 MB PNG can declare 20000 x 20000 pixels (1.2 GB decoded).
MAX_IMAGE_PIXELS = 89_478_485

# What `check_image` finds (0: decodable); SKIP_REASONS[code] says why a file is skipped.
SKIP_REASONS = {
    1: "empty",
    2: "not a JPEG, PNG, GIF, BMP or WebP",
    3: "truncated",
    4: "corrupt header",
    5: "over the pixel limit",
    6: "a BMP TensorFlow cannot decode (only uncompressed 24- and 32-bit, or 8-bit gray)",
    7: "an animated WebP (TensorFlow decodes those only as RGBA frames)",
}
_EMPTY, _UNKNOWN, _TRUNCATED, _CORRUPT, _TOO_LARGE, _BMP, _ANIMATED = range(1, 8)
_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the 12 bytes that end a PNG


def _pixels_code(height, width, max_pixels):
    """0, or why an image of this size is refused (`max_pixels` None: no limit)."""
    if height <= 0 or width <= 0:
        return _CORRUPT
    return _TOO_LARGE if max_pixels is not None and height * width > max_pixels else 0


def _jpeg_code(data, max_pixels):
    """Walks the marker segments to the end-of-image marker (any trailer after it is
    fine: libjpeg stops there), reading the size from the frame header."""
    n, i, size = len(data), 2, None
    while True:
        if i >= n:
            return _TRUNCATED
        if data[i] != 0xFF:
            return _CORRUPT
        while i < n and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= n:
            return _TRUNCATED
        marker, i = data[i], i + 1
        if marker == 0xD9:  # end of image
            return _CORRUPT if size is None else _pixels_code(*size, max_pixels)
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # restart markers, TEM: no length
            continue
        if i + 2 > n:
            return _TRUNCATED
        length = int.from_bytes(data[i:i + 2], "big")
        if length < 2:
            return _CORRUPT
        if i + length > n:
            return _TRUNCATED
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
            if length < 7:
                return _CORRUPT
            size = int.from_bytes(data[i + 3:i + 5], "big"), int.from_bytes(data[i + 5:i + 7], "big")
        i += length
        if marker == 0xDA:  # start of scan: entropy-coded data up to the next real marker
            while True:
                j = data.find(b"\xff", i)
                if j < 0 or j + 1 >= n:
                    return _TRUNCATED
                if data[j + 1] == 0 or 0xD0 <= data[j + 1] <= 0xD7 or data[j + 1] == 0xFF:
                    i = j + 1  # a stuffed 0xFF, a restart marker, or fill before a marker
                    continue
                i = j
                break


def _png_code(data, max_pixels):
    """Walks the chunks to IEND; the size is IHDR's."""
    n, i, size = len(data), 8, None
    while True:
        if i + 8 > n:
            return _TRUNCATED
        length, kind = int.from_bytes(data[i:i + 4], "big"), data[i + 4:i + 8]
        if i + 12 + length > n:
            return _TRUNCATED
        if size is None:
            if kind != b"IHDR" or length < 8:
                return _CORRUPT
            size = int.from_bytes(data[i + 12:i + 16], "big"), int.from_bytes(data[i + 8:i + 12], "big")
        if kind == b"IEND":
            return _pixels_code(*size, max_pixels)
        i += 12 + length


def _gif_code(data, max_pixels):
    """Walks the blocks: the first frame must be whole (TensorFlow decodes it); later
    frames may be cut off (TensorFlow keeps what it read), but giflib unpacks every
    frame it reads, so their pixels count toward the limit with the screen's."""
    n = len(data)
    if data[:6] not in (b"GIF87a", b"GIF89a"):
        return _CORRUPT
    if n < 13:
        return _TRUNCATED
    width, height, flags = int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little"), data[10]
    i = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)  # global colour table
    frames, frame_pixels = 0, 0

    def after_sub_blocks(i):
        while i < n:
            size = data[i]
            i += 1 + size
            if size == 0:
                return i
        return None

    while i is not None and i < n:
        if data[i] == 0x21:  # extension: label, then sub-blocks
            i = after_sub_blocks(i + 2)
        elif data[i] == 0x2C:  # image descriptor, local colour table, LZW code size, data
            if i + 11 > n:
                break
            frame_pixels += int.from_bytes(data[i + 5:i + 7], "little") * int.from_bytes(data[i + 7:i + 9], "little")
            flags = data[i + 9]
            i = after_sub_blocks(i + 10 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0) + 1)
            frames += i is not None  # a frame counts once its data is whole
        else:  # the trailer (0x3B), or garbage after it
            break
    if not frames:
        return _CORRUPT if i is not None and i < n and data[i] == 0x3B else _TRUNCATED
    code = _pixels_code(height, width, max_pixels)
    return code or _pixels_code(1, frame_pixels, max_pixels)


def _bmp_code(data, max_pixels):
    """Checks the headers, TensorFlow's supported variants, and the pixel array's length."""
    n = len(data)
    if n < 30:
        return _TRUNCATED
    offset, header = int.from_bytes(data[10:14], "little"), int.from_bytes(data[14:18], "little")
    if header < 40:  # OS/2 headers: TensorFlow reads the Windows layout
        return _BMP
    if n < 14 + header:
        return _TRUNCATED
    width = int.from_bytes(data[18:22], "little", signed=True)
    height = abs(int.from_bytes(data[22:26], "little", signed=True))  # negative: top-down
    bits, compression = int.from_bytes(data[28:30], "little"), int.from_bytes(data[30:34], "little")
    if bits not in (8, 24, 32) or compression != 0:
        return _BMP
    if bits == 8:  # TensorFlow ignores the colour table: only a gray ramp decodes right
        colours = int.from_bytes(data[46:50], "little") or 256
        table = data[14 + header:14 + header + 4 * colours]
        if len(table) < 4 * colours:
            return _TRUNCATED
        if any(table[4 * k:4 * k + 3] != bytes((k, k, k)) for k in range(colours)):
            return _BMP
    code = _pixels_code(height, width, max_pixels)
    if code:
        return code
    return _TRUNCATED if offset + (width * bits + 31) // 32 * 4 * height > n else 0


def _webp_code(data, max_pixels):
    """Checks the RIFF length, then reads the size from the first chunk."""
    n = len(data)
    if n < 30:
        return _TRUNCATED
    if 8 + int.from_bytes(data[4:8], "little") > n:
        return _TRUNCATED
    kind, chunk = data[12:16], data[20:30]
    if kind == b"VP8X":
        if chunk[0] & 0x02:
            return _ANIMATED
        width, height = 1 + int.from_bytes(chunk[4:7], "little"), 1 + int.from_bytes(chunk[7:10], "little")
    elif kind == b"VP8 ":
        if chunk[3:6] != b"\x9d\x01\x2a":
            return _CORRUPT
        width, height = int.from_bytes(chunk[6:8], "little") & 0x3FFF, int.from_bytes(chunk[8:10], "little") & 0x3FFF
    elif kind == b"VP8L":
        if chunk[0] != 0x2F:
            return _CORRUPT
        bits = int.from_bytes(chunk[1:5], "little")
        width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    else:
        return _CORRUPT
    return _pixels_code(height, width, max_pixels)


def inspect_bytes(data, max_pixels=MAX_IMAGE_PIXELS):
    """0 when TensorFlow can decode these encoded image bytes, else a `SKIP_REASONS` code.

    Reads the structure (JPEG markers, PNG chunks, GIF blocks, BMP and WebP headers)
    far enough to know the file is whole and how many pixels it holds, without
    decoding any.
    """
    data = bytes(data)
    if not data:
        return _EMPTY
    if data[:3] == b"\xff\xd8\xff":
        return _jpeg_code(data, max_pixels)
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return _png_code(data, max_pixels)
    if data[:4] == b"GIF8":
        return _gif_code(data, max_pixels)
    if data[:2] == b"BM":
        return _bmp_code(data, max_pixels)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_code(data, max_pixels)
    return _UNKNOWN


def _substr(data, start, size):
    """`data[start:start + size]`, empty where the string is shorter (never an error)."""
    length = tf.strings.length(data)
    return tf.strings.substr(data, tf.clip_by_value(start, 0, length), size)


def _be32(data, start):
    """The big-endian int32 at `start` (the caller checked the length)."""
    return tf.bitcast(tf.reverse(tf.io.decode_raw(_substr(data, start, 4), tf.uint8), [0]), tf.int32)


def check_image(data, max_pixels=MAX_IMAGE_PIXELS):
    """`inspect_bytes` as a tf.data op: an int32 code, 0 for a decodable image.

    The common cases stay in TensorFlow: a JPEG that starts and ends with its
    markers (size from its frame header) and a PNG that ends with its IEND chunk
    (size from IHDR). Everything else (GIF, BMP, WebP, a JPEG with a trailer, a
    truncated file) is walked in Python by `inspect_bytes`.
    """
    length = tf.strings.length(data)
    limit = tf.constant(-1 if max_pixels is None else max_pixels, tf.int64)

    def pixels_code(height, width):
        height, width = tf.cast(height, tf.int64), tf.cast(width, tf.int64)
        too_large = (limit >= 0) & (height * width > limit)
        return tf.where((height <= 0) | (width <= 0), _CORRUPT, tf.where(too_large, _TOO_LARGE, 0))

    def jpeg():
        shape = tf.image.extract_jpeg_shape(data)
        return pixels_code(shape[0], shape[1])

    def png():
        return pixels_code(_be32(data, 20), _be32(data, 16))

    def walk():
        return tf.reshape(tf.py_function(lambda d: inspect_bytes(d.numpy(), max_pixels), [data], tf.int32), [])

    plain_jpeg = ((_substr(data, 0, 3) == b"\xff\xd8\xff")
                  & (_substr(data, length - 2, 2) == b"\xff\xd9"))
    plain_png = ((length >= 45) & (_substr(data, 0, 8) == b"\x89PNG\r\n\x1a\n")
                 & (_substr(data, 12, 4) == b"IHDR") & (_substr(data, length - 12, 12) == _IEND))
    return tf.case([(plain_jpeg, jpeg), (plain_png, png)], default=walk)


def readable(data, max_pixels=MAX_IMAGE_PIXELS):
    """Whether `check_image` passes: the bytes are a whole image of a format TensorFlow
    decodes, within the pixel limit. Empty files, unknown formats, truncated files
    (of every format), BMP and WebP variants TensorFlow cannot decode, and images
    of more than `max_pixels` pixels fail, all without decoding."""
    return tf.equal(check_image(data, max_pixels), 0)


def _drop_unreadable(examples, skipped):
    """Drops `(image, label, code, name)` examples whose `check_image` code is not 0,
    logging their names and reasons in `skipped`; yields `(image, label)`."""

    def keep(image, label, code, name):
        return tf.cond(tf.equal(code, 0), lambda: tf.constant(True),
                       lambda: tf.py_function(skipped.add, [name, code], tf.bool))

    return examples.filter(keep).map(lambda image, label, code, name: (image, label))


def load(source, split="train", *, training=None, batch_size=128, image_size=224,
         augment=None, crop_pct=preprocessing.DEFAULT_CROP_PCT, mean=preprocessing.IMAGENET_MEAN,
         std=preprocessing.IMAGENET_STD, seed=None, shuffle=None, shuffle_buffer=10_000,
         drop_remainder=None, shard=None, pad_final_batch=False, one_hot_labels=None,
         repeats=1, data_dir=None, manual_dir=None, labels_file=None, label_offset=-1,
         class_names=None, num_classes=1000, val_fraction=sources.DEFAULT_VAL_FRACTION,
         split_seed=sources.DEFAULT_SPLIT_SEED, skip_bad_files=True,
         max_image_pixels=MAX_IMAGE_PIXELS, parallel=AUTOTUNE):
    """Batched `(images, labels)` for `model.fit` / `model.evaluate`, on any Keras backend.

    Args:
        source: a folder of images (`<split>/<class>/*.JPEG`; `<class>/*.JPEG`, split
            per class by `val_fraction` and `split_seed`; or a flat split folder with
            `labels_file`); a glob of TFRecord shards or a folder of `<split>-*`
            shards (`"tfrecord:"` prefix to force); a TFDS dataset name such as
            `"imagenet2012"` (`"tfds:"` prefix to force); or a source object from
            `ffzoo.data.sources`.
        split: `"train"`, `"validation"`, a folder name, or a TFDS split. For a folder,
            `"val"` and `"validation"` both read `val/` or `validation/`; a folder of
            class folders without split folders holds out `val_fraction` of each
            class as `"val"` / `"validation"` and gives `"train"` the rest (see
            `sources.ImageFolder`).
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
        val_fraction, split_seed: a folder of class folders without split folders:
            the share of each class held out (0.2) and the seed choosing it (0; not
            `seed`, so training and evaluation pipelines split the folder alike).
        skip_bad_files: drop files that cannot be decoded (empty, unknown format,
            truncated, a variant TensorFlow does not decode, over `max_image_pixels`:
            see `check_image`) and report them by name and reason
            (`Pipeline.callback()`). A file that passes the check but still fails to
            decode (corrupt data inside) stops the pipeline with TensorFlow's error,
            as every file does with False.
        max_image_pixels: images declaring more pixels (height x width, read from
            the header before decoding) are skipped as decompression bombs;
            default Pillow's 89,478,485; None for no limit.

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
    preprocessing.check_settings(image_size, crop_pct, mean, std)
    if max_image_pixels is not None and not (isinstance(max_image_pixels, int) and max_image_pixels > 0):
        raise ValueError(f"max_image_pixels must be a positive integer or None; got {max_image_pixels!r}.")
    source = sources.resolve(source, split, data_dir=data_dir, manual_dir=manual_dir,
                             labels_file=labels_file, label_offset=label_offset,
                             class_names=class_names, num_classes=num_classes,
                             val_fraction=val_fraction, split_seed=split_seed)
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
        code = check_image(record["image"], max_image_pixels)
        blank = tf.zeros((image_size, image_size, 3), tf.float32 if erase else tf.uint8)
        image = tf.cond(tf.equal(code, 0), lambda: transform(record["image"], seed), lambda: blank)
        return image, record["label"], code, record["name"]

    skipped = SkipLog()
    batches = records.map(per_image, num_parallel_calls=parallel, deterministic=deterministic)
    if skip_bad_files:
        batches = _drop_unreadable(batches, skipped)

    # Batches leave in order (only the last may be short) even where the images inside
    # them come from a parallel, unordered map.
    batches = batches.batch(batch_size, drop_remainder=drop_remainder,
                            num_parallel_calls=parallel, deterministic=True)
    if training:
        def mix(images, labels, seed):
            return ops.mixup_cutmix(normalized(images), labels, seed, classes, augment.mixup_alpha,
                                    augment.cutmix_alpha, augment.switch_probability,
                                    augment.mix_probability, augment.label_smoothing)
        batches = tf.data.Dataset.zip(batches, _seeds(None if seed is None else seed + 1))
        batches = batches.map(lambda b, s: mix(b[0], b[1], s), num_parallel_calls=parallel,
                              deterministic=True)
    elif one_hot_labels:
        batches = batches.map(lambda x, y: (normalized(x), tf.one_hot(y, classes)),
                              num_parallel_calls=parallel, deterministic=True)
    else:
        batches = batches.map(lambda x, y: (normalized(x), y), num_parallel_calls=parallel,
                              deterministic=True)
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
