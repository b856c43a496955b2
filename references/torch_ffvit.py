"""A PyTorch implementation of the paper's FF-only ViT, with the official parameter names.

Written for ffzoo's tests and benchmarks (the PyTorch baseline): same module and
parameter names as `vision_transformer_linear.py`, so its `state_dict()` has the
layout of the authors' checkpoints. Only torch itself is needed (no timm).
"""

import argparse

import torch
from torch import nn
from torch.nn import functional as F


class Mlp(nn.Module):
    def __init__(self, features, hidden, drop=0.0):
        super().__init__()
        self.fc1 = nn.Linear(features, hidden)
        self.fc2 = nn.Linear(hidden, features)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))


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


class LinearBlock(nn.Module):
    def __init__(self, dim, num_tokens, mlp_ratio=4.0, drop=0.0, drop_path=0.0, token_hidden=None):
        super().__init__()
        self.mlp1 = Mlp(dim, int(dim * mlp_ratio), drop)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp2 = Mlp(num_tokens, token_hidden or int(num_tokens * mlp_ratio), drop)
        self.norm2 = nn.LayerNorm(num_tokens, eps=1e-6)
        self.drop_path = DropPath(drop_path)

    def forward(self, x):
        x = x + self.drop_path(self.mlp1(self.norm1(x)))
        x = x.transpose(-2, -1)
        x = x + self.drop_path(self.mlp2(self.norm2(x)))
        return x.transpose(-2, -1)


class PatchEmbed(nn.Module):
    def __init__(self, patch_size, embed_dim, in_chans=3):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        return self.proj(x)


class PositionalEncoding(nn.Module):
    def __init__(self, grid, embed_dim):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, grid, grid))
        self.cls_pos_embed = nn.Parameter(torch.zeros(1, 1, embed_dim))
        nn.init.normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_pos_embed, std=0.02)

    def forward(self, grid):
        h, w = grid.shape[-2:]
        pos = self.pos_embed
        if pos.shape[-2:] != (h, w):
            pos = F.interpolate(pos, size=(h, w), mode="bilinear", align_corners=False)
        return self.cls_pos_embed, pos


class FFViT(nn.Module):
    """Input NCHW images; the token count is fixed by `image_size` as in the reference."""

    def __init__(self, patch_size=16, embed_dim=192, depth=12, mlp_ratio=4.0, num_classes=1000,
                 image_size=224, pos_grid=14, drop_rate=0.0, drop_path_rate=0.0, token_hidden=None):
        super().__init__()
        num_tokens = 1 + (image_size // patch_size) ** 2
        self.image_size = image_size
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_encoding = PositionalEncoding(pos_grid, embed_dim)
        self.pos_drop = nn.Dropout(drop_rate)
        rates = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList(
            LinearBlock(embed_dim, num_tokens, mlp_ratio, drop_rate, r, token_hidden) for r in rates)
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes)
        nn.init.normal_(self.cls_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(self, images):
        grid = self.patch_embed(images)
        cls_pos, pos = self.pos_encoding(grid)
        tokens = grid.flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(images.shape[0], -1, -1), tokens], dim=1)
        x = x + torch.cat([cls_pos, pos.flatten(2).transpose(1, 2)], dim=1)
        x = self.pos_drop(x)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])


def perturb(model, seed=0, scale=0.1):
    """Moves every parameter (LayerNorm and positions included) away from its init."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator) * scale
            if name.endswith("weight") and p.dim() == 1:  # LayerNorm scale: around 1
                p.copy_(1.0 + noise)
            elif "pos" in name or "cls_token" in name:
                p.copy_(noise * 5)
            elif p.dim() == 2:
                p.copy_(noise * (p.shape[1] ** -0.5) / scale)
            else:
                p.add_(noise)
    return model


def save_deit_checkpoint(model, path, ema_model=None, epoch=299):
    """Saves `model` the way DeiT's main.py does: weights, optimizer, scheduler, args."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.05)
    model.train()
    loss = model(torch.randn(2, 3, model.image_size, model.image_size)).sum()
    loss.backward()
    optimizer.step()  # fills exp_avg / exp_avg_sq state
    optimizer.zero_grad()
    model.eval()
    args = argparse.Namespace(model="linear_tiny", batch_size=128, lr=5e-4, drop=0.1,
                              epochs=300, smoothing=0.1, data_path="/imagenet", dist_url="env://")
    torch.save({
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": {"base_values": [5e-4], "last_epoch": epoch, "t_initial": 300},
        "epoch": epoch,
        "model_ema": (ema_model or model).state_dict(),
        "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                   "growth_interval": 2000, "_growth_tracker": 17},
        "args": args,
    }, path)

