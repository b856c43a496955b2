"""training/: what a run directory gives its user. model.json and optimizer-free final
weights that `ffzoo.runs.load_run` rebuilds the model from; `training.evaluate` on a run
directory; no top-5 below 6 classes; failed starts that do not block the corrected
command; Ctrl-C; progress lines in logs."""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

import ffzoo
from ffzoo.preprocessing import IMAGENET_MEAN, IMAGENET_STD
from ffzoo.runs import load_run
from tests.conftest import ROOT, to_numpy
from tests.run_training import NANO_NAME, register_nano, unregister_nano
from tests.test_training_scripts import (
    CLASSES,
    _args,
    _subprocess_env,
    _top1_by_hand,
    make_folder,
)
from training import callbacks as cb
from training import config as cfg
from training import evaluate, train


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("patterns"))


@pytest.fixture
def nano():
    register_nano()
    yield NANO_NAME
    unregister_nano()


def _train(folder, output, *extra):
    config, args = cfg.resolve(_args(folder, output, "--epochs", "1", *extra))
    return train.run(config, fresh=args.fresh)


def _uncompiled_size(name, tmp_path):
    """The size of a weights file of a plain, uncompiled model (no optimizer inside)."""
    path = str(tmp_path / "plain.weights.h5")
    ffzoo.create_model(name, classes=CLASSES, classifier_activation=None).save_weights(path)
    return os.path.getsize(path)


