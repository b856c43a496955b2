"""Train an ffzoo model with keras.Model.fit, on any backend and scale.

    python -m training.train --recipe digits                      # the embedded demo
    python -m training.train --recipe deit --model ffvit_tiny_patch16_224 \
        --data imagenet2012 --data-dir D --batch-size 1024 --precision mixed_bfloat16 \
        --output runs/tiny

Running the same command again resumes the run in `--output` from its newest intact
epoch backup (optimizer, schedule and epoch counter included). The run directory holds:
.ffzoo-run (its mark; --fresh clears only marked directories, and only what a run
wrote), config.json, backup/ (the last two epochs), log.csv, curves.png, tensorboard/,
model.weights.h5 (the final weights, without optimizer state: only the backups carry
it), model_ema.weights.h5 (with --ema-decay), model.json (the model name, constructor
arguments, class names and evaluation preprocessing: `ffzoo.runs.load_run` rebuilds
the model from the directory alone), summary.json.
Failures are one line (exit status 2); --debug or FFZOO_DEBUG=1 shows the traceback.
See training/README.md.

`run(config)` is three steps: `set_up` (data, compiled model, optimizer, the backup
resumed from), `fit` (`model.fit` with the run's callbacks) and `finalize` (final
weights, the evaluation of the whole split, log files, summary.json).
"""

import dataclasses
import json
import os
import re
import shutil
import statistics
import sys
import time
import warnings

import keras

import ffzoo
from ffzoo import files, runs
from ffzoo.preprocessing import IMAGENET_MEAN, IMAGENET_STD

from . import callbacks as cb
from . import config as cfg
from . import digits, distribute, errors
from . import optimizer as opt
from .evaluate import TOP5_MIN_CLASSES, evaluate


def _augment(config):
    """The recipe's augmentation settings: every field of `ffzoo.data.Augment` comes from
    the config (schema keys of the same names), none from Augment's defaults."""
    import ffzoo.data as fd

    return fd.Augment.from_dict({f.name: config[f.name] for f in dataclasses.fields(fd.Augment)})


def load_data(config, replicas, seed_offset=0):
    """`(train, evaluation)` pipelines (ffzoo.data.Pipeline) for the config."""
    import tensorflow as tf

    import ffzoo.data as fd

    source = config["data"] or digits.write_folder()
    common = dict(image_size=config["image_size"], data_dir=config["data_dir"],
                  manual_dir=config["manual_dir"])
    def training_pipeline(batch_size):
        return fd.load(source, config["train_split"], training=True, batch_size=batch_size,
                       augment=_augment(config), seed=config["seed"] + seed_offset,
                       repeats=config["repeated_augmentation"], **common)
    train = training_pipeline(config["batch_size"])
    batch = _batch_for(config["batch_size"], train.num_examples, replicas)
    if batch != config["batch_size"]:
        print(f"The training split has {train.num_examples} images, fewer than --batch-size "
              f"{config['batch_size']}: training at batch {batch}.")
        train = training_pipeline(batch)
    evaluation = fd.load(source, config["eval_split"], training=False,
                         batch_size=config["eval_batch_size"], crop_pct=config["crop_pct"],
                         one_hot_labels=True, pad_final_batch=replicas > 1,
                         labels_file=config["labels_file"], class_names=train.class_names, **common)
    if replicas > 1:  # tf.distribute: shard by data (the file list is not a file reader)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        train.dataset = train.dataset.with_options(options)
        evaluation.dataset = evaluation.dataset.with_options(options)
    return train, evaluation


def _batch_for(batch_size, examples, replicas):
    """`batch_size`, or for a training split of known size smaller than it, the largest
    batch no larger than the split that divides over the devices."""
    if examples is None or examples >= batch_size:
        return batch_size
    if examples < replicas:
        raise cfg.ConfigError(f"The training split has {examples} images, fewer than the "
                              f"{replicas} devices: one batch needs an image per device.")
    return examples // replicas * replicas


