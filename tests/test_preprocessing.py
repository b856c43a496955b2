"""`ffzoo.preprocess_image` against DeiT's evaluation transform done with PIL."""

import numpy as np
import pytest
import skimage.data
from PIL import Image

from ffzoo.preprocessing import IMAGENET_MEAN, IMAGENET_STD, preprocess_image

MEAN, STD = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)


def deit_eval_with_pil(array):
    """torchvision's Resize(256, bicubic) + CenterCrop(224) + ToTensor + Normalize, on PIL."""
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[:, :, 0]  # PIL takes gray as (H, W)
    image = Image.fromarray(array).convert("RGB")
    width, height = image.size
    if width <= height:
        size = (256, int(256 * height / width))
    else:
        size = (int(256 * width / height), 256)
    image = image.resize(size, Image.BICUBIC)
    top = int(round((size[1] - 224) / 2.0))
    left = int(round((size[0] - 224) / 2.0))
    image = image.crop((left, top, left + 224, top + 224))
    return (np.asarray(image, np.float64) / 255.0 - MEAN) / STD


def _pixel_difference(ours, pil):
    """Absolute difference in 0..255 pixel units (undoing the normalization)."""
    return np.abs(ours - pil) * STD * 255.0


PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "camera", "immunohistochemistry"]


@pytest.mark.parametrize("name", PHOTOS)
def test_matches_pil_on_real_photos(name, record):
    photo = getattr(skimage.data, name)()
    ours = preprocess_image(photo)
    assert ours.shape == (224, 224, 3) and ours.dtype == np.float32
    diff = _pixel_difference(ours, deit_eval_with_pil(photo))
    record(f"preprocess vs PIL {name} {photo.shape}: mean/max |diff| (1/255 units)",
           f"{diff.mean():.4f} / {diff.max():.4f}")
    assert diff.mean() < 0.5  # the bar; in practice PIL's own rounding is reproduced
    assert diff.max() < 1.01


def _variants():
    photo = skimage.data.chelsea()  # 300 x 451
    rgba = np.concatenate([photo, np.full(photo.shape[:2] + (1,), 77, np.uint8)], -1)
    gray = skimage.data.camera()
    return {
        "rgba": rgba,
        "gray_hw": gray,
        "gray_hw1": gray[:, :, None],
        "portrait": np.ascontiguousarray(photo.transpose(1, 0, 2)),
        "upsample_small": photo[::4, ::3],  # 75 x 151 -> shorter side grows to 256
        "odd_crop_offsets": photo[:257, :341],  # (257 - 224) / 2 = 16.5: half to even
        "already_256": photo[:256, :300],
        "tiny": photo[:3, :2],
    }


@pytest.mark.parametrize("name", sorted(_variants()))
def test_matches_pil_on_other_layouts_and_sizes(name):
    image = _variants()[name]
    diff = _pixel_difference(preprocess_image(image), deit_eval_with_pil(image))
    assert diff.mean() < 0.5 and diff.max() < 1.01, (diff.mean(), diff.max())


def test_rgba_alpha_is_ignored_and_gray_is_replicated():
    photo = skimage.data.chelsea()
    alpha = np.concatenate([photo, np.zeros(photo.shape[:2] + (1,), np.uint8)], -1)
    np.testing.assert_array_equal(preprocess_image(alpha), preprocess_image(photo))
    gray = preprocess_image(skimage.data.camera())
    unnormalized = gray * STD + MEAN
    np.testing.assert_allclose(unnormalized[..., 0], unnormalized[..., 2], atol=1e-6)


def test_pil_image_input():
    photo = skimage.data.coffee()
    np.testing.assert_array_equal(preprocess_image(Image.fromarray(photo)), preprocess_image(photo))


@pytest.mark.parametrize("bad,message", [
    (np.zeros((10, 10, 3), np.float32), "expects uint8 pixels"),
    (np.zeros((2, 10, 10, 3), np.uint8), "expects one image"),
    (np.zeros((10, 10, 5), np.uint8), "expects one image"),
])
def test_bad_input(bad, message):
    with pytest.raises(ValueError, match=message):
        preprocess_image(bad)
