"""DeiT's learning-rate schedule: linear warmup, then cosine decay (timm's CosineLRScheduler).

For a base rate B over E epochs, with `warmup_epochs` W, `warmup_lr` w0 and `min_lr` m:

    L(t) = w0 + t (B - w0) / W                      for t < W
    L(t) = m + (B - m) (1 + cos(pi t / E)) / 2      for t >= W   (t counts from 0)

`unit="epoch"` is what DeiT ran: timm steps the scheduler after each epoch, starting
from the warmup rate, so epoch e (from 0) trains at L(max(e - 1, 0)). `unit="step"`
evaluates L at the fractional epoch of every step, a smooth version for short runs.
"""

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="ffzoo_training")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """The schedule above as a Keras schedule of the optimizer's step counter (every
    argument comes from the recipe: `training.optimizer.build`)."""

    def __init__(self, base_lr, epochs, steps_per_epoch, warmup_epochs, warmup_lr, min_lr, unit):
        if unit not in ("epoch", "step"):
            raise ValueError(f"unit must be 'epoch' or 'step'; got {unit!r}.")
        self.base_lr = float(base_lr)
        self.epochs = int(epochs)
        self.steps_per_epoch = int(steps_per_epoch)
        self.warmup_epochs = float(warmup_epochs)
        self.warmup_lr = float(warmup_lr)
        self.min_lr = float(min_lr)
        self.unit = unit

    def epoch_position(self, step):
        """The t at which `step` (0-based optimizer iteration) is evaluated."""
        t = ops.cast(step, "float32") / self.steps_per_epoch
        if self.unit == "epoch":
            t = ops.maximum(ops.floor(t) - 1.0, 0.0)
        return t

    def __call__(self, step):
        t = self.epoch_position(step)
        warm = self.warmup_lr + t * (self.base_lr - self.warmup_lr) / max(self.warmup_epochs, 1e-12)
        cosine = self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1.0 + ops.cos(math.pi * t / self.epochs))
        return ops.where(t < self.warmup_epochs, warm, cosine)

    def get_config(self):
        return dict(base_lr=self.base_lr, epochs=self.epochs, steps_per_epoch=self.steps_per_epoch,
                    warmup_epochs=self.warmup_epochs, warmup_lr=self.warmup_lr,
                    min_lr=self.min_lr, unit=self.unit)
