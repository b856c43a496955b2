"""DeiT's evaluation preprocessing, reproduced exactly.

What the published accuracies assume (DeiT `datasets.build_transform`, torchvision on
PIL images): resize the shorter side to `int(224 / 0.875) = 256` with PIL's bicubic
filter (antialiased when shrinking), the longer side to `int(256 * long / short)`,
center-crop 224 x 224 (offsets rounded as torchvision does), scale to [0, 1] and
normalize with the ImageNet mean and std.

The resize is Pillow's algorithm step by step: the same filter taps, the same
22-bit fixed-point coefficients, a horizontal pass rounded to uint8, then a vertical
pass rounded to uint8. On uint8 RGB input it reproduces PIL's output.

The code is written once against a small array namespace (`_NumPyOps` here; the
TensorFlow one in `tf_ops()`), so `preprocess_image` and the tf.data evaluation
pipeline run the very same resize-and-crop. Importing this module never imports
TensorFlow.
"""

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_CROP_PCT = 0.875

_PRECISION_BITS = 22  # Pillow's fixed point for 8-bit images: 32 - 8 - 2
_ONE = float(1 << _PRECISION_BITS)
_HALF = float(1 << (_PRECISION_BITS - 1))
_BICUBIC_A = -0.5
_BICUBIC_SUPPORT = 2.0


class _NumPyOps:
    """The array functions the resize needs, for NumPy arrays (float64 maths)."""

    @staticmethod
    def as_float(x):
        return np.asarray(x, dtype=np.float64)

    @staticmethod
    def as_int(x):
        return np.asarray(x).astype(np.int64)

    @staticmethod
    def arange(n):
        return np.arange(n, dtype=np.float64)

    floor = staticmethod(np.floor)
    ceil = staticmethod(np.ceil)
    round_half_even = staticmethod(np.round)
    abs = staticmethod(np.abs)
    sign = staticmethod(np.sign)
    where = staticmethod(np.where)
    minimum = staticmethod(np.minimum)
    maximum = staticmethod(np.maximum)
    einsum = staticmethod(np.einsum)

    @staticmethod
    def reduce_sum(x, axis, keepdims=False):
        return np.sum(x, axis=axis, keepdims=keepdims)

    @staticmethod
    def gather(x, indices, axis):
        return np.take(x, indices, axis=axis)

    @staticmethod
    def shape_hw(x):
        return float(x.shape[0]), float(x.shape[1])


def tf_ops():
    """The same namespace for TensorFlow tensors (used by `ffzoo.data`)."""
    import tensorflow as tf

    class _TFOps:
        as_float = staticmethod(lambda x: tf.cast(x, tf.float64))
        as_int = staticmethod(lambda x: tf.cast(x, tf.int32))
        arange = staticmethod(lambda n: tf.range(tf.cast(n, tf.float64), dtype=tf.float64))
        floor = staticmethod(tf.math.floor)
        ceil = staticmethod(tf.math.ceil)
        round_half_even = staticmethod(tf.math.round)  # TensorFlow rounds half to even
        abs = staticmethod(tf.math.abs)
        sign = staticmethod(tf.math.sign)
        where = staticmethod(tf.where)
        minimum = staticmethod(tf.math.minimum)
        maximum = staticmethod(tf.math.maximum)
        einsum = staticmethod(tf.einsum)

        @staticmethod
        def reduce_sum(x, axis, keepdims=False):
            return tf.math.reduce_sum(x, axis=axis, keepdims=keepdims)

        @staticmethod
        def gather(x, indices, axis):
            return tf.gather(x, indices, axis=axis)

        @staticmethod
        def shape_hw(x):
            shape = tf.shape(x)
            return tf.cast(shape[0], tf.float64), tf.cast(shape[1], tf.float64)

    return _TFOps


def _bicubic(ops, x):
    x = ops.abs(x)
    a = _BICUBIC_A
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return ops.where(x < 1.0, near, ops.where(x < 2.0, far, ops.as_float(0.0) * x))


