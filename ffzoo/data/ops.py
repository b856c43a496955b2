"""TensorFlow image ops of the DeiT training recipe, for tf.data pipelines.

Every random op takes an explicit stateless `seed` (a `[2]` int32 tensor), so a
pipeline with a seed is reproducible. The algorithms follow torchvision / timm, as
DeiT used them; differences are listed in `ffzoo/data/README.md`.
"""

import math

import numpy as np
import tensorflow as tf

from ffzoo.preprocessing import IMAGENET_MEAN, IMAGENET_STD

_ATTEMPTS = 10


def split_seed(seed, count):
    """`count` independent `[2]` seeds from one."""
    return tf.unstack(tf.random.experimental.stateless_split(seed, num=count))


def _uniform(seed, shape=(), low=0.0, high=1.0):
    return tf.random.stateless_uniform(shape, seed, minval=low, maxval=high, dtype=tf.float32)


def random_resized_crop_window(seed, height, width, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """torchvision's `RandomResizedCrop.get_params`: `(top, left, crop_h, crop_w)` int32.

    Up to 10 tries of an area fraction uniform in `scale` and an aspect ratio
    log-uniform in `ratio`; the first that fits wins. Otherwise the central crop
    clamped to the ratio range.
    """
    area_seed, ratio_seed, top_seed, left_seed = split_seed(seed, 4)
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    area = h * w * _uniform(area_seed, [_ATTEMPTS], scale[0], scale[1])
    log_ratio = _uniform(ratio_seed, [_ATTEMPTS], math.log(ratio[0]), math.log(ratio[1]))
    aspect = tf.exp(log_ratio)
    crop_w = tf.round(tf.sqrt(area * aspect))
    crop_h = tf.round(tf.sqrt(area / aspect))
    fits = (crop_w > 0) & (crop_w <= w) & (crop_h > 0) & (crop_h <= h)
    first = tf.argmax(tf.cast(fits, tf.int32))
    found = tf.reduce_any(fits)

    in_ratio = w / h
    fallback_w = tf.where(in_ratio < ratio[0], w, tf.where(in_ratio > ratio[1], tf.round(h * ratio[1]), w))
    fallback_h = tf.where(in_ratio < ratio[0], tf.round(w / ratio[0]), h)
    crop_h = tf.cast(tf.where(found, crop_h[first], fallback_h), tf.int32)
    crop_w = tf.cast(tf.where(found, crop_w[first], fallback_w), tf.int32)
    height = tf.cast(height, tf.int32)
    width = tf.cast(width, tf.int32)
    # randint(0, H - h) inclusive, as torch.randint(0, H - h + 1)
    top_random = tf.random.stateless_uniform([], top_seed, 0, height - crop_h + 1, dtype=tf.int32)
    left_random = tf.random.stateless_uniform([], left_seed, 0, width - crop_w + 1, dtype=tf.int32)
    top = tf.where(found, top_random, (height - crop_h) // 2)
    left = tf.where(found, left_random, (width - crop_w) // 2)
    return top, left, crop_h, crop_w


def _resample_first_axis(image, length):
    """Antialiased bicubic resample of axis 0 of a `(n, m, c)` image to `length`: float32.

    The image goes to `ScaleAndTranslate` as a single row (`[1, 1, n, m * c]`): the
    axis to resample is its width and everything else one long channel vector. The
    kernel then runs inline (TensorFlow 2.21 hands every output *row* of a resize to
    the global intra-op pool, a cost that exceeds the work inside tf.data, where each
    core already runs a map call), and its inner loop runs over long contiguous
    vectors rather than 3 channels. The 1 -> 1 vertical pass it also makes is an
    exact copy (one tap of weight 1).
    """
    shape = tf.shape(image)
    length = tf.cast(length, tf.int32)
    row = tf.reshape(image, tf.stack([1, 1, shape[0], shape[1] * shape[2]]))
    scale = tf.stack([1.0, tf.cast(length, tf.float32) / tf.cast(shape[0], tf.float32)])
    out = tf.raw_ops.ScaleAndTranslate(images=row, size=tf.stack([1, length]), scale=scale,
                                       translation=tf.zeros([2]), kernel_type="keyscubic", antialias=True)
    return tf.reshape(out, tf.stack([length, shape[1], shape[2]]))


def resize_bicubic(image, size):
    """`tf.image.resize(image, size, "bicubic", antialias=True)` for one `(h, w, c)`
    image, float32, bit for bit, at ~40% of its cost on one core.

    Keys cubic with `a = -0.5` (PIL's bicubic), widened when shrinking. Resampled one
    axis at a time (see `_resample_first_axis`): rows, then the transposed columns,
    with the taps, the order and the float32 sums of the one-call resize.
    """
    out_h, out_w = size
    tall = _resample_first_axis(image, out_h)  # (out_h, w, c)
    wide = _resample_first_axis(tf.transpose(tall, [1, 0, 2]), out_w)  # (out_w, out_h, c)
    return tf.transpose(wide, [1, 0, 2])


def flip_coin(seed, probability=0.5):
    """Whether to flip: a boolean scalar, true with `probability`."""
    return _uniform(seed) < probability


def flip(image, flipped):
    """Mirrors `image` left-right where the boolean scalar `flipped` is true."""
    return tf.cond(flipped, lambda: tf.reverse(image, axis=[1]), lambda: image)


def random_flip(image, seed, probability=0.5):
    """Mirrors `image` left-right with `probability`."""
    return flip(image, flip_coin(seed, probability))


def normalize(image, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """0..255 pixels (any dtype), channels last, one image or a batch -> float32
    `(x / 255 - mean) / std` (preprocess_image's), computed as `x * a + b`.

    The per-channel factors are tiled along a whole image row: TensorFlow's CPU
    kernels broadcast a row vector several times faster than a 3-vector.
    """
    scale = 1.0 / (255.0 * np.asarray(std, np.float64))
    offset = -np.asarray(mean, np.float64) / np.asarray(std, np.float64)
    shape = tf.shape(image)
    width = shape[-2]
    rows = tf.reshape(tf.cast(image, tf.float32), tf.stack([-1, width * shape[-1]]))
    scale = tf.tile(tf.constant(scale, tf.float32), [width])
    offset = tf.tile(tf.constant(offset, tf.float32), [width])
    return tf.reshape(rows * scale + offset, shape)


def random_erasing_box(seed, height, width, area=(0.02, 1 / 3), log_aspect=(math.log(0.3), math.log(1 / 0.3))):
    """timm's `RandomErasing` box: `(top, left, box_h, box_w, found)`.

    Up to 10 tries of an area fraction uniform in `area` and an aspect ratio
    log-uniform in `log_aspect`; a box fits when strictly smaller than the image.
    """
    area_seed, aspect_seed, top_seed, left_seed = split_seed(seed, 4)
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    target = h * w * _uniform(area_seed, [_ATTEMPTS], area[0], area[1])
    aspect = tf.exp(_uniform(aspect_seed, [_ATTEMPTS], log_aspect[0], log_aspect[1]))
    box_h = tf.round(tf.sqrt(target * aspect))
    box_w = tf.round(tf.sqrt(target / aspect))
    fits = (box_w < w) & (box_h < h)
    first = tf.argmax(tf.cast(fits, tf.int32))
    found = tf.reduce_any(fits)
    box_h = tf.cast(tf.where(found, box_h[first], 0.0), tf.int32)
    box_w = tf.cast(tf.where(found, box_w[first], 0.0), tf.int32)
    height = tf.cast(height, tf.int32)
    width = tf.cast(width, tf.int32)
    top = tf.random.stateless_uniform([], top_seed, 0, height - box_h + 1, dtype=tf.int32)
    left = tf.random.stateless_uniform([], left_seed, 0, width - box_w + 1, dtype=tf.int32)
    return top, left, box_h, box_w, found


def box_mask(height, width, top, left, box_h, box_w):
    """`(height, width, 1)` float32 mask, 1 inside the box."""
    rows = tf.range(height)[:, None]
    cols = tf.range(width)[None, :]
    inside = (rows >= top) & (rows < top + box_h) & (cols >= left) & (cols < left + box_w)
    return tf.cast(inside, tf.float32)[:, :, None]


def random_erasing(image, seed, probability=0.25):
    """With `probability`, replaces a random box of a normalized image by N(0, 1) noise
    drawn per pixel and channel (timm's `mode='pixel'`, one box)."""
    gate_seed, box_seed, noise_seed = split_seed(seed, 3)
    shape = tf.shape(image)
    top, left, box_h, box_w, found = random_erasing_box(box_seed, shape[0], shape[1])

    def erase():  # only the erased quarter of the images pays for the noise
        mask = box_mask(shape[0], shape[1], top, left, box_h, box_w)
        noise = tf.random.stateless_normal(shape, noise_seed, dtype=image.dtype)
        return image * (1.0 - mask) + noise * mask

    return tf.cond((_uniform(gate_seed) < probability) & found, erase, lambda: image)


def smooth_one_hot(labels, num_classes, smoothing):
    """timm's smoothed targets: `1 - smoothing + smoothing / K` on the label, `smoothing / K` off."""
    off = smoothing / num_classes
    return tf.one_hot(labels, num_classes, on_value=1.0 - smoothing + off, off_value=off)


def cutmix_box(seed, height, width, lam):
    """timm's `rand_bbox`: a box of side `sqrt(1 - lam)` x the image, centre uniform,
    clipped to the image. Returns `(top, bottom, left, right)` int32."""
    cy_seed, cx_seed = split_seed(seed, 2)
    cut = tf.sqrt(1.0 - lam)
    cut_h = tf.cast(tf.cast(height, tf.float32) * cut, tf.int32)
    cut_w = tf.cast(tf.cast(width, tf.float32) * cut, tf.int32)
    cy = tf.random.stateless_uniform([], cy_seed, 0, height, dtype=tf.int32)
    cx = tf.random.stateless_uniform([], cx_seed, 0, width, dtype=tf.int32)
    top = tf.clip_by_value(cy - cut_h // 2, 0, height)
    bottom = tf.clip_by_value(cy + cut_h // 2, 0, height)
    left = tf.clip_by_value(cx - cut_w // 2, 0, width)
    right = tf.clip_by_value(cx + cut_w // 2, 0, width)
    return top, bottom, left, right


def _sample_beta(seed, alpha):
    a_seed, b_seed = split_seed(seed, 2)
    a = tf.random.stateless_gamma([], a_seed, alpha=alpha)
    b = tf.random.stateless_gamma([], b_seed, alpha=alpha)
    return a / (a + b)


def mixup_cutmix(images, labels, seed, num_classes, mixup_alpha=0.8, cutmix_alpha=1.0,
                 switch_probability=0.5, probability=1.0, smoothing=0.1):
    """timm's batch-mode `Mixup`: one lambda per batch, mixed with the reversed batch.

    With probability `probability` the batch is mixed: CutMix with probability
    `switch_probability` (when both alphas are positive), else Mixup. CutMix pastes a
    box from the reversed batch and sets lambda to the unpasted area fraction. Targets
    are smoothed one-hots mixed with the same lambda. Returns `(images, soft_labels)`.
    """
    apply_seed, switch_seed, lam_seed, box_seed = split_seed(seed, 4)
    targets = smooth_one_hot(labels, num_classes, smoothing)
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        return images, targets
    if mixup_alpha > 0 and cutmix_alpha > 0:
        use_cutmix = _uniform(switch_seed) < switch_probability
    else:
        use_cutmix = tf.constant(cutmix_alpha > 0)
    alpha = tf.where(use_cutmix, float(cutmix_alpha), float(mixup_alpha))
    lam = _sample_beta(lam_seed, tf.maximum(alpha, 1e-6))
    apply = _uniform(apply_seed) < probability
    lam = tf.where(apply, lam, 1.0)

    shape = tf.shape(images)
    height, width = shape[1], shape[2]
    flipped = tf.reverse(images, axis=[0])

    def cutmix():
        top, bottom, left, right = cutmix_box(box_seed, height, width, lam)
        area = tf.cast((bottom - top) * (right - left), tf.float32)
        paste = box_mask(height, width, top, left, bottom - top, right - left)[None]
        return images * (1.0 - paste) + flipped * paste, 1.0 - area / tf.cast(height * width, tf.float32)

    def mixup():
        return images * lam + flipped * (1.0 - lam), lam

    def unmixed():
        return images, tf.constant(1.0)

    images, lam = tf.case([(use_cutmix & apply, cutmix), (apply, mixup)], default=unmixed)
    soft = targets * lam + tf.reverse(targets, axis=[0]) * (1.0 - lam)
    return images, soft
