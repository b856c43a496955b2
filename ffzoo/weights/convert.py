"""Strict conversion of the reference (PyTorch) FF-ViT state dict to an ffzoo model.

One pure function per source format; this one reads the parameter names and
layouts of the paper's `vision_transformer_linear.py`. Arrays are NumPy: reading
the `.pth` file (which needs PyTorch) is `ffzoo.weights.pth`'s job.

The conversion asserts: every source tensor is used exactly once, every target
weight is filled, every shape matches, and the parameter counts agree. Anything
else raises `ConversionError` naming the offending keys.
"""

import re

import numpy as np


class ConversionError(ValueError):
    """A state dict that does not fit the model it is converted into."""


def _linear(w):  # (out, in) -> (in, out)
    return np.transpose(w)


def _conv(w):  # (out, in, kh, kw) -> (kh, kw, in, out)
    return np.transpose(w, (2, 3, 1, 0))


def _position_grid(w):  # (1, E, H, W) -> (H, W, E)
    return np.transpose(w[0], (1, 2, 0))


def _vector(w):  # (1, 1, E) -> (E,)
    return np.reshape(w, (-1,))


def _same(w):
    return w


# (source-key pattern, target-path template, layout change). The target may use the
# pattern's groups. Sub-layer names: mlp1/norm1 mix features, mlp2/norm2 mix tokens.
_FFVIT_RULES = [
    (r"cls_token", "pos_embed/class_token", _vector),
    (r"pos_encoding\.cls_pos_embed", "pos_embed/class_position", _vector),
    (r"pos_encoding\.pos_embed", "pos_embed/position_grid", _position_grid),
    (r"patch_embed\.proj\.weight", "patch_embed/kernel", _conv),
    (r"patch_embed\.proj\.bias", "patch_embed/bias", _same),
    (r"blocks\.(\d+)\.norm1\.weight", "block_{0}/feature_ff/norm/gamma", _same),
    (r"blocks\.(\d+)\.norm1\.bias", "block_{0}/feature_ff/norm/beta", _same),
    (r"blocks\.(\d+)\.mlp1\.(fc[12])\.weight", "block_{0}/feature_ff/ff/{1}/kernel", _linear),
    (r"blocks\.(\d+)\.mlp1\.(fc[12])\.bias", "block_{0}/feature_ff/ff/{1}/bias", _same),
    (r"blocks\.(\d+)\.norm2\.weight", "block_{0}/token_ff/norm/gamma", _same),
    (r"blocks\.(\d+)\.norm2\.bias", "block_{0}/token_ff/norm/beta", _same),
    (r"blocks\.(\d+)\.mlp2\.(fc[12])\.weight", "block_{0}/token_ff/ff/{1}/kernel", _linear),
    (r"blocks\.(\d+)\.mlp2\.(fc[12])\.bias", "block_{0}/token_ff/ff/{1}/bias", _same),
    (r"norm\.weight", "norm/gamma", _same),
    (r"norm\.bias", "norm/beta", _same),
    (r"head\.weight", "head/kernel", _linear),
    (r"head\.bias", "head/bias", _same),
]
_HEAD_KEYS = ("head.weight", "head.bias")


def _shorten(keys, limit=12):
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def ffvit_state_dict_to_keras(state_dict, target_shapes, drop_head=False):
    """Maps a reference FF-ViT state dict to `{keras variable path: array}`.

    Args:
        state_dict: mapping of reference parameter names to NumPy arrays.
        target_shapes: `{keras variable path: shape}` of the model to fill.
        drop_head: discard `head.weight` / `head.bias` (for `include_top=False`).

    Raises:
        ConversionError: unknown, duplicate or missing keys, or mismatched shapes.
    """
    converted, sources_of, unknown = {}, {}, []
    for key, value in state_dict.items():
        if drop_head and key in _HEAD_KEYS:
            continue
        for pattern, template, layout in _FFVIT_RULES:
            match = re.fullmatch(pattern, key)
            if match:
                path = template.format(*match.groups())
                sources_of.setdefault(path, []).append(key)
                converted[path] = layout(np.asarray(value))
                break
        else:
            unknown.append(key)
    problems = []
    if unknown:
        problems.append(f"source keys with no place in the model: {_shorten(unknown)}")
    doubled = {p: k for p, k in sources_of.items() if len(k) > 1}
    if doubled:
        problems.append(f"target weights given twice: {doubled}")
    not_in_model = [f"{sources_of[p][0]} -> {p}" for p in converted if p not in target_shapes]
    if not_in_model:
        problems.append(f"source keys whose target the model lacks: {_shorten(not_in_model)}")
    missing = [p for p in target_shapes if p not in converted]
    if missing:
        problems.append(f"model weights the source does not provide: {_shorten(missing)}")
    wrong = [
        f"{sources_of[p][0]} {tuple(np.shape(state_dict[sources_of[p][0]]))} -> {p} "
        f"needs {tuple(target_shapes[p])}, got {tuple(a.shape)}"
        for p, a in converted.items()
        if p in target_shapes and tuple(a.shape) != tuple(target_shapes[p])
    ]
    if wrong:
        problems.append("shape mismatches: " + "; ".join(wrong[:8]))
    if problems:
        raise ConversionError("Cannot convert the state dict: " + " | ".join(problems))
    source_count = sum(
        int(np.prod(np.shape(v))) for k, v in state_dict.items()
        if not (drop_head and k in _HEAD_KEYS)
    )
    target_count = sum(int(np.prod(s)) for s in target_shapes.values())
    if source_count != target_count:
        raise ConversionError(
            f"Parameter counts differ: source {source_count:,}, model {target_count:,}."
        )
    return converted


def assign(model, arrays):
    """Sets each model weight from `arrays[path]`; every weight must be present."""
    missing = [w.path for w in model.weights if w.path not in arrays]
    if missing:
        raise ConversionError(f"No value for model weights: {_shorten(missing)}")
    for variable in model.weights:
        variable.assign(arrays[variable.path].astype(variable.dtype))


def load_ffvit_state_dict(model, state_dict):
    """Converts a reference state dict and assigns it to `model` (strict)."""
    shapes = {w.path: tuple(w.shape) for w in model.weights}
    drop_head = "head/kernel" not in shapes
    assign(model, ffvit_state_dict_to_keras(state_dict, shapes, drop_head=drop_head))
    return model
