"""Model families, one file each. Importing this package registers every model."""

from ffzoo.models.deit import DeiT, DeiTBase, DeiTSmall, DeiTTiny
from ffzoo.models.ffvit import FFViT, FFViTBase, FFViTLarge, FFViTMicro, FFViTTiny
from ffzoo.models.gmlp import GMLP, GMLPBase16, GMLPSmall16, GMLPTiny16
from ffzoo.models.mixer import MixerB16, MixerL16, MLPMixer
from ffzoo.models.resmlp import ResMLP, ResMLP12, ResMLP24, ResMLP36, ResMLPBig24
from ffzoo.models.registry import create_model, list_models