def build_model(config, classes):
    """The model to train. With pretrained weights and another label set (fine-tuning),
    every layer but the classifier starts from the weights and the classifier is new:
    the result is a plain `create_model(name, classes=classes)` model, so its weights
    files load with `ffzoo.create_model(name, classes=..., weights=path)`."""
    kwargs = dict(classes=classes, classifier_activation=None, drop_rate=config["drop_rate"],
                  drop_path_rate=config["drop_path_rate"])
    weights = config["weights"]
    if weights in (None, "none"):
        return ffzoo.create_model(config["model"], **kwargs)
    row = ffzoo.models.registry.pretrained_config(config["model"])
    skip_head = ffzoo.weights.head_classes(weights, row) != classes
    model = ffzoo.create_model(config["model"], **kwargs)
    ffzoo.weights.load(model, weights, row, skip_head=skip_head)
    if skip_head:
        print(f"Fine-tuning from {weights}: every layer but the {classes}-class head is pretrained.")
    return model


def _fit_data(model, dataset, plan):
    """The training data for `fit`, starting at the same batch on every backend and plan.

    Before training, `fit` builds the metrics from a first batch that it reads from a
    first iterator of the data, then trains on a second iterator: on JAX and
    PyTorch. Seeded ffzoo.data pipelines give every iterator its own order and
    augmentations, so on TensorFlow one iterator is opened and dropped here too, and
    a seed means the same batches on every backend.

    Under a tf.distribute strategy Keras would reduce that first batch across the
    replicas, which fails with MultiWorkerMirroredStrategy (keras-team/keras#20585):
    there the model is built from the data's shapes instead (`distribute.build_from_spec`).
    """
    if keras.backend.backend() == "tensorflow":
        if plan.strategy is not None:
            distribute.build_from_spec(model, dataset.element_spec, plan.strategy)
        iter(dataset)
    return dataset


def _jit(config):
    """`jit_compile` for `compile`. "auto" is Keras' choice, except TensorFlow without a
    GPU: there XLA is slower than TensorFlow's graph mode (benchmarks/README.md)."""
    if config["jit_compile"] == "auto" and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return "auto" if tf.config.list_logical_devices("GPU") else False
    return {"auto": "auto", "true": True, "false": False}[config["jit_compile"]]


# What a run writes in its directory; `--fresh` removes these and nothing else.
MARKER = ".ffzoo-run"
RUN_FILES = (MARKER, "config.json", "backup", "log.csv", "curves.png", "tensorboard",
             "model.weights.h5", "model_ema.weights.h5", runs.MODEL_FILE, "summary.json")


def _run_owned(name):
    """Whether `name` in a run directory is a run's: its files, the folders of other
    hosts (`worker-<index>`), and temporary files of killed writes."""
    return name in RUN_FILES or re.fullmatch(r"worker-\d+", name) or files.is_partial(name)


def _is_run_directory(path):
    """A run marked it (MARKER), or it holds a run's config.json (runs from before the marker)."""
    if os.path.exists(os.path.join(path, MARKER)):
        return True
    try:
        with open(os.path.join(path, "config.json")) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(saved, dict) and set(saved) >= {"recipe", "model", "output", "epochs", "lr"}


