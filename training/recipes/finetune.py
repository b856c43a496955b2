"""Fine-tuning a pretrained FF model on another labelled image set.

Starts from the published ImageNet weights (`weights="imagenet"`), replaces the
classifier with a new head for the dataset's classes, and trains everything with
DeiT's per-image augmentations (no Mixup or CutMix) at a lower learning rate for 30
epochs. There is no reference figure: transfer accuracy depends on the dataset.

    python -m training.train --recipe finetune --model ffvit_tiny_patch16_224 \\
        --data path/to/folder --eval-split val
"""

RECIPE = dict(
    # Model and data.
    model="ffvit_base_patch16_224",
    weights="imagenet",  # every layer but the new head
    data=None,
    train_split="train",
    eval_split="val",
    image_size=224,
    crop_pct=0.875,
    # Schedule: 2 warm-up epochs, then cosine, evaluated at every step.
    epochs=30,
    batch_size=256,
    eval_batch_size=256,
    lr=1e-4,  # at batch 512
    lr_batch_reference=512,
    lr_schedule_unit="step",
    warmup_epochs=2,
    warmup_lr=1e-6,
    min_lr=1e-6,
    # AdamW.
    weight_decay=0.05,
    decay_positions=False,
    adam_beta1=0.9,
    adam_beta2=0.999,
    adam_epsilon=1e-8,
    clip_norm=None,
    ema_decay=None,
    # Regularization.
    drop_rate=0.1,
    drop_path_rate=0.1,
    label_smoothing=0.1,
    # No Mixup or CutMix.
    mixup_alpha=0.0,
    cutmix_alpha=0.0,
    mix_probability=1.0,
    switch_probability=0.5,
    # Per image: DeiT's random resized crop, flip, RandAugment, random erasing.
    random_resized_crop=True,
    crop_scale=(0.08, 1.0),
    crop_ratio=(3 / 4, 4 / 3),
    hflip=0.5,
    randaugment="rand-m9-mstd0.5-inc1",
    random_erasing=0.25,
    repeated_augmentation=1,
    # Execution.
    precision="float32",
)
