"""training/ on small data: a split smaller than the batch trains at a batch of its size,
the learning-rate rule (`lr_scaling`) and the warm-up cap (`warmup_max_fraction`) give
the hand-computed values (and the deit and digits recipes DeiT's and their own, as
before), and a setting that cannot learn is warned about in one line."""

import math

import keras
import pytest

from tests.conftest import to_numpy
from tests.run_training import NANO_NAME
from tests.test_training_scripts import folder, nano  # noqa: F401 (fixtures)
from tests.test_training_trust import Reached
from training import config as cfg
from training import optimizer as opt
from training import schedule, train


def _seen_by_fit(monkeypatch):
    """Replaces `fit` by a spy that records its steps and first batch, then stops the run."""
    seen = {}

    def fit(self, data, **kwargs):
        seen.update(steps=kwargs["steps_per_epoch"], batch=next(iter(data))[0].shape[0],
                    lr=float(to_numpy(self.optimizer.learning_rate)))
        raise Reached()
    monkeypatch.setattr(keras.Model, "fit", fit)
    return seen


def _finetune_args(folder, output, *extra):
    return ["--recipe", "finetune", "--model", NANO_NAME, "--weights", "none",
            "--data", str(folder), "--image-size", "32", "--randaugment", "none",
            "--output", str(output), *extra]


@pytest.mark.once
def test_a_split_smaller_than_the_batch_trains_at_its_size(folder, nano, tmp_path, monkeypatch,
                                                           capsys):
    seen = _seen_by_fit(monkeypatch)
    # 48 training images, batch 64: one batch of 48 per epoch, said in one line.
    with pytest.raises(Reached):
        train.run(cfg.resolve(_finetune_args(folder, tmp_path / "a", "--batch-size", "64"))[0])
    out = capsys.readouterr().out
    assert "The training split has 48 images, fewer than --batch-size 64: training at batch 48.\n" in out
    assert "1 steps of 48 per epoch" in out
    assert seen["steps"] == 1 and seen["batch"] == 48
    # The rule follows the batch trained at: 1e-4 x sqrt(48 / 16), warm-up from 1e-6.
    assert "Learning rate: peak 0.000173 at batch 48 (0.0001 at batch 16, sqrt scaling)" in out
    # The recipe's own batch (16) fits: 3 steps of 16, no line about the batch.
    with pytest.raises(Reached):
        train.run(cfg.resolve(_finetune_args(folder, tmp_path / "b"))[0])
    out = capsys.readouterr().out
    assert "fewer than --batch-size" not in out and "Warning" not in out
    assert seen["steps"] == 3 and seen["batch"] == 16


@pytest.mark.once
def test_a_run_that_cannot_learn_is_warned_about_in_one_line(folder, nano, tmp_path, monkeypatch,
                                                             capsys):
    _seen_by_fit(monkeypatch)
    # The old rule at the batch: 1e-4 at 512, linear, batch 16: peak 3.1e-6.
    with pytest.raises(Reached):
        train.run(cfg.resolve(_finetune_args(folder, tmp_path / "a", "--lr-scaling", "linear",
                                             "--lr-batch-reference", "512"))[0])
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Warning")]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("Warning: this run cannot learn: the learning rates of all 90 "
                                  "steps sum to ")
    assert "(peak 3.13e-06)" in warnings[0] and "raise --lr or --epochs" in warnings[0]


def _independent_lr(step, steps_per_epoch, base, epochs, warmup, warmup_lr, min_lr):
    """The smooth (per-step) warm-up + cosine, written out apart from training/schedule.py."""
    t = step / steps_per_epoch
    if t < warmup:
        return warmup_lr + t * (base - warmup_lr) / warmup
    return min_lr + 0.5 * (base - min_lr) * (1 + math.cos(math.pi * t / epochs))


def test_the_learning_rate_rule_and_the_warmup_cap():
    finetune, deit, digits = (cfg.load_recipe(n) for n in ("finetune", "deit", "digits"))
    # finetune: 1e-4 at batch 16, square-root rule.
    for batch, expected in ((16, 1e-4), (256, 4e-4), (4, 5e-5), (93, 1e-4 * math.sqrt(93 / 16))):
        assert opt.scaled_lr(finetune, batch) == pytest.approx(expected, rel=1e-12), batch
    # deit and digits: linear, uncapped, exactly as before the rule existed.
    for batch in (16, 256, 512, 1024, 4096):
        assert opt.scaled_lr(deit, batch) == pytest.approx(5e-4 * batch / 512, rel=1e-12)
        assert opt.scaled_lr(digits, batch) == pytest.approx(2e-3 * batch / 32, rel=1e-12)
    assert opt.warmup_epochs(deit) == 5 and opt.warmup_epochs(digits) == 1
    assert opt.warmup_epochs(dict(deit, epochs=3)) == 3  # uncapped: all warm-up (warned below)
    # finetune: 2 warm-up epochs, at most a tenth of the run.
    assert opt.warmup_epochs(finetune) == 2
    assert opt.warmup_epochs(dict(finetune, epochs=5)) == pytest.approx(0.5)
    # The schedule of a 5-epoch fine-tune at batch 16 with 4 steps per epoch: 2 warm-up steps.
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    _, lr = opt.build(dict(finetune, epochs=5), model, steps_per_epoch=4, global_batch=16)
    assert isinstance(lr, schedule.WarmupCosine) and lr.warmup_epochs == pytest.approx(0.5)
    for step in (0, 1, 2, 3, 10, 19):
        expected = _independent_lr(step, 4, 1e-4, 5, 0.5, 1e-6, 1e-6)
        assert float(to_numpy(lr(step))) == pytest.approx(expected, rel=1e-5), step
    assert float(to_numpy(lr(1))) == pytest.approx(1e-6 + 0.25 * (1e-4 - 1e-6) / 0.5, rel=1e-5)


