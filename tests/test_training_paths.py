"""training/: the advertised paths the other training tests do not take: fine-tuning
(`build_model`'s new head, the `finetune` recipe), resuming with another configuration,
the device-count checks of `--distribute`, the rest of `config.validate`, `--clip-norm`,
`--jit-compile`, and the one-line errors of train.py, evaluate.py and distribute.py."""

import json
import sys
import types

import keras
import numpy as np
import pytest

import ffzoo
from tests.conftest import BACKEND, to_numpy
from tests.run_training import NANO
from tests.test_training_scripts import _args
from tests.test_training_scripts import folder, nano  # noqa: F401 (fixtures)
from tests.test_training_trust import Reached, _one_line, no_data  # noqa: F401 (fixture)
from training import config as cfg
from training import distribute, evaluate, train
from training import optimizer as opt


def _weights_by_layer(model):
    return {layer.name: [to_numpy(w) for w in layer.weights] for layer in model.layers if layer.weights}


@pytest.fixture
def ten_class_file(nano, tmp_path):
    """A `.weights.h5` of the nano model with a 10-class head (the folder has 4 classes)."""
    keras.utils.set_random_seed(5)
    source = ffzoo.create_model(nano, classes=10, classifier_activation=None)
    rng = np.random.default_rng(5)  # no weight at its initial value (LayerNorms start at 1, 0)
    for variable in source.weights:
        variable.assign(rng.normal(0, 0.05, variable.shape).astype("float32") + 0.5)
    path = str(tmp_path / "nano10.weights.h5")
    source.save_weights(path)
    return path, _weights_by_layer(source)


# ---------------------------------------------------------------------------------------
# Fine-tuning
# ---------------------------------------------------------------------------------------

def test_finetune_recipe_starts_from_the_file_with_a_new_head(folder, nano, ten_class_file,
                                                            tmp_path, monkeypatch, capsys):
    path, pretrained = ten_class_file
    built = {}
    original = train.build_model

    def spy(config, classes):
        model = original(config, classes)
        built.update(model=model, start=_weights_by_layer(model))
        return model
    monkeypatch.setattr(train, "build_model", spy)
    output = tmp_path / "finetuned"
    argv = ["--recipe", "finetune", "--model", nano, "--weights", path, "--data", str(folder),
            "--image-size", "32", "--batch-size", "8", "--eval-batch-size", "4", "--epochs", "1",
            "--steps-per-epoch", "1", "--eval-every", "9", "--clip-norm", "0.5", "--randaugment",
            "none",
            "--output", str(output)]
    assert train.main(argv) == 0
    assert "every layer but the 4-class head is pretrained" in capsys.readouterr().out
    start = built["start"]
    assert sorted(start) == sorted(pretrained)
    for name, arrays in pretrained.items():
        if name == "head":  # new: 4 classes, drawn afresh
            assert [a.shape for a in start[name]] == [(32, 4), (4,)]
            assert not np.any(start[name][1])  # zero bias
        else:
            for got, expected in zip(start[name], arrays, strict=True):
                np.testing.assert_array_equal(got, expected, err_msg=name)
    model = built["model"]
    assert model.optimizer.global_clipnorm == 0.5
    with open(output / "config.json") as f:
        saved = json.load(f)
    assert saved["recipe"] == "finetune" and saved["lr"] == 1e-4 and saved["weights"] == path
    with open(output / "summary.json") as f:
        assert json.load(f)["eval_examples"] == 11
    # The result is a plain 4-class model: its file loads by name.
    final = ffzoo.create_model(nano, classes=4, classifier_activation=None,
                               weights=str(output / "model.weights.h5"))
    assert final.layers[-1].weights[0].shape == (32, 4)


def test_build_model_loads_a_matching_file_whole_and_refuses_another_models(nano, ten_class_file,
                                                                          tmp_path, capsys):
    path, pretrained = ten_class_file
    config = dict(cfg.load_recipe("finetune"), model=nano, weights=path)
    whole = _weights_by_layer(train.build_model(config, 10))  # same classes: head included
    for name, arrays in pretrained.items():
        for got, expected in zip(whole[name], arrays, strict=True):
            np.testing.assert_array_equal(got, expected, err_msg=name)
    assert "Fine-tuning" not in capsys.readouterr().out
    # Another model's weights: the load's own error, not a fine-tune of a partial fit.
    other = str(tmp_path / "narrow.weights.h5")
    ffzoo.FFViT(**dict(NANO, embed_dim=16), classes=10).save_weights(other)
    with pytest.raises(ValueError, match=r"narrow\.weights\.h5 does not hold the weights of ffvit"):
        train.build_model(dict(config, weights=other), 4)
    with pytest.raises(ValueError, match="has no published ImageNet weights"):
        train.build_model(dict(config, weights="imagenet"), 4)


