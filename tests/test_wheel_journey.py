"""Issue 15's user journey from the built wheel alone, on every backend.

The wheel is built once from a copy of the checkout and installed, with `--no-deps`, into
a temporary venv whose only view of the dependencies is a `.pth` line naming this
interpreter's site-packages (a plain path: the checkout's editable-install hook there is
not run, so `ffzoo` and `ffzoo.training` come from the wheel). From a directory outside
the checkout, for each backend, the venv's `ffzoo` console script trains a small model on
a generated folder of three coloured-pattern classes (`ffzoo train`), evaluates the run
(`ffzoo evaluate RUN --data DIR`) and classifies images with it (`ffzoo predict --run`).
The oracle is computed here, independently of `load_run` and `ffzoo.preprocess_image`:
the model rebuilt from model.json with the run's final weights, fed images normalized by
hand. The wheel is installed once in CI (the test is marked `once`), and its journey runs
on the suite's first backend: every leg is four fresh processes that import TensorFlow,
1.5-4 minutes on a shared 2-core CPU. The same journey runs on every backend in-process
(`tests/test_training_runs.py`: train, `load_run`, `evaluate` and `ffzoo predict --run` on
one run). FFZOO_JOURNEY_BACKENDS="tensorflow jax torch" makes this test visit all three.
"""

import json
import os
import re
import shutil
import site
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest
from PIL import Image

import ffzoo
from tests.conftest import BACKEND, ROOT

BACKENDS = tuple(os.environ.get("FFZOO_JOURNEY_BACKENDS", BACKEND).split())
# Three classes a tiny model tells apart after a few steps: a colour and a pattern each.
COLOURS = {"apple": (200, 30, 30), "leaf": (30, 170, 40), "sky": (40, 60, 210)}
SIZE = 32  # ffvit_micro_patch4_32's input: with crop_pct 1, evaluation only normalizes
TRAIN_PER_CLASS, VAL_PER_CLASS = 8, 3
# The digits recipe (FF-Micro from scratch) cut to one short epoch of 3 steps.
TRAIN_ARGS = ("--recipe", "digits", "--eval-split", "val", "--epochs", "1", "--batch-size", "8",
              "--eval-batch-size", "16", "--warmup-epochs", "0", "--lr", "3e-3",
              "--eval-every", "2")  # no validation pass inside fit: the final evaluation only
# What the wheel must not hold: the repository's other top-level folders.
NOT_SHIPPED = ("tests/", "references/", "weights/", "benchmarks/", "training/", "bin/")


def _make_folder(root):
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[:SIZE, :SIZE]
    patterns = [(rows // 4) % 2 == 0, (cols // 4) % 2 == 0, ((rows + cols) // 6) % 2 == 0]
    for split, count in (("train", TRAIN_PER_CLASS), ("val", VAL_PER_CLASS)):
        for (name, colour), pattern in zip(COLOURS.items(), patterns):
            os.makedirs(os.path.join(root, split, name))
            for i in range(count):
                image = rng.integers(0, 50, (SIZE, SIZE, 3)) + np.array(colour)
                image[pattern] //= 3
                Image.fromarray(image.astype(np.uint8)).save(
                    os.path.join(root, split, name, f"{i}.jpg"), quality=95)
    return root


def _build_wheel(tmp):
    """The wheel of a copy of the checkout (an in-tree build would leave build/ behind)."""
    source = tmp / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "runs", "*.egg-info", "__pycache__", ".pytest_cache"))
    wheels = tmp / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", str(source), "-w", str(wheels)],
                   check=True, capture_output=True, text=True, timeout=300)
    (wheel,) = wheels.glob("ffzoo-*.whl")
    return wheel


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("journey")
    wheel = _build_wheel(tmp)
    names = zipfile.ZipFile(wheel).namelist()
    for module in ("ffzoo/cli.py", "ffzoo/runs.py", "ffzoo/training/train.py",
                   "ffzoo/training/evaluate.py", "ffzoo/training/config.py",
                   "ffzoo/training/recipes/digits.py", "ffzoo/training/recipes/finetune.py"):
        assert module in names, module
    assert not [n for n in names if n.startswith(NOT_SHIPPED)]
    assert {n.split("/")[0] for n in names} == {"ffzoo", "ffzoo-0.1.0.dist-info"}

    directory = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(directory)], check=True,
                   timeout=120)
    python = directory / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
                    "--no-deps", "--no-index", str(wheel)], check=True, capture_output=True,
                   text=True, timeout=300)
    packages = subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()[0])"],
                              check=True, capture_output=True, text=True).stdout.strip()
    with open(os.path.join(packages, "dependencies.pth"), "w") as f:
        f.write("".join(path + "\n" for path in site.getsitepackages()))
    work = tmp / "work"  # the cwd of every command: outside the checkout
    work.mkdir()
    return directory, work


