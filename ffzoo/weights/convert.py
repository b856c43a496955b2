"""Strict conversion of PyTorch state dicts to ffzoo models.

One rule table per source format: the paper's `vision_transformer_linear.py` (FF
models) and timm's `VisionTransformer` (DeiT models). Arrays are NumPy: reading the
`.pth` file (which needs PyTorch) is `ffzoo.weights.pth`'s job.

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


def _class_position_and_grid(w):  # (1, 1 + G * G, E) -> (E,), (G, G, E)
    side = int(round((w.shape[1] - 1) ** 0.5))
    return w[0, 0], np.reshape(w[0, 1:], (side, side, w.shape[2]))


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
# timm's VisionTransformer (DeiT). One source, two targets: its flat position table
# holds the class token's position and the grid.
_DEIT_RULES = [
    (r"cls_token", "pos_embed/class_token", _vector),
    (r"pos_embed", ("pos_embed/class_position", "pos_embed/position_grid"), _class_position_and_grid),
    (r"patch_embed\.proj\.weight", "patch_embed/kernel", _conv),
    (r"patch_embed\.proj\.bias", "patch_embed/bias", _same),
    (r"blocks\.(\d+)\.norm1\.weight", "block_{0}/attention/norm/gamma", _same),
    (r"blocks\.(\d+)\.norm1\.bias", "block_{0}/attention/norm/beta", _same),
    (r"blocks\.(\d+)\.attn\.(qkv|proj)\.weight", "block_{0}/attention/{1}/kernel", _linear),
    (r"blocks\.(\d+)\.attn\.(qkv|proj)\.bias", "block_{0}/attention/{1}/bias", _same),
    (r"blocks\.(\d+)\.norm2\.weight", "block_{0}/feature_ff/norm/gamma", _same),
    (r"blocks\.(\d+)\.norm2\.bias", "block_{0}/feature_ff/norm/beta", _same),
    (r"blocks\.(\d+)\.mlp\.(fc[12])\.weight", "block_{0}/feature_ff/ff/{1}/kernel", _linear),
    (r"blocks\.(\d+)\.mlp\.(fc[12])\.bias", "block_{0}/feature_ff/ff/{1}/bias", _same),
    (r"norm\.weight", "norm/gamma", _same),
    (r"norm\.bias", "norm/beta", _same),
    (r"head\.weight", "head/kernel", _linear),
    (r"head\.bias", "head/bias", _same),
]
RULES = {"ffvit": _FFVIT_RULES, "deit": _DEIT_RULES}
_HEAD_KEYS = ("head.weight", "head.bias")


def _shorten(keys, limit=12):
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def state_dict_to_keras(state_dict, target_shapes, family="ffvit", drop_head=False):
    """Maps a PyTorch state dict to `{keras variable path: array}`.

    Args:
        state_dict: mapping of source parameter names to NumPy arrays.
        target_shapes: `{keras variable path: shape}` of the model to fill.
        family: `"ffvit"` (the paper's names) or `"deit"` (timm's ViT names).
        drop_head: discard `head.weight` / `head.bias` (for `include_top=False`).

    Raises:
        ConversionError: unknown, duplicate or missing keys, or mismatched shapes.
    """
    converted, sources_of, unknown = {}, {}, []
    for key, value in state_dict.items():
        if drop_head and key in _HEAD_KEYS:
            continue
        for pattern, templates, layout in RULES[family]:
            match = re.fullmatch(pattern, key)
            if match:
                arrays = layout(np.asarray(value))
                if isinstance(templates, str):
                    templates, arrays = (templates,), (arrays,)
                for template, array in zip(templates, arrays):
                    path = template.format(*match.groups())
                    sources_of.setdefault(path, []).append(key)
                    converted[path] = array
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


def load_state_dict(model, state_dict, family="ffvit"):
    """Converts a PyTorch state dict and assigns it to `model` (strict)."""
    shapes = {w.path: tuple(w.shape) for w in model.weights}
    drop_head = "head/kernel" not in shapes
    assign(model, state_dict_to_keras(state_dict, shapes, family=family, drop_head=drop_head))
    return model


def load_ffvit_state_dict(model, state_dict):
    """`load_state_dict` for the paper's FF models (their checkpoints' names)."""
    return load_state_dict(model, state_dict, "ffvit")