# ---------------------------------------------------------------------------------------
# The run directory
# ---------------------------------------------------------------------------------------

@pytest.mark.once
def test_resuming_with_another_configuration_names_every_differing_key(tmp_path, no_data, capsys):
    output = tmp_path / "run"
    with pytest.raises(Reached):
        train.main(_args("data", output))
    saved = (output / "config.json").read_bytes()
    (output / "backup").mkdir()  # an epoch ended: there is a run to resume
    (output / "backup" / "state.json").write_text("{}")
    assert train.main(_args("data", output, "--lr", "1e-3", "--epochs", "5", "--seed", "7")) == 2
    err = _one_line(capsys)
    assert err == (f"training.train: {output} holds a run with a different configuration "
                   "(epochs, lr, seed). Pass the same settings to resume it, --fresh to start "
                   "over, or another --output.\n")
    assert (output / "config.json").read_bytes() == saved  # the run's record is kept
    # A key the saved run lacks (written by an older version) differs too.
    config = json.loads(saved)
    config.pop("weight_decay")
    (output / "config.json").write_text(json.dumps(config))
    assert train.main(_args("data", output)) == 2
    assert "a different configuration (weight_decay)" in _one_line(capsys)


@pytest.mark.once
@pytest.mark.parametrize("content,why", [("[1, 2]", "not a configuration"),
                                         ("{", "Expecting property name")])
def test_an_unreadable_saved_configuration_is_one_line(content, why, tmp_path, no_data, capsys):
    output = tmp_path / "run"
    output.mkdir()
    (output / ".ffzoo-run").write_text("")
    (output / "config.json").write_text(content)
    (output / "summary.json").write_text("{}")  # a finished run
    assert train.main(_args("data", output)) == 2
    err = _one_line(capsys)
    assert f"{output / 'config.json'} is unreadable ({why}" in err and "pass --fresh" in err


@pytest.mark.once
@pytest.mark.parametrize("content", ["{", None])
def test_a_start_that_ended_before_its_first_epoch_binds_no_setting(content, tmp_path, no_data,
                                                                    capsys):
    """A failed start (wrong --data, Ctrl-C in the first epoch) left only config.json:
    the corrected command runs, and its settings are the run's."""
    output = tmp_path / "run"
    with pytest.raises(Reached):
        train.main(_args("data", output, "--lr", "1e-3"))
    if content is not None:
        (output / "config.json").write_text(content)
    with pytest.raises(Reached):
        train.main(_args("data", output))
    assert "ended before its first epoch; starting with this command's settings" in capsys.readouterr().out
    assert json.loads((output / "config.json").read_text())["lr"] == 3e-3


@pytest.mark.once
def test_an_output_that_is_a_file_is_refused(tmp_path, no_data, capsys):
    output = tmp_path / "run"
    output.write_text("mine")
    assert train.main(_args("data", output)) == 2
    assert f"--output {output} is a file, not a directory." in _one_line(capsys)
    assert output.read_text() == "mine"


# ---------------------------------------------------------------------------------------
# Devices
# ---------------------------------------------------------------------------------------

@pytest.mark.skipif(BACKEND == "torch", reason="the PyTorch backend has no multi-device plan")
@pytest.mark.parametrize("batches,refused", [(("8", "6"), "--batch-size 8"),
                                             (("9", "4"), "--eval-batch-size 4")])
def test_batches_must_divide_over_the_devices_before_anything_is_written(batches, refused, tmp_path,
                                                                         monkeypatch, no_data, capsys):
    # Three devices, as the backend's plan would report them (a real two-device run:
    # test_training_scripts.py).
    name = {"tensorflow": "mirrored", "jax": "data_parallel"}[BACKEND]
    monkeypatch.setattr(distribute, "_tensorflow_plan", lambda choice: distribute.Plan(name, 3))
    monkeypatch.setattr(distribute, "_jax_plan", lambda choice: distribute.Plan(name, 3))
    output = tmp_path / "run"
    argv = _args("data", output, "--distribute", name, "--batch-size", batches[0],
                 "--eval-batch-size", batches[1])
    assert train.main(argv) == 2
    assert _one_line(capsys) == (f"training.train: {refused} does not divide over the 3 devices "
                                 f"of '{name}': use a multiple of 3.\n")
    assert not output.exists()
    with pytest.raises(Reached):  # 9 and 6 divide
        train.main(argv[:-4] + ["--batch-size", "9", "--eval-batch-size", "6"])


