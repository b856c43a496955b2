"""One device against two: the weights after several SGD steps agree to 1e-6.

A child process splits the CPU into two devices before the backend starts (TensorFlow:
two logical CPU devices for `MirroredStrategy`; JAX: `XLA_FLAGS` with two host devices
for `DataParallel`), then trains the same tiny model from the same weights on the same
batches twice through `training.distribute.plan` and `training.train._fit_data`: once
on one device, once on both. Plain SGD makes the update proportional to the gradient,
so an all-reduce that sums the replicas' gradients instead of averaging them (or a
loss scaled by the replica count) moves the weights twice as far; Adam would hide it.
The child also trains one device at twice the learning rate, which is what such a
sum would do, to show the 1e-6 bound tells the two apart.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import BACKEND, ROOT

GLOBAL_BATCH, STEPS, LR = 8, 4, 0.5
CHILD = r"""
import json, os, sys
import numpy as np

backend = os.environ["KERAS_BACKEND"]
distributed = sys.argv[1]
if backend == "tensorflow":
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
import tensorflow as tf

import ffzoo
from training import distribute, train

GLOBAL_BATCH, STEPS, LR = (int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
rng = np.random.default_rng(5)
images = rng.standard_normal((GLOBAL_BATCH * STEPS, 16, 16, 3)).astype("float32")
labels = np.eye(4, dtype="float32")[rng.integers(0, 4, GLOBAL_BATCH * STEPS)]


def build():
    return ffzoo.FFViT(patch_size=8, embed_dim=16, depth=1, image_size=16, pos_grid_size=2,
                       classes=4, classifier_activation=None)


keras.utils.set_random_seed(0)
initial = build().get_weights()


def trained(choice, lr):
    plan = distribute.plan(choice, GLOBAL_BATCH)
    with plan.scope():
        model = build()
        model.set_weights(initial)
        model.compile(optimizer=keras.optimizers.SGD(lr),
                      loss=keras.losses.CategoricalCrossentropy(from_logits=True),
                      jit_compile=train._jit({"jit_compile": "auto"}))
    data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(GLOBAL_BATCH)
    model.fit(train._fit_data(model, data, plan), epochs=1, steps_per_epoch=STEPS,
              shuffle=False, verbose=0)
    return plan.replicas, [np.asarray(w, np.float64) for w in model.get_weights()]


# One device first: on JAX the distributed plan is global from then on.
_, single = trained("none", LR)
_, double_lr = trained("none", 2 * LR)
replicas, multi = trained(distributed, LR)


def max_diff(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


print("RESULT " + json.dumps({
    "replicas": replicas,
    "multi_vs_single": max_diff(multi, single),
    "double_lr_vs_single": max_diff(double_lr, single),
    "moved": max_diff(single, [np.asarray(w, np.float64) for w in initial]),
}), flush=True)
"""


def _compare(distributed, env):
    env = dict(os.environ, KERAS_BACKEND=BACKEND, PYTHONPATH=ROOT, **env)
    result = subprocess.run([sys.executable, "-c", CHILD, distributed, str(GLOBAL_BATCH),
                             str(STEPS), str(LR)], env=env, cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    line = [l for l in result.stdout.splitlines() if l.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def _check(result, record, label):
    record(f"{label}: max |weight, 2 devices - 1 device| after {STEPS} SGD steps",
           result["multi_vs_single"])
    assert result["replicas"] == 2
    assert result["moved"] > 0.05  # the steps moved the weights
    assert result["double_lr_vs_single"] > 1e-2  # a summed all-reduce would be far off
    assert result["multi_vs_single"] < 1e-6


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.distribute needs the TensorFlow backend")
def test_mirrored_strategy_weights_equal_one_device(record):
    _check(_compare("mirrored", {}), record, "MirroredStrategy (2 logical CPUs)")


@pytest.mark.skipif(BACKEND != "jax", reason="keras.distribution.DataParallel needs the JAX backend")
def test_jax_data_parallel_weights_equal_one_device(record):
    _check(_compare("data_parallel", {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}),
           record, "JAX DataParallel (2 host devices)")
