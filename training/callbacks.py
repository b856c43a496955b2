"""Callbacks of a training run: atomic backups, NaN stop, throughput, log and plot files."""

import csv
import json
import math
import os
import time

import keras
import numpy as np


def write_atomically(path, write):
    """`write(temporary_path)`, then rename: `path` is always whole or absent."""
    partial = f"{path}.{os.getpid()}.partial" + (".weights.h5" if path.endswith(".weights.h5") else "")
    try:
        write(partial)
        os.replace(partial, path)
    except BaseException:
        if os.path.exists(partial):
            os.remove(partial)
        raise


class Backup(keras.callbacks.Callback):
    """Epoch-end backups a killed run resumes from, written so a kill cannot corrupt them.

    Each backup is a `.weights.h5` of the model and optimizer (step counter, moments,
    EMA) plus `state.json` naming it, with the epoch count and the per-epoch history.
    The weights file is written first, then `state.json` is replaced atomically, then
    the older weights file is removed: whenever the process dies, `state.json` names
    a complete backup.
    """

    def __init__(self, directory):
        super().__init__()
        self.directory = directory
        self.state_path = os.path.join(directory, "state.json")
        self.epochs_done = 0
        self.history = []  # one dict of logs per finished epoch

    def saved_epochs(self):
        """Epochs done according to the last backup (0 without one)."""
        if not os.path.exists(self.state_path):
            return 0
        with open(self.state_path) as f:
            return json.load(f)["epochs_done"]

    def restore(self, model):
        """Loads the last backup into a compiled `model`; returns the epochs done."""
        if not os.path.exists(self.state_path):
            return 0
        with open(self.state_path) as f:
            state = json.load(f)
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.load_weights(os.path.join(self.directory, state["weights"]))
        self.epochs_done, self.history = state["epochs_done"], state["history"]
        return self.epochs_done

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        if not all(math.isfinite(v) for v in row.values()):
            return  # never back up a diverged state (StopOnNaN reports it)
        self.history.append(row)
        self.epochs_done = epoch + 1
        os.makedirs(self.directory, exist_ok=True)
        name = f"backup-epoch{epoch + 1:04d}.weights.h5"
        write_atomically(os.path.join(self.directory, name), self.model.save_weights)
        state = {"epochs_done": self.epochs_done, "weights": name, "history": self.history}
        write_json(self.state_path, state)
        for old in os.listdir(self.directory):
            if old.startswith("backup-epoch") and old != name:
                os.remove(os.path.join(self.directory, old))


def write_json(path, value):
    """`value` as indented JSON at `path`, written atomically."""
    def write(partial):
        with open(partial, "w") as f:
            json.dump(value, f, indent=2)
    write_atomically(path, write)


class RawWeights(keras.callbacks.Callback):
    """Keeps the raw weights of the last finished epoch: with an EMA, Keras' `fit` ends
    by overwriting the model's weights with their averages, and DeiT reports the raw
    weights."""

    def __init__(self):
        super().__init__()
        self.weights = None

    def on_epoch_end(self, epoch, logs=None):
        self.weights = self.model.get_weights()


class StopOnNaN(keras.callbacks.Callback):
    """Stops training when the loss is NaN or infinite, naming the step."""

    def __init__(self):
        super().__init__()
        self.epoch = 0
        self.failure = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
            self.failure = (f"the loss became {float(loss)} at epoch {self.epoch + 1}, step "
                            f"{batch + 1} of the epoch (optimizer step {step})")
            self.model.stop_training = True


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