def test_distribute_choices_are_checked():
    with pytest.raises(ValueError) as error:
        distribute.plan("gpus", 8)
    assert str(error.value) == ("--distribute must be one of auto, none, mirrored, "
                                "multi_worker_mirrored, tpu, data_parallel; got 'gpus'.")
    wrong = {"tensorflow": "data_parallel", "jax": "tpu", "torch": "data_parallel"}[BACKEND]
    with pytest.raises(ValueError) as error:
        distribute.plan(wrong, 8)
    hint = " (the PyTorch backend trains on one device)"
    assert f"--distribute {wrong} is not available with KERAS_BACKEND={BACKEND}" in str(error.value)
    assert (hint in str(error.value)) == (BACKEND == "torch")
    # "none" is one device whatever the batch; check_batches is then a no-op.
    assert distribute.plan("none", 7, 5) == distribute.Plan("none", 1)


# ---------------------------------------------------------------------------------------
# config.validate (the ranges of test_training_trust.py's refusals are not repeated)
# ---------------------------------------------------------------------------------------

def _refusal(argv):
    with pytest.raises(cfg.ConfigError) as error:
        cfg.resolve(["--recipe", "digits", *argv])
    return str(error.value)


@pytest.mark.once
@pytest.mark.parametrize("flag,value,what,shown", [
    ("--batch-size", "0", "an integer >= 1", "0"),
    ("--repeated-augmentation", "0", "an integer >= 1", "0"),
    ("--eval-every", "-1", "an integer >= 1", "-1"),
    ("--lr-batch-reference", "0", "an integer >= 1", "0"),
    ("--epochs", "none", "an integer >= 1", "None"),
    ("--lr", "none", "a finite number > 0", "None"),
    ("--warmup-epochs", "-1", "a finite number >= 0", "-1.0"),
    ("--mixup-alpha", "-0.5", "a finite number >= 0", "-0.5"),
    ("--cutmix-alpha", "nan", "a finite number >= 0", "nan"),
    ("--adam-epsilon", "0", "a finite number > 0", "0.0"),
    ("--clip-norm", "-1", "a finite number > 0 or none", "-1.0"),
    ("--adam-beta1", "1", "a finite number in [0, 1)", "1.0"),
    ("--drop-rate", "-0.1", "a finite number in [0, 1)", "-0.1"),
    ("--ema-decay", "-0.5", "a finite number in [0, 1) or none", "-0.5"),
    ("--hflip", "1.01", "a finite number in [0, 1]", "1.01"),
    ("--crop-pct", "-1", "a finite number in (0, 1]", "-1.0"),
    ("--crop-scale", "0.5", "two numbers low,high with 0 < low <= high <= 1", "(0.5,)"),
    ("--crop-scale", "0.1,0.5,1", "two numbers low,high with 0 < low <= high <= 1", "(0.1, 0.5, 1.0)"),
    ("--crop-ratio", "0.5,inf", "two numbers low,high with 0 < low <= high", "(0.5, inf)"),
    ("--crop-ratio", "0,2", "two numbers low,high with 0 < low <= high", "(0.0, 2.0)"),
    ("--precision", "none", "float32, mixed_bfloat16 or mixed_float16", "'none'"),
    ("--lr-schedule-unit", "cosine", "epoch or step", "'cosine'"),
    ("--jit-compile", "yes", "auto, true or false", "'yes'"),
])
def test_each_range_is_refused_with_its_own_message(flag, value, what, shown):
    assert _refusal([flag, value]) == f"{flag} must be {what}; got {shown}."


