"""An independent NumPy (float64) forward pass of the paper's FF-only ViT.

It reads the reference's own parameter names and layouts (those of
`vision_transformer_linear.py`), so it shares nothing with ffzoo's layers or
converter: an error in either shows up as a mismatch. Also provides random state
dicts in that layout for tests.
"""

import numpy as np
from scipy.special import erf


def random_state_dict(rng, *, patch_size, embed_dim, depth, num_tokens, pos_grid=14,
                      classes=1000, channels=3, mlp_ratio=4.0, token_hidden=None, scale=0.1):
    """Random parameters in the reference layout, LayerNorm and positions perturbed."""
    e, n = embed_dim, num_tokens
    h_e = int(e * mlp_ratio)
    h_n = token_hidden or int(n * mlp_ratio)

    def normal(*shape, s=scale):
        return (rng.standard_normal(shape) * s).astype(np.float32)

    sd = {
        "cls_token": normal(1, 1, e, s=0.5),
        "patch_embed.proj.weight": normal(e, channels, patch_size, patch_size, s=1 / patch_size),
        "patch_embed.proj.bias": normal(e),
        "pos_encoding.pos_embed": normal(1, e, pos_grid, pos_grid, s=0.5),
        "pos_encoding.cls_pos_embed": normal(1, 1, e, s=0.5),
    }
    for i in range(depth):
        p = f"blocks.{i}."
        sd.update({
            p + "mlp1.fc1.weight": normal(h_e, e, s=e ** -0.5),
            p + "mlp1.fc1.bias": normal(h_e),
            p + "mlp1.fc2.weight": normal(e, h_e, s=h_e ** -0.5),
            p + "mlp1.fc2.bias": normal(e),
            p + "norm1.weight": 1 + normal(e),
            p + "norm1.bias": normal(e),
            p + "mlp2.fc1.weight": normal(h_n, n, s=n ** -0.5),
            p + "mlp2.fc1.bias": normal(h_n),
            p + "mlp2.fc2.weight": normal(n, h_n, s=h_n ** -0.5),
            p + "mlp2.fc2.bias": normal(n),
            p + "norm2.weight": 1 + normal(n),
            p + "norm2.bias": normal(n),
        })
    sd.update({
        "norm.weight": 1 + normal(e),
        "norm.bias": normal(e),
        "head.weight": normal(classes, e, s=e ** -0.5),
        "head.bias": normal(classes),
    })
    return sd


def bilinear_resize_chw(grid, out_h, out_w):
    """PyTorch `F.interpolate(mode='bilinear', align_corners=False)` of a (C, H, W) array."""

    def taps(n_in, n_out):
        src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
        src = np.maximum(src, 0.0)
        lo = np.floor(src).astype(int)
        lo = np.minimum(lo, n_in - 1)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, src - lo

    c, h, w = grid.shape
    y0, y1, fy = taps(h, out_h)
    x0, x1, fx = taps(w, out_w)
    rows = grid[:, y0, :] * (1 - fy)[None, :, None] + grid[:, y1, :] * fy[None, :, None]
    return rows[:, :, x0] * (1 - fx)[None, None, :] + rows[:, :, x1] * fx[None, None, :]


def layer_norm(x, weight, bias, eps=1e-6):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def gelu(x):
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def mlp(x, sd, prefix):
    g = lambda k: sd[prefix + k].astype(np.float64)
    hidden = gelu(x @ g("fc1.weight").T + g("fc1.bias"))
    return hidden @ g("fc2.weight").T + g("fc2.bias")


def softmax(logits):
    z = logits - logits.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def embed(sd, images, patch_size, position_grid_chw, class_position):
    """Patch embedding, class token and positions: `(B, H, W, C)` -> `(B, N, E)` float64.

    `position_grid_chw` is the learned `(E, h, w)` grid, resized bilinearly when the
    patch grid differs; `class_position` is the class token's `(E,)` position.
    """
    g = lambda k: np.asarray(sd[k], dtype=np.float64)
    x = np.asarray(images, dtype=np.float64)
    b, h, w, c = x.shape
    gh, gw = h // patch_size, w // patch_size
    x = x[:, : gh * patch_size, : gw * patch_size]
    patches = x.reshape(b, gh, patch_size, gw, patch_size, c)
    # out[b, i, j, e] = sum over (dy, dx, ch) of pixel * weight[e, ch, dy, dx]
    grid = np.einsum("biyjxc,ecyx->bije", patches, g("patch_embed.proj.weight"))
    grid = grid + g("patch_embed.proj.bias")
    e = grid.shape[-1]
    tokens = grid.reshape(b, gh * gw, e)
    pos = np.asarray(position_grid_chw, np.float64)
    if pos.shape[1:] != (gh, gw):
        pos = bilinear_resize_chw(pos, gh, gw)
    pos = pos.reshape(e, gh * gw).T
    cls = np.broadcast_to(g("cls_token").reshape(1, 1, e), (b, 1, e))
    x = np.concatenate([cls, tokens], axis=1)
    return x + np.concatenate([np.reshape(class_position, (1, e)), pos], axis=0)[None]


def forward_tokens(sd, images, patch_size, block_outputs=None):
    """Images `(B, H, W, C)` -> final-LayerNorm tokens `(B, N, E)`, in float64.

    `block_outputs`: a list to which each block's output tokens are appended, or None.
    """
    g = lambda k: np.asarray(sd[k], dtype=np.float64)
    x = embed(sd, images, patch_size, g("pos_encoding.pos_embed")[0],
              g("pos_encoding.cls_pos_embed").reshape(-1))

    i = 0
    while f"blocks.{i}.norm1.weight" in sd:
        p = f"blocks.{i}."
        x = x + mlp(layer_norm(x, g(p + "norm1.weight"), g(p + "norm1.bias")), sd, p + "mlp1.")
        xt = np.swapaxes(x, 1, 2)
        xt = xt + mlp(layer_norm(xt, g(p + "norm2.weight"), g(p + "norm2.bias")), sd, p + "mlp2.")
        x = np.swapaxes(xt, 1, 2)
        if block_outputs is not None:
            block_outputs.append(x)
        i += 1
    return layer_norm(x, g("norm.weight"), g("norm.bias"))


def forward(sd, images, patch_size):
    """Images `(B, H, W, C)` -> logits `(B, classes)`, in float64."""
    tokens = forward_tokens(sd, images, patch_size)
    return tokens[:, 0] @ np.asarray(sd["head.weight"], np.float64).T + sd["head.bias"]
