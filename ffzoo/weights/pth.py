"""Reading the authors' PyTorch checkpoints, safely. Needs PyTorch (`ffzoo[pth]`).

DeiT's `main.py` saves `{"model", "optimizer", "lr_scheduler", "epoch", "model_ema",
"scaler", "args"}` with `torch.save`, where `args` is an `argparse.Namespace`. The
file is read with `torch.load(weights_only=True)` and only `argparse.Namespace`
allow-listed; a pickle that tries to do anything else is refused.
"""

import argparse
import os
import pickle

import numpy as np

PTH_EXTRA_HINT = (
    "Reading .pth checkpoints needs PyTorch: pip install 'ffzoo[pth]' (CPU is enough), "
    "or convert the file once on a machine that has it (`ffzoo convert SRC.pth "
    "DST.weights.h5 --model NAME`) and load the .weights.h5 file."
)


class UnsafeCheckpointError(ValueError):
    """A checkpoint whose pickle asks for objects outside the allow-list."""


def have_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _import_torch():
    try:
        import torch
    except ImportError:
        raise ImportError(PTH_EXTRA_HINT) from None
    return torch


def read_state_dict(path, ema=False):
    """Returns the model's parameters in a checkpoint as `{name: float32 ndarray}`.

    Accepts DeiT's checkpoint dict (its `"model"` entry, or `"model_ema"` with
    `ema=True`), a bare state dict, and names prefixed with `module.`
    (DistributedDataParallel).
    """
    torch = _import_torch()
    path = os.fspath(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise UnsafeCheckpointError(
            f"Refusing to load {path}: its pickle asks for objects that are not plain "
            "tensors and containers (only argparse.Namespace is allowed). It may run "
            f"code when unpickled. PyTorch said: {str(error).splitlines()[0]}"
        ) from None
    except (RuntimeError, EOFError, OSError) as error:
        raise ValueError(
            f"Cannot read {path} as a PyTorch checkpoint (truncated or not a "
            f"checkpoint?): {str(error).splitlines()[0]}"
        ) from None
    return _select_state_dict(checkpoint, path, ema, torch)


def _select_state_dict(checkpoint, path, ema, torch):
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path} holds a {type(checkpoint).__name__}, not a checkpoint dict.")
    key = "model_ema" if ema else "model"
    if key in checkpoint:
        state = checkpoint[key]
    elif ema:
        raise ValueError(
            f"{path} has no 'model_ema' entry (keys: {sorted(checkpoint)}); it was saved "
            "without EMA. Load the raw weights (ema=False)."
        )
    elif checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        state = checkpoint  # a bare state dict
    else:
        raise ValueError(
            f"{path} is neither a DeiT checkpoint (no 'model' entry) nor a bare state "
            f"dict; its keys: {sorted(checkpoint)[:12]}"
        )
    arrays = {}
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"{path}: entry {name!r} of the state dict is not a tensor.")
        if name.startswith("module."):
            name = name[len("module."):]
        if name in arrays:
            raise ValueError(f"{path}: parameter {name!r} appears twice (with and without 'module.').")
        arrays[name] = tensor.detach().to(torch.float32).cpu().numpy()
    return arrays