def _resample_taps(ops, in_size, out_size, start, count):
    """Pillow's bicubic taps for output pixels `start .. start + count - 1`.

    Returns `(indices, weights)`, each `(count, ntaps)`; the weights are Pillow's
    fixed-point integers (as floats), zero for taps past the image edge.
    """
    scale = in_size / out_size
    filterscale = ops.maximum(scale, 1.0)
    support = _BICUBIC_SUPPORT * filterscale
    ntaps = ops.ceil(support) * 2.0 + 1.0
    centers = (ops.arange(count) + start + 0.5) * scale
    first = ops.maximum(ops.floor(centers - support + 0.5), 0.0)
    stop = ops.minimum(ops.floor(centers + support + 0.5), in_size)
    taps = first[:, None] + ops.arange(ntaps)[None, :]
    inside = taps < stop[:, None]
    weights = ops.where(inside, _bicubic(ops, (taps - centers[:, None] + 0.5) * (1.0 / filterscale)), 0.0 * taps)
    weights = weights / ops.reduce_sum(weights, axis=1, keepdims=True)
    weights = ops.sign(weights) * ops.floor(ops.abs(weights) * _ONE + 0.5)
    return ops.as_int(ops.minimum(taps, in_size - 1.0)), weights


def _to_uint8_range(ops, accumulated):
    """Pillow's rounding of a fixed-point sum back to 0..255."""
    return ops.minimum(ops.maximum(ops.floor((accumulated + _HALF) / _ONE), 0.0), 255.0)


def resize_shorter_and_center_crop(ops, image, crop_size=224, resize_size=256):
    """PIL bicubic resize of the shorter side to `resize_size`, then a center crop.

    `image` is `(H, W, C)` with values 0..255 (any numeric dtype). Returns the
    `(crop_size, crop_size, C)` crop as float64 values 0..255, rounded as PIL rounds.
    Only the cropped pixels are computed.
    """
    height, width = ops.shape_hw(image)
    short = ops.minimum(height, width)
    long_side = ops.floor(resize_size * ops.maximum(height, width) / short)
    new_h = ops.where(height <= width, ops.as_float(resize_size), long_side)
    new_w = ops.where(height <= width, long_side, ops.as_float(resize_size))
    top = ops.round_half_even((new_h - crop_size) / 2.0)
    left = ops.round_half_even((new_w - crop_size) / 2.0)

    pixels = ops.as_float(image)
    cols, col_weights = _resample_taps(ops, width, new_w, left, crop_size)
    rows, row_weights = _resample_taps(ops, height, new_h, top, crop_size)
    # Horizontal pass over every input row, rounded to uint8 like Pillow's
    # intermediate image, then the vertical pass.
    wide = ops.einsum("hwkc,wk->hwc", ops.gather(pixels, cols, axis=1), col_weights)
    wide = _to_uint8_range(ops, wide)
    tall = ops.einsum("hkwc,hk->hwc", ops.gather(wide, rows, axis=0), row_weights)
    return _to_uint8_range(ops, tall)


def normalize(ops, pixels, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """0..255 values -> `(x / 255 - mean) / std`."""
    return (pixels / 255.0 - ops.as_float(mean)) / ops.as_float(std)


def _as_rgb_uint8(image):
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(
            f"preprocess_image expects uint8 pixels (0..255); got dtype {array.dtype}. "
            "Convert floats in [0, 1] with (x * 255).round().astype('uint8')."
        )
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(
            "preprocess_image expects one image (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); "
            f"got shape {array.shape}."
        )
    if array.shape[-1] in (1, 2):  # grayscale (with alpha): PIL's L -> RGB copies gray
        array = np.repeat(array[:, :, :1], 3, axis=-1)
    return array[:, :, :3]  # RGBA -> RGB drops alpha, as PIL's convert("RGB") does


def eval_resize_size(image_size=224, crop_pct=DEFAULT_CROP_PCT):
    """The shorter-side size before the center crop: `int(image_size / crop_pct)` (256)."""
    return int(image_size / crop_pct)


def preprocess_image(image, image_size=224, crop_pct=DEFAULT_CROP_PCT, mean=IMAGENET_MEAN,
                     std=IMAGENET_STD):
    """DeiT's evaluation transform of one image, as the pretrained weights expect.

    Args:
        image: uint8 array `(H, W)`, `(H, W, 1)` (grayscale), `(H, W, 3)` (RGB) or
            `(H, W, 4)` (RGBA, alpha dropped), any size; or a PIL image.
        image_size: the crop size (224 for the published models).
        crop_pct: shorter side resized to `int(image_size / crop_pct)` (256) first.
        mean, std: per-channel normalization of the [0, 1] pixels.

    Returns:
        float32 array `(image_size, image_size, 3)`; stack several for a batch.
    """
    rgb = _as_rgb_uint8(image)
    resize_size = eval_resize_size(image_size, crop_pct)
    if min(rgb.shape[:2]) < 1:
        raise ValueError(f"preprocess_image got an empty image of shape {rgb.shape}.")
    crop = resize_shorter_and_center_crop(_NumPyOps, rgb, image_size, resize_size)
    return normalize(_NumPyOps, crop, mean, std).astype(np.float32)
