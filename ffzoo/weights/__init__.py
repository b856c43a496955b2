"""Published weights: the manifest, downloads, safe checkpoint reading and conversion."""

from ffzoo.weights.convert import (
    ConversionError,
    NonFiniteWeightsWarning,
    load_ffvit_state_dict,
    load_state_dict,
    state_dict_to_keras,
)
from ffzoo.weights.download import DownloadError, pin_variable
from ffzoo.weights.loading import (
    check_weights_argument,
    converted_path,
    imagenet_weights_file,
    load_h5,
    load_into,
    save_weights_atomically,
)
from ffzoo.weights.presets import list_presets, preset_for_model
from ffzoo.weights.pth import UnsafeCheckpointError, read_state_dict