def _problems(config, steps_per_epoch, batch):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    _, lr = opt.build(config, model, steps_per_epoch, batch)
    return opt.schedule_problems(lr, steps_per_epoch, config["epochs"])


def test_the_settings_that_cannot_learn():
    finetune, deit = cfg.load_recipe("finetune"), cfg.load_recipe("deit")
    # The recipes' own settings can.
    assert _problems(finetune, 5, 16) == []
    assert _problems(deit, 20, 1024) == []
    assert _problems(cfg.load_recipe("digits"), 44, 32) == []
    # The run: 93 images at batch 16 (5 steps), 1e-4 at 512 scaled linearly.
    old = dict(finetune, lr_scaling="linear", lr_batch_reference=512)
    expected = sum(_independent_lr(s, 5, 1e-4 * 16 / 512, 30, 2, 1e-6, 1e-6) for s in range(150))
    assert expected < opt.LEAST_TOTAL_LR
    (problem,) = _problems(old, 5, 16)
    assert problem.startswith(f"the learning rates of all 150 steps sum to {expected:.2g} "
                              f"(peak {1e-4 * 16 / 512:.3g}): Adam moves no weight")
    # DeiT's 5 uncapped warm-up epochs in a 3-epoch run.
    (problem,) = _problems(dict(deit, epochs=3), 20, 1024)
    assert problem.startswith("the whole run is warm-up (3 warm-up epochs of 3)")
    # A peak no higher than the warm-up start: the schedule never rises.
    problems = _problems(dict(finetune, lr=1e-6, warmup_lr=2e-6), 5, 16)
    assert problems[0] == ("the peak learning rate 1e-06 is not above the warm-up start (2e-06) "
                           "or the final rate (1e-06).")
    assert problems[1].startswith("the learning rates of all 150 steps sum to")
    # No step at all.
    assert _problems(finetune, 0, 16) == ["the run has no training step (0 steps per epoch)."]


@pytest.mark.once
def test_the_batch_for_a_small_split():
    assert train._batch_for(64, None, 1) == 64  # unknown size: as given
    assert train._batch_for(8, 48, 1) == 8
    assert train._batch_for(64, 48, 1) == 48
    assert train._batch_for(64, 50, 4) == 48  # divides over 4 devices
    with pytest.raises(cfg.ConfigError, match=r"^The training split has 3 images, fewer than the 4 "
                                              r"devices: one batch needs an image per device\.$"):
        train._batch_for(64, 3, 4)


@pytest.mark.once
@pytest.mark.parametrize("flag,value,message", [
    ("--lr-scaling", "cubic", "--lr-scaling must be linear or sqrt; got 'cubic'."),
    ("--warmup-max-fraction", "1.5", "--warmup-max-fraction must be a finite number in [0, 1]; got 1.5."),
])
def test_the_new_keys_are_validated(flag, value, message):
    with pytest.raises(cfg.ConfigError) as error:
        cfg.resolve(["--recipe", "finetune", flag, value])
    assert str(error.value) == message


@pytest.mark.once
def test_a_run_saved_before_the_new_keys_resumes(tmp_path):
    """A config.json written before `lr_scaling` and `warmup_max_fraction` existed resumes
    under the deit recipe (which states them with the behaviour runs had then) and not
    under finetune's square-root rule."""
    import json

    for recipe, differs in (("deit", []), ("finetune", ["lr_scaling", "warmup_max_fraction"])):
        config, _ = cfg.resolve(["--recipe", recipe, "--data", "digits",
                                 "--output", str(tmp_path / recipe)])
        old = {k: v for k, v in json.loads(json.dumps(config)).items()
               if k not in ("lr_scaling", "warmup_max_fraction")}
        path = tmp_path / f"{recipe}.json"
        path.write_text(json.dumps(old))
        assert cfg.saved_differences(config, path) == differs, recipe
