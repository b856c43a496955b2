"""`.keras` round trips and `.weights.h5` files moving between backends."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import ffzoo
from tests.conftest import BACKEND, ROOT

SMALL = dict(patch_size=8, embed_dim=16, depth=2, image_size=32, pos_grid_size=4)
# 14 -> 2 x 2 position resize and dropout layers inside, to exercise more of the graph.
SAVED = dict(patch_size=16, embed_dim=16, depth=2, image_size=32, pos_grid_size=14,
             classes=6, drop_rate=0.1, drop_path_rate=0.2, token_mlp_dim=9)


def _randomize(model, seed=0):
    rng = np.random.default_rng(seed)
    model.set_weights([rng.standard_normal(w.shape).astype("float32") * 0.3
                       for w in model.weights])


@pytest.mark.parametrize("kwargs", [dict(SAVED), dict(SMALL, include_top=False, pooling="avg")],
                         ids=["classifier", "notop_avg"])
def test_keras_file_round_trip(kwargs, tmp_path, rng):
    model = ffzoo.FFViT(**kwargs)
    _randomize(model)
    images = rng.standard_normal((2, 32, 32, 3)).astype("float32")
    want = model.predict(images, verbose=0)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(images, verbose=0), want, atol=1e-6)
    assert json.loads(json.dumps(loaded.get_config())) == json.loads(json.dumps(model.get_config()))
    assert [w.path for w in loaded.weights] == [w.path for w in model.weights]


_OTHER = r"""
import sys, numpy as np, ffzoo
kwargs, weights, images, out = __import__("json").loads(sys.argv[1]), *sys.argv[2:]
model = ffzoo.FFViT(**kwargs, weights=weights)
np.save(out, model.predict(np.load(images), verbose=0))
"""


def test_weights_file_loads_on_the_other_backends(tmp_path, rng):
    model = ffzoo.FFViT(**SAVED)
    _randomize(model, seed=1)
    images = rng.standard_normal((2, 32, 32, 3)).astype("float32")
    want = model.predict(images, verbose=0)
    weights = str(tmp_path / f"written_by_{BACKEND}.weights.h5")
    model.save_weights(weights)
    np.save(tmp_path / "images.npy", images)
    for other in sorted({"tensorflow", "jax", "torch"} - {BACKEND}):
        out = str(tmp_path / f"{other}.npy")
        env = dict(os.environ, KERAS_BACKEND=other, PYTHONPATH=ROOT)
        run = subprocess.run(
            [sys.executable, "-c", _OTHER, json.dumps(SAVED), weights,
             str(tmp_path / "images.npy"), out],
            env=env, capture_output=True, text=True, timeout=300,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        np.testing.assert_allclose(np.load(out), want, atol=1e-5, err_msg=f"loaded on {other}")
