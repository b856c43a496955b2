"""An independent NumPy (float64) MLP-Mixer on the parameters of Google's `.npz` files.

Written for ffzoo's tests and tools from the MLP-Mixer paper (Tolstikhin et al., 2021,
arXiv 2105.01601) and the authors' Flax code, `google-research/vision_transformer`
`vit_jax/models_mixer.py` (main branch) with `vit_jax/checkpoint.py` (how the `.npz`
files are written and read). Nothing here comes from timm or is shared with the other
references.

The parameter dict is keyed exactly as the published files are: Flax parameter paths
joined with "/" (`checkpoint._flatten_dict(..., sep="/")`, read back by
`checkpoint.recover_tree`, which splits on "/"), one array per key, no "params/" prefix:

    stem/kernel                                (p, p, 3, C)   HWIO convolution kernel
    stem/bias                                  (C,)
    MixerBlock_{i}/LayerNorm_0/scale, /bias    (C,)           before token mixing
    MixerBlock_{i}/token_mixing/Dense_0/kernel (N, Dt)        Dense kernels are (in, out)
    MixerBlock_{i}/token_mixing/Dense_0/bias   (Dt,)
    MixerBlock_{i}/token_mixing/Dense_1/kernel (Dt, N)
    MixerBlock_{i}/token_mixing/Dense_1/bias   (N,)
    MixerBlock_{i}/LayerNorm_1/scale, /bias    (C,)           before channel mixing
    MixerBlock_{i}/channel_mixing/Dense_0/kernel (C, Dc), /bias (Dc,)
    MixerBlock_{i}/channel_mixing/Dense_1/kernel (Dc, C), /bias (C,)
    pre_head_layer_norm/scale, /bias           (C,)
    head/kernel                                (C, classes)
    head/bias                                  (classes,)

(C = hidden_dim, N = tokens = (image // p) ** 2, Dt = tokens_mlp_dim, Dc =
channels_mlp_dim.) The Linen module names come from the code: `MixerBlock` and
`LayerNorm` are unnamed (numbered per class: `MixerBlock_0`, `LayerNorm_0/1`), the two
`MlpBlock`s are named `token_mixing` and `channel_mixing`, each holding `Dense_0` and
`Dense_1`; the stem, the final norm and the head are named explicitly. Third-party loaders
of the published `Mixer-B_16.npz` read the same keys. Older ViT-era files used
pre-Linen paths; `checkpoint.load` passes every file through Flax's `convert_pre_linen`,
so read a real file's keys before trusting a name.

Forward pass (images NHWC, as Flax takes them): `nn.Conv(C, (p, p), strides=(p, p))`
(Flax's default padding is "SAME", which pads nothing when the image is a multiple of
p; other sizes are refused here) -> reshape `n h w c -> n (h w) c` (row-major) ->
blocks:
    x = x + swap(MlpBlock_tokens(swap(LayerNorm_0(x))))      swap: tokens <-> channels
    x = x + MlpBlock_channels(LayerNorm_1(x))
with `MlpBlock = Dense -> nn.gelu -> Dense` -> `pre_head_layer_norm` -> mean over tokens
-> `head`. No class token, no position embedding.

The published files (vit_jax README "Available Mixer models": Mixer-B/16 and Mixer-L/16
"pre-trained on the ImageNet and ImageNet-21k datasets", bucket `mixer_models`, folders
`imagenet1k/`, `imagenet21k/`, later also `sam/` and `gsam/`): a Mixer author wrote in
timm's pull request #651 (2021-05-20) that the 76.5 % Mixer-B/16 is the model pre-trained
on ImageNet-1k and that the ImageNet-21k models fine-tuned on ImageNet (the paper's
80.6 %) were not published. timm labels its converted `jx_mixer_b16_224-76587d61.pth`
"goog_in21k_ft_in1k"; read a file's head shape and check its accuracy before naming it.

Two defaults that decide exactness:
- GELU: the code calls `nn.gelu(y)` with no argument. `flax.linen.gelu` is
  `jax.nn.gelu`, whose `approximate` defaults to True: the tanh form
  `0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x ** 3)))`. The published accuracies come
  from that form. timm's PyTorch port uses the exact erf GELU instead; `gelu="erf"`
  computes that variant.
- LayerNorm: Flax's `nn.LayerNorm()` defaults to epsilon 1e-6 (biased variance, scale and
  bias). Flax computes the variance as E[x^2] - E[x]^2 in at least float32; here it is
  the centred form in float64 (the same number up to rounding).
"""

import numpy as np
from scipy.special import erf

# Google's configurations (vit_jax/configs/models.py: get_mixer_b16_config,
# get_mixer_l16_config); ffzoo / timm names.
VARIANTS = {
    "mixer_b16_224": dict(patch_size=16, hidden_dim=768, num_blocks=12, tokens_mlp_dim=384,
                          channels_mlp_dim=3072),
    "mixer_l16_224": dict(patch_size=16, hidden_dim=1024, num_blocks=24, tokens_mlp_dim=512,
                          channels_mlp_dim=4096),
}

