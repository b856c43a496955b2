"""Mixup / CutMix statistics over many seeds, and RandAugment's magnitude -> argument mapping.

Mixup / CutMix: every sample is a constant image of its own value, so the mixed images
tell which mode ran (Mixup: one value between the two; CutMix: only the two values), and
lambda is read from the soft labels, apart from the pixels. Its distribution is checked
against Beta(alpha, alpha) (Mixup) and against a NumPy simulation of timm's CutMix box
with the area-corrected lambda.

RandAugment: each of the 15 ops goes through `_apply` (the magnitude -> argument step)
and is compared with PIL called with the arguments timm's `LEVEL_TO_ARG` functions give
at that magnitude (`rand-m9-mstd0.5-inc1`: magnitude 9, noise 0.5, clipped to 10).
"""

import math

import numpy as np
import pytest
import scipy.stats
import skimage.data
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageOps

from ffzoo.data import ops, randaugment

pytestmark = pytest.mark.once

# ------------------------------------------------------------------------ Mixup / CutMix

BATCH, SIZE, CLASSES, SMOOTHING = 4, 32, 4, 0.1
VALUES = np.arange(1, BATCH + 1, dtype=np.float32)  # sample i is the constant image i + 1
LABELS = np.arange(BATCH)  # distinct labels: each sample's label mass is its own
SEEDS = 3000


def _mix_many(count, salt, **kwargs):
    """`(images (count, B, H, W), soft labels (count, B, K))` for seeds `[i, salt]`."""
    images = tf.constant(np.broadcast_to(VALUES[:, None, None, None], (BATCH, SIZE, SIZE, 1)))
    labels = tf.constant(LABELS)

    def one(i):
        seed = tf.stack([tf.cast(i, tf.int32), salt])
        return ops.mixup_cutmix(images, labels, seed, CLASSES, smoothing=SMOOTHING, **kwargs)

    data = tf.data.Dataset.range(count).map(one, num_parallel_calls=tf.data.AUTOTUNE)
    data = data.batch(count)
    mixed, soft = next(iter(data))
    return mixed.numpy()[..., 0], soft.numpy()


def _label_lambda(soft):
    """Lambda of each batch, read from sample 0's label mass on its own label."""
    off = SMOOTHING / CLASSES
    return (soft[:, 0, LABELS[0]] - off) / (1 - SMOOTHING)


def _modes(mixed):
    """Per batch: "cutmix" (sample 0 holds only its own and its partner's value),
    "mixup" (one value strictly between) or "none" (unchanged)."""
    first, partner = VALUES[0], VALUES[-1]
    image = mixed[:, 0]
    modes = []
    for x in image:
        if np.all(x == first):
            modes.append("none")
        elif np.all((x == first) | (x == partner)):
            modes.append("cutmix")
        else:
            assert x.min() == x.max() and first < x.min() < partner  # a blend, nothing else
            modes.append("mixup")
    return np.array(modes)


