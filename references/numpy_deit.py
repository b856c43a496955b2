"""An independent NumPy (float64) forward pass of DeiT, written from DeiT's code.

DeiT's `models.py` builds timm's `VisionTransformer` (qkv bias, LayerNorm eps 1e-6);
this follows that forward pass step by step, in timm's parameter layout:
`PatchEmbed` (a stride-p convolution, then `flatten(2).transpose(1, 2)`), the class
token concatenated in front, then ONE learned `pos_embed` table of 1 + N rows added to
all tokens (the class token's position is its row 0), pre-norm blocks
`x + attn(norm1(x))`, `x + mlp(norm2(x))`, the final norm and the head on token 0.

DeiT's model runs only at the grid its `pos_embed` was made for (timm's `PatchEmbed`
asserts the input size). At another size DeiT's `main.py` resamples the table when
it loads a checkpoint: the class row kept, the grid rows reshaped to
`(1, E, side, side)` and interpolated. ffzoo's models resize on every call, bilinearly
(the FF paper's choice); `forward_tokens(..., resize="bilinear")` does that here on
DeiT's table layout (PyTorch `F.interpolate(mode="bilinear", align_corners=False)`).
Nothing here is shared with `numpy_ffvit`.
"""

import numpy as np
from scipy.special import erf


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


def _get(sd, key):
    return np.asarray(sd[key], np.float64)


def linear(x, sd, prefix):
    """`nn.Linear`: `x @ weight.T + bias`."""
    return x @ _get(sd, prefix + "weight").T + _get(sd, prefix + "bias")


def layer_norm(x, sd, prefix, eps=1e-6):
    """`nn.LayerNorm(eps=1e-6)` over the last axis (biased variance)."""
    centred = x - x.mean(-1, keepdims=True)
    variance = (centred ** 2).mean(-1, keepdims=True)
    return centred / np.sqrt(variance + eps) * _get(sd, prefix + "weight") + _get(sd, prefix + "bias")