def _clear_run(output):
    """`--fresh`: removes what a run wrote in `output`, refusing if it holds anything else."""
    foreign = sorted(name for name in os.listdir(output) if not _run_owned(name))
    if foreign:
        raise cfg.ConfigError(
            f"--fresh refused: {output} holds files that a training run did not write "
            f"({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}); move them out "
            "or choose another --output.")
    for name in os.listdir(output):  # other hosts clear their own worker-* folders
        path = os.path.join(output, name)
        if name != MARKER and not name.startswith("worker-"):
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def _prepare_output(config, fresh, worker=0):
    """The run directory of this host, checked against (or cleared of) an earlier run.

    A run writes only into a new or empty directory, or into one that a run marked
    as its own (MARKER); `--fresh` removes only the files a run writes. With several
    hosts the chief (host 0) owns `config["output"]`; every other host keeps its own
    backups and files in its `worker-<index>/` inside it.
    """
    output = config["output"]
    if worker:
        output = os.path.join(output, f"worker-{worker}")
    if os.path.exists(output) and not os.path.isdir(output):
        raise cfg.ConfigError(f"--output {output} is a file, not a directory.")
    others = [n for n in os.listdir(output) if not re.fullmatch(r"worker-\d+", n)] \
        if os.path.isdir(output) else []
    if others and not _is_run_directory(output):
        raise cfg.ConfigError(
            f"{output} is not empty and is not a training run directory (no {MARKER} file): "
            "a run writes, resumes and (--fresh) clears only directories that a run created. "
            "Choose a new or empty --output.")
    if fresh and others:
        _clear_run(output)
    os.makedirs(output, exist_ok=True)
    marker = os.path.join(output, MARKER)
    if not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write("A training run directory (python -m training.train); --fresh removes only "
                    "the files a run writes here.\n")
    cb.remove_partials(output)
    cb.remove_partials(os.path.join(output, "backup"))
    config_path = os.path.join(output, "config.json")
    if os.path.exists(config_path):
        try:
            differences = cfg.saved_differences(config, config_path)
        except (OSError, ValueError) as error:
            differences, unreadable = ["?"], error
        else:
            unreadable = None
        if differences and not _has_progress(output):
            # An earlier start ended before its first epoch did (a wrong --data path, a
            # bad --weights file, Ctrl-C): nothing to resume, nothing to keep.
            print(f"{output}: the earlier start there ended before its first epoch; starting "
                  "with this command's settings.")
        elif unreadable is not None:
            raise cfg.ConfigError(f"{config_path} is unreadable ({unreadable}): pass --fresh to "
                                  "start over, or another --output.") from unreadable
        elif differences:
            raise cfg.ConfigError(
                f"{output} holds a run with a different configuration ({', '.join(differences)}). "
                "Pass the same settings to resume it, --fresh to start over, or another --output.")
    cb.write_json(config_path, config)
    return output


def _has_progress(output):
    """Whether `output` holds something a run would resume or report: a backup (intact
    or not) or a finished run's summary."""
    backup = os.path.join(output, "backup")
    return os.path.exists(os.path.join(output, "summary.json")) or (
        os.path.isdir(backup) and any(not files.is_partial(n) for n in os.listdir(backup)))


@dataclasses.dataclass
class Session:
    """What `set_up` prepares for `fit` and `finalize`."""

    config: dict
    plan: distribute.Plan
    output: str  # this host's run directory
    train: object  # ffzoo.data.Pipeline
    evaluation: object
    steps: int  # per epoch
    model: keras.Model
    optimizer: keras.optimizers.Optimizer
    schedule: object  # training.schedule.WarmupCosine
    backup: cb.Backup
    nan_stop: cb.StopOnNaN
    initial_epoch: int  # epochs done by the backup resumed from
    raw_weights: cb.RawWeights = dataclasses.field(default_factory=cb.RawWeights)


def run(config, fresh=False):
    """Trains (or resumes, or reports a finished run); returns the summary dict."""
    started = time.perf_counter()
    keras.config.set_dtype_policy(config["precision"])
    keras.utils.set_random_seed(config["seed"])
    plan = distribute.plan(config["distribute"], config["batch_size"], config["eval_batch_size"])
    output = _prepare_output(config, fresh, worker=plan.host_index)
    summary = _finished_summary(output)
    if summary is not None:
        return summary
    session = set_up(config, plan, output)
    fit(session)
    return finalize(session, started)


def _finished_summary(output):
    """The summary of a run that already finished in `output`, or None."""
    summary_path = os.path.join(output, "summary.json")
    if not os.path.exists(summary_path):
        return None
    try:
        with open(summary_path) as f:
            summary = json.load(f)
        print(f"{output} is a finished run (top-1 {summary['top1']:.2%}); --fresh trains it again.")
        return summary
    except (OSError, ValueError, KeyError, TypeError) as error:
        print(f"{summary_path} is unreadable ({error}); finishing the run again.")
        return None


