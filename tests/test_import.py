"""`import ffzoo` and the models work with TensorFlow absent (JAX and PyTorch backends)."""

import os
import site
import subprocess
import sys

import pytest

from tests.conftest import BACKEND, ROOT

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


def _site_packages_without_tensorflow(tmp_path):
    """A copy of site-packages (as links) with every TensorFlow distribution left out."""
    view = tmp_path / "site-packages"
    view.mkdir()
    for directory in site.getsitepackages():
        for entry in os.listdir(directory):
            if entry.lower().startswith(("tensorflow", "tf_keras")) or (view / entry).exists():
                continue
            os.symlink(os.path.join(directory, entry), view / entry)
    return view


@pytest.mark.skipif(BACKEND == "tensorflow", reason="TensorFlow is this run's backend")
def test_import_without_tensorflow(tmp_path):
    view = _site_packages_without_tensorflow(tmp_path)
    # -S: no site module, so only the TensorFlow-free view and the repository are on the path.
    env = dict(os.environ, KERAS_BACKEND=BACKEND, PYTHONPATH=f"{view}{os.pathsep}{ROOT}")
    run = subprocess.run([sys.executable, "-S", "-c", _CHECK], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().splitlines()[-1] == "tensorflow absent; loaded: False"
