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


DEIT_SAVED = dict(patch_size=16, embed_dim=16, depth=2, num_heads=2, image_size=32,
                  pos_grid_size=14, classes=6, drop_rate=0.1, drop_path_rate=0.2,
                  attention_dropout_rate=0.1)


@pytest.mark.parametrize("builder,kwargs", [
    (ffzoo.FFViT, dict(SAVED)),
    (ffzoo.FFViT, dict(SMALL, include_top=False, pooling="avg")),
    (ffzoo.DeiT, dict(DEIT_SAVED)),
], ids=["ffvit_classifier", "ffvit_notop_avg", "deit_classifier"])
def test_keras_file_round_trip(builder, kwargs, tmp_path, rng):
    model = builder(**kwargs)
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
import json, sys, numpy as np, ffzoo
kwargs, folder = json.loads(sys.argv[1]), sys.argv[2]
images = np.load(f"{folder}/images.npy")
for family, builder in (("ffvit", ffzoo.FFViT), ("deit", ffzoo.DeiT)):
    model = builder(**kwargs[family], weights=f"{folder}/{family}.weights.h5")
    np.save(f"{folder}/{family}_{sys.argv[3]}.npy", model.predict(images, verbose=0))
"""


def test_weights_files_load_on_the_next_backend(tmp_path, rng):
    images = rng.standard_normal((2, 32, 32, 3)).astype("float32")
    np.save(tmp_path / "images.npy", images)
    configs, want = {"ffvit": SAVED, "deit": DEIT_SAVED}, {}
    for family, builder in (("ffvit", ffzoo.FFViT), ("deit", ffzoo.DeiT)):
        model = builder(**configs[family])
        _randomize(model, seed=1)
        want[family] = model.predict(images, verbose=0)
        model.save_weights(str(tmp_path / f"{family}.weights.h5"))
    # Each backend's pass loads its file on the next backend of the cycle (TensorFlow ->
    # JAX -> PyTorch -> TensorFlow): over the three passes every backend writes once and
    # reads once, at a third of the subprocesses of loading on both others.
    cycle = ["tensorflow", "jax", "torch"]
    for other in [cycle[(cycle.index(BACKEND) + 1) % 3]]:
        env = dict(os.environ, KERAS_BACKEND=other, PYTHONPATH=ROOT)
        run = subprocess.run([sys.executable, "-c", _OTHER, json.dumps(configs), str(tmp_path), other],
                             env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
        for family in configs:
            np.testing.assert_allclose(np.load(tmp_path / f"{family}_{other}.npy"), want[family],
                                       atol=1e-5, err_msg=f"{family} written on {BACKEND}, loaded on {other}")