def softmax_last(x):
    shifted = np.exp(x - x.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def attention(x, sd, prefix, num_heads, weights_mask=None):
    """timm's `Attention`: qkv -> reshape (B, N, 3, heads, d) -> permute to (3, B, heads, N, d);
    `softmax(q @ k^T * d^-0.5)`, then `attn_drop` (here: `weights_mask`, an array of the
    weights' shape `(B, heads, N, N)` that multiplies them, or None), `@ v`,
    `transpose(1, 2).reshape(B, N, C)`, proj."""
    b, n, c = x.shape
    d = c // num_heads
    qkv = linear(x, sd, prefix + "qkv.").reshape(b, n, 3, num_heads, d).transpose(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    weights = softmax_last((q @ k.transpose(0, 1, 3, 2)) * d ** -0.5)
    if weights_mask is not None:
        weights = weights * weights_mask
    out = (weights @ v).transpose(0, 2, 1, 3).reshape(b, n, c)
    return linear(out, sd, prefix + "proj.")


def mlp(x, sd, prefix):
    """timm's `Mlp`: fc1 -> exact GELU -> fc2."""
    hidden = linear(x, sd, prefix + "fc1.")
    hidden = 0.5 * hidden * (1.0 + erf(hidden / np.sqrt(2.0)))
    return linear(hidden, sd, prefix + "fc2.")


def patch_embed(sd, images, patch_size):
    """`Conv2d(kernel=stride=patch_size)` on NCHW, then `flatten(2).transpose(1, 2)`.

    `images` are `(B, H, W, C)`; returns `(tokens (B, gh * gw, E), (gh, gw))`."""
    x = np.transpose(np.asarray(images, np.float64), (0, 3, 1, 2))  # NCHW, as DeiT feeds it
    weight = _get(sd, "patch_embed.proj.weight")  # (E, C, p, p)
    b, c, h, w = x.shape
    gh, gw = h // patch_size, w // patch_size
    out = np.zeros((b, weight.shape[0], gh, gw))
    for i in range(gh):
        for j in range(gw):
            window = x[:, :, i * patch_size:(i + 1) * patch_size, j * patch_size:(j + 1) * patch_size]
            out[:, :, i, j] = np.tensordot(window, weight, axes=([1, 2, 3], [1, 2, 3]))
    out = out + _get(sd, "patch_embed.proj.bias")[None, :, None, None]
    return out.reshape(b, -1, gh * gw).transpose(0, 2, 1), (gh, gw)


def _bilinear_taps(size_in, size_out):
    """Source rows and weights of `F.interpolate(mode="bilinear", align_corners=False)`."""
    src = np.maximum((np.arange(size_out) + 0.5) * size_in / size_out - 0.5, 0.0)
    low = np.minimum(np.floor(src).astype(int), size_in - 1)
    high = np.minimum(low + 1, size_in - 1)
    frac = src - low
    matrix = np.zeros((size_out, size_in))
    matrix[np.arange(size_out), low] += 1 - frac
    matrix[np.arange(size_out), high] += frac
    return matrix


def resample_pos_embed(pos_embed, grid, method):
    """DeiT's `main.py` fine-tuning step on a `(1, 1 + s * s, E)` table: the class row kept,
    the grid rows as `(1, E, s, s)` interpolated to `grid`, flattened back."""
    if method != "bilinear":
        raise ValueError(f"Only the bilinear resize is written here; got {method!r}.")
    extra, tokens = pos_embed[:, :1], pos_embed[:, 1:]
    side = int(round(tokens.shape[1] ** 0.5))
    e = tokens.shape[-1]
    chw = tokens.reshape(side, side, e).transpose(2, 0, 1)  # reshape(-1, s, s, E).permute(0, 3, 1, 2)
    rows, cols = _bilinear_taps(side, grid[0]), _bilinear_taps(side, grid[1])
    resized = np.einsum("yi,eij,xj->eyx", rows, chw, cols)
    tokens = resized.transpose(1, 2, 0).reshape(1, grid[0] * grid[1], e)  # permute(0, 2, 3, 1).flatten(1, 2)
    return np.concatenate([extra, tokens], axis=1)


def forward_tokens(sd, images, patch_size, num_heads, resize=None, attention_masks=None,
                   block_outputs=None):
    """Images `(B, H, W, C)` -> final-norm tokens `(B, 1 + N, E)` in float64.

    `block_outputs`: a list to which each block's output tokens are appended, or None.

    `resize`: None (DeiT's own model: the input must give the table's grid) or
    "bilinear" (see the module docstring). `attention_masks`: per block, a mask for its
    attention weights (see `attention`), or None."""
    x, grid = patch_embed(sd, images, patch_size)
    pos_embed = _get(sd, "pos_embed")
    if pos_embed.shape[1] != 1 + grid[0] * grid[1]:
        if resize is None:
            raise ValueError(
                f"DeiT's model takes the grid its pos_embed was made for ({pos_embed.shape[1] - 1} "
                f"patches), not {grid[0]} x {grid[1]}; pass resize='bilinear' to resample it.")
        pos_embed = resample_pos_embed(pos_embed, grid, resize)
    cls = np.broadcast_to(_get(sd, "cls_token"), (x.shape[0], 1, x.shape[-1]))
    x = np.concatenate([cls, x], axis=1) + pos_embed
    depth = sum(1 for key in sd if key.endswith(".norm1.weight"))
    for i in range(depth):
        p = f"blocks.{i}."
        mask = None if attention_masks is None else attention_masks[i]
        x = x + attention(layer_norm(x, sd, p + "norm1."), sd, p + "attn.", num_heads, mask)
        x = x + mlp(layer_norm(x, sd, p + "norm2."), sd, p + "mlp.")
        if block_outputs is not None:
            block_outputs.append(x)
    return layer_norm(x, sd, "norm.")


def forward(sd, images, patch_size, num_heads, resize=None):
    """Images `(B, H, W, C)` -> logits `(B, classes)` in float64 (the head on token 0)."""
    tokens = forward_tokens(sd, images, patch_size, num_heads, resize)
    return linear(tokens[:, 0], sd, "head.")
