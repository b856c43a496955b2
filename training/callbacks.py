"""Callbacks of a training run: atomic backups, NaN stop, throughput, progress, log and plot files."""

import csv
import hashlib
import json
import math
import os
import re
import signal
import sys
import threading
import time

import keras
import numpy as np

from ffzoo import files
from ffzoo.files import write_atomically


def remove_partials(directory):
    """Removes the temporary files of writes a killed run left in `directory`."""
    removed = files.remove_partials(directory)
    if removed:
        print(f"Removed {len(removed)} unfinished file(s) of a killed run in {directory}: "
              f"{', '.join(removed)}.")
    return removed


def write_json(path, value):
    """`value` as indented JSON at `path`, written atomically."""
    def write(partial):
        with open(partial, "w") as f:
            json.dump(value, f, indent=2)
    write_atomically(path, write)


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def nonfinite_variables(variables):
    """Paths of the variables holding a NaN or an infinity."""
    bad = []
    for variable in variables:
        values = np.asarray(keras.ops.convert_to_numpy(variable))
        if values.dtype.kind not in "biu" and not np.isfinite(values.astype(np.float32)).all():
            bad.append(variable.path)
    return bad


def check_finite_weights(model, what):
    """Raises FloatingPointError when a weight of `model` is NaN or infinite."""
    bad = nonfinite_variables(model.weights)
    if bad:
        raise FloatingPointError(
            f"{len(bad)} of {len(model.weights)} weight tensors are NaN or infinite "
            f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}); {what} not written.")


class Backup(keras.callbacks.Callback):
    """Epoch-end backups a killed run resumes from, written so a kill cannot corrupt them.

    Each backup is `backup-epochNNNN.weights.h5` (model and optimizer: step counter,
    moments, EMA) and `backup-epochNNNN.json` (epoch count, per-epoch history, the
    weights file's size and sha256); `state.json` is a copy of the newest one's. The
    weights file is written first, then the JSON files, each flushed to disk and
    renamed into place; then backups older than the last two are removed. A backup
    is only written of a finite state (`guard`, a StopOnNaN listed before it).

    On a start, the newest intact backup is used: a backup whose JSON does not parse
    or whose weights file is missing, truncated or altered (size or sha256) is
    skipped with a message, and the one before it is used.
    """

    KEEP = 2

    def __init__(self, directory, guard=None):
        super().__init__()
        self.directory = directory
        self.state_path = os.path.join(directory, "state.json")
        self.guard = guard
        self.epochs_done = 0
        self.history = []  # one dict of logs per finished epoch
        self._chosen = None

    def _candidates(self):
        if not os.path.isdir(self.directory):
            return []
        names = sorted(n for n in os.listdir(self.directory)
                       if n == "state.json" or re.fullmatch(r"backup-epoch\d+\.json", n))
        return [os.path.join(self.directory, n) for n in names]

    def _read(self, path):
        """`(state, None)` for an intact backup, `(None, reason)` otherwise."""
        try:
            with open(path) as f:
                state = json.load(f)
            epochs, weights, history = state["epochs_done"], state["weights"], state["history"]
            if not isinstance(epochs, int) or not isinstance(history, list):
                raise TypeError("unexpected values")
        except (OSError, ValueError, KeyError, TypeError) as error:
            return None, f"{os.path.basename(path)} is unreadable ({type(error).__name__}: {error})"
        weights_path = os.path.join(self.directory, os.path.basename(str(weights)))
        if not os.path.isfile(weights_path):
            return None, f"{os.path.basename(path)} names {weights}, which is missing"
        size = os.path.getsize(weights_path)
        if "size" in state and size != state["size"]:
            return None, f"{weights} has {size} bytes, not the {state['size']} written"
        if "sha256" in state and _sha256(weights_path) != state["sha256"]:
            return None, f"{weights} is damaged (its sha256 differs from the one written)"
        return state, None

    def saved_epochs(self):
        """Epochs done according to the newest intact backup (0 without one); finds it
        once, with a message for each damaged backup skipped."""
        if self._chosen is not None:
            return self._chosen["epochs_done"]
        states, damaged = [], []
        for path in self._candidates():
            state, reason = self._read(path)
            if state is None:
                damaged.append(reason)
            else:
                states.append(state)
        states.sort(key=lambda s: s["epochs_done"], reverse=True)
        for reason in damaged:
            print(f"Skipping a damaged backup in {self.directory}: {reason}.")
        if damaged and not states:
            raise ValueError(
                f"Every backup in {self.directory} is damaged: pass --fresh to start the run "
                "over, or another --output.")
        self._chosen = states[0] if states else {"epochs_done": 0}
        return self._chosen["epochs_done"]

    def restore(self, model):
        """Loads the newest intact backup into a compiled `model`; returns the epochs done."""
        if not self.saved_epochs():
            return 0
        state = self._chosen
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        path = os.path.join(self.directory, os.path.basename(state["weights"]))
        try:
            model.load_weights(path)
        except (ValueError, OSError, KeyError) as error:
            raise ValueError(f"The backup {path} does not load into this model ({error}); pass "
                             "--fresh to start over, or another --output.") from error
        self.epochs_done, self.history = state["epochs_done"], state["history"]
        return self.epochs_done

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        failure = (self.guard.check(epoch, logs) if self.guard is not None
                   else nonfinite_failure(self.model, epoch, row))
        if failure:
            return  # never back up a diverged state (StopOnNaN reports it)
        self.history.append(row)
        self.epochs_done = epoch + 1
        os.makedirs(self.directory, exist_ok=True)
        stem = f"backup-epoch{epoch + 1:04d}"
        weights_path = os.path.join(self.directory, stem + ".weights.h5")
        write_atomically(weights_path, self.model.save_weights)
        state = {"epochs_done": self.epochs_done, "weights": stem + ".weights.h5",
                 "size": os.path.getsize(weights_path), "sha256": _sha256(weights_path),
                 "history": self.history}
        write_json(os.path.join(self.directory, stem + ".json"), state)
        write_json(self.state_path, state)
        keep = {f"backup-epoch{e:04d}" for e in range(epoch + 2 - self.KEEP, epoch + 2)}
        for old in os.listdir(self.directory):
            match = re.fullmatch(r"(backup-epoch\d+)\.(weights\.h5|json)", old)
            if match and match.group(1) not in keep:
                os.remove(os.path.join(self.directory, old))


