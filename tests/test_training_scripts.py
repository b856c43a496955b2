"""training/: runs and their artifacts, schedule, weight decay, precision, NaN stops,
multi-device agreement, exact evaluation, and the embedded demo (killed runs resuming:
test_training_faults.py)."""

import csv
import json
import math
import os
import time
import subprocess
import sys

import keras
import numpy as np
import pytest

import ffzoo
from tests.conftest import BACKEND, ROOT, to_numpy
from tests.run_training import NANO_NAME, register_nano, unregister_nano
from training import config as cfg
from training import optimizer as opt
from training import schedule, train

CLASSES = 4


def _pattern(label, rng, size=32):
    """Class 0: horizontal stripes, 1: vertical stripes, 2: bright top, 3: bright left."""
    image = rng.integers(0, 70, (size, size, 3))
    rows, cols = np.mgrid[:size, :size]
    mask = [(rows // 4) % 2 == 0, (cols // 4) % 2 == 0, rows < size // 2, cols < size // 2][label]
    image[mask] += 160
    return image.astype(np.uint8)


def make_folder(root, train_per_class=12, val_counts=(3, 3, 3, 2)):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, counts in (("train", [train_per_class] * CLASSES), ("val", val_counts)):
        for label, count in enumerate(counts):
            directory = root / split / f"class{label}"
            directory.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(_pattern(label, rng)).save(directory / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("patterns"))


@pytest.fixture
def nano():
    register_nano()
    yield NANO_NAME
    unregister_nano()


def _args(folder, output, *extra):
    """A short run of the tiny model on the pattern folder (48 training images)."""
    return ["--recipe", "digits", "--model", NANO_NAME, "--data", str(folder), "--eval-split", "val",
            "--batch-size", "8", "--eval-batch-size", "4", "--epochs", "3", "--lr", "3e-3",
            "--warmup-epochs", "0", "--drop-path-rate", "0", "--output", str(output), *extra]


def _history(output):
    with open(os.path.join(output, "backup", "state.json")) as f:
        return json.load(f)["history"]


def test_short_run_learns_and_writes_every_artifact(folder, nano, tmp_path):
    output = tmp_path / "run"
    config, args = cfg.resolve(_args(folder, output, "--ema-decay", "0.8"))
    started = time.perf_counter()
    summary = train.run(config, fresh=args.fresh)
    elapsed = time.perf_counter() - started
    history = _history(output)
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert history[-1]["loss"] < history[0]["loss"], [row["loss"] for row in history]

    names = set(os.listdir(output))
    assert {"config.json", "backup", "log.csv", "curves.png", "tensorboard", "model.weights.h5",
            "model_ema.weights.h5", "summary.json"} <= names
    with open(output / "curves.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    events = [f for _, _, files in os.walk(output / "tensorboard") for f in files]
    assert any(f.startswith("events.out.tfevents") for f in events)
    with open(output / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert {"loss", "lr", "top1", "val_loss", "val_top1", "images_per_s"} <= set(rows[0])
    with open(output / "config.json") as f:
        saved = json.load(f)
    assert saved["batch_size"] == 8 and saved["model"] == NANO_NAME and saved["recipe"] == "digits"
    with open(output / "summary.json") as f:
        assert json.load(f) == pytest.approx(summary)
    assert summary["eval_examples"] == 11 and summary["epochs"] == 3
    # Learned: better than always answering the largest class (3 of the 11); with 4
    # classes every label is in the top 5. Each epoch's 48 images took less than the run.
    assert summary["top1"] > 3 / 11 and summary["top5"] is None
    assert 0 < summary["wall_time_s"] <= elapsed
    assert summary["train_images_per_s"] >= 48 / elapsed
    # The final weights are a plain ffzoo model's: they load by name and reproduce the
    # evaluation top-1 through an independent path (PIL + preprocess_image + predict).
    model = ffzoo.create_model(NANO_NAME, classes=CLASSES, weights=str(output / "model.weights.h5"),
                               classifier_activation=None)
    assert _top1_by_hand(model, folder / "val") == pytest.approx(summary["top1"])
    # The EMA weights are evaluated apart (DeiT reports the raw ones).
    ema = ffzoo.create_model(NANO_NAME, classes=CLASSES, classifier_activation=None,
                             weights=str(output / "model_ema.weights.h5"))
    assert _top1_by_hand(ema, folder / "val") == pytest.approx(summary["ema_top1"])
    assert not np.array_equal(to_numpy(ema.weights[0]), to_numpy(model.weights[0]))


def _top1_by_hand(model, directory):
    from PIL import Image

    images, labels = [], []
    for label, name in enumerate(sorted(os.listdir(directory))):
        for file in sorted(os.listdir(directory / name)):
            pixels = np.asarray(Image.open(directory / name / file).convert("RGB"))
            images.append(ffzoo.preprocess_image(pixels, image_size=32, crop_pct=1.0))
            labels.append(label)
    logits = to_numpy(model.predict(np.stack(images), verbose=0))
    return float(np.mean(logits.argmax(-1) == np.array(labels)))


@pytest.mark.parametrize("batch,pad", [(4, False), (4, True), (64, False)])
def test_evaluate_counts_every_example_once(folder, nano, batch, pad):
    import ffzoo.data as fd
    from training.evaluate import evaluate

    keras.utils.set_random_seed(0)
    model = ffzoo.create_model(NANO_NAME, classes=CLASSES, classifier_activation=None)
    pipeline = fd.load(str(folder), "val", training=False, batch_size=batch, image_size=32,
                       crop_pct=1.0, one_hot_labels=True, pad_final_batch=pad)
    result = evaluate(model, pipeline, progress=False)
    assert result["examples"] == 11
    assert result["top1"] == pytest.approx(_top1_by_hand(model, folder / "val"))


def test_evaluate_command_writes_json(folder, nano, tmp_path):
    from training import evaluate

    keras.utils.set_random_seed(0)
    model = ffzoo.create_model(NANO_NAME, classes=CLASSES, classifier_activation=None)
    model.save_weights(tmp_path / "m.weights.h5")
    result_path = tmp_path / "result.json"
    assert evaluate.main(["--model", NANO_NAME, "--weights", str(tmp_path / "m.weights.h5"),
                          "--data", str(folder), "--split", "val", "--crop-pct", "1",
                          "--batch-size", "5", "--output", str(result_path)]) == 0
    with open(result_path) as f:
        result = json.load(f)
    assert result["examples"] == 11
    assert result["top1"] == pytest.approx(_top1_by_hand(model, folder / "val"))
    assert result["images_per_s"] > 0 and result["backend"] == BACKEND


# ---------------------------------------------------------------------------------------
# Schedule and optimizer
# ---------------------------------------------------------------------------------------

def _timm_cosine(epoch, base, epochs, warmup, warmup_lr, min_lr):
    """timm's CosineLRScheduler (t_initial=epochs, warmup_t=warmup, no cycles), written out."""
    if epoch < warmup:
        return warmup_lr + epoch * (base - warmup_lr) / warmup
    return min_lr + 0.5 * (base - min_lr) * (1 + math.cos(math.pi * epoch / epochs))


@pytest.mark.parametrize("unit", ["epoch", "step"])
def test_schedule_values_at_chosen_steps(unit):
    # DeiT at batch 1024: base 5e-4 * 1024 / 512 = 1e-3, 300 epochs, 5 warm-up epochs.
    config = cfg.load_recipe("deit")
    base = opt.scaled_lr(config, 1024)
    assert base == pytest.approx(1e-3)
    steps = 1251  # ImageNet: 1,281,167 // 1024
    lr = schedule.WarmupCosine(base, 300, steps, warmup_epochs=5, warmup_lr=1e-6, min_lr=1e-5, unit=unit)
    for step in [0, 1, steps - 1, steps, 2 * steps + 17, 5 * steps, 6 * steps + 3, 150 * steps,
                 299 * steps + 1250]:
        if unit == "epoch":  # timm steps after each epoch: epoch e trains at L(max(e - 1, 0))
            t = max(step // steps - 1, 0)
        else:
            t = step / steps
        expected = _timm_cosine(t, 1e-3, 300, 5, 1e-6, 1e-5)
        assert float(to_numpy(lr(step))) == pytest.approx(expected, rel=1e-5), step
    if unit == "epoch":
        assert float(to_numpy(lr(0))) == pytest.approx(1e-6)
        assert float(to_numpy(lr(6 * steps))) == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * 5 / 300)))


def test_config_overrides_and_errors():
    config, _ = cfg.resolve(["--recipe", "deit", "--batch-size", "256", "--crop-scale", "0.2,1",
                             "--ema-decay", "none", "--decay-positions", "true"])
    assert config["batch_size"] == 256 and config["crop_scale"] == (0.2, 1.0)
    assert config["ema_decay"] is None and config["decay_positions"] is True
    assert config["drop_rate"] == 0.1  # the FF runs' dropout
    with pytest.raises(cfg.ConfigError, match="Unknown recipe 'deot'"):
        cfg.resolve(["--recipe", "deot"])
    with pytest.raises(cfg.ConfigError, match="precision must be"):
        cfg.resolve(["--precision", "float16"])


def _names(variables):
    return sorted(v.path for v in variables)


@pytest.mark.parametrize("decay_positions", [False, True])
def test_weight_decay_exclusions(decay_positions):
    model = ffzoo.create_model("ffvit_micro_patch4_32", classes=10)
    excluded = _names(opt.no_decay_variables(model, decay_positions))
    for path in _names(model.trainable_variables):
        leaf = path.split("/")[-1]
        expected = leaf in ("bias", "gamma", "beta", "class_token") or (
            leaf in ("class_position", "position_grid") and not decay_positions)
        assert (path in excluded) == expected, path
    # Every kernel is decayed; biases, LayerNorms, class token (and positions) are not.
    assert not any(p.endswith("kernel") for p in excluded)
    assert sum(p.endswith("/bias") for p in excluded) == sum(
        p.endswith("/bias") for p in _names(model.trainable_variables))

    # The optimizer applies exactly that: with zero gradients AdamW's only change is
    # decay, var <- var (1 - lr wd), on the decayed variables alone.
    config = dict(cfg.load_recipe("digits"), weight_decay=0.5, decay_positions=decay_positions)
    optimizer, _ = opt.build(config, model, steps_per_epoch=10, global_batch=64)
    before = {v.path: to_numpy(v) for v in model.trainable_variables}
    lr = float(to_numpy(optimizer.learning_rate))  # at step 0, the step applied below
    optimizer.apply_gradients([(keras.ops.zeros(v.shape), v) for v in model.trainable_variables])
    for variable in model.trainable_variables:
        factor = 1.0 if variable.path in excluded else 1.0 - lr * 0.5
        np.testing.assert_allclose(to_numpy(variable), before[variable.path] * factor, rtol=1e-6, atol=1e-9)


# ---------------------------------------------------------------------------------------
# Precision, NaN, resume
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_precision_policies(folder, nano, tmp_path, precision):
    output = tmp_path / precision
    config, _ = cfg.resolve(_args(folder, output, "--precision", precision, "--epochs", "1",
                                  "--steps-per-epoch", "2"))
    summary = train.run(config, fresh=True)
    assert summary["compute_dtype"] == precision.split("_")[1]
    assert summary["variable_dtype"] == "float32"
    assert summary["loss_scaling"] == (precision == "mixed_float16")
    assert all(math.isfinite(row["loss"]) for row in _history(output))
    assert summary["eval_examples"] == 11


def test_nan_loss_stops_the_run_naming_the_step(folder, nano, tmp_path, capsys):
    # A huge learning rate (a finite, valid value) makes step 2's loss NaN.
    output = tmp_path / "nan"
    assert train.main(_args(folder, output, "--lr", "1e30")) == 2
    message = capsys.readouterr().err
    assert "epoch 1, step 2 of the epoch" in message and "optimizer step 2" in message
    assert not os.path.exists(output / "backup" / "state.json")  # no diverged backup
    assert not os.path.exists(output / "model.weights.h5")


def _subprocess_env(**extra):
    return dict(os.environ, KERAS_BACKEND=BACKEND, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3",
                CUDA_VISIBLE_DEVICES="", **extra)


# ---------------------------------------------------------------------------------------
# Several devices
# ---------------------------------------------------------------------------------------

def _compare(folder, tmp_path, distribute, env):
    command = [sys.executable, "-m", "tests.run_training", "--compare", distribute,
               *_args(folder, tmp_path / "cmp", "--epochs", "2", "--steps-per-epoch", "1",
                      "--drop-rate", "0", "--seed", "3")]
    result = subprocess.run(command, env=_subprocess_env(**env), cwd=ROOT, capture_output=True,
                            text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    line = [l for l in result.stdout.splitlines() if l.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


@pytest.mark.skipif(BACKEND != "jax", reason="keras.distribution.DataParallel needs the JAX backend")
def test_jax_data_parallel_on_two_devices_matches_one_device(folder, tmp_path, record):
    losses = _compare(folder, tmp_path, "data_parallel",
                      {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert losses["data_parallel_devices"] == 2 and losses["none_devices"] == 1
    np.testing.assert_allclose(losses["data_parallel"], losses["none"], rtol=0, atol=1e-4)
    record("JAX DataParallel (2 devices) vs 1 device, first two step losses, max |diff|",
           float(np.max(np.abs(np.subtract(losses["data_parallel"], losses["none"])))))


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.distribute needs the TensorFlow backend")
def test_multi_worker_mirrored_with_two_local_workers(folder, tmp_path, record):
    output = tmp_path / "mwms"
    command = [sys.executable, "-m", "tests.run_training",
               *_args(folder, output, "--epochs", "2", "--steps-per-epoch", "2", "--drop-rate", "0",
                      "--distribute", "multi_worker_mirrored")]
    processes = []
    for index in range(2):  # each worker picks its own port and reports it to the other
        cluster = f"{tmp_path}:{index}:2"
        processes.append(subprocess.Popen(command, env=_subprocess_env(FFZOO_TEST_CLUSTER=cluster), cwd=ROOT,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=400) for p in processes]
    for process, (out, err) in zip(processes, outputs):
        assert process.returncode == 0, err[-3000:]
    with open(output / "summary.json") as f:
        summary = json.load(f)
    assert summary["distribute"] == "multi_worker_mirrored" and summary["devices"] == 2
    assert summary["epochs"] == 2 and summary["eval_examples"] == 11
    chief, other = _history(output), _history(output / "worker-1")
    # The workers hold one model: the same losses, epoch by epoch.
    np.testing.assert_allclose([r["loss"] for r in other], [r["loss"] for r in chief], atol=1e-6)
    record("MultiWorkerMirrored, 2 local workers: loss per epoch", [round(r["loss"], 5) for r in chief])


def test_other_backends_refuse_multi_device_names():
    from training import distribute

    wrong = {"tensorflow": "data_parallel", "jax": "mirrored", "torch": "mirrored"}[BACKEND]
    with pytest.raises(ValueError, match="not available with KERAS_BACKEND") as error:
        distribute.plan(wrong, 64)
    assert "data_parallel (jax)" in str(error.value) and "mirrored (tensorflow)" in str(error.value)


# ---------------------------------------------------------------------------------------
# The embedded demo
# ---------------------------------------------------------------------------------------

def test_demo_on_a_reduced_budget(tmp_path, monkeypatch):
    from sklearn.datasets import load_digits

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    output = tmp_path / "demo"
    assert train.main(["--recipe", "digits", "--epochs", "1", "--steps-per-epoch", "3",
                       "--output", str(output)]) == 0
    # The digits were written as an image folder: every image once, 20% of each class held out.
    counts = np.bincount(load_digits().target)
    held_out = sum(int(round(c * 0.2)) for c in counts)
    root = tmp_path / "keras_home" / "datasets" / "ffzoo_digits"
    files = {split: sum(len(f) for _, _, f in os.walk(root / split)) for split in ("train", "val")}
    assert files == {"train": counts.sum() - held_out, "val": held_out}
    with open(output / "summary.json") as f:
        summary = json.load(f)
    assert summary["model"] == "ffvit_micro_patch4_32" and summary["eval_examples"] == held_out
    # Three steps teach nothing measurable; top-1 is a count of the held-out images.
    assert summary["epochs"] == 1 and float(summary["top1"] * held_out).is_integer()
    assert os.path.exists(output / "curves.png") and os.path.exists(output / "model.weights.h5")
