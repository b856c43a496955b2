"""Reading the authors' PyTorch checkpoints, safely. Needs PyTorch (`ffzoo[pth]`).

DeiT's `main.py` saves `{"model", "optimizer", "lr_scheduler", "epoch", "model_ema",
"scaler", "args"}` with `torch.save`, where `args` is an `argparse.Namespace`. The
file is read with `torch.load(weights_only=True)` and only `argparse.Namespace`
allow-listed; a pickle that tries to do anything else is refused.

Nothing is converted here: the tensors come back as NumPy views of the file's data
in their stored dtype (memory-mapped for zip checkpoints), so a small file whose
tensors claim huge shapes costs nothing until the converter has checked every name
and shape against the target model.
"""

import argparse
import os
import pickle
import pickletools
import zipfile


PTH_EXTRA_HINT = (
    "Reading .pth checkpoints needs PyTorch: pip install 'ffzoo[pth]' (CPU is enough), "
    "or convert the file once on a machine that has it (`ffzoo convert SRC.pth "
    "DST.weights.h5 --model NAME`) and load the .weights.h5 file."
)
_FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


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


def _sniff(path):
    """Raises `ValueError` saying what the file is when it cannot be a checkpoint."""
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file.")
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path} is empty (0 bytes), not a PyTorch checkpoint: an interrupted "
                         "download or copy? Fetch the file again.")
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith(b"PK\x03\x04"):
        if not zipfile.is_zipfile(path):
            raise ValueError(f"Cannot read {path} as a PyTorch checkpoint: a zip archive "
                             "without its directory (truncated? fetch it again).")
        return "zip"
    text = head.lstrip().lower()
    if text.startswith(b"<"):
        raise ValueError(f"{path} is an HTML/XML page ({len(head)}+ bytes starting "
                         f"{head.lstrip()[:40]!r}), not a PyTorch checkpoint: a web page (an "
                         "error or login page?) was saved in place of the file.")
    if head[:1] != b"\x80":  # pickle protocol 2+ (torch.save's legacy format too)
        raise ValueError(f"{path} is not a PyTorch checkpoint: neither a zip archive nor a "
                         f"pickle (it starts with {head[:16]!r}).")
    return "pickle"


def _pickle_globals(path, limit=5):
    """`module.name` of every global the (legacy, non-zip) pickles of `path` import."""
    found, strings = [], []
    with open(path, "rb") as f:
        for _ in range(limit):  # torch's legacy format is a few pickles in a row
            try:
                for opcode, arg, _ in pickletools.genops(f):
                    if opcode.name == "GLOBAL":
                        found.append(arg.replace(" ", "."))
                    elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                        found.append(".".join(strings[-2:]))
                    elif isinstance(arg, str):
                        strings.append(arg)
            except Exception:  # noqa: BLE001 - past the pickles: raw tensor data
                break
    return found


def _refused_globals(path, kind, torch):
    if kind == "zip":
        try:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # noqa: BLE001 - a damaged archive: no names to report
            names = []
    else:
        names = [n for n in _pickle_globals(path) if not _torch_allows(n)]
    return sorted({n for n in names if n != "argparse.Namespace"})


def _torch_allows(name):
    """The globals of a plain legacy `torch.save` of tensors (torch allows them)."""
    return (name == "collections.OrderedDict" or name.startswith("torch._utils._rebuild_")
            or (name.startswith("torch.") and name.endswith("Storage")))