class RawWeights(keras.callbacks.Callback):
    """Keeps the raw weights of the last finished epoch: with an EMA, Keras' `fit` ends
    by overwriting the model's weights with their averages, and DeiT reports the raw
    weights."""

    def __init__(self):
        super().__init__()
        self.weights = None

    def on_epoch_end(self, epoch, logs=None):
        self.weights = self.model.get_weights()


def nonfinite_failure(model, epoch, logs):
    """What is non-finite at the end of an epoch (its logs, validation included, the
    model's weights, the optimizer's moments and EMA), or None."""
    bad_logs = sorted(k for k, v in (logs or {}).items() if not math.isfinite(float(v)))
    if bad_logs:
        return (f"{', '.join(bad_logs)} became {float(logs[bad_logs[0]])} at the end of "
                f"epoch {epoch + 1}")
    variables = list(model.weights)
    if model.optimizer is not None:
        variables += list(model.optimizer.variables)
    bad = nonfinite_variables(variables)
    if bad:
        return (f"{len(bad)} of {len(variables)} weight and optimizer tensors became NaN or "
                f"infinite in epoch {epoch + 1} ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})")
    return None


class StopOnInterrupt(keras.callbacks.Callback):
    """Makes a Ctrl-C during `fit` stop the run at the next batch end.

    Python raises `KeyboardInterrupt` wherever the main thread is when SIGINT arrives;
    inside a finalizer or a garbage-collection callback (JAX registers one) the exception
    is printed as "Exception ignored ..." with a traceback and dropped, and training goes
    on. Used as a context manager around `fit`, this only records the first Ctrl-C, and
    the next batch end (or the end of `fit`) raises `KeyboardInterrupt` from ordinary
    code. A second Ctrl-C raises at once.
    """

    def __init__(self):
        super().__init__()
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc_info):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
        if exc_info[0] is None and self.requested:
            raise KeyboardInterrupt

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def _raise_if_requested(self, *args, **kwargs):
        if self.requested:
            raise KeyboardInterrupt

    on_train_batch_end = on_test_batch_end = on_epoch_end = _raise_if_requested


class StopOnNaN(keras.callbacks.Callback):
    """Stops training when the loss of a step is NaN or infinite, naming the step, or
    when anything is non-finite at the end of an epoch: its logs (validation included),
    the weights or the optimizer's state (`nonfinite_failure`)."""

    def __init__(self):
        super().__init__()
        self.epoch = 0
        self.failure = None
        self._checked = {}

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
            self.failure = (f"the loss became {float(loss)} at epoch {self.epoch + 1}, step "
                            f"{batch + 1} of the epoch (optimizer step {step})")
            self.model.stop_training = True

    def check(self, epoch, logs=None):
        """The failure of this epoch's end state, or None (checked once per epoch)."""
        if self.failure:
            return self.failure
        if epoch not in self._checked:
            self._checked = {epoch: nonfinite_failure(self.model, epoch, logs)}
            if self._checked[epoch]:
                self.failure = self._checked[epoch]
                self.model.stop_training = True
        return self._checked[epoch]

    def on_epoch_end(self, epoch, logs=None):
        self.check(epoch, logs)


class Throughput(keras.callbacks.Callback):
    """Training images per second of each epoch (written into the epoch's logs)."""

    def __init__(self, batch_size):
        super().__init__()
        self.batch_size = batch_size

    def on_epoch_begin(self, epoch, logs=None):
        self.start, self.batches = time.perf_counter(), 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["images_per_s"] = self.batches * self.batch_size / (time.perf_counter() - self.start)


