"""training/: nothing a user owns is lost (`--fresh`, `--output`), nothing non-finite is
trusted (CLI values, weights, validation), damaged backups are skipped, writes reach the
disk, and every expected failure is one line (killed runs: test_training_faults.py)."""

import hashlib
import json
import os
import stat

import numpy as np
import pytest

from tests.test_training_scripts import _args, _history
from tests.test_training_scripts import folder, nano  # noqa: F401 (fixtures)
from training import callbacks as cb
from training import config as cfg
from training import distribute, evaluate, train


class Reached(Exception):
    """Raised where a run would first read its data: everything before it was allowed."""


@pytest.fixture
def no_data(monkeypatch):
    def load_data(*args, **kwargs):
        raise Reached()
    monkeypatch.setattr(train, "load_data", load_data)


def _tree(root):
    """Every file under `root` with its bytes."""
    result = {}
    for base, _, names in os.walk(root):
        for name in names:
            path = os.path.join(base, name)
            with open(path, "rb") as f:
                result[os.path.relpath(path, root)] = f.read()
    return result


def _one_line(capsys):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


# ---------------------------------------------------------------------------------------
# --fresh and the output directory
# ---------------------------------------------------------------------------------------

@pytest.mark.once
def test_a_directory_that_is_not_a_run_is_never_written_or_cleared(tmp_path, monkeypatch,
                                                                    no_data, capsys):
    project = tmp_path / "project"
    (project / "data" / "train" / "a").mkdir(parents=True)
    (project / "data" / "train" / "a" / "0.png").write_bytes(b"an image")
    (project / "code.py").write_text("print('mine')\n")
    (project / "log.csv").write_text("my own log\n")  # a name a run also writes
    before = _tree(project)
    monkeypatch.chdir(project)
    for extra in (["--fresh"], []):
        assert train.main(_args("data", ".", *extra)) == 2
        err = _one_line(capsys)
        assert "training.train: . is not empty and is not a training run directory" in err
        assert _tree(project) == before  # nothing removed, nothing written


@pytest.mark.once
def test_fresh_removes_only_what_a_run_wrote(tmp_path, no_data, capsys):
    output = tmp_path / "run"
    with pytest.raises(Reached):  # a run starts: it marks the directory as its own
        train.main(_args("data", output))
    assert (output / ".ffzoo-run").exists() and (output / "config.json").exists()
    for name in ("log.csv", "summary.json", "backup/state.json", "backup/backup-epoch0001.json",
                 "tensorboard/train/events.out.tfevents.1", "worker-1/log.csv",
                 "model.weights.h5.4242.partial.weights.h5"):
        (output / name).parent.mkdir(parents=True, exist_ok=True)
        (output / name).write_text("written by a run")
    (output / "notes.txt").write_text("mine")
    before = _tree(output)
    assert train.main(_args("data", output, "--fresh")) == 2
    err = _one_line(capsys)
    assert f"--fresh refused: {output} holds files that a training run did not write (notes.txt)" in err
    assert _tree(output) == before

    (output / "notes.txt").unlink()
    with pytest.raises(Reached):
        train.main(_args("data", output, "--fresh"))
    # What remains: the marker, the new run's config, and the other host's folder (it
    # clears its own).
    assert sorted(_tree(output)) == [".ffzoo-run", "config.json", os.path.join("worker-1", "log.csv")]


@pytest.mark.once
def test_spellings_of_one_directory_are_one_run(tmp_path, monkeypatch, no_data, capsys):
    monkeypatch.chdir(tmp_path)
    for spelling in ("run", str(tmp_path / "run") + "/", "./run/", str(tmp_path / "run")):
        with pytest.raises(Reached):
            train.main(_args("data", spelling))
    (tmp_path / "run" / "backup").mkdir()  # an epoch ended: there is a run to resume
    (tmp_path / "run" / "backup" / "state.json").write_text("{}")
    assert train.main(_args("data", "run/", "--epochs", "5")) == 2
    assert "a different configuration (epochs)" in _one_line(capsys)


@pytest.mark.once
def test_orphan_temporary_files_are_removed_on_start(tmp_path, no_data, capsys):
    output = tmp_path / "run"
    with pytest.raises(Reached):
        train.main(_args("data", output))
    (output / "backup").mkdir()
    orphans = [output / "log.csv.77.partial", output / "backup" / "backup-epoch0002.weights.h5.77.partial.weights.h5"]
    for path in orphans:
        path.write_bytes(b"half a file")
    (output / "backup" / "my.partial").write_text("not a temporary file of a write")
    with pytest.raises(Reached):
        train.main(_args("data", output))
    assert not any(path.exists() for path in orphans)
    assert (output / "backup" / "my.partial").exists()
    assert "Removed 1 unfinished file(s) of a killed run" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------
