"""A PyTorch ResMLP with the parameter names of FAIR's ResMLP checkpoints.

Written for ffzoo's tests and tools from the ResMLP paper (Touvron et al., 2021,
arXiv 2105.03404) and FAIR's `facebookresearch/deit` `resmlp_models.py` (which builds on
timm 0.3.2's `PatchEmbed` and `Mlp`). Only torch itself is needed (no timm); nothing is
shared with the other references.

Module names follow FAIR's, so `state_dict()` has exactly the keys and order of the
published files (`resmlp_12_no_dist.pth` etc.). Per block the LayerScale vectors come
first because they are parameters of the block itself (PyTorch lists a module's own
parameters before its children's):
    patch_embed.proj.weight (E, 3, p, p), patch_embed.proj.bias (E)
    blocks.i.gamma_1 (E), blocks.i.gamma_2 (E)           LayerScale
    blocks.i.norm1.alpha (E), blocks.i.norm1.beta (E)    Affine, not a LayerNorm
    blocks.i.attn.weight (N, N), blocks.i.attn.bias (N)  the linear token mixer
    blocks.i.norm2.alpha, .beta (E)
    blocks.i.mlp.fc1.weight (4E, E), .bias (4E), blocks.i.mlp.fc2.weight (E, 4E), .bias (E)
    norm.alpha (E), norm.beta (E)
    head.weight (classes, E), head.bias (classes)
(N = (image // p) ** 2 patches.) timm's own port renames these (`stem.`, `linear_tokens`,
`mlp_channels`, `ls1/ls2`) and reshapes alpha / beta to (1, 1, E); FAIR's files keep the
names above with alpha / beta of shape (E,).

Checkpoint container: FAIR's loaders call `model.load_state_dict(checkpoint)` on what
`torch.hub.load_state_dict_from_url` returns (resmlp_models.py), and timm's
`checkpoint_filter_fn` tests `'patch_embed.proj.weight' in state_dict` on the loaded
object: the published `.pth` files are bare state dicts, not `{"model": ...}` as DeiT's
are. `save_checkpoint` writes that layout.

Forward pass (images NCHW): stride-p convolution -> `flatten(2).transpose(1, 2)` ->
blocks
    x = x + drop_path(gamma_1 * attn(norm1(x).transpose(1, 2)).transpose(1, 2))
    x = x + drop_path(gamma_2 * mlp(norm2(x)))
with `Affine(x) = alpha * x + beta` and `Mlp = fc1 -> exact (erf) GELU -> fc2` ->
`norm` (Affine) -> mean over patches -> `head`. No class token, no position embedding.
FAIR's drop path uses the SAME rate in every block (`dpr = [drop_path_rate for i in
range(depth)]`), not a linear ramp.
"""

import torch
from torch import nn
from torch.nn import functional as F

# FAIR's models (resmlp_models.py); timm's / ffzoo's names. init_scale: LayerScale init.
VARIANTS = {
    "resmlp_12_224": dict(patch_size=16, embed_dim=384, depth=12, init_scale=0.1),
    "resmlp_24_224": dict(patch_size=16, embed_dim=384, depth=24, init_scale=1e-5),
    "resmlp_36_224": dict(patch_size=16, embed_dim=384, depth=36, init_scale=1e-6),
    "resmlp_big_24_224": dict(patch_size=8, embed_dim=768, depth=24, init_scale=1e-6),
}

# FAIR's function names for them (resmlp_models.py) and their published files
# (https://dl.fbaipublicfiles.com/deit/<file>; README_resmlp.md lists the _dist and _22k
# ones, the functions also the _no_dist and _dino ones).
FAIR_NAMES = {"resmlp_12_224": "resmlp_12", "resmlp_24_224": "resmlp_24",
              "resmlp_36_224": "resmlp_36", "resmlp_big_24_224": "resmlpB_24"}
FAIR_FILES = {
    "resmlp_12_224": ("resmlp_12_no_dist.pth", "resmlp_12_dist.pth", "resmlp_12_dino.pth"),
    "resmlp_24_224": ("resmlp_24_no_dist.pth", "resmlp_24_dist.pth", "resmlp_24_dino.pth"),
    "resmlp_36_224": ("resmlp_36_no_dist.pth", "resmlp_36_dist.pth"),
    "resmlp_big_24_224": ("resmlpB_24_no_dist.pth", "resmlpB_24_dist.pth", "resmlpB_24_22k.pth"),
}

# Parameter counts with 1000 classes at 224 x 224, as timm and ffzoo issue 16 state them.
# (FAIR's README_resmlp.md table says 116M for ResMLP-S36: a typo; the model has 44.7M.)
PUBLISHED_PARAMS = {
    "resmlp_12_224": 15_350_872,
    "resmlp_24_224": 30_020_680,
    "resmlp_36_224": 44_690_488,
    "resmlp_big_24_224": 129_138_280,
}

# Evaluation preprocessing the paper's figures assume, README_resmlp.md "Evaluation
# transforms" (FAIR's deit repository): `transforms.Resize(int(input_size / 0.9),
# interpolation=3)` (bicubic, shorter side: 248 for 224), `CenterCrop(input_size)`,
# `ToTensor()`, `Normalize(ImageNet mean, std)`. Crop fraction 0.9, not the 0.875 of
# DeiT's `main.py --eval-crop-ratio` default or timm's `_cfg`.
PREPROCESSING = dict(
    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), crop_fraction=0.9,
    resize="shorter side to int(224 / 0.9) = 248, then centre crop 224",
    interpolation="bicubic", antialias=True)