@pytest.mark.once
@pytest.mark.parametrize("flag,value,expected", [
    ("--lr", "3.4e38", 3.4e38), ("--lr-batch-reference", "1", 1), ("--batch-size", "1", 1),
    ("--steps-per-epoch", "none", None), ("--clip-norm", "none", None), ("--clip-norm", "1e-9", 1e-9),
    ("--ema-decay", "none", None), ("--ema-decay", "0", 0.0), ("--adam-beta1", "0", 0.0),
    ("--drop-rate", "0", 0.0), ("--label-smoothing", "0.999", 0.999), ("--warmup-epochs", "0", 0.0),
    ("--mixup-alpha", "0", 0.0), ("--weight-decay", "0", 0.0), ("--min-lr", "0", 0.0),
    ("--mix-probability", "0", 0.0), ("--mix-probability", "1", 1.0), ("--hflip", "1", 1.0),
    ("--random-erasing", "1", 1.0), ("--crop-pct", "1", 1.0), ("--crop-scale", "1,1", (1.0, 1.0)),
    ("--crop-scale", "0.5,0.5", (0.5, 0.5)), ("--crop-ratio", "0.1,10", (0.1, 10.0)),
    ("--jit-compile", "true", "true"), ("--jit-compile", "false", "false"),
    ("--lr-schedule-unit", "step", "step"), ("--precision", "mixed_float16", "mixed_float16"),
    ("--decay-positions", "off", False),
])
def test_values_at_the_edges_of_each_range_are_accepted(flag, value, expected):
    config, _ = cfg.resolve(["--recipe", "digits", flag, value])
    assert config[flag[2:].replace("-", "_")] == expected


@pytest.mark.once
def test_every_problem_is_named_in_one_line():
    assert _refusal(["--batch-size", "0", "--drop-rate", "1", "--jit-compile", "on"]) == (
        "--jit-compile must be auto, true or false; got 'on'; --batch-size must be an integer "
        ">= 1; got 0; --drop-rate must be a finite number in [0, 1); got 1.0.")


@pytest.mark.once
def test_recipe_values_the_command_line_cannot_spell_are_checked_too(monkeypatch):
    base = cfg.load_recipe("digits")
    for key, value, message in [
        ("epochs", 2.5, "--epochs must be an integer >= 1; got 2.5."),
        ("batch_size", True, "--batch-size must be an integer >= 1; got True."),
        ("steps_per_epoch", 1.0, "--steps-per-epoch must be an integer >= 1 or none; got 1.0."),
        ("lr", True, "--lr must be a finite number > 0; got True."),
        ("crop_scale", (0.5, "1"), "--crop-scale must be two numbers low,high with 0 < low <= "
                                   "high <= 1; got (0.5, '1')."),
    ]:
        with pytest.raises(cfg.ConfigError) as error:
            cfg.validate(dict(base, **{key: value}))
        assert str(error.value) == message
    cfg.validate(dict(base, crop_scale=[0.2, 1.0], lr=1))  # as JSON holds them; an int lr
    # A recipe file with a key that is not in the schema.
    monkeypatch.setitem(sys.modules, "training.recipes.typo",
                        types.SimpleNamespace(RECIPE=dict(lr=1e-3, learning_rate=1e-3)))
    monkeypatch.setattr(cfg, "recipe_names", lambda: ["digits", "typo"])
    with pytest.raises(cfg.ConfigError, match=r"^Recipe 'typo' sets unknown keys \['learning_rate'\]\.$"):
        cfg.load_recipe("typo")


@pytest.mark.once
@pytest.mark.parametrize("flag,value,says", [
    ("--decay-positions", "maybe", "argument --decay-positions: expected true or false, got 'maybe'"),
    ("--epochs", "3.5", "argument --epochs: invalid int value: '3.5'"),
    ("--lr", "fast", "argument --lr: invalid float value: 'fast'"),
    ("--crop-scale", "0.2;1", "argument --crop-scale: invalid low,high value: '0.2;1'"),
])
def test_values_that_do_not_parse_name_the_flag_and_the_type(flag, value, says, capsys):
    with pytest.raises(SystemExit) as exit:
        cfg.resolve(["--recipe", "digits", flag, value])
    assert exit.value.code == 2
    assert capsys.readouterr().err.strip().endswith(f"python -m training.train: error: {says}")


@pytest.mark.once
def test_every_recipe_is_valid():
    for name in cfg.recipe_names():
        config, _ = cfg.resolve(["--recipe", name])
        assert config["recipe"] == name
    assert cfg.load_recipe("finetune")["weights"] == "imagenet"


