"""Fault injection: a run killed at each of its write points, with its newest backup
damaged in between, resumes with nothing lost.

`FFZOO_TEST_EXIT_AT="PATTERN:N"` makes `ffzoo.files.write_atomically` end the
process with `os._exit` (no cleanup, as SIGKILL) at the N-th write of a file whose name
matches PATTERN, after the temporary file is written and before it replaces the file.
One run directory goes through six lives; each life is one subprocess (the TensorFlow
import is most of its cost), so every check of a life is made on that life.
"""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import ffzoo
from ffzoo.runs import load_run
from tests.conftest import ROOT, to_numpy
from tests.run_training import NANO_NAME
from tests.test_training_scripts import (  # noqa: F401 (fixtures)
    CLASSES,
    _args,
    _history,
    _subprocess_env,
    _timm_cosine,
    folder,
    nano,
)
from training.recipes.digits import RECIPE as DIGITS

EPOCHS = 4


def _life(output, folder, exit_at=None):
    # One step per epoch, no validation in fit, one evaluation batch: the cheapest run
    # that writes every file. JAX keeps its compilations on disk between the lives.
    command = [sys.executable, "-m", "tests.run_training",
               *_args(folder, output, "--epochs", str(EPOCHS), "--steps-per-epoch", "1",
                      "--eval-every", str(EPOCHS + 1), "--eval-batch-size", "16")]
    env = _subprocess_env(JAX_COMPILATION_CACHE_DIR=str(output.parent / "jax-cache"),
                          JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                          JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    env.pop("FFZOO_DEBUG", None)
    if exit_at:
        env["FFZOO_TEST_EXIT_AT"] = exit_at
    result = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    expected = 99 if exit_at else 0
    assert result.returncode == expected, (exit_at, result.stdout[-2000:], result.stderr[-3000:])
    if exit_at:
        assert f"exiting at write {exit_at.rsplit(':', 1)[1]}" in result.stderr
    return result.stdout


def _partials(output):
    return sorted(name for base, _, names in os.walk(output) for name in names if ".partial" in name)


# The write points, backups and resume logic are ffzoo's and Keras' own, the same on every
# backend (the resumed numbers are checked per backend by test_training_scripts): once.
@pytest.mark.once
def test_killed_at_every_write_point_and_damaged_backups_lose_nothing(folder, nano, tmp_path):
    output = tmp_path / "run"
    backup = output / "backup"

    # 1. Killed while writing the backup of epoch 2: epoch 1's is whole.
    _life(output, folder, "backup-epoch*.weights.h5:2")
    assert [row["epoch"] for row in _history(output)] == [1]
    first = _history(output)[0]
    assert len(_partials(output)) == 1  # the unfinished file, never renamed into place

    # 2. Resumes from epoch 1 (the orphan removed), killed while replacing state.json
    #    after epoch 2's backup files were written.
    out = _life(output, folder, "state.json:1")
    assert "Removed 1 unfinished file(s)" in out and "Resuming from the backup of epoch 1." in out
    assert json.loads((backup / "state.json").read_text())["epochs_done"] == 1
    assert (backup / "backup-epoch0002.json").exists()

    # Damage the newest backup: half of epoch 2's weights file is lost.
    newest = backup / "backup-epoch0002.weights.h5"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])

    # 3. Skips the damaged backup and resumes from the older one; killed writing log.csv.
    out = _life(output, folder, "log.csv:1")
    assert "Skipping a damaged backup" in out and "backup-epoch0002.weights.h5 has" in out, out
    assert "Resuming from the backup of epoch 1." in out
    assert [row["epoch"] for row in _history(output)] == [1, 2]

    # Damage state.json (empty, as after a crash on a file system without ordering).
    (backup / "state.json").write_text("")

    # 4. Falls back to epoch 2's own record; trains epochs 3 and 4; killed writing the
    #    final weights.
    out = _life(output, folder, "model.weights.h5:1")
    assert "state.json is unreadable" in out and "Resuming from the backup of epoch 2." in out, out
    assert not (output / "model.weights.h5").exists()

    # 5. Nothing left to train; killed writing summary.json.
    out = _life(output, folder, "summary.json:1")
    assert "Resuming from the backup of epoch 4." in out
    assert (output / "model.weights.h5").exists() and not (output / "summary.json").exists()

    # 6. Finishes.
    out = _life(output, folder)
    assert "Resuming from the backup of epoch 4." in out

    history = _history(output)
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]
    assert history[0] == first  # what finished before the kills is kept as it was
    # The optimizer's step counter and the schedule carried on through every resume and
    # the fallback: each epoch's learning rate is the schedule's at step epoch - 1.
    for row in history:
        expected = _timm_cosine(row["epoch"] - 1, 3e-3 * 8 / DIGITS["lr_batch_reference"],
                                EPOCHS, 0, 1e-5, 1e-5)
        assert row["lr"] == pytest.approx(expected, rel=1e-5), row
    with open(output / "log.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2, 3, 4]
    with open(output / "summary.json") as f:
        assert json.load(f)["epochs"] == EPOCHS
    assert _partials(output) == []
    # The last two backups are kept.
    assert sorted(os.listdir(backup)) == ["backup-epoch0003.json", "backup-epoch0003.weights.h5",
                                          "backup-epoch0004.json", "backup-epoch0004.weights.h5",
                                          "state.json"]
    model = ffzoo.create_model(NANO_NAME, classes=CLASSES, classifier_activation=None,
                               weights=str(output / "model.weights.h5"))
    assert all(np.isfinite(to_numpy(w)).all() for w in model.weights)
    # The run directory rebuilds the same model.
    rebuilt = load_run(output).model
    for mine, theirs in zip(model.weights, rebuilt.weights, strict=True):
        np.testing.assert_array_equal(to_numpy(mine), to_numpy(theirs))
