"""`import ffzoo` and the models work with TensorFlow absent (JAX and PyTorch backends)."""

import pytest

from tests.conftest import BACKEND, python_without, run_python

_CHECK = r"""
import sys
import numpy as np
import ffzoo
model = ffzoo.FFViT(patch_size=8, embed_dim=16, depth=1, image_size=32, pos_grid_size=4, classes=3)
assert model.predict(np.zeros((1, 32, 32, 3), "float32"), verbose=0).shape == (1, 3)
try:
    import tensorflow
    print("tensorflow importable")
except ModuleNotFoundError:
    print("tensorflow absent; loaded:", "tensorflow" in sys.modules)
"""


@pytest.mark.skipif(BACKEND == "tensorflow", reason="TensorFlow is this run's backend")
def test_import_without_tensorflow(tmp_path):
    run = run_python(_CHECK, python_without(tmp_path, "tensorflow", "tf_keras"))
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().splitlines()[-1] == "tensorflow absent; loaded: False"
