"""timm's RandAugment (`rand-m9-mstd0.5-inc1`, DeiT's setting) as TensorFlow ops.

Per image: `num_ops` operations drawn with replacement from the 15 "increasing"
transforms below; each is applied with probability 0.5 at a magnitude drawn from
N(magnitude, magnitude_std) and clipped to [0, 10]; rotations, shears, translations
and the enhancements get a random sign. Only the chosen branch runs (`tf.switch_case`).

The ops follow PIL's definitions (the ones timm calls) on uint8 images. Differences
from timm, all documented in ffzoo/data/README.md: rotations, shears and translations
interpolate bilinearly (TensorFlow's projective transform has no bicubic mode), with
the fill colour blended at the edges; sub-pixel conventions of PIL's affine transform
are not reproduced.
"""

import math

import tensorflow as tf

from ffzoo.data.ops import split_seed

MAX_LEVEL = 10.0
FILL = (124, 116, 104)  # timm's img_mean for ImageNet, as DeiT passes it
OPS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing",
    "SolarizeIncreasing", "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing",
    "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY",
    "TranslateXRel", "TranslateYRel",
)


def _to_uint8(x):
    return tf.cast(tf.clip_by_value(x, 0.0, 255.0), tf.uint8)


def _lookup(image, table):
    """Applies a per-channel 256-entry table `(3, 256)` (int32) to a uint8 image."""
    channels = tf.transpose(tf.cast(image, tf.int32), (2, 0, 1))
    mapped = tf.gather(table, channels, batch_dims=1)
    return tf.cast(tf.transpose(mapped, (1, 2, 0)), tf.uint8)


def _histograms(image):
    channels = tf.reshape(tf.transpose(tf.cast(image, tf.int32), (2, 0, 1)), (3, -1))
    return tf.math.bincount(channels, minlength=256, maxlength=256, axis=-1)


def auto_contrast(image):
    """PIL `ImageOps.autocontrast`: stretch each channel's [min, max] to [0, 255]."""
    flat = tf.cast(tf.reshape(image, (-1, 3)), tf.float32)
    low, high = tf.reduce_min(flat, 0), tf.reduce_max(flat, 0)
    scale = tf.where(high > low, 255.0 / tf.maximum(high - low, 1.0), 1.0)
    offset = tf.where(high > low, -low * scale, 0.0)
    levels = tf.range(256, dtype=tf.float32)[None, :]
    table = tf.clip_by_value(tf.floor(levels * scale[:, None] + offset[:, None]), 0, 255)
    return _lookup(image, tf.cast(table, tf.int32))


def equalize(image):
    """PIL `ImageOps.equalize`: per-channel histogram equalization."""
    hist = _histograms(image)  # (3, 256)
    last = tf.gather(hist, 255 - tf.argmax(tf.reverse(tf.cast(hist > 0, tf.int32), [1]), axis=1,
                                           output_type=tf.int32), batch_dims=1)
    step = (tf.reduce_sum(hist, axis=1) - last) // 255
    safe = tf.maximum(step, 1)
    before = tf.cumsum(hist, axis=1, exclusive=True)
    table = tf.minimum((safe[:, None] // 2 + before) // safe[:, None], 255)
    identity = tf.broadcast_to(tf.range(256), (3, 256))
    return _lookup(image, tf.where(step[:, None] > 0, table, identity))


def invert(image):
    return 255 - image


def posterize(image, bits):
    """PIL `ImageOps.posterize`: keep the top `bits` bits of each value (0 bits: black)."""
    mask = 256 - tf.bitwise.left_shift(1, 8 - tf.clip_by_value(bits, 0, 8))
    return tf.cast(tf.bitwise.bitwise_and(tf.cast(image, tf.int32), mask), tf.uint8)


def solarize(image, threshold):
    return tf.where(tf.cast(image, tf.int32) < threshold, image, 255 - image)


def solarize_add(image, addition, threshold=128):
    added = tf.cast(tf.minimum(tf.cast(image, tf.int32) + addition, 255), tf.uint8)
    return tf.where(tf.cast(image, tf.int32) < threshold, added, image)


def _blend(degenerate, image, factor):
    """PIL `Image.blend(degenerate, image, factor)`, truncating like PIL."""
    degenerate = tf.cast(degenerate, tf.float32)
    mixed = degenerate + factor * (tf.cast(image, tf.float32) - degenerate)
    return _to_uint8(tf.floor(mixed))


def _grayscale(image):
    """PIL's RGB -> L conversion (ITU-R 601-2, rounded fixed point)."""
    rgb = tf.cast(image, tf.int32)
    gray = (rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) // 65536
    return gray[..., None]


def color(image, factor):
    return _blend(tf.repeat(_grayscale(image), 3, axis=-1), image, factor)


def contrast(image, factor):
    mean = tf.floor(tf.reduce_mean(tf.cast(_grayscale(image), tf.float32)) + 0.5)
    return _blend(tf.fill(tf.shape(image), mean), image, factor)


def brightness(image, factor):
    return _blend(tf.zeros_like(image), image, factor)


def sharpness(image, factor):
    """PIL's Sharpness: blend with the SMOOTH filter (3x3, centre 5, sum 13); edges kept."""
    kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], (1, 1, 3, 1))
    pixels = tf.cast(image, tf.float32)[None]
    smooth = tf.nn.depthwise_conv2d(pixels, kernel, strides=(1, 1, 1, 1), padding="VALID")[0]
    smooth = tf.floor(smooth + 0.5)
    inner = tf.pad(smooth, ((1, 1), (1, 1), (0, 0)))
    shape = tf.shape(image)
    rows, cols = tf.range(shape[0])[:, None], tf.range(shape[1])[None, :]
    border = (rows == 0) | (rows == shape[0] - 1) | (cols == 0) | (cols == shape[1] - 1)
    degenerate = tf.where(border[:, :, None], tf.cast(image, tf.float32), inner)
    return _blend(degenerate, image, factor)


