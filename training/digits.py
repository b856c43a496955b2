"""The embedded dataset: scikit-learn's handwritten digits as an image folder.

1,797 real 8 x 8 grayscale scans of digits 0-9 (shipped inside scikit-learn, no
network), upscaled to 32 x 32 PNGs (lossless) and split, stratified, into
`train/<digit>/` and `val/<digit>/`, so training reads them through the same
image-folder path of `ffzoo.data` as ImageNet.
"""

import os

import keras
import numpy as np


def default_folder():
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "datasets", "ffzoo_digits")


def write_folder(folder=None, size=32, validation_fraction=0.2, split_seed=0):
    """Writes the folder if it is not complete yet; returns its path. `split_seed` draws
    which images are held out (fixed: every run sees the same split)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    folder = folder or default_folder()
    marker = os.path.join(folder, "COMPLETE")
    if os.path.exists(marker):
        return folder
    digits = load_digits()
    rng = np.random.default_rng(split_seed)
    print(f"Writing scikit-learn's {len(digits.images)} digits as {size} x {size} PNGs to {folder}")
    progress = keras.utils.Progbar(len(digits.images), unit_name="image")
    done = 0
    for label in range(10):
        indices = rng.permutation(np.flatnonzero(digits.target == label))
        held_out = int(round(len(indices) * validation_fraction))
        for position, index in enumerate(indices):
            split = "val" if position < held_out else "train"
            directory = os.path.join(folder, split, str(label))
            os.makedirs(directory, exist_ok=True)
            pixels = (digits.images[index] * (255.0 / 16.0)).round().astype(np.uint8)
            image = Image.fromarray(pixels).resize((size, size), Image.BICUBIC)
            image.save(os.path.join(directory, f"{index:04d}.png"))
            done += 1
            progress.update(done)
    with open(marker, "w") as f:
        f.write("scikit-learn digits\n")
    return folder