# Values checked up front
# ---------------------------------------------------------------------------------------

@pytest.mark.once
@pytest.mark.parametrize("flag,value", [
    ("--lr", "nan"), ("--lr", "inf"), ("--lr", "0"), ("--lr", "-0.001"), ("--lr", "1e39"),
    ("--steps-per-epoch", "0"), ("--steps-per-epoch", "-3"), ("--epochs", "0"),
    ("--crop-pct", "0"), ("--crop-pct", "1.5"), ("--crop-pct", "nan"),
    ("--crop-scale", "0.9,0.2"), ("--crop-scale", "0,1"), ("--crop-scale", "0.5,1.5"),
    ("--crop-ratio", "2,1"), ("--label-smoothing", "1"), ("--label-smoothing", "-0.1"),
    ("--mix-probability", "1.5"), ("--switch-probability", "nan"), ("--random-erasing", "-0.1"),
    ("--hflip", "2"), ("--warmup-lr", "nan"), ("--min-lr", "-1"), ("--weight-decay", "inf"),
    ("--drop-path-rate", "1"), ("--ema-decay", "1"), ("--clip-norm", "0"),
    ("--adam-beta2", "1"), ("--eval-batch-size", "0"), ("--image-size", "0"),
])
def test_out_of_range_values_are_refused_naming_the_flag(flag, value, tmp_path, no_data, capsys):
    output = tmp_path / "run"
    assert train.main(["--recipe", "digits", flag, value, "--output", str(output)]) == 2
    err = _one_line(capsys)
    assert err.startswith(f"training.train: {flag} must be")
    assert not output.exists()  # refused before anything was written


@pytest.mark.once
def test_an_evaluation_batch_must_divide_over_the_devices():
    two = distribute.Plan("mirrored", 2)
    distribute.check_batches(two, 8, 6)
    with pytest.raises(ValueError, match=r"--eval-batch-size 5 does not divide over the 2 devices"):
        distribute.check_batches(two, 8, 5)
    with pytest.raises(ValueError, match=r"--batch-size 7 does not divide"):
        distribute.check_batches(two, 7, 6)


@pytest.mark.once
def test_no_data_says_what_is_missing_before_touching_any(tmp_path, monkeypatch, no_data, capsys):
    monkeypatch.chdir(tmp_path)
    assert train.main([]) == 2
    err = _one_line(capsys)
    for needed in ("--data imagenet2012 --manual-dir DIR", "--data FOLDER", "bin/demo", "--recipe digits"):
        assert needed in err
    assert os.listdir(tmp_path) == []  # no run directory either


@pytest.mark.once
def test_every_expected_failure_is_one_line_unless_debugging(tmp_path, monkeypatch, capsys):
    def fails(error):
        def run(*args, **kwargs):
            raise error
        return run

    monkeypatch.delenv("FFZOO_DEBUG", raising=False)
    for error, expected in ((OSError(28, "No space left on device"), "OSError: [Errno 28] No space"),
                            (FileNotFoundError(2, "No such file or directory", "x.png"), "x.png"),
                            (FloatingPointError("diverged\nat step 3"), "diverged at step 3")):
        monkeypatch.setattr(train, "run", fails(error))
        assert train.main(["--recipe", "digits"]) == 2
        assert expected in _one_line(capsys)
    with pytest.raises(FloatingPointError):
        train.main(["--recipe", "digits", "--debug"])
    monkeypatch.setenv("FFZOO_DEBUG", "1")
    with pytest.raises(cfg.ConfigError):
        train.main(["--recipe", "digits", "--lr", "nan"])
    monkeypatch.delenv("FFZOO_DEBUG")

    monkeypatch.setattr(evaluate, "run", fails(Reached()))
    common = ["--model", "ffvit_micro_patch4_32", "--weights", "w.weights.h5"]
    for flag, value in (("--batch-size", "0"), ("--crop-pct", "0"), ("--crop-pct", "nan"),
                        ("--image-size", "-1")):
        assert evaluate.main(common + [flag, value]) == 2
        assert f"training.evaluate: {flag} must be" in _one_line(capsys)
    monkeypatch.setattr(evaluate, "run", fails(OSError(5, "Input/output error")))
    assert evaluate.main(common) == 2
    assert "OSError: [Errno 5] Input/output error" in _one_line(capsys)
    with pytest.raises(OSError):
        evaluate.main(common + ["--debug"])


# ---------------------------------------------------------------------------------------
# Writes and backups
# ---------------------------------------------------------------------------------------

