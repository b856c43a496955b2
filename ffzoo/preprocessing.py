"""DeiT's evaluation preprocessing, computed exactly as PIL computes it.

What the published accuracies assume (DeiT `datasets.build_transform`, torchvision on
PIL images): resize the shorter side to `int(224 / 0.875) = 256` with PIL's bicubic
filter (antialiased when shrinking), the longer side to `int(256 * long / short)`,
center-crop 224 x 224 (offsets rounded as torchvision does), scale to [0, 1] and
normalize with the ImageNet mean and std. `preprocess_image` does this to one image
(NumPy); `check_settings` refuses bad `image_size` / `crop_pct` / `mean` / `std`.

The resize is Pillow's algorithm step by step: the same filter taps and 22-bit
fixed-point coefficients (`center_crop_taps`, `resize_taps`), a horizontal pass
rounded to uint8, then a vertical pass rounded to uint8 (`resample`); only the
cropped output pixels are computed. The taps and passes are written once against a
small array namespace: `_NumPyOps` sums the taps directly, `tf_ops()` (what the
`ffzoo.data` pipelines use) computes the same integer sums as banded int32 matrix
products. Both give PIL's output bit for bit, so single-image prediction and the
tf.data evaluation pipeline run the very same resize-and-crop. Importing this module
never imports TensorFlow.
"""

import math

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_CROP_PCT = 0.875

_PRECISION_BITS = 22  # Pillow's fixed point for 8-bit images: 32 - 8 - 2
_ONE = float(1 << _PRECISION_BITS)
_HALF = 1 << (_PRECISION_BITS - 1)
_BICUBIC_A = -0.5
_BICUBIC_SUPPORT = 2.0
_BLOCK = 8  # output rows per banded matrix product (TensorFlow)


class _NumPyOps:
    """The array functions the resize needs, for NumPy arrays."""

    @staticmethod
    def as_float(x):  # tap positions and weights: float64, as Pillow computes them
        return np.asarray(x, dtype=np.float64)

    @staticmethod
    def as_int(x):
        return np.asarray(x).astype(np.int32)

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

    @staticmethod
    def reduce_sum(x, axis, keepdims=False):
        return np.sum(x, axis=axis, keepdims=keepdims)

    reduce_min = staticmethod(np.min)
    reduce_max = staticmethod(np.max)

    @staticmethod
    def resample_rows(pixels, indices, weights):
        """Pillow's exact integer sums: `(sum(pixel * weight) + 2**21) >> 22`, clipped."""
        taps = np.take(pixels, indices, axis=0).astype(np.int32)  # (n_out, ntaps, m, C)
        total = np.sum(taps * weights[:, :, None, None], axis=1)
        return np.clip(np.right_shift(total + _HALF, _PRECISION_BITS), 0, 255).astype(np.uint8)

    @staticmethod
    def swap_first_axes(x):
        return np.ascontiguousarray(np.swapaxes(x, 0, 1))

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

        @staticmethod
        def reduce_sum(x, axis, keepdims=False):
            return tf.math.reduce_sum(x, axis=axis, keepdims=keepdims)

        reduce_min = staticmethod(tf.math.reduce_min)
        reduce_max = staticmethod(tf.math.reduce_max)

        @staticmethod
        def resample_rows(pixels, indices, weights):
            """Pillow's integer sums as banded matrix products.

            The output rows go in blocks of `_BLOCK`; a block's taps lie in one
            contiguous band of input rows, so a block is one `(_BLOCK, band) @
            (band, m * C)` int32 product, its taps scattered into a dense weight
            matrix. Pillow's own arithmetic, so the result is PIL's bit for bit;
            and int32 products run on Eigen's kernels (oneDNN's float32 ones are
            built anew for each new shape, and a random crop is a new shape every
            image).
            """
            n_in, n_out, ntaps = tf.shape(pixels)[0], tf.shape(indices)[0], tf.shape(indices)[1]
            blocks = (n_out + _BLOCK - 1) // _BLOCK
            pad = blocks * _BLOCK - n_out  # padding rows: the last row's taps, weight 0
            indices = tf.concat([indices, tf.repeat(indices[-1:], pad, axis=0)], 0)
            weights = tf.concat([weights, tf.zeros([pad, ntaps], weights.dtype)], 0)
            indices = tf.reshape(indices, [blocks, _BLOCK, ntaps])
            start = tf.reduce_min(indices, axis=[1, 2])  # each block's first input row
            local = indices - start[:, None, None]
            band = tf.reduce_max(local) + 1
            shape = tf.shape(local)
            where = tf.stack([tf.broadcast_to(tf.range(blocks)[:, None, None], shape),
                              tf.broadcast_to(tf.range(_BLOCK)[None, :, None], shape), local], -1)
            matrix = tf.scatter_nd(where, tf.reshape(weights, shape), tf.stack([blocks, _BLOCK, band]))
            rows = tf.minimum(start[:, None] + tf.range(band)[None, :], n_in - 1)  # (blocks, band)
            bands = tf.cast(tf.gather(tf.reshape(pixels, [n_in, -1]), rows), tf.int32)
            total = tf.reshape(tf.linalg.matmul(matrix, bands), [blocks * _BLOCK, -1])[:n_out]
            rounded = tf.saturate_cast(tf.bitwise.right_shift(total + _HALF, _PRECISION_BITS), tf.uint8)
            return tf.reshape(rounded, tf.concat([[n_out], tf.shape(pixels)[1:]], 0))

        @staticmethod
        def swap_first_axes(x):
            return tf.transpose(x, (1, 0, 2))

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

    Returns `(indices, weights)`, each `(count, ntaps)`, int32: the weights are
    Pillow's 22-bit fixed-point coefficients. Taps past the image edge get weight 0
    and the index of the output's first tap, so every index lies in its support.
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
    return ops.as_int(ops.where(inside, taps, first[:, None] + 0.0 * taps)), ops.as_int(weights)


