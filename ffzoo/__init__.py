"""ffzoo: feed-forward-only vision transformers for Keras 3.

The models run unchanged on TensorFlow, JAX and PyTorch. Importing ffzoo never
imports TensorFlow; only `ffzoo.data` (the tf.data pipelines) does.
"""

from ffzoo import layers
from ffzoo.models import (
    FFViT,
    FFViTBase,
    FFViTLarge,
    FFViTTiny,
    create_model,
    list_models,
)

__version__ = "0.1.0"