# Google's model names for the same configurations (the `.npz` file stems).
GOOGLE_NAMES = {"mixer_b16_224": "Mixer-B_16", "mixer_l16_224": "Mixer-L_16"}

# Parameter counts with 1000 classes at 224 x 224 (196 tokens), as timm and ffzoo issue 16
# state them; `parameter_count` reproduces them from the layout.
PUBLISHED_PARAMS = {"mixer_b16_224": 59_880_472, "mixer_l16_224": 208_196_168}

# Evaluation preprocessing of the authors' code, vit_jax/input_pipeline.py `get_data`
# (mode != "train"): `tf.image.resize(im, [image_size, image_size])` on the whole decoded
# image (no aspect-preserving resize, no centre crop; TF's default bilinear without
# antialiasing), then `(im - 127.5) / 127.5`, i.e. values in [-1, 1] = mean 0.5, std 0.5 on
# the [0, 1] scale. Other accounts differ and are not the authors' fine-tuning code:
# timm's `_cfg` in mlp_mixer.py says crop_pct 0.875 with bicubic, and big_vision's later
# `configs/mlp_mixer_i1k.py` evaluates with `resize_small(256)|central_crop(224)`.
PREPROCESSING = dict(
    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_fraction=1.0, resize="whole image to 224 x 224",
    interpolation="bilinear", antialias=False)

# A small configuration for tests: 4 x 4 = 16 tokens of width 24, 2 blocks, 10 classes.
TINY_TEST = dict(image_size=32, patch_size=8, hidden_dim=24, num_blocks=2, tokens_mlp_dim=12,
                 channels_mlp_dim=40, num_classes=10)


def config(name, **overrides):
    """`VARIANTS[name]` with `overrides` (num_classes, image_size...) applied."""
    if name not in VARIANTS:
        raise ValueError(f"Unknown Mixer variant {name!r}; known: {', '.join(VARIANTS)}.")
    return dict(VARIANTS[name], **overrides)