# ---------------------------------------------------------------------------------------
# --clip-norm and --jit-compile
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("clip_norm", [None, 0.5, 1e9])
def test_clip_norm_clips_the_global_gradient_norm(clip_norm):
    # One AdamW step from zero moments moves each weight by
    # lr sqrt(1 - b2) g / (sqrt(1 - b2) |g| + eps): with eps large against |g|, the
    # step is proportional to the (clipped) gradient, so the clipping shows.
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(64), keras.layers.Dense(8),
                              keras.layers.Dense(3)])
    config = dict(cfg.load_recipe("digits"), clip_norm=clip_norm, weight_decay=0.0,
                  adam_epsilon=1e-2, warmup_epochs=0, lr=10.0, lr_batch_reference=64)
    optimizer, _ = opt.build(config, model, steps_per_epoch=10, global_batch=64)
    rng = np.random.default_rng(0)
    variables = model.trainable_variables
    # Variables of very different gradient norms: per-variable clipping would differ.
    gradients = [rng.standard_normal(v.shape).astype("float32") * (0.01 if i % 2 else 100.0)
                 for i, v in enumerate(variables)]
    total = np.sqrt(sum(np.sum(g.astype("float64") ** 2) for g in gradients))
    assert total > 1e3
    scale = 1.0 if clip_norm is None else min(1.0, clip_norm / total)
    before = [to_numpy(v) for v in variables]
    lr = float(to_numpy(optimizer.learning_rate))
    optimizer.apply_gradients(list(zip([keras.ops.convert_to_tensor(g) for g in gradients],
                                       variables)))
    root = np.sqrt(1 - config["adam_beta2"])
    for variable, start, gradient in zip(variables, before, gradients):
        clipped = gradient.astype("float64") * scale
        step = lr * root * clipped / (root * np.abs(clipped) + config["adam_epsilon"])
        np.testing.assert_allclose(start - to_numpy(variable), step, rtol=1e-4, atol=1e-6,
                                   err_msg=variable.path)


@pytest.mark.once
def test_jit_compile_choices_map_to_keras_values(monkeypatch):
    for backend in ("tensorflow", "jax", "torch"):
        monkeypatch.setattr(keras.backend, "backend", lambda backend=backend: backend)
        assert train._jit({"jit_compile": "true"}) is True
        assert train._jit({"jit_compile": "false"}) is False
        if backend != "tensorflow":
            assert train._jit({"jit_compile": "auto"}) == "auto"
    import tensorflow as tf

    monkeypatch.setattr(keras.backend, "backend", lambda: "tensorflow")
    for gpus, expected in (([], False), (["/GPU:0"], "auto")):  # XLA on CPUs is slower
        monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind, gpus=gpus: gpus)
        assert train._jit({"jit_compile": "auto"}) == expected


def test_jit_compile_reaches_model_compile(folder, nano, tmp_path, monkeypatch):
    seen = []

    def compile(self, *args, **kwargs):
        seen.append(kwargs["jit_compile"])
        raise Reached()
    monkeypatch.setattr(keras.Model, "compile", compile)
    for choice in ("true", "false", "auto"):
        with pytest.raises(Reached):
            train.run(cfg.resolve(_args(folder, tmp_path / choice, "--jit-compile", choice))[0])
    assert seen == [True, False, train._jit({"jit_compile": "auto"})]


# ---------------------------------------------------------------------------------------
# Other one-line errors of train.py and evaluate.py
# ---------------------------------------------------------------------------------------

@pytest.mark.once
def test_a_training_split_of_unknown_size(folder, nano, tmp_path, monkeypatch, capsys):
    # Only a split of unknown size asks for --steps-per-epoch; one of known size smaller
    # than the batch trains at its size (tests/test_training_small_data.py).
    def fit(*args, **kwargs):
        raise Reached()
    monkeypatch.setattr(keras.Model, "fit", fit)  # a mutation must not train forever
    load_data = train.load_data

    def unknown_size(*args, **kwargs):
        pipelines = load_data(*args, **kwargs)
        pipelines[0].num_examples = None  # as a TFRecord glob without a count
        return pipelines
    monkeypatch.setattr(train, "load_data", unknown_size)
    assert train.main(_args(folder, tmp_path / "unknown")) == 2
    assert _one_line(capsys) == ("training.train: The training split's size is unknown: pass "
                                 "--steps-per-epoch.\n")


@pytest.mark.once
def test_evaluating_imagenet_weights_on_another_label_set_is_refused(folder, monkeypatch, capsys):
    def create_model(*args, **kwargs):
        raise AssertionError("refused before building (or downloading) anything")
    monkeypatch.setattr(ffzoo, "create_model", create_model)
    argv = ["--model", "ffvit_tiny_patch16_224", "--weights", "imagenet", "--data", str(folder),
            "--split", "val"]
    assert evaluate.main(argv) == 2
    assert _one_line(capsys) == (f"training.evaluate: The ImageNet weights predict 1000 classes; "
                                 f"{folder} has 4.\n")