def test_the_run_directory_alone_rebuilds_evaluates_and_predicts(folder, nano, tmp_path, capsys):
    output = tmp_path / "run"
    summary = _train(folder, output, "--ema-decay", "0.8")
    with open(output / "model.json") as f:
        info = json.load(f)
    assert info["model"] == nano
    assert info["arguments"] == {"classes": CLASSES, "classifier_activation": None,
                                 "drop_rate": 0.0, "drop_path_rate": 0.0}
    assert info["class_names"] == sorted(os.listdir(folder / "train"))  # label i is folder i
    assert info["preprocessing"] == {"image_size": 32, "crop_pct": 1.0, "mean": list(IMAGENET_MEAN),
                                     "std": list(IMAGENET_STD), "interpolation": "bicubic"}
    # The final weights carry no optimizer state (the backup does: resume needs it).
    plain = _uncompiled_size(nano, tmp_path)
    for name in ("model.weights.h5", "model_ema.weights.h5"):
        assert os.path.getsize(output / name) == plain, name
    assert os.path.getsize(output / "backup" / "backup-epoch0001.weights.h5") > 2 * plain

    # 4 classes: no top-5 (it would be 100%) in the summary, the logs or the printed lines.
    assert summary["top5"] is None and summary["ema_top5"] is None
    with open(output / "backup" / "state.json") as f:
        assert not any("top5" in key for key in json.load(f)["history"][0])
    assert "top-5" not in capsys.readouterr().out

    run = load_run(output)
    assert run.class_names == info["class_names"] and run.model_name == nano
    assert not run.model.compiled
    assert _top1_by_hand(run.model, folder / "val") == pytest.approx(summary["top1"])
    ema = load_run(str(output), ema=True)
    assert _top1_by_hand(ema.model, folder / "val") == pytest.approx(summary["ema_top1"])
    # `preprocess` is the evaluation transform the run used (ffzoo.preprocess_image).
    image = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    expected = ffzoo.preprocess_image(image, image_size=32, crop_pct=1.0)
    np.testing.assert_array_equal(run.preprocess(image), expected)
    # Same predictions as the weights file loaded by hand into the documented model.
    by_hand = ffzoo.create_model(nano, classes=CLASSES, classifier_activation=None,
                                 weights=str(output / "model.weights.h5"))
    batch = np.stack([expected, run.preprocess(image[::-1])])
    np.testing.assert_array_equal(to_numpy(run.model.predict(batch, verbose=0)),
                                  to_numpy(by_hand.predict(batch, verbose=0)))

    # training.evaluate on the run directory: the same top-1, no top-5.
    result_path = tmp_path / "result.json"
    assert evaluate.main([str(output), "--data", str(folder), "--split", "val",
                          "--output", str(result_path)]) == 0
    out = capsys.readouterr().out
    with open(result_path) as f:
        result = json.load(f)
    assert result["top1"] == pytest.approx(summary["top1"]) and result["top5"] is None
    assert result["examples"] == 11 and "top-5" not in out
    # Without --data: the run's own data and evaluation split.
    assert evaluate.main([str(output), "--output", str(result_path)]) == 0
    with open(result_path) as f:
        again = json.load(f)
    assert again["split"] == "val" and again["top1"] == pytest.approx(summary["top1"])

    # `ffzoo predict --run`: the run's class names, ranked by the softmax of its logits.
    from PIL import Image

    from ffzoo import cli

    paths = []
    for i, pixels in enumerate([image[:32, :32], image[-32:, -32:]]):
        paths.append(str(tmp_path / f"photo{i}.png"))
        Image.fromarray(pixels).save(paths[-1])
    capsys.readouterr()
    assert cli.main(["predict", *paths, "--run", str(output), "--top", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    logits = to_numpy(run.model.predict(np.stack([run.preprocess(Image.open(p)) for p in paths]),
                                        verbose=0)).astype(np.float64)
    probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    assert len(lines) == 2 * 3
    for i, path in enumerate(paths):
        assert lines[3 * i] == path
        ranked = [line.split() for line in lines[3 * i + 1:3 * i + 3]]
        order = np.argsort(-probabilities[i])[:2]
        assert [row[1] for row in ranked] == [info["class_names"][k] for k in order]
        np.testing.assert_allclose([float(row[2]) for row in ranked], probabilities[i][order],
                                   atol=1e-4)


@pytest.mark.once
def test_load_run_says_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        load_run(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="not a training run's directory"):
        load_run(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="has not finished"):
        load_run(tmp_path)
    (tmp_path / "model.json").write_text('{"format": 1, "model": "m"}')
    with pytest.raises(ValueError, match="lacks arguments, class_names, preprocessing, weights"):
        load_run(tmp_path)


@pytest.mark.once
@pytest.mark.parametrize("argv,says", [
    (["runs/x", "--model", "m"], "pass --model and --weights only without one"),
    (["--model", "m"], "pass a training run's directory, or --model and --weights"),
])
def test_evaluate_takes_a_run_or_a_model_and_weights(argv, says, capsys):
    assert evaluate.main(argv) == 2
    assert says in capsys.readouterr().err


def test_top5_is_reported_from_six_classes(tmp_path):
    """The oracle: top-5 counted by hand from the logits of a 6-class model."""
    from PIL import Image

    import ffzoo.data as fd
    from tests.test_training_scripts import _pattern

    rng = np.random.default_rng(1)
    for label in range(6):
        (tmp_path / "val" / f"c{label}").mkdir(parents=True)
        for i in range(2):
            Image.fromarray(_pattern(label % 4, rng)).save(tmp_path / "val" / f"c{label}" / f"{i}.png")
    keras.utils.set_random_seed(0)
    model = ffzoo.create_model("ffvit_micro_patch4_32", classes=6, classifier_activation=None)
    pipeline = fd.load(str(tmp_path), "val", training=False, batch_size=5, image_size=32,
                       crop_pct=1.0, one_hot_labels=True)
    result = evaluate.evaluate(model, pipeline, progress=False)
    images, labels = [], []
    for label in range(6):
        for i in range(2):
            pixels = np.asarray(Image.open(tmp_path / "val" / f"c{label}" / f"{i}.png"))
            images.append(ffzoo.preprocess_image(pixels, image_size=32, crop_pct=1.0))
            labels.append(label)
    logits = to_numpy(model.predict(np.stack(images), verbose=0))
    top5 = np.argsort(-logits, axis=-1)[:, :5]
    assert result["top5"] == pytest.approx(np.mean(np.any(top5 == np.array(labels)[:, None], -1)))


# ---------------------------------------------------------------------------------------
# Failed starts, Ctrl-C, progress in logs
# ---------------------------------------------------------------------------------------

@pytest.mark.once  # which settings a failed start binds is backend-independent
@pytest.mark.parametrize("wrong", [["--data", "no-such-folder"],
                                   ["--weights", "no-such.weights.h5"]])
def test_the_corrected_command_runs_after_a_failed_start(wrong, folder, nano, tmp_path, capsys):
    """A wrong --data (caught reading the data) or a missing --weights file (caught
    building the model, after the data is read) leaves nothing that blocks the fix."""
    output = tmp_path / "run"
    argv = _args(folder, output, "--epochs", "1", "--steps-per-epoch", "1")
    assert train.main(argv + wrong) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert train.main(argv) == 0
    assert json.loads((output / "config.json").read_text())["data"] == str(folder)
    assert (output / "summary.json").exists()


def _command(folder, output):
    return [sys.executable, "-m", "tests.run_training",
            *_args(folder, output, "--epochs", "8", "--steps-per-epoch", "1")]


# The interrupt handling and resume are ffzoo's own, the same on every backend: once.
@pytest.mark.once
def test_ctrl_c_stops_in_one_line_and_the_same_command_resumes(folder, tmp_path):
    output = tmp_path / "run"
    process = subprocess.Popen(_command(folder, output), env=_subprocess_env(), cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (output / "backup" / "backup-epoch0001.json").exists():
        assert process.poll() is None and time.time() < deadline, process.communicate()
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.strip().splitlines()[-1] == ("training.train: stopped; rerun the same command "
                                            "to resume")
    backup = cb.Backup(str(output / "backup"))
    done = backup.saved_epochs()  # the newest backup is intact
    assert 1 <= done < 8 and not os.path.exists(output / "summary.json")

    # The same command resumes; its output is a pipe: plain progress lines.
    result = subprocess.run(_command(folder, output), env=_subprocess_env(), cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert f"Resuming from the backup of epoch {done}." in result.stdout
    for stream in (result.stdout, result.stderr):
        assert "\r" not in stream and "\x1b" not in stream
    lines = [line for line in result.stdout.splitlines() if line.startswith("epoch 8/8: step")]
    assert len(lines) == 1 and "images/s, ETA 0:00:00" in lines[0] and "loss" in lines[0], lines
    assert any(line.startswith("epoch 8/8 done in") and "val_top1" in line
               for line in result.stdout.splitlines())
    assert json.loads((output / "summary.json").read_text())["epochs"] == 8


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.mark.once
def test_progress_lines_every_tenth_of_the_loop_and_every_30_seconds(monkeypatch):
    import io

    clock = _Clock()
    monkeypatch.setattr(cb.time, "perf_counter", clock)
    stream = io.StringIO()
    progress = cb.Progress(100, "epoch 1/1", terminal=False, stream=stream)
    for step in range(1, 101):
        clock.now += 0.5 if step <= 50 else 40.0  # the second half: 40 s a step
        progress.update(step, 8, {"loss": 2.0})
    lines = stream.getvalue().splitlines()
    shown = [int(line.split("step ")[1].split("/")[0]) for line in lines]
    assert shown == [10, 20, 30, 40, 50] + list(range(51, 101))
    assert lines[0] == "epoch 1/1: step 10/100, loss 2, 16.0 images/s, ETA 0:00:45"
    assert "\r" not in stream.getvalue() and "\x1b" not in stream.getvalue()


@pytest.mark.once  # the argument default is backend-independent (it evaluates the 359 digits)
def test_evaluate_reads_the_split_its_help_names(folder, nano, tmp_path):
    """`--split`'s documented default is the one used, with and without --data (the
    digits, whose held-out folder is val/)."""
    import re

    shown = " ".join(evaluate.parser().format_help().split())
    claimed = re.search(r"split to evaluate \(default: (\w+);", shown).group(1)
    result_path = tmp_path / "result.json"
    for name, classes, data in ((nano, CLASSES, ["--data", str(folder)]),
                                ("ffvit_micro_patch4_32", 10, [])):
        weights = str(tmp_path / f"{name}.weights.h5")
        ffzoo.create_model(name, classes=classes, classifier_activation=None).save_weights(weights)
        assert evaluate.main(["--model", name, "--weights", weights, *data, "--crop-pct", "1",
                              "--output", str(result_path)]) == 0
        result = json.loads(result_path.read_text())
        assert result["split"] == claimed == "validation"
        assert result["examples"] == (11 if data else 359)  # val/: 11 patterns, 20% of 1,797 digits
