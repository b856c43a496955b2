"""tf.data input pipelines for training and evaluation, on every Keras backend.

    import ffzoo.data
    train = ffzoo.data.load("imagenet2012", "train", batch_size=128, seed=0)
    val = ffzoo.data.load("imagenet2012", "validation", batch_size=256)
    model.fit(train.dataset, validation_data=val.dataset, callbacks=[train.callback()])

This module imports TensorFlow (for tf.data). When Keras runs on JAX or PyTorch,
TensorFlow is kept off the GPUs, so it does not take their memory.
"""

import warnings

import keras
import tensorflow as tf


def _keep_tensorflow_off_gpus():
    if keras.backend.backend() == "tensorflow":
        return
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TensorFlow already ran an op: too late to hide the GPUs
        warnings.warn(
            "ffzoo.data was imported after TensorFlow ran; it may hold GPU memory that "
            f"the {keras.backend.backend()} backend needs. Import ffzoo.data first.")


_keep_tensorflow_off_gpus()

from ffzoo.data.pipeline import Augment, Pipeline, SkippedFilesCallback, load  # noqa: E402
from ffzoo.data.sources import TFDS, DataSourceError, ImageFolder, TFRecords  # noqa: E402
