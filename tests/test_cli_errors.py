"""`ffzoo predict/convert/models`: an expected failure is one line and exit status 2.

Most cases call `ffzoo.cli.main` in this process (an exception escaping it would be
the traceback a user sees); one runs the real command in a subprocess, where stderr
must end in one `ffzoo <command>: ...` line, and `--debug` / `FFZOO_DEBUG=1` bring
the traceback back.
"""

import os
import subprocess
import sys

import pytest
import torch
from PIL import Image

from ffzoo import cli
from tests.conftest import ROOT
from references import torch_ffvit

MICRO = "ffvit_micro_patch4_32"


def _fails_in_one_line(capsys, argv, *fragments):
    status = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert status == 2, (status, err)
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"ffzoo {argv[0]}: "), err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


def _micro_state():
    return torch_ffvit.FFViT(patch_size=4, embed_dim=128, depth=6, image_size=32,
                             pos_grid=8).state_dict()


@pytest.mark.once
def test_convert_missing_and_non_checkpoint_files(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _fails_in_one_line(capsys, ["convert", "missing.pth", "out.weights.h5", "--model", MICRO],
                       "missing.pth: no such file")
    (tmp_path / "page.pth").write_text("<html><head><title>404 Not Found</title></head></html>\n")
    _fails_in_one_line(capsys, ["convert", "page.pth", "out.weights.h5", "--model", MICRO],
                       "page.pth is an HTML/XML page")
    torch.save({"model": {"head.weight": torch.zeros(1).expand(10 ** 9, 1)}}, "huge_head.pth")
    _fails_in_one_line(capsys, ["convert", "huge_head.pth", "out.weights.h5", "--model", MICRO],
                       "head.weight has shape (1000000000, 1)")
    _fails_in_one_line(capsys, ["convert", "page.pth", "out.weights.h5", "--model", "ffvit_nano"],
                       "Unknown model 'ffvit_nano'")
    assert not (tmp_path / "out.weights.h5").exists()


@pytest.mark.once
def test_models_pattern_that_matches_nothing(capsys):
    _fails_in_one_line(capsys, ["models", "resnet*"], "no registered model matches 'resnet*'")


@pytest.mark.once
def test_predict_unknown_model_missing_and_bad_images(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (8, 8)).save("ok.png")
    _fails_in_one_line(capsys, ["predict", "ok.png", "--model", "ffvit_tiny"],
                       "Unknown model 'ffvit_tiny'")
    _fails_in_one_line(capsys, ["predict", "ok.png", "--model", MICRO, "--top", "0"], "--top")
    (tmp_path / "notes.jpg").write_text("not an image\n")
    _fails_in_one_line(capsys, ["predict", "notes.jpg", "--model", MICRO],
                       "cannot read notes.jpg as an image")
    Image.new("1", (14000, 14000)).save("bomb.png")  # 196 M pixels in a few KB
    _fails_in_one_line(capsys, ["predict", "bomb.png", "--model", MICRO],
                       "cannot read bomb.png as an image", "decompression bomb")
    _fails_in_one_line(capsys, ["predict", "gone.png", "--model", MICRO], "gone.png: no such file")


def test_wrong_family_and_nonfinite_checkpoints(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    state = _micro_state()
    state["blocks.0.attn.qkv.weight"] = torch.zeros(384, 128)  # a DeiT block's attention
    torch.save({"model": state}, "deit.pth")
    _fails_in_one_line(capsys, ["convert", "deit.pth", "out.weights.h5", "--model", MICRO],
                       "source keys with no place in the model: blocks.0.attn.qkv.weight")
    Image.new("RGB", (32, 32)).save("ok.png")
    _fails_in_one_line(capsys, ["predict", "ok.png", "--model", MICRO, "--weights", "deit.pth"],
                       "blocks.0.attn.qkv.weight")
    state = _micro_state()
    state["norm.bias"][5] = float("nan")
    torch.save({"model": state}, "nan.pth")
    _fails_in_one_line(capsys, ["convert", "nan.pth", "out.weights.h5", "--model", MICRO],
                       "nan.pth: NaN or Inf in 1 tensor(s): norm.bias")
    assert not (tmp_path / "out.weights.h5").exists()


@pytest.mark.once
def test_command_line_one_line_and_debug_traceback(tmp_path):
    (tmp_path / "empty.pth").write_bytes(b"")
    argv = [sys.executable, "-m", "ffzoo.cli", "convert", "empty.pth", "out.weights.h5",
            "--model", MICRO]
    env = dict(os.environ, KERAS_BACKEND="numpy", PYTHONPATH=ROOT)  # fails before any model
    env.pop("FFZOO_DEBUG", None)
    plain = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr, plain.stderr[-3000:]
    assert plain.stderr.strip().splitlines()[-1].startswith("ffzoo convert: empty.pth is empty")
    debug = subprocess.run(argv, cwd=tmp_path, env=dict(env, FFZOO_DEBUG="1"),
                           capture_output=True, text=True, timeout=300)
    assert debug.returncode != 0 and "Traceback" in debug.stderr
    assert "ValueError: empty.pth is empty" in debug.stderr
    assert cli.build_parser().parse_args(["convert", "a", "b", "--model", "m", "--debug"]).debug


# ------------------------------------------------ predict --run, train and evaluate (issue 15)

def _fake_run(directory, activation=None):
    """A run directory as training.train leaves it: model.json and final weights of a
    micro model with 3 classes, named out of alphabetical order on purpose."""
    import json

    import ffzoo
    from ffzoo.preprocessing import IMAGENET_MEAN, IMAGENET_STD
    from ffzoo.runs import describe

    arguments = {"classes": 3, "classifier_activation": activation}
    model = ffzoo.create_model(MICRO, **arguments)
    os.makedirs(directory)
    model.save_weights(os.path.join(directory, "model.weights.h5"))
    preprocessing = {"image_size": 32, "crop_pct": 1.0, "mean": IMAGENET_MEAN,
                     "std": IMAGENET_STD, "interpolation": "bicubic"}
    with open(os.path.join(directory, "model.json"), "w") as f:
        json.dump(describe(MICRO, arguments, ["tulip", "daisy", "rose"], preprocessing), f)
    return model


def test_predict_with_a_run_ranks_its_own_classes(tmp_path, capsys):
    import numpy as np

    from ffzoo.preprocessing import IMAGENET_MEAN, IMAGENET_STD
    from tests.conftest import to_numpy

    model = _fake_run(tmp_path / "run")
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    paths = []
    for i, image in enumerate(pixels):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(image).save(paths[-1])
    assert cli.main(["predict", *paths, "--run", str(tmp_path / "run"), "--top", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    # The oracle: 32 x 32 at crop_pct 1 is only normalized; softmax of the logits by hand.
    x = (pixels / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    logits = to_numpy(model(x.astype("float32"))).astype(np.float64)
    probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    names = ["tulip", "daisy", "rose"]
    assert len(lines) == 2 * 4  # top-5 capped at the 3 classes
    for i, path in enumerate(paths):
        assert lines[4 * i] == path
        ranked = [line.split() for line in lines[4 * i + 1:4 * i + 4]]
        order = np.argsort(-probabilities[i])
        assert [row[1] for row in ranked] == [names[k] for k in order]
        np.testing.assert_allclose([float(row[2]) for row in ranked], probabilities[i][order],
                                   atol=1e-4)


@pytest.mark.once
def test_predict_run_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (32, 32)).save("ok.png")
    os.makedirs("photos")
    _fails_in_one_line(capsys, ["predict", "ok.png", "--run", "photos", "--model", MICRO],
                       "--run gives the model and its weights: pass --model only without --run.")
    _fails_in_one_line(capsys, ["predict", "ok.png", "--run", "photos", "--weights", "imagenet",
                                "--sha256", "0" * 64], "pass --weights and --sha256 only without --run")
    _fails_in_one_line(capsys, ["predict", "ok.png", "--run", "photos"],
                       "photos holds no model.json: it is not a training run's directory.")
    _fails_in_one_line(capsys, ["predict", "ok.png", "--run", "gone"], "gone is not a directory")
    with open("photos/config.json", "w") as f:
        f.write("{}")
    _fails_in_one_line(capsys, ["predict", "ok.png", "--run", "photos"],
                       "its training run has not finished")


@pytest.mark.once
def test_train_and_evaluate_commands_fail_in_one_line_named_as_ffzoo(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _fails_in_one_line(capsys, ["train", "--recipe", "digits", "--epochs", "0"],
                       "--epochs must be an integer >= 1; got 0.")
    _fails_in_one_line(capsys, ["train", "--recipe", "nope"], "Unknown recipe 'nope'")
    with pytest.raises(ValueError, match="Unknown recipe 'nope'"):  # --debug: the traceback
        cli.main(["--debug", "train", "--recipe", "nope"])
    _fails_in_one_line(capsys, ["evaluate", str(tmp_path)], "holds no model.json")
    _fails_in_one_line(capsys, ["evaluate", "run", "--model", MICRO],
                       "a run directory gives the model and its weights")


@pytest.mark.once
def test_train_without_the_training_extra_says_how_to_install_it(tmp_path):
    from tests.conftest import python_without, run_python

    # A JAX or PyTorch user without TensorFlow (on the TensorFlow backend `import keras`
    # itself needs it); the numpy backend imports fastest and fails the same way.
    env = dict(python_without(tmp_path, "tensorflow", "matplotlib"), KERAS_BACKEND="numpy")
    code = "import sys; from ffzoo import cli; sys.exit(cli.main(sys.argv[1:]))"
    for command in ("train", "evaluate"):
        result = run_python(code, env, command, "--data", "flowers")
        assert result.returncode == 2, result.stderr[-3000:]
        assert result.stderr.strip() == (f"ffzoo {command}: needs tensorflow, which the training "
                                         'extra installs: pip install "ffzoo[train]"'), result.stderr
