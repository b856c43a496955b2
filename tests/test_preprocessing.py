"""`ffzoo.preprocess_image` against DeiT's evaluation transform done with PIL."""

import numpy as np
import pytest
import skimage.data
from PIL import Image

from ffzoo.preprocessing import IMAGENET_MEAN, IMAGENET_STD, preprocess_image

MEAN, STD = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
pytestmark = pytest.mark.once  # NumPy and PIL only: no Keras backend involved


def deit_eval_with_pil(array):
    """torchvision's Resize(256, bicubic) + CenterCrop(224) on PIL: the uint8 crop
    that ToTensor + Normalize then scale."""
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
    return np.asarray(image)


def assert_is_pil_crop(ours, pil):
    """`preprocess_image`'s output is the normalization of PIL's uint8 crop, pixel for
    pixel: undoing the normalization gives PIL's values to float32 precision (a pixel
    one level off is 1.0 away). Returns the largest deviation in 1/255 units."""
    assert ours.shape == pil.shape == (224, 224, 3) and ours.dtype == np.float32
    levels = (ours.astype(np.float64) * STD + MEAN) * 255.0
    np.testing.assert_array_equal(np.round(levels).astype(np.uint8), pil)
    deviation = np.abs(levels - pil).max()
    assert deviation < 1e-3
    return deviation


PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "camera", "immunohistochemistry"]


@pytest.mark.parametrize("name", PHOTOS)
def test_matches_pil_on_real_photos(name, record):
    photo = getattr(skimage.data, name)()
    deviation = assert_is_pil_crop(preprocess_image(photo), deit_eval_with_pil(photo))
    record(f"preprocess vs PIL {name} {photo.shape}: max |diff| (1/255 units, float32 normalization)",
           f"{deviation:.1e}")


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
    assert_is_pil_crop(preprocess_image(image), deit_eval_with_pil(image))


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
