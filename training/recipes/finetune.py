"""Fine-tuning a pretrained FF model on another labelled image set.

Starts from the published ImageNet weights (`weights="imagenet"`), replaces the
classifier with a new head for the dataset's classes, and trains everything with
DeiT's augmentations at a lower learning rate for 30 epochs. There is no reference
figure: transfer accuracy depends on the dataset.

    python -m training.train --recipe finetune --model ffvit_tiny_patch16_224 \
        --data path/to/folder --eval-split val
"""

RECIPE = dict(
    model="ffvit_base_patch16_224",
    weights="imagenet",
    data=None,
    train_split="train",
    eval_split="val",
    image_size=224,
    crop_pct=0.875,
    epochs=30,
    batch_size=256,
    eval_batch_size=256,
    lr=1e-4,
    lr_batch_reference=512,
    lr_schedule_unit="step",
    warmup_epochs=2,
    warmup_lr=1e-6,
    min_lr=1e-6,
    weight_decay=0.05,
    ema_decay=None,
    drop_rate=0.1,
    drop_path_rate=0.1,
    label_smoothing=0.1,
    mixup_alpha=0.0,
    cutmix_alpha=0.0,
    randaugment="rand-m9-mstd0.5-inc1",
    random_erasing=0.25,
    repeated_augmentation=1,
    precision="float32",
)
