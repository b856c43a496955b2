"""The embedded demo: a small FF model on scikit-learn's handwritten digits.

1,797 real 8 x 8 scans (10 classes) shipped inside scikit-learn, written as a
32 x 32 image folder (80% train, 20% held out) and read through ffzoo.data like
ImageNet. Expected: about 97% top-1 on the 359 held-out images (at least 96% on
seeds 0-2) in 10 epochs: about 110 s end to end with TensorFlow on an idle 2-core
CPU (measured figures in README.md).

    python -m training.train --recipe digits
"""

RECIPE = dict(
    # Model and data.
    model="ffvit_micro_patch4_32",
    weights=None,  # from scratch
    data=None,  # scikit-learn's digits
    train_split="train",
    eval_split="val",
    image_size=32,
    crop_pct=1.0,  # the digits fill the frame: evaluate the whole 32 x 32 image
    # Schedule: 1 warm-up epoch, then cosine to min_lr, updated at every step.
    epochs=10,
    batch_size=32,
    eval_batch_size=360,
    lr=2e-3,
    lr_batch_reference=32,
    lr_scaling="linear",
    lr_schedule_unit="step",
    warmup_epochs=1,
    warmup_max_fraction=1.0,  # no cap
    warmup_lr=1e-5,
    min_lr=1e-5,
    # AdamW.
    weight_decay=0.05,
    decay_positions=False,
    adam_beta1=0.9,
    adam_beta2=0.999,
    adam_epsilon=1e-8,
    clip_norm=None,
    ema_decay=None,
    # Regularization.
    drop_rate=0.0,
    drop_path_rate=0.0,  # too few epochs to need stochastic depth
    label_smoothing=0.1,
    # No Mixup or CutMix.
    mixup_alpha=0.0,
    cutmix_alpha=0.0,
    mix_probability=1.0,
    switch_probability=0.5,
    # Per image: a mild random resized crop only (at least 80% of the area).
    random_resized_crop=True,
    crop_scale=(0.8, 1.0),
    crop_ratio=(3 / 4, 4 / 3),
    hflip=0.0,  # digits are not mirror-symmetric
    randaugment=None,
    random_erasing=0.0,
    repeated_augmentation=1,
    # Execution.
    precision="float32",
)