# A small configuration for tests: 4 x 4 = 16 patches of width 24, 2 blocks.
TINY_TEST = dict(image_size=32, patch_size=8, embed_dim=24, depth=2, init_scale=0.1,
                 num_classes=10)


class Affine(nn.Module):
    """`alpha * x + beta` over the last axis (ResMLP's replacement for LayerNorm)."""

    def __init__(self, dim):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(dim))
        self.beta = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        return x * self.alpha + self.beta


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
                             f"({self.image_size}, {self.image_size}): the token mixer is "
                             f"fixed to {self.num_patches} patches.")
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, N, E), row-major


class Mlp(nn.Module):
    def __init__(self, features, hidden, drop=0.0):
        super().__init__()
        self.fc1 = nn.Linear(features, hidden)
        self.fc2 = nn.Linear(hidden, features)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))  # exact erf GELU


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


class ResBlock(nn.Module):
    """FAIR's `layers_scale_mlp_blocks`."""

    def __init__(self, dim, num_patches, init_scale=1e-4, drop=0.0, drop_path=0.0):
        super().__init__()
        # Registered first, as FAIR's block does: the state dict lists them first.
        self.gamma_1 = nn.Parameter(torch.full((dim,), float(init_scale)))
        self.gamma_2 = nn.Parameter(torch.full((dim,), float(init_scale)))
        self.norm1 = Affine(dim)
        self.attn = nn.Linear(num_patches, num_patches)  # over the patch axis
        self.norm2 = Affine(dim)
        self.mlp = Mlp(dim, 4 * dim, drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x):
        mixed = self.attn(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        x = x + self.drop_path(self.gamma_1 * mixed)
        return x + self.drop_path(self.gamma_2 * self.mlp(self.norm2(x)))


class ResMLP(nn.Module):
    """ResMLP. Input NCHW images of `image_size` x `image_size`; returns logits."""

    def __init__(self, image_size=224, patch_size=16, embed_dim=384, depth=12, init_scale=1e-4,
                 num_classes=1000, in_chans=3, drop_rate=0.0, drop_path_rate=0.0):
        super().__init__()
        self.patch_embed = PatchEmbed(image_size, patch_size, embed_dim, in_chans)
        n = self.patch_embed.num_patches
        self.blocks = nn.ModuleList(
            ResBlock(embed_dim, n, init_scale, drop_rate, drop_path_rate) for _ in range(depth))
        self.norm = Affine(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes)
        # FAIR's _init_weights: Linear weights truncated normal std 0.02 (timm's
        # trunc_normal_ cuts at +-2 absolute, i.e. +-100 std: effectively untruncated),
        # biases zero; the convolution keeps PyTorch's init; Affine 1 / 0; gammas init_scale.
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02, a=-2.0, b=2.0)
                nn.init.zeros_(module.bias)

    def forward_features(self, images):
        """Pooled features `(B, E)`: the mean over patches after the final Affine."""
        x = self.patch_embed(images)
        for block in self.blocks:
            x = block(x)
        return self.norm(x).mean(dim=1)

    def forward(self, images):
        return self.head(self.forward_features(images))


def resmlp(name, **overrides):
    """A model from `VARIANTS` by name; `overrides` (num_classes, image_size...) win."""
    if name not in VARIANTS:
        raise ValueError(f"Unknown ResMLP variant {name!r}; known: {', '.join(VARIANTS)}.")
    return ResMLP(**dict(VARIANTS[name], **overrides))


def tiny_test_model(**overrides):
    """`ResMLP(**TINY_TEST)`, with `overrides` applied."""
    return ResMLP(**dict(TINY_TEST, **overrides))


def parameter_count(patch_size, embed_dim, depth, init_scale=None, num_classes=1000,
                    image_size=224, in_chans=3):
    """The count of `ResMLP(...)`'s parameters, from the layout (`init_scale` unused)."""
    e, n = embed_dim, (image_size // patch_size) ** 2
    block = 2 * e + 2 * e + (n * n + n) + 2 * e + (4 * e * e + 4 * e) + (4 * e * e + e)
    stem = e * in_chans * patch_size ** 2 + e
    return stem + depth * block + 2 * e + num_classes * e + num_classes


def randomize(model, seed=0):
    """Fills every parameter with seeded random values away from any init: Linear and
    convolution weights normal with std fan_in ** -0.5, biases and Affine betas normal
    std 0.1, Affine alphas 1 + normal std 0.1, LayerScale gammas 0.5 + normal std 0.1 (so
    both branches weigh in). Deterministic for a seed and layout (CPU generator)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator, dtype=torch.float64)
            if p.dim() >= 2:
                value = noise * (p[0].numel() ** -0.5)
            elif name.endswith(".alpha"):
                value = 1.0 + 0.1 * noise
            elif ".gamma_" in name:
                value = 0.5 + 0.1 * noise
            else:
                value = 0.1 * noise
            p.copy_(value.to(p.dtype))
    return model


def save_checkpoint(model, path):
    """Writes `model.state_dict()` itself with `torch.save`: FAIR's ResMLP file layout."""
    torch.save(model.state_dict(), path)


def load_checkpoint(path):
    """Reads a FAIR ResMLP `.pth` (`weights_only=True`): the bare state dict."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "patch_embed.proj.weight" not in state:
        found = list(state)[:5] if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{path} is not a FAIR ResMLP state dict (found {found}).")
    return state