class LearningRate(keras.callbacks.Callback):
    """Records the learning rate of each epoch's last step in the logs."""

    def __init__(self, schedule):
        super().__init__()
        self.schedule = schedule

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)) - 1
            logs["lr"] = float(keras.ops.convert_to_numpy(self.schedule(max(step, 0))))


class RunFiles(keras.callbacks.Callback):
    """Rewrites `log.csv` and `curves.png` from the backed-up history after each epoch."""

    def __init__(self, backup, directory):
        super().__init__()
        self.backup, self.directory = backup, directory

    def on_epoch_end(self, epoch, logs=None):
        write_files(self.backup.history, self.directory)


def write_files(history, directory):
    if not history:
        return
    columns = sorted({k for row in history for k in row} - {"epoch"})
    path = os.path.join(directory, "log.csv")

    def write_csv(partial):
        with open(partial, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["epoch", *columns])
            for row in history:
                writer.writerow([row["epoch"], *[row.get(c, "") for c in columns]])

    write_atomically(path, write_csv)
    write_atomically(os.path.join(directory, "curves.png"), lambda p: plot(history, p))


def plot(history, path):
    """Loss, accuracy and learning rate per epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    epochs = [row["epoch"] for row in history]
    series = lambda key: [row.get(key, np.nan) for row in history]
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for key, label in (("loss", "train"), ("val_loss", "validation")):
        axes[0].plot(epochs, series(key), marker=".", label=label)
    axes[0].set_title("loss")
    for key, label in (("top1", "train top-1 (mixed targets)"), ("val_top1", "validation top-1"),
                       ("val_top5", "validation top-5")):
        if not any(key in row for row in history):
            continue  # no top-5 with fewer than 6 classes
        axes[1].plot(epochs, np.array(series(key)) * 100, marker=".", label=label)
    axes[1].set_title("accuracy (%)")
    axes[2].plot(epochs, series("lr"), marker=".")
    axes[2].set_title("learning rate")
    for axis in axes:
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
    axes[0].legend()
    axes[1].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=90, format="png")
    plt.close(figure)


def _duration(seconds):
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """Progress of a loop of `total` steps. On a terminal, Keras' progress bar; else
    (a log file, a pipe) plain lines, no carriage returns or ANSI escapes: one at every
    `total // 10`-th step, and at least one every `seconds`, with images/s and the ETA."""

    SECONDS = 30.0

    def __init__(self, total, what, unit="step", terminal=None, seconds=SECONDS, stream=None):
        self.total, self.what, self.unit, self.seconds = total, what, unit, seconds
        self.stream = stream or sys.stdout
        terminal = self.stream.isatty() if terminal is None else terminal
        self.bar = keras.utils.Progbar(total, unit_name=unit) if terminal else None
        self.every = max(1, (total or 0) // 10)
        self.start = self.last = time.perf_counter()
        self.images = 0

    def update(self, step, images, values=None):
        """`step` (1-based) is done; `images` more were processed; `values` to show."""
        self.images += images
        if self.bar is not None:
            self.bar.update(step, [(k, float(v)) for k, v in (values or {}).items()])
            return
        now = time.perf_counter()
        if step % self.every and now - self.last < self.seconds and step != self.total:
            return
        self.last = now
        elapsed = now - self.start
        rate = self.images / elapsed if elapsed > 0 else 0.0
        of = f"/{self.total}" if self.total else ""
        eta = f", ETA {_duration(elapsed / step * (self.total - step))}" if self.total else ""
        shown = "".join(f", {k} {float(v):.4g}" for k, v in (values or {}).items())
        print(f"{self.what}: {self.unit} {step}{of}{shown}, {rate:.1f} images/s{eta}",
              file=self.stream, flush=True)

    def finish(self):
        """Ends the bar's line when the total was unknown (Keras then leaves it open)."""
        if self.bar is not None and self.total is None:
            print(file=self.stream, flush=True)


class ProgressLines(keras.callbacks.Callback):
    """`fit`'s progress when the output is not a terminal (`fit(verbose=0)`): `Progress`
    lines within each epoch, then one line with the epoch's logs."""

    def __init__(self, batch_size, steps, epochs, seconds=Progress.SECONDS):
        super().__init__()
        self.batch_size, self.steps, self.epochs, self.seconds = batch_size, steps, epochs, seconds

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.progress = Progress(self.steps, f"epoch {epoch + 1}/{self.epochs}", terminal=False,
                                 seconds=self.seconds)

    def on_train_batch_end(self, batch, logs=None):
        # The values are converted only when a line is printed (a sync on JAX and PyTorch).
        shown = {k: v for k, v in (logs or {}).items() if k in ("loss", "top1")}
        self.progress.update(batch + 1, self.batch_size, shown)

    def on_epoch_end(self, epoch, logs=None):
        shown = ", ".join(f"{k} {float(v):.4g}" for k, v in (logs or {}).items())
        print(f"epoch {epoch + 1}/{self.epochs} done in {_duration(time.perf_counter() - self.progress.start)}: "
              f"{shown}", flush=True)
