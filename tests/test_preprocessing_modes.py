"""preprocess_image on PIL images of every mode, and its refusal of bad settings."""

import math

import numpy as np
import pytest
import skimage.data
from PIL import Image

from ffzoo import preprocess_image
from ffzoo.preprocessing import IMAGENET_MEAN, IMAGENET_STD

pytestmark = pytest.mark.once  # NumPy and PIL only: no Keras backend involved


def _photo():
    return Image.fromarray(skimage.data.coffee()[::3, ::3])  # 134 x 200, RGB


def _sixteen_bit():
    gray = np.asarray(_photo().convert("L"), np.uint16) * 257 + 3
    return Image.fromarray(gray).convert("I;16")


MODES = {
    "P": lambda: _photo().quantize(64),  # palette indices 0..63, nothing like the colours
    "P_transparency": lambda: _photo().convert("RGBA").quantize(32),
    "CMYK": lambda: _photo().convert("CMYK"),
    "YCbCr": lambda: _photo().convert("YCbCr"),
    "HSV": lambda: _photo().convert("HSV"),
    "I;16": _sixteen_bit,
    "I": lambda: _sixteen_bit().convert("I"),
    "F": lambda: _photo().convert("F"),
    "LA": lambda: _photo().convert("LA"),
    "RGBa": lambda: _photo().convert("RGBA").convert("RGBa"),
    "1": lambda: _photo().convert("1"),
    "L": lambda: _photo().convert("L"),
    "RGBA": lambda: _photo().convert("RGBA"),
}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_pil_mode_is_converted_as_the_cli_converts_it(mode):
    image = MODES[mode]()
    assert image.mode == mode.split("_")[0]
    # The oracle: ffzoo predict's `_read_image` (and torchvision's loader) convert to RGB.
    expected = preprocess_image(np.asarray(image.convert("RGB")), image_size=64)
    np.testing.assert_array_equal(preprocess_image(image, image_size=64), expected)


def test_palette_indices_are_not_read_as_gray():
    image = MODES["P"]()
    indices_as_gray = preprocess_image(np.asarray(image), image_size=64)  # what an array says
    assert np.abs(preprocess_image(image, image_size=64) - indices_as_gray).mean() > 0.5


@pytest.mark.parametrize("settings,message", [
    ({"crop_pct": 0}, "crop_pct must be a number in \\(0, 1\\]"),
    ({"crop_pct": -0.5}, "crop_pct"),
    ({"crop_pct": 1.5}, "crop_pct"),
    ({"crop_pct": math.nan}, "crop_pct"),
    ({"crop_pct": math.inf}, "crop_pct"),
    ({"crop_pct": "0.875"}, "crop_pct"),
    ({"crop_pct": True}, "crop_pct"),
    ({"std": (0.229, 0.0, 0.225)}, "std must be positive"),
    ({"std": (0.229, -0.224, 0.225)}, "std must be positive"),
    ({"std": (0.229, math.nan, 0.225)}, "std must be three finite numbers"),
    ({"std": (0.229, math.inf, 0.225)}, "std must be three finite numbers"),
    ({"std": (0.229, 0.224)}, "std must be three finite numbers"),
    ({"std": (0.2, 0.2, 0.2, 0.2)}, "std must be three finite numbers"),
    ({"std": 0.0}, "std must be three finite numbers"),
    ({"std": "abc"}, "std must be three finite numbers"),
    ({"mean": (0.485, 0.456)}, "mean must be three finite numbers"),
    ({"mean": (0.485, math.nan, 0.406)}, "mean must be three finite numbers"),
    ({"mean": (0.485, 0.456, 0.406, 0.5)}, "mean must be three finite numbers"),
    ({"image_size": 0}, "image_size must be a positive integer"),
    ({"image_size": 32.5}, "image_size must be a positive integer"),
])
def test_bad_settings_are_value_errors(settings, message):
    with pytest.raises(ValueError, match=message):
        preprocess_image(np.zeros((40, 40, 3), np.uint8), **settings)


def test_good_settings_still_work():
    image = np.full((40, 50, 3), 128, np.uint8)
    out = preprocess_image(image, image_size=32, crop_pct=1.0, mean=np.array(IMAGENET_MEAN),
                           std=list(IMAGENET_STD))
    assert out.shape == (32, 32, 3)
    np.testing.assert_allclose(out, np.broadcast_to((128 / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD), out.shape), atol=1e-6)