@pytest.mark.once
def test_write_atomically_flushes_file_and_directory_before_trusting_them(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    synced = []
    real_fsync = os.fsync

    def fsync(descriptor):
        info = os.fstat(descriptor)
        synced.append((stat.S_ISDIR(info.st_mode), info.st_ino, path.exists()))
        real_fsync(descriptor)
    monkeypatch.setattr(os, "fsync", fsync)
    cb.write_json(str(path), {"epochs_done": 3})
    assert json.loads(path.read_text()) == {"epochs_done": 3}
    # The new file is flushed before it replaces the path, then the directory (the rename).
    assert synced == [(False, path.stat().st_ino, False), (True, tmp_path.stat().st_ino, True)]


def _fake_backup(directory, epoch, payload, legacy=False):
    stem = f"backup-epoch{epoch:04d}"
    (directory / f"{stem}.weights.h5").write_bytes(payload)
    state = {"epochs_done": epoch, "weights": f"{stem}.weights.h5", "history": [{"epoch": epoch}]}
    if not legacy:
        state.update(size=len(payload), sha256=hashlib.sha256(payload).hexdigest())
    (directory / f"{stem}.json").write_text(json.dumps(state))
    return state


@pytest.mark.once
def test_damaged_backups_are_skipped_for_the_older_one(tmp_path, capsys):
    directory = tmp_path / "backup"
    directory.mkdir()
    _fake_backup(directory, 1, b"epoch one " * 10)
    _fake_backup(directory, 2, b"epoch two " * 10)
    (directory / "state.json").write_text("")  # empty
    assert cb.Backup(str(directory)).saved_epochs() == 2  # epoch 2's own record is whole
    assert "state.json is unreadable (JSONDecodeError" in capsys.readouterr().out

    newest = directory / "backup-epoch0002.weights.h5"
    newest.write_bytes(b"epoch two " * 5)  # truncated
    assert cb.Backup(str(directory)).saved_epochs() == 1
    assert "backup-epoch0002.weights.h5 has 50 bytes, not the 100 written" in capsys.readouterr().out
    newest.write_bytes(b"epoch 2!! " * 10)  # same size, other bytes
    assert cb.Backup(str(directory)).saved_epochs() == 1
    assert "sha256 differs" in capsys.readouterr().out
    (directory / "backup-epoch0001.weights.h5").unlink()
    with pytest.raises(ValueError, match="Every backup in .* is damaged: pass --fresh"):
        cb.Backup(str(directory)).saved_epochs()
    # A backup from before the checksums is still used.
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    state = _fake_backup(legacy, 3, b"old", legacy=True)
    (legacy / "state.json").write_text(json.dumps(state))
    assert cb.Backup(str(legacy)).saved_epochs() == 3


# ---------------------------------------------------------------------------------------
# Non-finite states (training runs: every backend)
# ---------------------------------------------------------------------------------------

def test_nonfinite_weights_are_never_backed_up_or_saved(folder, nano, tmp_path, monkeypatch, capsys):
    # The last step of epoch 2 turns a weight into NaN after its (finite) loss was
    # logged: only the weights show it.
    original = cb.LearningRate.on_epoch_end

    def poisoned(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch == 1:
            variable = self.model.trainable_variables[0]
            variable.assign(np.full(variable.shape, np.nan, "float32"))
    monkeypatch.setattr(cb.LearningRate, "on_epoch_end", poisoned)
    output = tmp_path / "poisoned"
    assert train.main(_args(folder, output, "--steps-per-epoch", "1", "--eval-every", "9")) == 2
    err = capsys.readouterr().err
    assert "weight and optimizer tensors became NaN or infinite in epoch 2" in err
    assert "The last good state is the backup of epoch 1" in err
    assert [row["epoch"] for row in _history(output)] == [1]
    assert sorted(os.listdir(output / "backup")) == ["backup-epoch0001.json",
                                                     "backup-epoch0001.weights.h5", "state.json"]
    assert not (output / "model.weights.h5").exists() and not (output / "summary.json").exists()


def test_a_nonfinite_validation_stops_the_run(folder, nano, tmp_path, capsys):
    # One step at a huge (valid) learning rate: the training loss was finite, the
    # updated weights overflow the validation logits.
    output = tmp_path / "diverged"
    assert train.main(_args(folder, output, "--lr", "1e30", "--epochs", "1",
                            "--steps-per-epoch", "1")) == 2
    err = capsys.readouterr().err
    assert "val_loss became nan at the end of epoch 1" in err and "there is no backup" in err
    assert not (output / "model.weights.h5").exists() and not (output / "summary.json").exists()
