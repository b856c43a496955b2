"""Strict conversion of foreign checkpoints into ffzoo models: one converter per source format.

A source format is a checkpoint layout: its key names, shapes and their mapping onto
ffzoo's weight paths. `CONVERTERS` holds the ones ffzoo converts:

- `"ff_pth"`: the paper's `vision_transformer_linear.py` (FF models, `ffvit_*`);
- `"timm_vit_pth"`: timm's `VisionTransformer`, the layout of FAIR's DeiT checkpoints
  (`deit_*`);
- `"big_vision_npz"`: Google's MLP-Mixer `.npz` files, Flax parameter paths joined with
  "/" (`mixer_*`);
- `"resmlp_pth"`: FAIR's ResMLP `.pth` files (`resmlp_*`);
- `"timm_gmlp"`: timm's gMLP key names, in `.safetensors` (the hub copy) or `.pth`
  (`gmlp_*`).

Each model's preset row names its format (`source_format`), which is how a checkpoint
file finds its converter. Arrays are NumPy: reading the files is the job of
`ffzoo.weights.pth` (`.pth`, needs PyTorch) and `ffzoo.weights.readers` (`.npz`,
`.safetensors`).

Every conversion asserts: every source tensor is used exactly once, every target weight
is filled, every shape matches, and the parameter counts agree. Anything else raises
`ConversionError` naming the offending keys; a checkpoint of another format is an error
naming the format it looks like.
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

# Google's Flax MLP-Mixer (vit_jax/models_mixer.py): kernels are already (in, out), the
# stem already HWIO; the token MLP's kernels are (tokens, hidden) and (hidden, tokens).
_MIXER_RULES = [
    (r"stem/(kernel|bias)", "patch_embed/{0}", _same),
    (r"MixerBlock_(\d+)/LayerNorm_0/scale", "block_{0}/norm1/gamma", _same),
    (r"MixerBlock_(\d+)/LayerNorm_0/bias", "block_{0}/norm1/beta", _same),
    (r"MixerBlock_(\d+)/LayerNorm_1/scale", "block_{0}/norm2/gamma", _same),
    (r"MixerBlock_(\d+)/LayerNorm_1/bias", "block_{0}/norm2/beta", _same),
    (r"MixerBlock_(\d+)/(token_mixing|channel_mixing)/Dense_0/(kernel|bias)",
     "block_{0}/{1}/fc1/{2}", _same),
    (r"MixerBlock_(\d+)/(token_mixing|channel_mixing)/Dense_1/(kernel|bias)",
     "block_{0}/{1}/fc2/{2}", _same),
    (r"pre_head_layer_norm/scale", "norm/gamma", _same),
    (r"pre_head_layer_norm/bias", "norm/beta", _same),
    (r"head/(kernel|bias)", "head/{0}", _same),
]
# FAIR's ResMLP (deit/resmlp_models.py): `attn` is the linear token mixer (N, N).
_RESMLP_RULES = [
    (r"patch_embed\.proj\.weight", "patch_embed/kernel", _conv),
    (r"patch_embed\.proj\.bias", "patch_embed/bias", _same),
    (r"blocks\.(\d+)\.gamma_([12])", "block_{0}/gamma_{1}", _same),
    (r"blocks\.(\d+)\.(norm[12])\.(alpha|beta)", "block_{0}/{1}/{2}", _same),
    (r"blocks\.(\d+)\.attn\.weight", "block_{0}/token_mixer/kernel", _linear),
    (r"blocks\.(\d+)\.attn\.bias", "block_{0}/token_mixer/bias", _same),
    (r"blocks\.(\d+)\.mlp\.(fc[12])\.weight", "block_{0}/mlp/{1}/kernel", _linear),
    (r"blocks\.(\d+)\.mlp\.(fc[12])\.bias", "block_{0}/mlp/{1}/bias", _same),
    (r"norm\.(alpha|beta)", "norm/{0}", _same),
    (r"head\.weight", "head/kernel", _linear),
    (r"head\.bias", "head/bias", _same),
]
# timm's gMLP (mlp_mixer.py: SpatialGatingBlock, GatedMlp, SpatialGatingUnit).
_GMLP_RULES = [
    (r"stem\.proj\.weight", "patch_embed/kernel", _conv),
    (r"stem\.proj\.bias", "patch_embed/bias", _same),
    (r"blocks\.(\d+)\.norm\.weight", "block_{0}/norm/gamma", _same),
    (r"blocks\.(\d+)\.norm\.bias", "block_{0}/norm/beta", _same),
    (r"blocks\.(\d+)\.mlp_channels\.(fc[12])\.weight", "block_{0}/{1}/kernel", _linear),
    (r"blocks\.(\d+)\.mlp_channels\.(fc[12])\.bias", "block_{0}/{1}/bias", _same),
    (r"blocks\.(\d+)\.mlp_channels\.gate\.norm\.weight", "block_{0}/gate/norm/gamma", _same),
    (r"blocks\.(\d+)\.mlp_channels\.gate\.norm\.bias", "block_{0}/gate/norm/beta", _same),
    (r"blocks\.(\d+)\.mlp_channels\.gate\.proj\.weight", "block_{0}/gate/proj/kernel", _linear),
    (r"blocks\.(\d+)\.mlp_channels\.gate\.proj\.bias", "block_{0}/gate/proj/bias", _same),
    (r"norm\.weight", "norm/gamma", _same),
    (r"norm\.bias", "norm/beta", _same),
    (r"head\.weight", "head/kernel", _linear),
    (r"head\.bias", "head/bias", _same),
]


class SourceFormat:
    """A checkpoint layout: what it is called, which models it fits, how it is told apart
    (`signature`: keys only this layout has), and its rules (None: recognised, not converted)."""

    def __init__(self, label, models, signature, rules=None, head_keys=("head.weight", "head.bias")):
        self.label, self.models, self.signature, self.rules = label, models, signature, rules
        self.head_keys = head_keys  # the classifier's source keys (left out by skip_head)

    def matches(self, keys):
        return all(k in keys for k in self.signature)


CONVERTERS = {
    "ff_pth": SourceFormat("an FF-only ViT checkpoint (the paper's vision_transformer_linear.py "
                           "layout)", "ffvit_*", ("blocks.0.mlp1.fc1.weight",), _FFVIT_RULES),
    "timm_vit_pth": SourceFormat("a DeiT/ViT checkpoint (timm layout)", "deit_*",
                                 ("blocks.0.attn.qkv.weight",), _DEIT_RULES),
    "big_vision_npz": SourceFormat("an MLP-Mixer checkpoint (Google's .npz layout)", "mixer_*",
                                   ("stem/kernel",), _MIXER_RULES,
                                   head_keys=("head/kernel", "head/bias")),
    "resmlp_pth": SourceFormat("a ResMLP checkpoint (FAIR layout)", "resmlp_*",
                               ("blocks.0.attn.weight", "blocks.0.gamma_1"), _RESMLP_RULES),
    "timm_gmlp": SourceFormat("a gMLP checkpoint (timm layout)", "gmlp_*",
                              ("blocks.0.mlp_channels.gate.proj.weight",), _GMLP_RULES),
}
# Layouts ffzoo recognises (so that a file of theirs is named for what it is) but does
# not convert; a family that converts one moves it into CONVERTERS with its rules.
RECOGNISED = {}
_HEAD_PATHS = ("head/kernel", "head/bias")


def converter(source_format):
    """The `SourceFormat` that converts `source_format`; a `ConversionError` otherwise."""
    if source_format in CONVERTERS:
        return CONVERTERS[source_format]
    known = ", ".join(repr(f) for f in CONVERTERS)
    raise ConversionError(f"No converter for source format {source_format!r}; ffzoo converts {known}.")


def looks_like(keys):
    """The name of the first layout (converted or recognised) whose signature `keys` have."""
    for name, layout in {**CONVERTERS, **RECOGNISED}.items():
        if layout.matches(keys):
            return name
    return None


def check_format(state_dict, source_format, where="the checkpoint", target="this model"):
    """Raises `ConversionError` when `state_dict` is plainly another layout than `source_format`."""
    expected = converter(source_format)
    keys = set(state_dict)
    if expected.matches(keys):
        return
    other = looks_like(keys)
    if other is None:
        return  # no known layout: the strict conversion says what does not fit
    found = {**CONVERTERS, **RECOGNISED}[other]
    signature = ", ".join(found.signature)
    raise ConversionError(
        f"Cannot load {where} into {target}: this checkpoint looks like {found.label} (it has "
        f"{signature}), not {expected.label}. It fits {found.models} models, not "
        f"{expected.models}."
    )


def _shorten(keys, limit=12):
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def _phantom(shape, dtype):
    """A read-only array of `shape` that owns no memory (all strides 0): layouts run on
    it to learn the shapes they produce without touching (or copying) any real data."""
    return np.lib.stride_tricks.as_strided(np.zeros((), dtype), shape, (0,) * len(shape),
                                           writeable=False)


def _size(value):
    return int(np.prod(np.shape(value), dtype=np.int64))


def state_dict_to_keras(state_dict, target_shapes, source_format="ff_pth", skip_head=False):
    """Maps a PyTorch state dict to `{keras variable path: array}`.

    Every name, shape and size is checked against `target_shapes` before any data is
    read: a tensor larger than the whole model is refused first, then the layouts run
    on memory-free stand-ins, and only a state dict that fits exactly is laid out.

    Args:
        state_dict: mapping of source parameter names to NumPy arrays.
        target_shapes: `{keras variable path: shape}` of the model to fill.
        source_format: a key of `CONVERTERS` (`"ff_pth"`, `"timm_vit_pth"`).
        skip_head: leave the classifier out on both sides (`head.*` of the source,
            `head/*` of the target): for `include_top=False`, or to fine-tune with
            another class count (the model's head keeps its initialisation).

    Raises:
        ConversionError: unknown, duplicate or missing keys, mismatched shapes, a
            tensor larger than the model, or a checkpoint of another layout.
    """
    layout_format = converter(source_format)
    rules = layout_format.rules
    if skip_head:
        state_dict = {k: v for k, v in state_dict.items() if k not in layout_format.head_keys}
        target_shapes = {p: s for p, s in target_shapes.items() if p not in _HEAD_PATHS}
    target_count = sum(int(np.prod(s)) for s in target_shapes.values())
    oversized = [f"{k} {tuple(np.shape(v))} ({_size(v):,} elements)"
                 for k, v in state_dict.items() if _size(v) > target_count]
    if oversized:
        raise ConversionError(
            f"Cannot convert the state dict: tensors larger than the whole model "
            f"({target_count:,} parameters) can hold: {_shorten(oversized, 4)}. It is not a "
            "checkpoint of this model (or a damaged / crafted one)."
        )
    plan, sources_of, unknown, converted, badly_shaped, unlaid = [], {}, [], {}, [], set()
    for key, value in state_dict.items():
        for pattern, templates, layout in rules:
            match = re.fullmatch(pattern, key)
            if match:
                paths = [t.format(*match.groups())
                         for t in ((templates,) if isinstance(templates, str) else templates)]
                try:
                    shapes = layout(_phantom(np.shape(value), np.asarray(value).dtype))
                except (ValueError, IndexError):  # wrong number of dimensions
                    badly_shaped.append(f"{key} {tuple(np.shape(value))} -> {', '.join(paths)}")
                    unlaid.update(paths)
                    break
                shapes = (shapes,) if isinstance(templates, str) else shapes
                for path, shape in zip(paths, shapes):
                    sources_of.setdefault(path, []).append(key)
                    converted[path] = tuple(np.shape(shape))
                plan.append((key, paths, layout, isinstance(templates, str)))
                break
        else:
            unknown.append(key)
    problems = []
    if unknown:
        problems.append(f"source keys with no place in the model: {_shorten(unknown)}")
    if badly_shaped:
        problems.append(f"tensors with the wrong number of dimensions: {_shorten(badly_shaped, 4)}")
    doubled = {p: k for p, k in sources_of.items() if len(k) > 1}
    if doubled:
        problems.append(f"target weights given twice: {doubled}")
    not_in_model = [f"{sources_of[p][0]} -> {p}" for p in converted if p not in target_shapes]
    if not_in_model:
        problems.append(f"source keys whose target the model lacks: {_shorten(not_in_model)}")
    missing = [p for p in target_shapes if p not in converted and p not in unlaid]
    if missing:
        problems.append(f"model weights the source does not provide: {_shorten(missing)}")
    wrong = [
        f"{sources_of[p][0]} {tuple(np.shape(state_dict[sources_of[p][0]]))} -> {p} "
        f"needs {tuple(target_shapes[p])}, got {shape}"
        for p, shape in converted.items()
        if p in target_shapes and shape != tuple(target_shapes[p])
    ]
    if wrong:
        problems.append("shape mismatches: " + "; ".join(wrong[:8]))
    if problems:
        raise ConversionError("Cannot convert the state dict: " + " | ".join(problems))
    source_count = sum(_size(v) for v in state_dict.values())
    if source_count != target_count:
        raise ConversionError(
            f"Parameter counts differ: source {source_count:,}, model {target_count:,}."
        )
    arrays = {}
    for key, paths, layout, single in plan:  # everything fits: now lay out the real data
        laid_out = layout(np.asarray(state_dict[key]))
        arrays.update(zip(paths, (laid_out,) if single else laid_out))
    return arrays


class NonFiniteWeightsWarning(UserWarning):
    """Weights that hold NaN or Inf: the model will predict garbage."""


def nonfinite_names(named_arrays):
    """The names whose arrays hold a NaN or an Inf."""
    return sorted(name for name, a in named_arrays.items() if not np.all(np.isfinite(a)))


def check_finite(named_arrays, where, on_nonfinite="warn"):
    """Warns (or, with `on_nonfinite="error"`, raises `ValueError`) naming the arrays
    of `named_arrays` that hold NaN or Inf."""
    bad = nonfinite_names(named_arrays)
    if not bad:
        return
    message = (f"{where}: NaN or Inf in {len(bad)} tensor(s): {_shorten(bad, 8)}. A model with "
               "these weights predicts garbage (a diverged training run or a damaged file?).")
    if on_nonfinite == "error":
        raise ValueError(message)
    import warnings

    warnings.warn(message, NonFiniteWeightsWarning, stacklevel=3)


def assign(model, arrays, skip=()):
    """Sets each model weight from `arrays[path]`; every weight not in `skip` must be present."""
    variables = [w for w in model.weights if w.path not in skip]
    missing = [w.path for w in variables if w.path not in arrays]
    if missing:
        raise ConversionError(f"No value for model weights: {_shorten(missing)}")
    for variable in variables:
        variable.assign(arrays[variable.path].astype(variable.dtype))


def load_state_dict(model, state_dict, source_format, *, skip_head=False, on_nonfinite="warn",
                    source="the state dict"):
    """Converts a PyTorch state dict of `source_format` and assigns it to `model` (strict).

    `skip_head=True` loads everything but the classifier (which keeps its values); a
    model without a classifier (`include_top=False`) skips the source's. A checkpoint
    of another layout is a `ConversionError` naming it. A tensor holding NaN or Inf is
    a `NonFiniteWeightsWarning` naming it, or a `ValueError` with
    `on_nonfinite="error"`; `source` names the file in messages.
    """
    shapes = {w.path: tuple(w.shape) for w in model.weights}
    skip_head = skip_head or "head/kernel" not in shapes
    check_format(state_dict, source_format, source, model.name)
    arrays = state_dict_to_keras(state_dict, shapes, source_format, skip_head=skip_head)
    head_keys = converter(source_format).head_keys
    check_finite({k: v for k, v in state_dict.items() if not (skip_head and k in head_keys)},
                 source, on_nonfinite)
    assign(model, arrays, skip=_HEAD_PATHS if skip_head else ())
    return model
