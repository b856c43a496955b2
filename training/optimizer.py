"""AdamW as DeiT configures it: scaled learning rate, warmup + cosine, selective weight decay."""

import math

import keras
import numpy as np

from .schedule import WarmupCosine


def no_decay_variables(model, decay_positions):
    """Variables AdamW must not decay: biases, LayerNorm scales and offsets, the class
    token and its position (all 1-D in ffzoo), and the position grid.

    `decay_positions=True` (the recipe's key) decays the position parameters, as the paper's code did
    in effect: its no_weight_decay() names ('pos_embed', 'cls_token') match
    `cls_token` but not `pos_encoding.pos_embed` / `pos_encoding.cls_pos_embed`.
    """
    excluded = []
    for variable in model.trainable_variables:
        name = variable.path.split("/")[-1]
        if name == "class_token" or (len(variable.shape) <= 1 and name != "class_position"):
            excluded.append(variable)
        elif name in ("class_position", "position_grid") and not decay_positions:
            excluded.append(variable)
    return excluded


def scaled_lr(config, global_batch):
    """The peak learning rate at `global_batch`: `lr` is given at `lr_batch_reference`;
    `lr_scaling="linear"` is DeiT's rule, `lr * global_batch / lr_batch_reference`;
    `"sqrt"` is the square-root rule for Adam, `lr * sqrt(global_batch / lr_batch_reference)`
    (Malladi et al. 2022, "On the SDEs and Scaling Rules for Adaptive Gradient Algorithms"),
    which at a batch 32 times below the reference gives lr / 5.7 where the linear one
    gives lr / 32."""
    ratio = global_batch / config["lr_batch_reference"]
    return config["lr"] * (math.sqrt(ratio) if config["lr_scaling"] == "sqrt" else ratio)


def warmup_epochs(config):
    """The warm-up the run uses: `warmup_epochs`, capped at `warmup_max_fraction` of the
    epochs (so that a short run is not all warm-up)."""
    return min(config["warmup_epochs"], config["warmup_max_fraction"] * config["epochs"])


# A run in which Adam can move no weight by more than this in all (it moves a weight by
# about the learning rate per step at most) cannot learn: initial weights are ~0.02.
LEAST_TOTAL_LR = 1e-3


def schedule_problems(schedule, steps_per_epoch, epochs):
    """Why a run with this schedule cannot learn, as one-line messages (none: it can)."""
    problems = []
    total_steps = steps_per_epoch * epochs
    if total_steps == 0:
        return ["the run has no training step (0 steps per epoch)."]
    if schedule.warmup_epochs >= epochs:
        problems.append(f"the whole run is warm-up ({schedule.warmup_epochs:g} warm-up epochs of "
                        f"{epochs}): the learning rate never reaches its peak; lower "
                        "--warmup-epochs or --warmup-max-fraction.")
    if schedule.base_lr <= max(schedule.warmup_lr, schedule.min_lr):
        problems.append(f"the peak learning rate {schedule.base_lr:.3g} is not above the warm-up "
                        f"start ({schedule.warmup_lr:.3g}) or the final rate ({schedule.min_lr:.3g}).")
    rates = keras.ops.convert_to_numpy(schedule(np.arange(total_steps)))
    total = float(np.sum(rates, dtype=np.float64))
    if total < LEAST_TOTAL_LR:
        problems.append(
            f"the learning rates of all {total_steps} steps sum to {total:.2g} (peak "
            f"{schedule.base_lr:.3g}): Adam moves no weight by more than about that, too little "
            f"to learn (< {LEAST_TOTAL_LR:g}); raise --lr or --epochs.")
    return problems


def build(config, model, steps_per_epoch, global_batch):
    """`(optimizer, schedule)` for the config."""
    schedule = WarmupCosine(
        base_lr=scaled_lr(config, global_batch),
        epochs=config["epochs"],
        steps_per_epoch=steps_per_epoch,
        warmup_epochs=warmup_epochs(config),
        warmup_lr=config["warmup_lr"],
        min_lr=config["min_lr"],
        unit=config["lr_schedule_unit"],
    )
    ema = config["ema_decay"]
    optimizer = keras.optimizers.AdamW(
        learning_rate=schedule,
        weight_decay=config["weight_decay"],
        beta_1=config["adam_beta1"],
        beta_2=config["adam_beta2"],
        epsilon=config["adam_epsilon"],
        global_clipnorm=config["clip_norm"],
        use_ema=ema is not None,
        ema_momentum=ema if ema is not None else 0.99,  # unused without an EMA
    )
    optimizer.exclude_from_weight_decay(
        var_list=no_decay_variables(model, config["decay_positions"]))
    return optimizer, schedule
