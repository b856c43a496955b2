"""An independent NumPy (float64) forward pass of DeiT/ViT, in timm's parameter layout."""

import numpy as np

from tests.reference.numpy_ffvit import embed, layer_norm, mlp, softmax


def random_state_dict(rng, *, patch_size, embed_dim, depth, num_heads, grid, classes=1000,
                      channels=3, mlp_ratio=4.0, scale=0.1):
    """Random parameters named as timm's VisionTransformer names them (`num_heads` unused)."""
    e, h = embed_dim, int(embed_dim * mlp_ratio)

    def normal(*shape, s=scale):
        return (rng.standard_normal(shape) * s).astype(np.float32)

    sd = {
        "cls_token": normal(1, 1, e, s=0.5),
        "pos_embed": normal(1, 1 + grid * grid, e, s=0.5),
        "patch_embed.proj.weight": normal(e, channels, patch_size, patch_size, s=1 / patch_size),
        "patch_embed.proj.bias": normal(e),
    }
    for i in range(depth):
        p = f"blocks.{i}."
        sd.update({
            p + "norm1.weight": 1 + normal(e), p + "norm1.bias": normal(e),
            p + "attn.qkv.weight": normal(3 * e, e, s=e ** -0.5), p + "attn.qkv.bias": normal(3 * e),
            p + "attn.proj.weight": normal(e, e, s=e ** -0.5), p + "attn.proj.bias": normal(e),
            p + "norm2.weight": 1 + normal(e), p + "norm2.bias": normal(e),
            p + "mlp.fc1.weight": normal(h, e, s=e ** -0.5), p + "mlp.fc1.bias": normal(h),
            p + "mlp.fc2.weight": normal(e, h, s=h ** -0.5), p + "mlp.fc2.bias": normal(e),
        })
    sd.update({
        "norm.weight": 1 + normal(e), "norm.bias": normal(e),
        "head.weight": normal(classes, e, s=e ** -0.5), "head.bias": normal(classes),
    })
    return sd


def attention(x, sd, prefix, num_heads):
    g = lambda k: np.asarray(sd[prefix + k], np.float64)
    b, n, e = x.shape
    d = e // num_heads
    qkv = (x @ g("qkv.weight").T + g("qkv.bias")).reshape(b, n, 3, num_heads, d)
    q, k, v = (np.transpose(qkv[:, :, i], (0, 2, 1, 3)) for i in range(3))  # (b, heads, n, d)
    weights = softmax(q @ np.swapaxes(k, -1, -2) / np.sqrt(d))
    out = np.transpose(weights @ v, (0, 2, 1, 3)).reshape(b, n, e)
    return out @ g("proj.weight").T + g("proj.bias")


def forward_tokens(sd, images, patch_size, num_heads):
    g = lambda k: np.asarray(sd[k], np.float64)
    pos = g("pos_embed")[0]
    side = int(round((pos.shape[0] - 1) ** 0.5))
    grid_chw = np.transpose(pos[1:].reshape(side, side, -1), (2, 0, 1))
    x = embed(sd, images, patch_size, grid_chw, pos[0])
    i = 0
    while f"blocks.{i}.norm1.weight" in sd:
        p = f"blocks.{i}."
        x = x + attention(layer_norm(x, g(p + "norm1.weight"), g(p + "norm1.bias")), sd, p + "attn.", num_heads)
        x = x + mlp(layer_norm(x, g(p + "norm2.weight"), g(p + "norm2.bias")), sd, p + "mlp.")
        i += 1
    return layer_norm(x, g("norm.weight"), g("norm.bias"))


def forward(sd, images, patch_size, num_heads):
    tokens = forward_tokens(sd, images, patch_size, num_heads)
    return tokens[:, 0] @ np.asarray(sd["head.weight"], np.float64).T + sd["head.bias"]
