"""Writes tests/data/golden_ffvit_small.npz: a tiny seeded model's weights, input and output.

Run once (any backend) when the golden tensors must be regenerated on purpose:
    KERAS_BACKEND=jax python -m tests.make_golden
The output stored is ffzoo's; it is checked against the NumPy reference before saving.
"""

import numpy as np

import ffzoo
from ffzoo.weights.convert import load_state_dict
from references import numpy_ffvit as ref
from tests.test_numerics import GOLDEN

DIMS = dict(patch_size=8, embed_dim=32, depth=2, image_size=48, pos_grid_size=4, mlp_ratio=4)
CLASSES = 7


def main():
    rng = np.random.default_rng(20210505)
    num_tokens = 1 + (DIMS["image_size"] // DIMS["patch_size"]) ** 2
    sd = ref.random_state_dict(rng, patch_size=8, embed_dim=32, depth=2, num_tokens=num_tokens,
                               pos_grid=4, classes=CLASSES)
    images = rng.standard_normal((4, 48, 48, 3)).astype(np.float32)
    model = ffzoo.FFViT(**DIMS, classes=CLASSES, classifier_activation=None)
    load_state_dict(model, sd, "ff_pth")
    logits = model.predict(images, verbose=0)
    assert np.max(np.abs(logits - ref.forward(sd, images, 8))) < 1e-4
    np.savez_compressed(
        GOLDEN, images=images, logits=logits, classes=CLASSES,
        **{f"dims_{k}": v for k, v in DIMS.items()}, **{f"sd_{k}": v for k, v in sd.items()},
    )
    print(f"wrote {GOLDEN}")


if __name__ == "__main__":
    main()
