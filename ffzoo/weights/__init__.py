"""Published weights: the presets table, downloads, safe checkpoint reading and conversion.

This package never imports `ffzoo.models`: the model families register their pretrained
configs here (`register_preset`) and hand the models they build to `load`.
"""

from ffzoo.weights.convert import (
    CONVERTERS,
    ConversionError,
    NonFiniteWeightsWarning,
    load_state_dict,
    state_dict_to_keras,
)
from ffzoo.weights.download import DownloadError, pin_variable
from ffzoo.weights.loading import (
    check_weights_argument,
    converted_path,
    head_classes,
    load,
    load_h5,
    save_weights_atomically,
)
from ffzoo.weights.presets import list_presets, preset_for_model, register_preset
from ffzoo.weights.pth import UnsafeCheckpointError, read_state_dict
