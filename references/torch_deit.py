"""A PyTorch DeiT / ViT with the parameter names of FAIR's DeiT checkpoints.

Written for ffzoo's tests and tools from the DeiT paper (Touvron et al., 2021,
arXiv 2012.12877), FAIR's `facebookresearch/deit` `models.py` (which builds timm's
`VisionTransformer` with `qkv_bias=True` and LayerNorm eps 1e-6) and timm's
`vision_transformer.py`. Only torch itself is needed (no timm); nothing is shared with
`numpy_deit` or `torch_ffvit`.

Module names follow timm, so `state_dict()` has exactly the keys of the published files
(`deit_tiny_patch16_224-a1311bcf.pth` etc., saved as `{"model": state_dict}`):
`cls_token (1, 1, E)`, `pos_embed (1, 1 + N, E)` (row 0 is the class token's position,
then the patch grid row-major), `patch_embed.proj.*`, `blocks.i.norm1.*`,
`blocks.i.attn.qkv.* (3E, E)`, `blocks.i.attn.proj.*`, `blocks.i.norm2.*`,
`blocks.i.mlp.fc1.*`, `blocks.i.mlp.fc2.*`, `norm.*`, `head.*`. timm's identity modules
(`ls1`, `q_norm`, ...) hold no tensors and are left out.

Forward pass (images NCHW): stride-p convolution -> `flatten(2).transpose(1, 2)` -> class
token in front -> `+ pos_embed` -> blocks `x + attn(norm1(x))`, `x + mlp(norm2(x))` ->
`norm` -> `head` on token 0. Attention as timm: qkv reshaped `(B, N, 3, heads, d)`,
`softmax(q k^T * d ** -0.5)`; MLP fc1 -> exact (erf) GELU -> fc2.

Other resolutions: like DeiT's model (timm's `PatchEmbed` asserts the input size), the
model only runs at the grid its `pos_embed` has. `load_state_dict_resampled` loads a
checkpoint made for another grid the way DeiT's `main.py` does when fine-tuning (e.g.
224 -> 384): the class row is kept and the grid rows, as `(1, E, s, s)`, go through
`F.interpolate(mode="bicubic", align_corners=False)` without antialiasing (cubic
convolution, a = -0.75, half-pixel centres, edge rows repeated). timm's own
`resample_abs_pos_embed` defaults to `antialias=True`, which even when upsampling uses
a different kernel (a = -0.5); `resample_pos_embed(..., antialias=True)` gives that.
"""

import torch
from torch import nn
from torch.nn import functional as F

# FAIR's DeiT models (deit/models.py); patch 16, mlp_ratio 4, qkv bias, eps 1e-6.
VARIANTS = {
    "deit_tiny_patch16_224": dict(patch_size=16, embed_dim=192, depth=12, num_heads=3),
    "deit_small_patch16_224": dict(patch_size=16, embed_dim=384, depth=12, num_heads=6),
    "deit_base_patch16_224": dict(patch_size=16, embed_dim=768, depth=12, num_heads=12),
}

# Parameter counts with 1000 classes, as published (timm / DeiT's README).
PUBLISHED_PARAMS = {
    "deit_tiny_patch16_224": 5_717_416,
    "deit_small_patch16_224": 22_050_664,
    "deit_base_patch16_224": 86_567_656,
}

# A small configuration for tests: 4 x 4 patches, 2 blocks, 2 heads of 12.
TINY_TEST = dict(image_size=32, patch_size=8, embed_dim=24, depth=2, num_heads=2, num_classes=10)


class PatchEmbed(nn.Module):
    def __init__(self, image_size, patch_size, embed_dim, in_chans=3):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}.")
        self.grid = image_size // patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, gh * gw, E), row-major