def center_crop_taps(ops, height, width, crop_size=224, resize_size=256):
    """Taps of DeiT's eval resize (shorter side to `resize_size`) and center crop.

    Returns `(rows, row_weights, cols, col_weights)` for the `crop_size` x `crop_size`
    output only; see `resample`.
    """
    height, width = ops.as_float(height), ops.as_float(width)
    short = ops.minimum(height, width)
    long_side = ops.floor(resize_size * ops.maximum(height, width) / short)
    new_h = ops.where(height <= width, ops.as_float(resize_size), long_side)
    new_w = ops.where(height <= width, long_side, ops.as_float(resize_size))
    top = ops.round_half_even((new_h - crop_size) / 2.0)
    left = ops.round_half_even((new_w - crop_size) / 2.0)
    rows, row_weights = _resample_taps(ops, height, new_h, top, crop_size)
    cols, col_weights = _resample_taps(ops, width, new_w, left, crop_size)
    return rows, row_weights, cols, col_weights


def resize_taps(ops, height, width, out_height, out_width):
    """Taps of a plain PIL bicubic resize of `(height, width)` to `(out_height, out_width)`."""
    height, width = ops.as_float(height), ops.as_float(width)
    rows, row_weights = _resample_taps(ops, height, ops.as_float(out_height), 0.0, out_height)
    cols, col_weights = _resample_taps(ops, width, ops.as_float(out_width), 0.0, out_width)
    return rows, row_weights, cols, col_weights


def input_window(ops, taps):
    """The input rows and columns `taps` read: `(top, left, height, width)`, int32."""
    rows, _, cols, _ = taps
    top, left = ops.reduce_min(rows), ops.reduce_min(cols)
    return top, left, ops.reduce_max(rows) - top + 1, ops.reduce_max(cols) - left + 1


def resample(ops, image, taps, origin=(0, 0)):
    """Applies `taps` to a uint8 `(H, W, C)` image, as PIL's resize would.

    `origin` is the image's top-left corner in the coordinates the taps were
    planned for (when only `input_window(taps)` was decoded).
    """
    rows, row_weights, cols, col_weights = taps
    # Horizontal pass first (rows of the transposed image), like Pillow. Each pass
    # makes every output row the weighted sum of its taps' input rows, rounded back
    # to 0..255 as Pillow rounds.
    wide = ops.resample_rows(ops.swap_first_axes(image), cols - origin[1], col_weights)
    return ops.resample_rows(ops.swap_first_axes(wide), rows - origin[0], row_weights)


def resize_shorter_and_center_crop(ops, image, crop_size=224, resize_size=256):
    """PIL bicubic resize of the shorter side to `resize_size`, then a center crop.

    `image` is uint8 `(H, W, C)`. Returns the uint8 `(crop_size, crop_size, C)` crop
    exactly as PIL computes it (horizontal pass, uint8, vertical pass, uint8); only
    the cropped pixels are computed.
    """
    height, width = ops.shape_hw(image)
    return resample(ops, image, center_crop_taps(ops, height, width, crop_size, resize_size))