def set_up(config, plan, output):
    """The data, the compiled model and optimizer, restored from the newest intact backup."""
    nan_stop = cb.StopOnNaN()
    backup = cb.Backup(os.path.join(output, "backup"), guard=nan_stop)
    # A resumed run draws a new data order (the seed moves on by the epochs done).
    train, evaluation = load_data(config, plan.replicas, seed_offset=backup.saved_epochs())
    classes = train.num_classes
    steps = _steps_per_epoch(config, train)
    print(f"Training {config['model']} on {train.source.description}: {train.num_examples} images, "
          f"{classes} classes, {steps} steps of {train.batch_size} per epoch, "
          f"{plan.name} over {plan.replicas} device(s), {config['precision']}, "
          f"backend {keras.backend.backend()}.")
    with plan.scope():
        model = build_model(config, classes)
        optimizer, schedule = opt.build(config, model, steps, train.batch_size)
        model.compile(optimizer=optimizer,
                      loss=keras.losses.CategoricalCrossentropy(from_logits=True),
                      metrics=_metrics(classes),
                      jit_compile=_jit(config))
        initial_epoch = backup.restore(model)
    print(f"Learning rate: peak {schedule.base_lr:.3g} at batch {train.batch_size} ({config['lr']:g} "
          f"at batch {config['lr_batch_reference']}, {config['lr_scaling']} scaling), "
          f"{schedule.warmup_epochs:g} warm-up epochs of {config['epochs']}.")
    for problem in opt.schedule_problems(schedule, steps, config["epochs"]):
        print(f"Warning: this run cannot learn: {problem}")
    if initial_epoch:
        print(f"Resuming from the backup of epoch {initial_epoch}.")
    return Session(config=config, plan=plan, output=output, train=train, evaluation=evaluation,
                   steps=steps, model=model, optimizer=optimizer, schedule=schedule, backup=backup,
                   nan_stop=nan_stop, initial_epoch=initial_epoch)


def _metrics(classes):
    """Top-1, and top-5 with 6 classes or more (with fewer it is always 100%)."""
    metrics = [keras.metrics.CategoricalAccuracy(name="top1")]
    if classes >= TOP5_MIN_CLASSES:
        metrics.append(keras.metrics.TopKCategoricalAccuracy(k=5, name="top5"))
    return metrics


def _steps_per_epoch(config, train):
    """`--steps-per-epoch`, else a pass over the training split (one-line errors when
    the split holds no whole batch or is of unknown size: a split of known size smaller
    than the batch was given a smaller batch by `load_data`)."""
    steps = config["steps_per_epoch"] or train.steps_per_epoch
    if train.steps_per_epoch == 0:  # training drops the last partial batch: none is left
        raise cfg.ConfigError(
            f"The training split has {train.num_examples} images, fewer than one batch of "
            f"{train.batch_size}: pass a smaller --batch-size.")
    if not steps:
        raise cfg.ConfigError("The training split's size is unknown: pass --steps-per-epoch.")
    return steps


def fit(session):
    """`model.fit` over the epochs left, with the run's callbacks; a diverged run stops
    with FloatingPointError naming its last good backup."""
    s, config = session, session.config
    fit_callbacks = [
        # StopOnNaN checks each epoch's end state before Backup writes it.
        cb.LearningRate(s.schedule), cb.Throughput(s.train.batch_size), s.nan_stop, s.backup,
        cb.RunFiles(s.backup, s.output),
        keras.callbacks.TensorBoard(os.path.join(s.output, "tensorboard")),
        s.train.callback(), s.evaluation.callback(),
    ]
    if config["ema_decay"] is not None:
        fit_callbacks.append(s.raw_weights)
    terminal = sys.stdout.isatty()
    if not terminal:  # a log file or a pipe: plain lines, last, to show every epoch log
        fit_callbacks.append(cb.ProgressLines(s.train.batch_size, s.steps, config["epochs"]))
    if s.initial_epoch < config["epochs"]:
        interrupt = cb.StopOnInterrupt()
        fit_callbacks.insert(0, interrupt)
        with interrupt, warnings.catch_warnings():
            # The training data repeats, so only the evaluation pass reaches the end of its
            # data, as it should; Keras warns about that every epoch.
            warnings.filterwarnings("ignore", message="Your input ran out of data")
            s.model.fit(_fit_data(s.model, s.train.dataset.repeat(), s.plan), epochs=config["epochs"],
                        initial_epoch=s.initial_epoch, steps_per_epoch=s.steps,
                        validation_data=s.evaluation.dataset,
                        validation_freq=config["eval_every"], callbacks=fit_callbacks,
                        shuffle=False, verbose=1 if terminal else 0)
    if s.nan_stop.failure:
        raise FloatingPointError(
            f"Training stopped: {s.nan_stop.failure}. " + (
                f"The last good state is the backup of epoch {s.backup.epochs_done} in {s.output}/backup."
                if s.backup.epochs_done else "No epoch ended in a finite state: there is no backup."))


