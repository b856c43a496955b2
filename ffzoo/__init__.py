"""ffzoo: feed-forward-only vision transformers for Keras 3.

The models run unchanged on TensorFlow, JAX and PyTorch. Importing ffzoo never
imports TensorFlow; only `ffzoo.data` (the tf.data pipelines) does.
"""

from ffzoo import layers, weights
from ffzoo.complexity import count_flops, count_params
from ffzoo.imagenet import decode_predictions
from ffzoo.models import (
    DeiT,
    DeiTBase,
    DeiTSmall,
    DeiTTiny,
    FFViT,
    FFViTBase,
    FFViTLarge,
    FFViTMicro,
    FFViTTiny,
    MixerB16,
    MixerL16,
    MLPMixer,
    create_model,
    list_models,
)
from ffzoo.preprocessing import preprocess_image
from ffzoo.runs import load_run

__version__ = "0.1.0"
