"""Runs training in a subprocess for the tests, with a tiny test-only model registered.

    python -m tests.run_training [training.train arguments]     # one run
    python -m tests.run_training --compare DISTRIBUTE [arguments]

`--compare` trains twice in one process, on one device and then with DISTRIBUTE, and
prints one JSON line with both loss histories. `FFZOO_TEST_CPUS=N` splits the CPU into
N logical TensorFlow devices first (TensorFlow backend).
"""

import json
import os
import sys

if os.environ.get("FFZOO_TEST_CPUS"):
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * int(os.environ["FFZOO_TEST_CPUS"]))

import ffzoo
from ffzoo.models.registry import _DIMS, _MODELS, register_model

# 17 tokens of width 32, two blocks: compiles and trains in seconds on every backend.
NANO = dict(patch_size=8, embed_dim=32, depth=2, mlp_ratio=4.0, image_size=32, pos_grid_size=4)
NANO_NAME = "testonly_nano_patch8_32"


def register_nano():
    if NANO_NAME not in _MODELS:
        register_model(NANO_NAME, lambda **kwargs: ffzoo.FFViT(**{**NANO, **kwargs}), "ffvit", NANO)


def unregister_nano():
    _MODELS.pop(NANO_NAME, None)
    _DIMS.pop(NANO_NAME, None)


def compare(distribute, argv):
    from training import config as cfg
    from training import train

    losses = {}
    for choice in ("none", distribute):
        config, _ = cfg.resolve(argv + ["--distribute", choice, "--output", f"{config_output(argv)}-{choice}"])
        summary = train.run(config, fresh=True)
        with open(os.path.join(config["output"], "backup", "state.json")) as f:
            losses[choice] = [row["loss"] for row in json.load(f)["history"]]
        losses[choice + "_devices"] = summary["devices"]
    print("RESULT " + json.dumps(losses), flush=True)


def config_output(argv):
    return argv[argv.index("--output") + 1]


if __name__ == "__main__":
    register_nano()
    if sys.argv[1] == "--compare":
        compare(sys.argv[2], sys.argv[3:])
    else:
        from training import train

        sys.exit(train.main(sys.argv[1:]))
