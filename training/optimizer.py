"""AdamW as DeiT configures it: scaled learning rate, warmup + cosine, selective weight decay."""

import keras

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
    """DeiT's linear scaling: `lr * global_batch / lr_batch_reference` (512 in DeiT's recipe)."""
    return config["lr"] * global_batch / config["lr_batch_reference"]


def build(config, model, steps_per_epoch, global_batch):
    """`(optimizer, schedule)` for the config."""
    schedule = WarmupCosine(
        base_lr=scaled_lr(config, global_batch),
        epochs=config["epochs"],
        steps_per_epoch=steps_per_epoch,
        warmup_epochs=config["warmup_epochs"],
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
