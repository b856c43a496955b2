"""A PyTorch gMLP with the parameter names of timm's `gmlp_s16_224` weights.

Written for ffzoo's tests and tools from the gMLP paper (Liu et al., 2021, "Pay
Attention to MLPs", arXiv 2105.08050) and timm's `timm/models/mlp_mixer.py`
(`SpatialGatingUnit`, `SpatialGatingBlock`, `MlpMixer`, `_init_weights`) with
`timm/layers/mlp.py` (`GatedMlp`): the only published gMLP weights
(`gmlp_s16_224.ra3_in1k`, 79.6 top-1, first released as `gmlp_s16_224_raa-10536d42.pth`)
were trained by timm with that code. Only torch itself is needed (no timm); nothing is
shared with the other references.

Module names follow timm's, so `state_dict()` has exactly the keys of timm's files (the
hub copy is `model.safetensors`, written by timm's `save_for_hf` as
`safetensors.torch.save_file(model.state_dict(), ...)`):
    stem.proj.weight (E, 3, p, p), stem.proj.bias (E)
    blocks.i.norm.weight, .bias (E)                         LayerNorm, eps 1e-6
    blocks.i.mlp_channels.fc1.weight (6E, E), .bias (6E)
    blocks.i.mlp_channels.gate.norm.weight, .bias (3E)      LayerNorm, eps 1e-5 (!)
    blocks.i.mlp_channels.gate.proj.weight (N, N), .bias (N)  over the patch axis
    blocks.i.mlp_channels.fc2.weight (E, 3E), .bias (E)
    norm.weight, norm.bias (E)                              LayerNorm, eps 1e-6
    head.weight (classes, E), head.bias (classes)
timm's identity modules (`stem.norm`, `mlp_channels.norm`, `drop*`) hold no tensors.

Forward pass (images NCHW): stride-p convolution -> `flatten(2).transpose(1, 2)` ->
blocks `x = x + drop_path(mlp_channels(norm(x)))` where `mlp_channels` is
fc1 -> exact (erf) GELU -> dropout -> spatial gating -> fc2 -> dropout, and the spatial
gating unit splits the 6E features in halves `u, v = chunk(2)` (u first), normalises
`v` with its own LayerNorm, mixes `v` over the patches with `proj` and returns `u * v`
-> final `norm` -> mean over patches -> `head`. No class token, no position embedding.

Epsilons: `MlpMixer` passes `partial(nn.LayerNorm, eps=1e-6)` to the blocks and the final
norm, but `SpatialGatingBlock` builds the gate as `partial(SpatialGatingUnit,
seq_len=...)`, whose `norm_layer` default is plain `nn.LayerNorm`: eps 1e-5. timm's code
has had it so since gMLP was added (June 2021), so the published weights use it.

Initialisation (timm `MlpMixer.init_weights`, `flax=False`, applied children first):
Linear weights xavier-uniform, biases normal std 1e-6 when the module path contains
"mlp" else zero; head weight and bias zero; the stem convolution lecun-normal (truncated
normal, fan-in), zero bias; LayerNorms 1 / 0; then `SpatialGatingUnit.init_weights`
overrides the gate: `proj.weight` normal std 1e-6, `proj.bias` ones, so each block
starts as `u * 1`. Drop path: one rate in every block.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

# timm's gMLP models (mlp_mixer.py: gmlp_ti16_224, gmlp_s16_224, gmlp_b16_224): patch 16,
# 30 blocks, mlp_ratio 6.
VARIANTS = {
    "gmlp_ti16_224": dict(patch_size=16, embed_dim=128, depth=30, mlp_ratio=6),
    "gmlp_s16_224": dict(patch_size=16, embed_dim=256, depth=30, mlp_ratio=6),
    "gmlp_b16_224": dict(patch_size=16, embed_dim=512, depth=30, mlp_ratio=6),
}

# Published weights: only gMLP-S/16 (timm's, `timm/gmlp_s16_224.ra3_in1k` model.safetensors);
# gMLP-Ti and gMLP-B have none (timm lists them as `.untrained`).
PUBLISHED_WEIGHTS = {"gmlp_s16_224": "gmlp_s16_224.ra3_in1k"}

# Parameter counts with 1000 classes at 224 x 224, as timm and ffzoo issue 16 state them.
PUBLISHED_PARAMS = {
    "gmlp_ti16_224": 5_867_328,
    "gmlp_s16_224": 19_422_656,
    "gmlp_b16_224": 73_075_392,
}

# Evaluation preprocessing of the weights' own config, timm mlp_mixer.py `_cfg` (used as
# is for `gmlp_s16_224.ra3_in1k`): mean = std = 0.5, crop_pct 0.875, bicubic; timm's eval
# transform resizes the shorter side to floor(224 / 0.875) = 256, then centre-crops 224.
PREPROCESSING = dict(
    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_fraction=0.875,
    resize="shorter side to 256, then centre crop 224", interpolation="bicubic", antialias=True)

# A small configuration for tests: 4 x 4 = 16 patches of width 24, 2 blocks, 6 x 24 hidden.
TINY_TEST = dict(image_size=32, patch_size=8, embed_dim=24, depth=2, mlp_ratio=6, num_classes=10)


class PatchEmbed(nn.Module):
    def __init__(self, image_size, patch_size, embed_dim, in_chans=3):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}.")
        self.image_size = image_size
        self.num_patches = (image_size // patch_size) ** 2
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(f"Input size {tuple(x.shape[-2:])} does not match the model's "
                             f"({self.image_size}, {self.image_size}): the gate is fixed to "
                             f"{self.num_patches} patches.")
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, N, E), row-major


class SpatialGatingUnit(nn.Module):
    """`u * proj_over_patches(LayerNorm(v))` with `u, v` the two halves of the features."""

    def __init__(self, dim, num_patches):
        super().__init__()
        if dim % 2:
            raise ValueError(f"The gated width {dim} must be even (it is split in halves).")
        self.norm = nn.LayerNorm(dim // 2)  # eps 1e-5, PyTorch's default, as timm's gate
        self.proj = nn.Linear(num_patches, num_patches)

    def init_weights(self):
        nn.init.normal_(self.proj.weight, std=1e-6)
        nn.init.ones_(self.proj.bias)

    def forward(self, x):
        u, v = x.chunk(2, dim=-1)
        v = self.proj(self.norm(v).transpose(-1, -2)).transpose(-1, -2)
        return u * v


class GatedMlp(nn.Module):
    def __init__(self, features, hidden, num_patches, drop=0.0):
        super().__init__()
        self.fc1 = nn.Linear(features, hidden)
        self.gate = SpatialGatingUnit(hidden, num_patches)
        self.fc2 = nn.Linear(hidden // 2, features)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        x = self.drop(F.gelu(self.fc1(x)))  # exact erf GELU
        return self.drop(self.fc2(self.gate(x)))


class DropPath(nn.Module):
    def __init__(self, rate):
        super().__init__()
        self.rate = rate

    def forward(self, x):
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class SpatialGatingBlock(nn.Module):
    def __init__(self, dim, num_patches, mlp_ratio=6, drop=0.0, drop_path=0.0):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp_channels = GatedMlp(dim, int(dim * mlp_ratio), num_patches, drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x):
        return x + self.drop_path(self.mlp_channels(self.norm(x)))


def _lecun_normal_(weight):
    """timm's `lecun_normal_`: truncated normal (+-2 std) with variance 1 / fan_in after
    the truncation (std divided by 0.8796..., the std of a unit normal cut at +-2)."""
    fan_in = weight[0].numel()
    std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
    nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


class GMLP(nn.Module):
    """gMLP. Input NCHW images of `image_size` x `image_size`; returns logits."""

    def __init__(self, image_size=224, patch_size=16, embed_dim=256, depth=30, mlp_ratio=6,
                 num_classes=1000, in_chans=3, drop_rate=0.0, proj_drop_rate=0.0,
                 drop_path_rate=0.0):
        super().__init__()
        self.stem = PatchEmbed(image_size, patch_size, embed_dim, in_chans)
        n = self.stem.num_patches
        self.blocks = nn.Sequential(*[
            SpatialGatingBlock(embed_dim, n, mlp_ratio, proj_drop_rate, drop_path_rate)
            for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes)
        self._init_weights()

    def _init_weights(self):
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                if name.startswith("head"):
                    nn.init.zeros_(module.weight)
                    nn.init.zeros_(module.bias)
                else:
                    nn.init.xavier_uniform_(module.weight)
                    if "mlp" in name:
                        nn.init.normal_(module.bias, std=1e-6)
                    else:
                        nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Conv2d):
                _lecun_normal_(module.weight)
                nn.init.zeros_(module.bias)
            # LayerNorms keep PyTorch's 1 / 0.
        for module in self.modules():  # after the generic pass, as timm's children-first order
            if isinstance(module, SpatialGatingUnit):
                module.init_weights()

    def forward_features(self, images):
        """Final-norm tokens `(B, N, E)`."""
        return self.norm(self.blocks(self.stem(images)))

    def forward(self, images):
        return self.head(self.head_drop(self.forward_features(images).mean(dim=1)))


def gmlp(name, **overrides):
    """A model from `VARIANTS` by name; `overrides` (num_classes, image_size...) win."""
    if name not in VARIANTS:
        raise ValueError(f"Unknown gMLP variant {name!r}; known: {', '.join(VARIANTS)}.")
    return GMLP(**dict(VARIANTS[name], **overrides))


def tiny_test_model(**overrides):
    """`GMLP(**TINY_TEST)`, with `overrides` applied."""
    return GMLP(**dict(TINY_TEST, **overrides))


def parameter_count(patch_size, embed_dim, depth, mlp_ratio=6, num_classes=1000, image_size=224,
                    in_chans=3):
    """The count of `GMLP(...)`'s parameters, from the layout."""
    e, h, n = embed_dim, int(embed_dim * mlp_ratio), (image_size // patch_size) ** 2
    block = 2 * e + (h * e + h) + 2 * (h // 2) + (n * n + n) + (e * (h // 2) + e)
    stem = e * in_chans * patch_size ** 2 + e
    return stem + depth * block + 2 * e + num_classes * e + num_classes


def randomize(model, seed=0):
    """Fills every parameter with seeded random values away from any init: Linear and
    convolution weights normal with std fan_in ** -0.5 (the gate's `proj` too, so the
    spatial mixing is not the near-identity `u * 1` of the init), gate biases 1 + normal
    std 0.1, other biases normal std 0.1, LayerNorm weights 1 + normal std 0.1.
    Deterministic for a seed and layout (CPU generator). Returns `model`."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator, dtype=torch.float64)
            if p.dim() >= 2:
                value = noise * (p[0].numel() ** -0.5)
            elif name.endswith("gate.proj.bias") or (name.endswith("weight") and "norm" in name):
                value = 1.0 + 0.1 * noise
            else:
                value = 0.1 * noise
            p.copy_(value.to(p.dtype))
    return model


def save_safetensors(model, path):
    """Writes `model.state_dict()` as `.safetensors` (timm's hub layout) through the
    `safetensors` package; `safetensors.numpy.load_file(path)` reads it without PyTorch."""
    try:
        from safetensors.torch import save_file
    except ImportError:
        raise ImportError("Writing .safetensors needs the safetensors package "
                          "(pip install safetensors).") from None
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(path))


def save_checkpoint(model, path):
    """Writes the bare `model.state_dict()` with `torch.save` (timm's GitHub-release `.pth`
    layout, as `gmlp_s16_224_raa-10536d42.pth`)."""
    torch.save(model.state_dict(), path)