def read_state_dict(path, ema=False):
    """Returns the model's parameters in a checkpoint as `{name: ndarray}`.

    Accepts DeiT's checkpoint dict (its `"model"` entry, or `"model_ema"` with
    `ema=True`), a bare state dict, and names prefixed with `module.`
    (DistributedDataParallel). The arrays are zero-copy views in the stored floating
    dtype; `ffzoo.weights.convert` checks them against the model before any copy.

    Raises:
        UnsafeCheckpointError: the pickle imports something outside the allow-list.
        ValueError: anything else that makes the file not a checkpoint of weights.
    """
    torch = _import_torch()
    path = os.fspath(path)
    kind = _sniff(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True,
                                    mmap=kind == "zip")
    except pickle.UnpicklingError as error:
        refused = _refused_globals(path, kind, torch)
        if refused:
            raise UnsafeCheckpointError(
                f"Refusing to load {path}: its pickle imports {', '.join(refused)}, which is "
                "not a tensor or container (only argparse.Namespace is allowed besides "
                "those); unpickling it could run code. Use a checkpoint of weights (a "
                "state_dict saved with torch.save)."
            ) from None
        raise ValueError(f"Cannot read {path} as a PyTorch checkpoint: damaged or not a "
                         f"checkpoint ({_unpickling_reason(error)}).") from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise ValueError(
            f"Cannot read {path} as a PyTorch checkpoint (truncated or not a "
            f"checkpoint?): {_first_line(error)}"
        ) from None
    return _select_state_dict(checkpoint, path, ema, torch)


def _first_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _unpickling_reason(error):
    """What torch's weights-only unpickler objected to, without its advice to load
    with `weights_only=False` (which would run the file's code)."""
    text = str(error)
    marker = "WeightsUnpickler error:"
    if marker in text:
        lines = [line.strip() for line in text.split(marker, 1)[1].splitlines() if line.strip()]
        if lines:
            return lines[0]
    return _first_line(error)


def _describe(value):
    return type(value).__name__ + (" (a tensor)" if hasattr(value, "shape") else "")


def _select_state_dict(checkpoint, path, ema, torch):
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path} holds a {type(checkpoint).__name__}, not a checkpoint dict.")
    key = "model_ema" if ema else "model"
    if key in checkpoint:
        state = checkpoint[key]
        if not isinstance(state, dict):
            raise ValueError(f"{path}: its {key!r} entry is a {_describe(state)}, not a state "
                             "dict (parameter name -> tensor).")
    elif ema:
        raise ValueError(
            f"{path} has no 'model_ema' entry (keys: {sorted(map(str, checkpoint))}); it was "
            "saved without EMA. Load the raw weights (ema=False)."
        )
    elif checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        state = checkpoint  # a bare state dict
    else:
        raise ValueError(
            f"{path} is neither a DeiT checkpoint (no 'model' entry) nor a bare state "
            f"dict; its keys: {sorted(map(str, checkpoint))[:12]}"
        )
    if not state:
        raise ValueError(f"{path}: the state dict is empty (no tensors).")
    arrays = {}
    for name, tensor in state.items():
        if not isinstance(name, str):
            raise ValueError(f"{path}: the state dict has a key of type {type(name).__name__} "
                             f"({name!r}); a model's state dict is keyed by parameter names.")
        arrays[_strip_prefix(name, arrays, path)] = _as_array(name, tensor, path, torch)
    return arrays


def _strip_prefix(name, arrays, path):
    if name.startswith("module."):
        name = name[len("module."):]
    if name in arrays:
        raise ValueError(f"{path}: parameter {name!r} appears twice (with and without 'module.').")
    return name


def _as_array(name, tensor, path, torch):
    """A zero-copy NumPy view of a dense floating CPU tensor; nothing is materialised."""
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{path}: entry {name!r} of the state dict is a "
                         f"{type(tensor).__name__}, not a tensor.")
    if tensor.is_meta:
        raise ValueError(f"{path}: tensor {name!r} is a meta tensor (a shape without data: "
                         "saved from a model that was never materialised).")
    if tensor.layout != torch.strided:
        raise ValueError(f"{path}: tensor {name!r} is {tensor.layout} (sparse), not a dense "
                         "weight.")
    dtype = str(tensor.dtype).removeprefix("torch.")
    if dtype not in _FLOAT_DTYPES:
        raise ValueError(f"{path}: tensor {name!r} is {dtype}, not a floating-point weight.")
    tensor = tensor.detach()
    if dtype == "bfloat16":  # NumPy has no bfloat16: reinterpret the bits (ml_dtypes)
        import ml_dtypes

        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()
