"""Model families, one file each. Importing this package registers every model."""

from ffzoo.models.deit import DeiT, DeiTBase, DeiTSmall, DeiTTiny
from ffzoo.models.ffvit import FFViT, FFViTBase, FFViTLarge, FFViTMicro, FFViTTiny
from ffzoo.models.mixer import MixerB16, MixerL16, MLPMixer
from ffzoo.models.registry import create_model, list_models
