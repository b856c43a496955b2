"""DeiT's ImageNet recipe, as "Do You Even Need Attention?" trained its FF models.

DeiT (Touvron et al. 2021, facebookresearch/deit main.py) used unchanged, with the FF
runs' dropout 0.1: every value below is DeiT's default unless its comment says
otherwise. Expected: 61.4% (FF-Tiny) and 74.9% (FF-Base) ImageNet top-1 after 300
epochs at global batch 1024 (8 GPUs x 128, float16 autocast with loss scaling), as the
paper reports from the non-EMA weights; about 3 days for FF-Base on 8 V100-class GPUs.

    python -m training.train --recipe deit --model ffvit_base_patch16_224 \\
        --data imagenet2012 --data-dir D --precision mixed_bfloat16

Where ffzoo differs from what DeiT ran, and why, is listed in training/README.md.
"""

RECIPE = dict(
    # Model and data.
    model="ffvit_base_patch16_224",
    weights=None,  # from scratch
    data="imagenet2012",
    train_split="train",
    eval_split="validation",
    image_size=224,
    crop_pct=0.875,  # evaluation: shorter side to 256, center crop 224
    # Schedule: 5 warm-up epochs from 1e-6, then cosine to 1e-5, stepped once per epoch.
    epochs=300,
    batch_size=1024,
    eval_batch_size=256,
    lr=5e-4,  # at batch 512; 1e-3 at 1024
    lr_batch_reference=512,
    lr_scaling="linear",  # DeiT's: lr x batch / 512
    lr_schedule_unit="epoch",
    warmup_epochs=5,
    warmup_max_fraction=1.0,  # no cap: DeiT's 5 epochs
    warmup_lr=1e-6,
    min_lr=1e-5,
    # AdamW, no decay on biases, norms and the class token (positions: see the README).
    weight_decay=0.05,
    decay_positions=False,
    adam_beta1=0.9,
    adam_beta2=0.999,
    adam_epsilon=1e-8,
    clip_norm=None,
    ema_decay=0.99996,  # kept, but DeiT and the paper report the raw weights
    # Regularization.
    drop_rate=0.1,  # the FF runs' dropout (DeiT's own default is 0)
    drop_path_rate=0.1,
    label_smoothing=0.1,
    # Mixup or CutMix on every batch, switching between them with probability 0.5.
    mixup_alpha=0.8,
    cutmix_alpha=1.0,
    mix_probability=1.0,
    switch_probability=0.5,
    # Per image: random resized crop, flip, RandAugment, random erasing.
    random_resized_crop=True,
    crop_scale=(0.08, 1.0),
    crop_ratio=(3 / 4, 4 / 3),
    hflip=0.5,
    randaugment="rand-m9-mstd0.5-inc1",
    random_erasing=0.25,
    repeated_augmentation=3,  # each image 3 times per epoch, augmented apart
    # Execution.
    precision="mixed_float16",  # DeiT's float16 autocast with loss scaling
)
