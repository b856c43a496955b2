"""Runs training in a subprocess for the tests, with a tiny test-only model registered.

    python -m tests.run_training [training.train arguments]     # one run
    python -m tests.run_training --compare DISTRIBUTE [arguments]

`--compare` trains twice in one process, on one device and then with DISTRIBUTE, and
prints one JSON line with both loss histories.

`FFZOO_TEST_CLUSTER=DIR:INDEX:COUNT`: this process is worker INDEX of COUNT local
MultiWorkerMirrored workers: it picks a free port itself, reports it in DIR, and builds
TF_CONFIG from the ports every worker reported.
"""

import json
import os
import sys

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


def join_local_cluster(spec):
    """Picks this worker's port, reports it and sets TF_CONFIG once every worker has
    (see above). The port stays bound, so no other process can take it, until the
    returned socket is closed just before training starts its server."""
    import socket
    import time

    directory, index, count = spec.split(":")
    reserved = socket.socket()
    reserved.bind(("127.0.0.1", 0))
    report = os.path.join(directory, f"worker-{index}.port")
    with open(report + ".tmp", "w") as f:
        f.write(str(reserved.getsockname()[1]))
    os.replace(report + ".tmp", report)
    files = [os.path.join(directory, f"worker-{i}.port") for i in range(int(count))]
    deadline = time.time() + 120
    while not all(os.path.exists(f) for f in files):
        if time.time() > deadline:
            sys.exit(f"run_training: not every worker reported its port in {directory}")
        time.sleep(0.05)
    workers = []
    for file in files:
        with open(file) as f:
            workers.append(f"127.0.0.1:{f.read()}")
    os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": workers},
                                          "task": {"type": "worker", "index": int(index)}})
    return reserved


def config_output(argv):
    return argv[argv.index("--output") + 1]


if __name__ == "__main__":
    register_nano()
    if sys.argv[1] == "--compare":
        compare(sys.argv[2], sys.argv[3:])
    else:
        from training import train

        if os.environ.get("FFZOO_TEST_CLUSTER"):
            join_local_cluster(os.environ["FFZOO_TEST_CLUSTER"]).close()
        sys.exit(train.main(sys.argv[1:]))