def param_layout(patch_size, hidden_dim, num_blocks, tokens_mlp_dim, channels_mlp_dim,
                 num_classes=1000, image_size=224, in_chans=3):
    """The `(key, shape)` pairs of a Mixer's parameters in Google's layout, in the order
    the Linen modules are created (stem, blocks, final norm, head)."""
    if image_size % patch_size:
        raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}.")
    c, n = hidden_dim, (image_size // patch_size) ** 2
    layout = [("stem/kernel", (patch_size, patch_size, in_chans, c)), ("stem/bias", (c,))]
    for i in range(num_blocks):
        b = f"MixerBlock_{i}/"
        layout += [
            (b + "LayerNorm_0/scale", (c,)), (b + "LayerNorm_0/bias", (c,)),
            (b + "token_mixing/Dense_0/kernel", (n, tokens_mlp_dim)),
            (b + "token_mixing/Dense_0/bias", (tokens_mlp_dim,)),
            (b + "token_mixing/Dense_1/kernel", (tokens_mlp_dim, n)),
            (b + "token_mixing/Dense_1/bias", (n,)),
            (b + "LayerNorm_1/scale", (c,)), (b + "LayerNorm_1/bias", (c,)),
            (b + "channel_mixing/Dense_0/kernel", (c, channels_mlp_dim)),
            (b + "channel_mixing/Dense_0/bias", (channels_mlp_dim,)),
            (b + "channel_mixing/Dense_1/kernel", (channels_mlp_dim, c)),
            (b + "channel_mixing/Dense_1/bias", (c,)),
        ]
    return layout + [("pre_head_layer_norm/scale", (c,)), ("pre_head_layer_norm/bias", (c,)),
                     ("head/kernel", (c, num_classes)), ("head/bias", (num_classes,))]


def parameter_count(patch_size, hidden_dim, num_blocks, tokens_mlp_dim, channels_mlp_dim,
                    num_classes=1000, image_size=224, in_chans=3):
    """The number of parameters of that configuration, by formula (no arrays)."""
    c, n, dt, dc = hidden_dim, (image_size // patch_size) ** 2, tokens_mlp_dim, channels_mlp_dim
    block = 4 * c + (n * dt + dt + dt * n + n) + (c * dc + dc + dc * c + c)
    stem = patch_size * patch_size * in_chans * c + c
    return stem + num_blocks * block + 2 * c + c * num_classes + num_classes


def random_params(seed=0, *, patch_size, hidden_dim, num_blocks, tokens_mlp_dim, channels_mlp_dim,
                  num_classes=1000, image_size=224, in_chans=3):
    """Seeded random float32 parameters in Google's layout, far from any initialisation:
    kernels normal with std fan_in ** -0.5 (activations stay O(1); the Flax head starts at
    zero, this one does not), biases normal std 0.1, LayerNorm scales 1 + normal std 0.1."""
    rng = np.random.default_rng(seed)
    params = {}
    for key, shape in param_layout(patch_size, hidden_dim, num_blocks, tokens_mlp_dim,
                                   channels_mlp_dim, num_classes, image_size, in_chans):
        noise = rng.standard_normal(shape)
        if key.endswith("/kernel"):
            value = noise * np.prod(shape[:-1]) ** -0.5  # fan_in: all axes but the output one
        elif key.endswith("/scale"):
            value = 1.0 + 0.1 * noise
        else:
            value = 0.1 * noise
        params[key] = value.astype(np.float32)
    return params


def save_npz(params, path):
    """Writes `params` with `np.savez`, one entry per "/"-joined key, as Google's files
    are stored (`np.load(path, allow_pickle=False)` reads them back under the same keys)."""
    np.savez(path, **{key: np.asarray(value) for key, value in params.items()})


def load_npz(path):
    """The `{key: array}` dict of a `.npz` file (no pickles allowed)."""
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def _get(params, key):
    try:
        return np.asarray(params[key], np.float64)
    except KeyError:
        raise KeyError(f"Parameter {key!r} is missing: not a Linen Mixer .npz layout.") from None


def jax_gelu(x, approximate=True):
    """`jax.nn.gelu`: the tanh form when `approximate` (Flax's and JAX's default), else
    the exact `0.5 x (1 + erf(x / sqrt 2))`."""
    if approximate:
        return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def dense(x, params, prefix):
    """`nn.Dense`: `x @ kernel + bias`, kernel `(in, out)`."""
    return x @ _get(params, prefix + "/kernel") + _get(params, prefix + "/bias")


def layer_norm(x, params, prefix, eps=1e-6):
    """`nn.LayerNorm()` over the last axis: epsilon 1e-6, biased variance, scale and bias."""
    centred = x - x.mean(-1, keepdims=True)
    variance = (centred ** 2).mean(-1, keepdims=True)
    return centred / np.sqrt(variance + eps) * _get(params, prefix + "/scale") + _get(
        params, prefix + "/bias")


def mlp_block(x, params, prefix, approximate=True):
    """`MlpBlock`: Dense_0 -> gelu -> Dense_1 over the last axis."""
    return dense(jax_gelu(dense(x, params, prefix + "/Dense_0"), approximate), params, prefix + "/Dense_1")


def stem(params, images):
    """`nn.Conv(C, (p, p), strides=(p, p))` on NHWC images, then `n h w c -> n (h w) c`."""
    kernel = _get(params, "stem/kernel")  # (p, p, in, C)
    p = kernel.shape[0]
    x = np.asarray(images, np.float64)
    if x.ndim != 4 or x.shape[-1] != kernel.shape[2]:
        raise ValueError(f"Images must be (batch, height, width, {kernel.shape[2]}); got {x.shape}.")
    b, h, w, _ = x.shape
    if h % p or w % p:
        raise ValueError(f"Image size {h} x {w} is not a multiple of the patch size {p}.")
    gh, gw = h // p, w // p
    out = np.empty((b, gh, gw, kernel.shape[-1]))
    for i in range(gh):  # one stride step at a time: the convolution as written
        for j in range(gw):
            window = x[:, i * p:(i + 1) * p, j * p:(j + 1) * p, :]  # (b, p, p, in)
            out[:, i, j] = np.tensordot(window, kernel, axes=([1, 2, 3], [0, 1, 2]))
    out += _get(params, "stem/bias")
    return out.reshape(b, gh * gw, -1)


def num_blocks_of(params):
    """How many `MixerBlock_i` the parameters hold (they must be numbered 0..n-1)."""
    indices = {int(key.split("/")[0][len("MixerBlock_"):]) for key in params
               if key.startswith("MixerBlock_")}
    if indices != set(range(len(indices))):
        raise ValueError(f"MixerBlock indices are not 0..n-1: {sorted(indices)}.")
    return len(indices)


def forward_tokens(params, images, gelu="tanh"):
    """Images `(B, H, W, C_in)` -> tokens after `pre_head_layer_norm`, `(B, N, C)`, float64.

    `gelu`: "tanh" (the authors' code: Flax's default) or "erf" (timm's port)."""
    if gelu not in ("tanh", "erf"):
        raise ValueError(f"gelu must be 'tanh' (Flax's default) or 'erf'; got {gelu!r}.")
    approximate = gelu == "tanh"
    x = stem(params, images)
    n = _get(params, "MixerBlock_0/token_mixing/Dense_0/kernel").shape[0]
    if x.shape[1] != n:
        raise ValueError(f"The images give {x.shape[1]} tokens; the token-mixing weights take {n}.")
    for i in range(num_blocks_of(params)):
        b = f"MixerBlock_{i}/"
        y = layer_norm(x, params, b + "LayerNorm_0").swapaxes(1, 2)  # (B, C, N)
        x = x + mlp_block(y, params, b + "token_mixing", approximate).swapaxes(1, 2)
        x = x + mlp_block(layer_norm(x, params, b + "LayerNorm_1"), params, b + "channel_mixing",
                          approximate)
    return layer_norm(x, params, "pre_head_layer_norm")


def forward(params, images, gelu="tanh"):
    """Images `(B, H, W, C_in)` -> logits `(B, classes)` in float64: the head on the mean
    over tokens."""
    return dense(forward_tokens(params, images, gelu).mean(axis=1), params, "head")