def model_arguments(config, classes):
    """The constructor arguments of the trained model (those `build_model` passes)."""
    return dict(classes=classes, classifier_activation=None, drop_rate=config["drop_rate"],
                drop_path_rate=config["drop_path_rate"])


def _write_weights(model, path, inference):
    """`model`'s weights at `path`, without the optimizer's state (a compiled model's
    `save_weights` stores the optimizer too): through `inference`, an uncompiled model
    built as `ffzoo.runs.load_run` builds it, so the file is what that loads."""
    cb.check_finite_weights(model, path)
    inference.set_weights(model.get_weights())
    cb.write_atomically(path, inference.save_weights)


def _model_info(config, train, ema):
    """The content of model.json: what using the trained model needs."""
    preprocessing = dict(image_size=config["image_size"], crop_pct=config["crop_pct"],
                         mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation="bicubic")
    return runs.describe(config["model"], model_arguments(config, train.num_classes),
                         train.class_names, preprocessing, ema=ema)


def finalize(session, started):
    """Writes the final (and EMA) weights, evaluates them on the whole evaluation split,
    rewrites the log files and writes `model.json` and `summary.json`; returns the summary."""
    s, config, model = session, session.config, session.model
    if s.raw_weights.weights is not None:
        model.set_weights(s.raw_weights.weights)  # fit ended by loading the EMA weights
    ema = config["ema_decay"] is not None
    info = _model_info(config, s.train, ema)
    inference = ffzoo.create_model(info["model"], **info["arguments"], weights=None)
    _write_weights(model, os.path.join(s.output, "model.weights.h5"), inference)
    print("Evaluating the final weights on the whole evaluation split.")
    result = evaluate(model, s.evaluation)
    s.evaluation.report_skipped("in the final evaluation")  # those no earlier pass reported
    summary = {
        "model": config["model"], "recipe": config["recipe"], "backend": keras.backend.backend(),
        "epochs": s.backup.epochs_done, "top1": result["top1"], "top5": result["top5"],
        "eval_examples": result["examples"], "eval_skipped_files": len(s.evaluation.skipped.names),
        "eval_images_per_s": result["images_per_s"],
        "train_images_per_s": _median_throughput(s.backup.history),
        "parameters": model.count_params(), "distribute": s.plan.name, "devices": s.plan.replicas,
        "precision": config["precision"], "compute_dtype": model.compute_dtype,
        "variable_dtype": model.variable_dtype,
        "loss_scaling": isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer),
    }
    if ema:  # evaluated apart: DeiT reports the raw weights
        raw = model.get_weights()
        s.optimizer.finalize_variable_values(model.trainable_variables)
        _write_weights(model, os.path.join(s.output, "model_ema.weights.h5"), inference)
        ema = evaluate(model, s.evaluation)
        summary.update(ema_top1=ema["top1"], ema_top5=ema["top5"])
        model.set_weights(raw)
    summary["wall_time_s"] = time.perf_counter() - started
    cb.write_files(s.backup.history, s.output)
    cb.write_json(os.path.join(s.output, runs.MODEL_FILE), info)
    cb.write_json(os.path.join(s.output, "summary.json"), summary)
    print(json.dumps(summary, indent=2))
    return summary


def _median_throughput(history):
    rates = [row["images_per_s"] for row in history if "images_per_s" in row]
    if len(rates) > 1:
        rates = rates[1:]  # the first epoch includes compilation
    return statistics.median(rates) if rates else None


def main(argv=None, prog="python -m training.train"):
    """The command; `prog` is its name in usage and error lines (`ffzoo train` runs this)."""
    argv = sys.argv[1:] if argv is None else list(argv)

    def train_command():
        config, args = cfg.resolve(argv, prog)
        run(config, fresh=args.fresh)
    return errors.command(prog.removeprefix("python -m "), argv, train_command,
                          "stopped; rerun the same command to resume")


if __name__ == "__main__":
    sys.exit(main())