def normalize(pixels, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """0..255 values -> `(x / 255 - mean) / std`, in float64 (NumPy; the tf.data
    pipelines use `ffzoo.data.ops.normalize`)."""
    pixels = np.asarray(pixels, np.float64)
    return (pixels / 255.0 - np.asarray(mean, np.float64)) / np.asarray(std, np.float64)


def _is_pil_image(image):
    return hasattr(image, "convert") and hasattr(image, "mode") and hasattr(image, "getbands")


def _as_rgb_uint8(image):
    if _is_pil_image(image):
        # Every mode (P, CMYK, YCbCr, HSV, I;16, LA, 1, ...) to RGB exactly as
        # `ffzoo predict` and torchvision's image loader do; PIL knows what its
        # palette and colour spaces mean, an array of them does not.
        image = image.convert("RGB")
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


def _is_real(x):
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


def check_settings(image_size=224, crop_pct=DEFAULT_CROP_PCT, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Raises `ValueError` naming the argument unless the evaluation settings make sense:
    `image_size` a positive integer, `crop_pct` in (0, 1], `mean` three finite
    numbers, `std` three finite positive numbers (one per RGB channel)."""
    if not isinstance(image_size, (int, np.integer)) or isinstance(image_size, bool) or image_size < 1:
        raise ValueError(f"image_size must be a positive integer; got {image_size!r}.")
    if not _is_real(crop_pct) or not math.isfinite(crop_pct) or not 0 < crop_pct <= 1:
        raise ValueError(
            f"crop_pct must be a number in (0, 1] (the crop's share of the resized shorter "
            f"side; DeiT's is {DEFAULT_CROP_PCT}); got {crop_pct!r}.")
    for name, given, example in (("mean", mean, IMAGENET_MEAN), ("std", std, IMAGENET_STD)):
        values = _three_finite(given)
        if values is None:
            raise ValueError(f"{name} must be three finite numbers, one per RGB channel (ImageNet's: "
                             f"{example}); got {_shown(given)}.")
        if name == "std" and min(values) <= 0:
            raise ValueError(f"std must be positive (it divides the pixels); got {_shown(given)}.")


def _three_finite(values):
    """`values` as three finite floats, or None."""
    try:
        values = list(values)
    except TypeError:  # a scalar
        return None
    if len(values) != 3 or not all(_is_real(v) and math.isfinite(v) for v in values):
        return None
    return [float(v) for v in values]


def _shown(values):
    text = repr(values)
    return text if len(text) <= 80 else text[:77] + "..."


def eval_resize_size(image_size=224, crop_pct=DEFAULT_CROP_PCT):
    """The shorter-side size before the center crop: `int(image_size / crop_pct)` (256)."""
    return int(image_size / crop_pct)


def preprocess_image(image, image_size=224, crop_pct=DEFAULT_CROP_PCT, mean=IMAGENET_MEAN,
                     std=IMAGENET_STD):
    """DeiT's evaluation transform of one image, as the pretrained weights expect.

    Args:
        image: uint8 array `(H, W)`, `(H, W, 1)` (grayscale), `(H, W, 3)` (RGB) or
            `(H, W, 4)` (RGBA, alpha dropped), any size; or a PIL image of any
            mode, converted with `image.convert("RGB")` as `ffzoo predict` does.
        image_size: the crop size (224 for the published models).
        crop_pct: shorter side resized to `int(image_size / crop_pct)` (256) first.
        mean, std: per-channel normalization of the [0, 1] pixels.

    Returns:
        float32 array `(image_size, image_size, 3)`; stack several for a batch.

    Raises:
        ValueError: for an image that is not one uint8 image, or settings that
            `check_settings` refuses (`crop_pct` outside (0, 1], a std that is not
            three finite positive numbers, ...).
    """
    check_settings(image_size, crop_pct, mean, std)
    rgb = _as_rgb_uint8(image)
    resize_size = eval_resize_size(image_size, crop_pct)
    if min(rgb.shape[:2]) < 1:
        raise ValueError(f"preprocess_image got an empty image of shape {rgb.shape}.")
    crop = resize_shorter_and_center_crop(_NumPyOps, rgb, image_size, resize_size)
    return normalize(crop, mean, std).astype(np.float32)
