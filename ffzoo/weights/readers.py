"""Reading checkpoints that need no PyTorch: Google's `.npz` and `.safetensors` files.

Like `ffzoo.weights.pth`, nothing is converted here: each reader returns
`{name: NumPy array}` in the stored dtype and says in one line what a file is when it is
not what its name claims. `.npz` files are read with `allow_pickle=False` (no code runs);
`.safetensors` files need the `safetensors` package (`pip install 'ffzoo[safetensors]'`),
used through its NumPy API.
"""

import os
import zipfile

NPZ_SUFFIX = ".npz"
SAFETENSORS_SUFFIX = ".safetensors"
SAFETENSORS_EXTRA_HINT = ("Reading .safetensors files needs the safetensors package: "
                          "pip install 'ffzoo[safetensors]' (PyTorch is not needed).")


def have_safetensors():
    try:
        import safetensors.numpy  # noqa: F401
    except ImportError:
        return False
    return True


def _check_file(path, kind):
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file.")
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path} is empty (0 bytes), not {kind}: an interrupted download or "
                         "copy? Fetch the file again.")


def read_npz(path):
    """The arrays of a NumPy `.npz` file (Google's Mixer checkpoints), by key."""
    import numpy as np

    _check_file(path, "a .npz file")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"Cannot read {path} as a .npz file: it is not a zip archive.")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except ValueError as error:  # an object array: needs pickles, refused
        raise ValueError(f"Cannot read {path}: it holds pickled objects, not plain arrays "
                         f"({str(error).splitlines()[0]}).") from None
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        raise ValueError(f"Cannot read {path} as a .npz file: damaged or truncated "
                         f"({str(error).splitlines()[0] if str(error) else type(error).__name__}).") from None


def read_safetensors(path):
    """The tensors of a `.safetensors` file as NumPy arrays, by name (no PyTorch)."""
    _check_file(path, "a .safetensors file")
    try:
        from safetensors.numpy import load_file
    except ImportError:
        raise ImportError(SAFETENSORS_EXTRA_HINT) from None
    try:
        return load_file(path)
    except Exception as error:  # SafetensorError, or a dtype NumPy has not (bfloat16)
        lines = str(error).splitlines()
        raise ValueError(f"Cannot read {path} as a .safetensors file: "
                         f"{lines[0] if lines else type(error).__name__}.") from None