class Attention(nn.Module):
    def __init__(self, dim, num_heads, attn_drop=0.0, proj_drop=0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not a multiple of num_heads {num_heads}.")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, heads, N, d)
        weights = self.attn_drop(((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1))
        out = (weights @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(out))


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


class Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio=4.0, drop=0.0, attn_drop=0.0, drop_path=0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, attn_drop, drop)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x):
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class VisionTransformer(nn.Module):
    """DeiT (timm's ViT with a class token and the head on it). Input NCHW images of
    `image_size` x `image_size`; returns logits `(B, num_classes)`."""

    def __init__(self, image_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12,
                 mlp_ratio=4.0, num_classes=1000, in_chans=3, drop_rate=0.0, attn_drop_rate=0.0,
                 drop_path_rate=0.0):
        super().__init__()
        self.image_size = image_size
        self.patch_embed = PatchEmbed(image_size, patch_size, embed_dim, in_chans)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.patch_embed.grid ** 2, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        # Drop-path rates rise linearly from 0 to drop_path_rate (plain Python: meta-safe).
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, drop_rate, attn_drop_rate, r) for r in rates)
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes)
        # timm's default init; the patch convolution keeps PyTorch's.
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward_features(self, images):
        """Final-norm tokens `(B, 1 + N, E)`."""
        if tuple(images.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(
                f"Input size {tuple(images.shape[-2:])} does not match the model's "
                f"({self.image_size}, {self.image_size}); build the model for that size and "
                "load the weights with load_state_dict_resampled.")
        x = self.patch_embed(images)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.pos_drop(x + self.pos_embed)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward(self, images):
        return self.head(self.forward_features(images)[:, 0])


def deit(name, **overrides):
    """A model from `VARIANTS` by name; `overrides` (num_classes, image_size...) win."""
    if name not in VARIANTS:
        raise ValueError(f"Unknown DeiT variant {name!r}; known: {', '.join(VARIANTS)}.")
    return VisionTransformer(**dict(VARIANTS[name], **overrides))


def deit_tiny_patch16_224(**overrides):
    return deit("deit_tiny_patch16_224", **overrides)


def deit_small_patch16_224(**overrides):
    return deit("deit_small_patch16_224", **overrides)


def deit_base_patch16_224(**overrides):
    return deit("deit_base_patch16_224", **overrides)


def tiny_test_model(**overrides):
    """`VisionTransformer(**TINY_TEST)`, with `overrides` applied."""
    return VisionTransformer(**dict(TINY_TEST, **overrides))


def parameter_count(patch_size, embed_dim, depth, num_heads=None, mlp_ratio=4.0,
                    num_classes=1000, image_size=224, in_chans=3):
    """The count of `VisionTransformer(...)`'s parameters, from the layout (`num_heads`
    does not change it)."""
    e, h, n = embed_dim, int(embed_dim * mlp_ratio), (image_size // patch_size) ** 2
    block = 2 * 2 * e + (3 * e * e + 3 * e) + (e * e + e) + (h * e + h) + (e * h + e)
    stem = e * in_chans * patch_size ** 2 + e + e + (1 + n) * e
    return stem + depth * block + 2 * e + num_classes * e + num_classes


def randomize(model, seed=0):
    """Fills every parameter with seeded random values away from any init: Linear and
    convolution weights normal with std fan_in ** -0.5 (activations stay O(1)), biases
    normal std 0.1, LayerNorm weights 1 + normal std 0.1, class token and positions normal
    std 0.5. Deterministic for a given seed and model layout (CPU generator). Returns `model`."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator, dtype=torch.float64)
            if name in ("cls_token", "pos_embed"):
                value = 0.5 * noise
            elif p.dim() >= 2:
                value = noise * (p[0].numel() ** -0.5)  # fan_in = in (Linear), C * p * p (conv)
            elif name.endswith("weight"):  # LayerNorm scale
                value = 1.0 + 0.1 * noise
            else:
                value = 0.1 * noise
            p.copy_(value.to(p.dtype))
    return model


def resample_pos_embed(pos_embed, grid, num_prefix_tokens=1, antialias=False):
    """DeiT's `main.py` fine-tuning step: a `(1, prefix + s * s, E)` table to `grid`
    `(gh, gw)`: the prefix rows kept, the `s x s` grid resized with
    `F.interpolate(mode="bicubic", align_corners=False, antialias=antialias)` (DeiT: no
    antialias; timm's `resample_abs_pos_embed` default: antialias)."""
    prefix, tokens = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    side = int(round(tokens.shape[1] ** 0.5))
    if side * side != tokens.shape[1]:
        raise ValueError(f"pos_embed has {tokens.shape[1]} grid rows, not a square grid.")
    if (side, side) == tuple(grid):
        return pos_embed
    e = tokens.shape[-1]
    chw = tokens.reshape(1, side, side, e).permute(0, 3, 1, 2)
    chw = F.interpolate(chw.float(), size=tuple(grid), mode="bicubic", align_corners=False,
                        antialias=antialias).to(pos_embed.dtype)
    return torch.cat([prefix, chw.permute(0, 2, 3, 1).flatten(1, 2)], dim=1)


def load_state_dict_resampled(model, state_dict, antialias=False):
    """`model.load_state_dict(state_dict)` (strict), with `pos_embed` first resampled to
    the model's grid when the checkpoint was made for another one (DeiT's fine-tuning)."""
    state_dict = dict(state_dict)
    grid = model.patch_embed.grid
    if "pos_embed" in state_dict and state_dict["pos_embed"].shape != model.pos_embed.shape:
        state_dict["pos_embed"] = resample_pos_embed(state_dict["pos_embed"], (grid, grid),
                                                     antialias=antialias)
    return model.load_state_dict(state_dict)


def save_checkpoint(model, path, ema_model=None):
    """Writes `{"model": state_dict}` with `torch.save`, the layout of FAIR's published
    DeiT files; `ema_model` adds `"model_ema"` (as DeiT's training checkpoints carry)."""
    checkpoint = {"model": model.state_dict()}
    if ema_model is not None:
        checkpoint["model_ema"] = ema_model.state_dict()
    torch.save(checkpoint, path)
