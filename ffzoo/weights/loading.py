"""The `weights=` argument of every model: checks and loading."""

import os


def _is_path(value):
    return isinstance(value, (str, os.PathLike))


def check_weights_argument(weights, *, preset, include_top, classes, classifier_activation,
                           channels, image_size, grid):
    """Raises ValueError, before anything is built, when `weights` cannot work."""
    if weights is None:
        return
    if not _is_path(weights):
        raise ValueError(
            f"weights must be None or a path to a .weights.h5 file; got {weights!r}."
        )
    path = os.fspath(weights)
    if not path.endswith(".weights.h5"):
        raise ValueError(f"weights={path!r}: expected a file ending in .weights.h5.")
    if not os.path.isfile(path):
        raise ValueError(f"weights={path!r}: no such file.")


def load_into(model, weights, *, preset):
    model.load_weights(os.fspath(weights))
