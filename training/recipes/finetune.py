"""Fine-tuning a pretrained FF model on another labelled image set.

Starts from the published ImageNet weights (`weights="imagenet"`) or a converted
checkpoint (`--weights FILE.pth` / `.weights.h5`), replaces the classifier with a new
head for the dataset's classes, and trains everything with DeiT's per-image
augmentations (no Mixup or CutMix) for 30 epochs. There is no reference figure:
transfer accuracy depends on the dataset (benchmarks/finetune.py measures two small
folders against training from scratch).

Made for small folders too. Batch 16 (a folder smaller than the batch trains at a batch
of its size, saying so); the learning rate 1e-4 is stated at that batch and follows
other batches by the square-root rule for Adam (lr x sqrt(batch / 16): 4e-4 at 256,
7e-5 at 8), not DeiT's linear rule, which at small batches gives rates too low to learn
anything (1e-4 at 512 is 3e-6 at 16). Warm-up: 2 epochs, at most a tenth of the run.

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
    # Schedule: 2 warm-up epochs (at most a tenth of the run), then cosine, evaluated at
    # every step.
    epochs=30,
    batch_size=16,
    eval_batch_size=256,
    lr=1e-4,  # at batch 16
    lr_batch_reference=16,
    lr_scaling="sqrt",  # lr x sqrt(batch / 16)
    lr_schedule_unit="step",
    warmup_epochs=2,
    warmup_max_fraction=0.1,
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
