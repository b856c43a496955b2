"""Choosing how to spread training over devices, by Keras backend.

- TensorFlow: `tf.distribute` strategies: `mirrored` (the GPUs of one machine, or
  its logical CPU devices), `multi_worker_mirrored` (several machines, `TF_CONFIG`),
  `tpu` (`TPU_NAME`).
- JAX: `data_parallel`, `keras.distribution.DataParallel` over every device, across
  hosts too (`keras.distribution.initialize()` reads the coordinator settings from
  the environment, see the README).
- PyTorch: one device.
`auto` picks on TensorFlow `tpu` when `TPU_NAME` is set, `multi_worker_mirrored` when
`TF_CONFIG` lists several workers, `mirrored` with several GPUs; on JAX `data_parallel`
with several devices; else one device (`none`).
"""

import contextlib
import dataclasses
import os

import keras

CHOICES = ("auto", "none", "mirrored", "multi_worker_mirrored", "tpu", "data_parallel")
_BY_BACKEND = {
    "tensorflow": ("mirrored", "multi_worker_mirrored", "tpu"),
    "jax": ("data_parallel",),
    "torch": (),
}


@dataclasses.dataclass
class Plan:
    """How a run is distributed; `scope()` is where the model must be built."""

    name: str
    replicas: int
    strategy: object = None  # a tf.distribute strategy (TensorFlow)
    host_index: int = 0

    def scope(self):
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()


def _tensorflow_plan(choice):
    import tensorflow as tf

    if choice == "auto":
        if os.environ.get("TPU_NAME"):
            choice = "tpu"
        elif _tf_config_workers() > 1:
            choice = "multi_worker_mirrored"
        elif len(tf.config.list_logical_devices("GPU")) > 1:
            choice = "mirrored"
        else:
            return Plan("none", 1)
    if choice == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        strategy = tf.distribute.MirroredStrategy(devices)
        return Plan(choice, strategy.num_replicas_in_sync, strategy)
    if choice == "multi_worker_mirrored":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        resolver = strategy.cluster_resolver
        return Plan(choice, strategy.num_replicas_in_sync, strategy,
                    host_index=resolver.task_id or 0)
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=os.environ.get("TPU_NAME", ""))
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    strategy = tf.distribute.TPUStrategy(resolver)
    return Plan("tpu", strategy.num_replicas_in_sync, strategy)


def _tf_config_workers():
    import json

    config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    return len(config.get("cluster", {}).get("worker", []))


def _jax_plan(choice):
    import jax

    if os.environ.get("FFZOO_JAX_MULTIHOST") == "1":
        keras.distribution.initialize()
    if choice == "auto" and jax.device_count() == 1:
        return Plan("none", 1)
    distribution = keras.distribution.DataParallel(devices=keras.distribution.list_devices())
    keras.distribution.set_distribution(distribution)
    return Plan("data_parallel", jax.device_count(), host_index=jax.process_index())


def plan(choice, global_batch, eval_batch=None):
    """Sets up the distribution for this backend and checks the global training and
    evaluation batches divide over its devices."""
    backend = keras.backend.backend()
    if choice not in CHOICES:
        raise ValueError(f"--distribute must be one of {', '.join(CHOICES)}; got {choice!r}.")
    if choice not in ("auto", "none") and choice not in _BY_BACKEND[backend]:
        able = [f"{name} ({b})" for b, names in _BY_BACKEND.items() for name in names]
        raise ValueError(
            f"--distribute {choice} is not available with KERAS_BACKEND={backend}"
            + (" (the PyTorch backend trains on one device)" if backend == "torch" else "")
            + f". Multi-device options: {', '.join(able)}.")
    if choice == "none":
        result = Plan("none", 1)
    elif backend == "tensorflow":
        result = _tensorflow_plan(choice)
    elif backend == "jax":
        result = _jax_plan(choice)
    else:
        result = Plan("none", 1)
    check_batches(result, global_batch, eval_batch)
    return result


def check_batches(plan, global_batch, eval_batch=None):
    """Refuses a global training or evaluation batch that does not divide over the plan's
    devices (each replica gets the same share)."""
    for flag, batch in (("--batch-size", global_batch), ("--eval-batch-size", eval_batch)):
        if batch is not None and batch % plan.replicas:
            raise ValueError(
                f"{flag} {batch} does not divide over the {plan.replicas} devices of "
                f"'{plan.name}': use a multiple of {plan.replicas}.")


def build_from_spec(model, element_spec, strategy):
    """Builds a compiled TensorFlow model's metrics and loss inside `strategy` from the
    shapes of the data, and stops `fit` from building them from a batch of data.

    `fit` under a tf.distribute strategy reads one batch and reduces it across the
    replicas to build the model's metrics; with MultiWorkerMirroredStrategy that
    reduction fails in Keras 3 (keras-team/keras#20585, open). Building needs only
    the shapes, which the dataset's `element_spec` gives.
    """
    import tensorflow as tf

    def zeros(spec):
        return tf.zeros([d or 1 for d in spec.shape], spec.dtype)

    batch = tf.nest.map_structure(zeros, element_spec)
    with strategy.scope():
        model._symbolic_build(data_batch=batch)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        # The same Keras issue: across workers it averages the step's logs with
        # `strategy.reduce("MEAN", value, axis=0)`, which fails for the scalar loss
        # and metrics. Give them a length-1 axis to average over.
        for name in ("train_step", "test_step"):
            step = getattr(model, name)
            setattr(model, name, _with_vector_logs(step))


def _with_vector_logs(step):
    import tensorflow as tf

    def wrapped(data):
        return {k: tf.reshape(v, [1]) for k, v in step(data).items()}
    return wrapped
