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
    GMLP,
    GMLPBase16,
    GMLPSmall16,
    GMLPTiny16,
    MixerB16,
    MixerL16,
    MLPMixer,
    ResMLP,
    ResMLP12,
    ResMLP24,
    ResMLP36,
    ResMLPBig24,
    create_model,
    list_models,
)
from ffzoo.preprocessing import preprocess_image
from ffzoo.runs import load_run

__version__ = "0.1.0"