def affine(image, matrix):
    """Warps with `matrix` = (a, b, c, d, e, f) mapping output (x, y) to input
    (a x + b y + c, d x + e y + f), like PIL's AFFINE; outside pixels get `FILL`."""
    with_mask = tf.concat([tf.cast(image, tf.float32), tf.ones_like(image[..., :1], tf.float32)], -1)
    transform = tf.concat([tf.cast(matrix, tf.float32), tf.zeros([2], tf.float32)], 0)[None]
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=with_mask[None], transforms=transform, output_shape=tf.shape(image)[:2],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")[0]
    mask = warped[..., 3:]
    out = warped[..., :3] + (1.0 - mask) * tf.constant(FILL, tf.float32)
    return _to_uint8(tf.round(out))


def rotate(image, degrees):
    """PIL `rotate`: counter-clockwise by `degrees` around the image centre."""
    shape = tf.cast(tf.shape(image), tf.float32)
    cx, cy = (shape[1] - 1.0) / 2.0, (shape[0] - 1.0) / 2.0
    theta = -degrees * math.pi / 180.0
    a, b = tf.cos(theta), tf.sin(theta)
    d, e = -tf.sin(theta), tf.cos(theta)
    return affine(image, tf.stack([a, b, cx - a * cx - b * cy, d, e, cy - d * cx - e * cy]))


def _level(magnitude, scale):
    return magnitude / MAX_LEVEL * scale


def _apply(index, image, magnitude, sign):
    """The RandAugment op `OPS[index]` at `magnitude` (0..10); `sign` is +1 or -1."""
    size = tf.cast(tf.shape(image), tf.float32)
    enhance = tf.maximum(0.1, 1.0 + sign * _level(magnitude, 0.9))
    one, zero = tf.constant(1.0), tf.constant(0.0)
    branches = [
        lambda: auto_contrast(image),
        lambda: equalize(image),
        lambda: invert(image),
        lambda: rotate(image, sign * _level(magnitude, 30.0)),
        lambda: posterize(image, 4 - tf.cast(_level(magnitude, 4.0), tf.int32)),
        lambda: solarize(image, 256 - tf.cast(_level(magnitude, 256.0), tf.int32)),
        lambda: solarize_add(image, tf.cast(_level(magnitude, 110.0), tf.int32)),
        lambda: color(image, enhance),
        lambda: contrast(image, enhance),
        lambda: brightness(image, enhance),
        lambda: sharpness(image, enhance),
        lambda: affine(image, tf.stack([one, sign * _level(magnitude, 0.3), zero, zero, one, zero])),
        lambda: affine(image, tf.stack([one, zero, zero, sign * _level(magnitude, 0.3), one, zero])),
        lambda: affine(image, tf.stack([one, zero, sign * _level(magnitude, 0.45) * size[1], zero, one, zero])),
        lambda: affine(image, tf.stack([one, zero, zero, zero, one, sign * _level(magnitude, 0.45) * size[0]])),
    ]
    return tf.switch_case(index, branches)


def rand_augment(image, seed, num_ops=2, magnitude=9.0, magnitude_std=0.5, probability=0.5):
    """Applies timm's RandAugment to one uint8 `(H, W, 3)` image (see the module docstring)."""
    for op_seed in split_seed(seed, num_ops):
        choice_seed, gate_seed, level_seed, sign_seed = split_seed(op_seed, 4)
        index = tf.random.stateless_uniform([], choice_seed, 0, len(OPS), dtype=tf.int32)
        level = magnitude + magnitude_std * tf.random.stateless_normal([], level_seed)
        level = tf.clip_by_value(level, 0.0, MAX_LEVEL)
        sign = tf.where(tf.random.stateless_uniform([], sign_seed) < 0.5, -1.0, 1.0)
        gate = tf.random.stateless_uniform([], gate_seed) < probability
        image = tf.cond(gate, lambda i=index, l=level, s=sign, x=image: _apply(i, x, l, s),
                        lambda x=image: x)
        image = tf.ensure_shape(image, [None, None, 3])
    return image


def parse_policy(policy):
    """`"rand-m9-mstd0.5-inc1"` -> `dict(num_ops=2, magnitude=9.0, magnitude_std=0.5)`.

    timm's policy string: `m` magnitude, `n` number of ops (default 2), `mstd`
    magnitude noise, `inc1` the increasing op set (the only one implemented here).
    """
    parts = policy.split("-")
    if parts[0] != "rand":
        raise ValueError(f"Unknown RandAugment policy {policy!r}: it must start with 'rand-'.")
    config = dict(num_ops=2, magnitude=10.0, magnitude_std=0.0)
    increasing = False
    for part in parts[1:]:
        if part.startswith("mstd"):
            config["magnitude_std"] = float(part[4:])
        elif part.startswith("m"):
            config["magnitude"] = float(part[1:])
        elif part.startswith("n"):
            config["num_ops"] = int(part[1:])
        elif part.startswith("inc"):
            increasing = bool(int(part[3:]))
        else:
            raise ValueError(f"Unknown RandAugment option {part!r} in {policy!r}.")
    if not increasing:
        raise ValueError(f"{policy!r}: only the increasing op set ('inc1', DeiT's) is implemented.")
    return config
