"""Loading weights into ffzoo models."""

import os

from ffzoo.weights.loading import check_weights_argument, load_into