def _run(command, cwd, backend):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FFZOO_DEBUG")}
    env.update(KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="",
               KERAS_HOME=os.path.join(cwd, "keras-home"))
    result = subprocess.run([str(c) for c in command], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, (command, result.stdout[-2000:], result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result.stdout


def _oracle_logits(run, images):
    """The run's model rebuilt by hand from model.json and its weights file; the images
    normalized by hand (SIZE x SIZE at crop_pct 1: the evaluation transform is the
    identity before normalization)."""
    with open(os.path.join(run, "model.json")) as f:
        info = json.load(f)
    p = info["preprocessing"]
    assert (p["image_size"], p["crop_pct"]) == (SIZE, 1.0)
    assert info["arguments"]["classifier_activation"] is None  # the model outputs logits
    model = ffzoo.create_model(info["model"], **info["arguments"])
    model.load_weights(os.path.join(run, "model.weights.h5"))
    pixels = np.stack([np.asarray(Image.open(i).convert("RGB"), np.float32) for i in images])
    x = (pixels / 255 - np.array(p["mean"], np.float32)) / np.array(p["std"], np.float32)
    return np.asarray(keras.ops.convert_to_numpy(model(x, training=False)), np.float64), info


def _softmax(logits):
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _parse_predictions(out, images):
    """{image: [(name, score), ...]} from `ffzoo predict`'s lines."""
    result, current = {}, None
    for line in out.splitlines():
        if line in images:
            current = result[line] = []
        elif current is not None and (m := re.fullmatch(r"\s+\d+\. (\S+)\s+([0-9.]+)", line)):
            current.append((m[1], float(m[2])))
    return result


@pytest.mark.once
def test_install_the_wheel_then_train_evaluate_and_predict(venv, tmp_path, record):
    import time

    directory, work = venv
    ffzoo_script = directory / "bin" / "ffzoo"
    data = _make_folder(str(tmp_path / "colours"))
    names = sorted(COLOURS)
    samples = [os.path.join(data, "val", name, "0.jpg") for name in names]
    val = [os.path.join(data, "val", n, f) for n in names
           for f in sorted(os.listdir(os.path.join(data, "val", n)))]
    val_labels = np.repeat(np.arange(len(names)), VAL_PER_CLASS)
    runs = {}
    for backend in BACKENDS:
        started = time.perf_counter()
        run = str(tmp_path / f"run-{backend}")
        _run([ffzoo_script, "train", *TRAIN_ARGS, "--data", data, "--output", run], work, backend)
        logits, info = _oracle_logits(run, val)
        assert info["class_names"] == names  # the folder's classes, in label order

        _run([ffzoo_script, "evaluate", run, "--data", data, "--output", "eval.json"], work, backend)
        with open(os.path.join(work, "eval.json")) as f:
            evaluation = json.load(f)
        assert evaluation["examples"] == len(val) and evaluation["top5"] is None  # 3 classes
        assert evaluation["top1"] == pytest.approx(np.mean(logits.argmax(-1) == val_labels))

        out = _run([ffzoo_script, "predict", *samples, "--run", run, "--top", "5"], work, backend)
        predictions = _parse_predictions(out, samples)
        want = _softmax(_oracle_logits(run, samples)[0])
        for image, row in zip(samples, want):
            # top-5 capped at the 3 classes, each named as its folder, ranked by probability
            assert [name for name, _ in predictions[image]] == [names[i] for i in np.argsort(-row)]
            np.testing.assert_allclose([s for _, s in predictions[image]], np.sort(row)[::-1],
                                       atol=2e-4)
        runs[backend] = run
        record(f"journey {backend}: train + evaluate + predict (s)", time.perf_counter() - started)

    # ffzoo.load_run in the venv: the wheel's modules, the oracle's logits for every run.
    code = ("import json, sys, numpy as np, ffzoo, ffzoo.training\n"
            "from PIL import Image\n"
            "out = {'ffzoo': ffzoo.__file__, 'training': ffzoo.training.__file__}\n"
            "for run in sys.argv[2:]:\n"
            "    r = ffzoo.load_run(run)\n"
            "    x = np.stack([r.preprocess(Image.open(p)) for p in json.loads(sys.argv[1])])\n"
            "    out[run] = [r.class_names, np.asarray(r.model.predict(x, verbose=0)).tolist()]\n"
            "print('RESULT ' + json.dumps(out))\n")
    out = _run([directory / "bin" / "python", "-c", code, json.dumps(samples), *runs.values()],
               work, BACKEND)
    loaded = json.loads(out.split("RESULT ", 1)[1])
    for module in ("ffzoo", "training"):
        assert os.path.commonpath([loaded[module], str(directory)]) == str(directory), loaded[module]
    for run in runs.values():
        class_names, logits = loaded[run]
        assert class_names == names
        np.testing.assert_allclose(logits, _oracle_logits(run, samples)[0], atol=1e-4)