def _timm_cutmix_lambdas(rng, count, alpha, size=SIZE):
    """NumPy simulation of timm's CutMix (`rand_bbox` and `correct_lam`)."""
    lam = rng.beta(alpha, alpha, count)
    cut = (size * np.sqrt(1 - lam)).astype(int)
    cy, cx = rng.integers(0, size, count), rng.integers(0, size, count)
    h = np.clip(cy + cut // 2, 0, size) - np.clip(cy - cut // 2, 0, size)
    w = np.clip(cx + cut // 2, 0, size) - np.clip(cx - cut // 2, 0, size)
    return 1 - h * w / size ** 2


def _beta_moments_hold(lams, alpha):
    """Mean, variance and a KS bound against Beta(alpha, alpha); 4-sigma / p=0.001 bounds."""
    n = len(lams)
    beta = scipy.stats.beta(alpha, alpha)
    mean_se = beta.std() / math.sqrt(n)
    fourth = beta.moment(4) - 4 * beta.moment(3) * 0.5 + 6 * beta.moment(2) * 0.25 - 3 * 0.5 ** 4
    var_se = math.sqrt((fourth - beta.var() ** 2) / n)
    assert abs(lams.mean() - 0.5) < 4 * mean_se, (lams.mean(), mean_se)
    assert abs(lams.var() - beta.var()) < 4 * var_se, (lams.var(), beta.var(), var_se)
    assert scipy.stats.kstest(lams, beta.cdf).statistic < 1.95 / math.sqrt(n)


def test_mixup_and_cutmix_switch_lambda_distributions_and_label_mass():
    mixed, soft = _mix_many(SEEDS, 11)  # DeiT's settings: alphas 0.8 / 1.0, switch 0.5
    modes = _modes(mixed)
    lam = _label_lambda(soft)
    # Mix probability 1: a batch left as it was is a CutMix whose box came out empty
    # (side int(32 * sqrt(1 - lam)) // 2 == 0, lam > 0.996), with lambda 1 in its labels.
    empty = modes == "none"
    assert empty.mean() < 0.01 and np.allclose(lam[empty], 1.0, rtol=0, atol=1e-6)
    modes[empty] = "cutmix"
    # The partner's label gets the rest, every other class the smoothing floor.
    off = SMOOTHING / CLASSES
    np.testing.assert_allclose(soft[:, 0, LABELS[-1]], (1 - SMOOTHING) * (1 - lam) + off, atol=1e-6)
    np.testing.assert_allclose(soft[:, 0, LABELS[1:-1]], off, atol=1e-6)
    # Switch rate 0.5 (binomial std 0.009).
    cutmix = modes == "cutmix"
    assert abs(cutmix.mean() - 0.5) < 4 * math.sqrt(0.25 / SEEDS)

    # Mixup: the blend in the pixels is the label's lambda; lambda ~ Beta(0.8, 0.8).
    blend = mixed[~cutmix, 0, 0, 0]
    np.testing.assert_allclose((VALUES[-1] - blend) / (VALUES[-1] - VALUES[0]), lam[~cutmix], atol=1e-5)
    _beta_moments_hold(lam[~cutmix], 0.8)

    # CutMix: the partner's label mass is the pasted area, one rectangle in every sample,
    # the same box for the whole batch; lambda as timm's box gives it with Beta(1, 1).
    pasted = mixed[cutmix] == VALUES[::-1][None, :, None, None]
    pasted &= mixed[cutmix] != VALUES[None, :, None, None]  # (the two middle samples differ)
    np.testing.assert_allclose(pasted[:, 0].mean(axis=(1, 2)), 1 - lam[cutmix], atol=1e-6)
    for box in pasted[:, 0][:200]:
        rows, cols = np.nonzero(box.any(1))[0], np.nonzero(box.any(0))[0]
        if len(rows):
            assert box.sum() == len(rows) * len(cols) == (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
    assert np.array_equal(pasted[:, 0], pasted[:, 1])
    simulated = _timm_cutmix_lambdas(np.random.default_rng(0), 200_000, 1.0)
    assert scipy.stats.ks_2samp(lam[cutmix], simulated).statistic < 1.95 / math.sqrt(cutmix.sum())
    assert abs(lam[cutmix].mean() - simulated.mean()) < 4 * simulated.std() / math.sqrt(cutmix.sum())


@pytest.mark.parametrize("alpha", [0.8, 1.0, 2.0])
def test_mixup_lambda_is_beta_alpha_alpha(alpha):
    mixed, soft = _mix_many(1500, 12, mixup_alpha=alpha, cutmix_alpha=0.0)
    assert np.all(_modes(mixed) == "mixup")
    _beta_moments_hold(_label_lambda(soft), alpha)


def test_mix_probability_leaves_the_other_batches_untouched():
    mixed, soft = _mix_many(SEEDS, 13, probability=0.4)
    modes = _modes(mixed)
    unmixed = modes == "none"
    assert abs(1 - unmixed.mean() - 0.4) < 4 * math.sqrt(0.24 / SEEDS)
    assert abs((modes == "cutmix").sum() / (~unmixed).sum() - 0.5) < 4 * math.sqrt(0.25 / (~unmixed).sum())
    want = np.eye(CLASSES)[LABELS] * (1 - SMOOTHING) + SMOOTHING / CLASSES
    np.testing.assert_allclose(soft[unmixed], np.broadcast_to(want, soft[unmixed].shape), atol=1e-6)
    assert np.all(mixed[unmixed] == VALUES[None, :, None, None])
    assert np.all(_label_lambda(soft[~unmixed]) < 1)


# ------------------------------------------------------------------------- RandAugment

PHOTO = skimage.data.astronaut()[::8, ::8]  # 64 x 64, textured
DULL = (PHOTO // 2 + 60).astype(np.uint8)  # levels 60-187: AutoContrast has work to do
FILL = (124, 116, 104)  # timm's img_mean as DeiT passes it


def _timm_level(level, scale):
    return level / 10.0 * scale


def _timm_enhance(level, sign):
    return max(0.1, 1.0 + sign * _timm_level(level, 0.9))


def _pil_affine(image, matrix):
    return image.transform(image.size, Image.AFFINE, matrix, resample=Image.BILINEAR, fillcolor=FILL)


def _posterize(image, bits):
    if bits == 0:  # timm reaches 0 bits at magnitude 10; Pillow no longer accepts it
        return image.point(lambda v: 0)
    return ImageOps.posterize(image, bits)


def _timm_op(name, level, sign):
    """PIL applied with the arguments timm's LEVEL_TO_ARG gives at `level` and `sign`."""
    w, h = PHOTO.shape[1], PHOTO.shape[0]
    return {
        "AutoContrast": lambda p: ImageOps.autocontrast(p),
        "Equalize": lambda p: ImageOps.equalize(p),
        "Invert": lambda p: ImageOps.invert(p),
        "Rotate": lambda p: p.rotate(sign * _timm_level(level, 30.0), resample=Image.BILINEAR,
                                     fillcolor=FILL),
        "PosterizeIncreasing": lambda p: _posterize(p, 4 - int(_timm_level(level, 4))),
        "SolarizeIncreasing": lambda p: ImageOps.solarize(p, 256 - int(_timm_level(level, 256))),
        "SolarizeAdd": lambda p: p.point(
            lambda v: min(255, v + int(_timm_level(level, 110))) if v < 128 else v),
        "ColorIncreasing": lambda p: ImageEnhance.Color(p).enhance(_timm_enhance(level, sign)),
        "ContrastIncreasing": lambda p: ImageEnhance.Contrast(p).enhance(_timm_enhance(level, sign)),
        "BrightnessIncreasing": lambda p: ImageEnhance.Brightness(p).enhance(_timm_enhance(level, sign)),
        "SharpnessIncreasing": lambda p: ImageEnhance.Sharpness(p).enhance(_timm_enhance(level, sign)),
        "ShearX": lambda p: _pil_affine(p, (1, sign * _timm_level(level, 0.3), 0, 0, 1, 0)),
        "ShearY": lambda p: _pil_affine(p, (1, 0, 0, sign * _timm_level(level, 0.3), 1, 0)),
        "TranslateXRel": lambda p: _pil_affine(p, (1, 0, sign * _timm_level(level, 0.45) * w, 0, 1, 0)),
        "TranslateYRel": lambda p: _pil_affine(p, (1, 0, 0, 0, 1, sign * _timm_level(level, 0.45) * h)),
    }[name]


# Per op: (largest |difference| allowed, mean |difference| allowed), in levels. Colour ops
# follow PIL's arithmetic (0-2 levels of rounding); the geometric ones interpolate
# bilinearly as PIL does here, with PIL's sub-pixel convention not reproduced for
# shears (about 0.14 px: measured mean 2.9-4.1) and the fill blended at the edges
# (measured: rotations 0.87-0.89, translations 0.32-0.71). A rotation about W / 2
# instead of (W - 1) / 2 measures 7.6-7.9.
BOUNDS = {
    "AutoContrast": (0, 0), "Equalize": (0, 0), "Invert": (0, 0),
    "PosterizeIncreasing": (0, 0), "SolarizeIncreasing": (0, 0), "SolarizeAdd": (0, 0),
    "ColorIncreasing": (1, 0.5), "ContrastIncreasing": (1, 0.5), "BrightnessIncreasing": (1, 0.5),
    "SharpnessIncreasing": (2, 0.5),
    "Rotate": (255, 0.95), "ShearX": (255, 4.2), "ShearY": (255, 4.2),
    "TranslateXRel": (255, 0.75), "TranslateYRel": (255, 0.75),
}
# 9: rand-m9; 8.7 and 9.5: within its N(9, 0.5) noise (8.7 tells truncation from rounding
# in the integer arguments); 10: the clip.
LEVELS = [8.7, 9.0, 9.5, 10.0]


@pytest.mark.parametrize("name", randaugment.OPS)
def test_randaugment_op_at_timm_arguments(name, record):
    assert set(BOUNDS) == set(randaugment.OPS)
    photo = DULL if name == "AutoContrast" else PHOTO
    worst = 0.0
    for level in LEVELS:
        for sign in (1.0, -1.0):
            got = randaugment._apply(tf.constant(randaugment.OPS.index(name)), tf.constant(photo),
                                     tf.constant(level), tf.constant(sign)).numpy().astype(float)
            want = np.asarray(_timm_op(name, level, sign)(Image.fromarray(photo))).astype(float)
            diff = np.abs(got - want)
            largest, mean = BOUNDS[name]
            assert diff.max() <= largest and diff.mean() <= mean, (level, sign, diff.max(), diff.mean())
            # The op did something measurable, far more than the error allowed.
            moved = np.abs(photo - want).mean()
            assert moved > 3 * max(mean, 1), (level, sign, moved)
            worst = max(worst, diff.mean())
    record(f"RandAugment {name}: worst mean |ffzoo - PIL at timm's arguments|", worst)
