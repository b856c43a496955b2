"""Analytic parameter and FLOP counts of registered models (no model is built).

FLOPs are 2 x the multiply-accumulates of the convolution and matrix products of one
forward pass over one image; normalizations, activations and additions are left out
(they are under 1% of the total). The benchmarks divide measured throughput by
these counts; the README's model table shows them.
"""

from ffzoo.models.registry import model_dims


def _shape(name, image_size, token_mlp_dim):
    dims = model_dims(name)
    size = dims["image_size"] if image_size is None else image_size
    grid = size // dims["patch_size"]
    tokens = 1 + grid * grid
    mlp = int(dims["embed_dim"] * dims["mlp_ratio"])
    if dims["family"] == "ffvit" and token_mlp_dim is None:
        token_mlp_dim = int(tokens * dims["mlp_ratio"])
    return dims, grid, tokens, mlp, token_mlp_dim


def count_params(name, classes=1000, include_top=True, image_size=None, token_mlp_dim=None):
    """Trainable parameters of `create_model(name, ...)` with these arguments."""
    dims, _, tokens, mlp, token_hidden = _shape(name, image_size, token_mlp_dim)
    e, p = dims["embed_dim"], dims["patch_size"]
    params = p * p * 3 * e + e  # patch embedding
    params += 2 * e + dims["pos_grid_size"] ** 2 * e  # class token, its position, grid
    block = 2 * e + e * mlp + mlp + mlp * e + e  # norm + feature FF
    if dims["family"] == "ffvit":
        block += 2 * tokens + tokens * token_hidden + token_hidden + token_hidden * tokens + tokens
    else:  # attention: norm, qkv, projection
        block += 2 * e + 3 * e * e + 3 * e + e * e + e
    params += dims["depth"] * block + 2 * e  # blocks, final norm
    if include_top:
        params += e * classes + classes
    return params


def count_flops(name, image_size=None, token_mlp_dim=None, classes=1000, include_top=True):
    """Forward FLOPs per image (2 x multiply-accumulates) of `create_model(name, ...)`."""
    dims, grid, tokens, mlp, token_hidden = _shape(name, image_size, token_mlp_dim)
    e, p = dims["embed_dim"], dims["patch_size"]
    macs = grid * grid * p * p * 3 * e  # patch embedding
    per_block = tokens * 2 * e * mlp  # feature FF
    if dims["family"] == "ffvit":
        per_block += e * 2 * tokens * token_hidden  # token FF
    else:
        per_block += tokens * 4 * e * e + 2 * tokens * tokens * e  # qkv + proj, QK^T and AV
    macs += dims["depth"] * per_block
    if include_top:
        macs += e * classes
    return 2 * macs


def model_table(names=None):
    """The README's model table (markdown): dims, parameters, GFLOPs, the top-1 that the
    authors of each model's weights report (weights/README.md has the sources)."""
    from ffzoo.models.registry import list_models
    from ffzoo.weights.presets import preset_for_model

    lines = ["| model | family | patch | width | depth | tokens | parameters | GFLOPs / image "
             "| ImageNet top-1 (authors) | published weights |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name in names or list_models():
        dims, _, tokens, _, _ = _shape(name, None, None)
        row = preset_for_model(name)
        top1 = row["top1"] if row and row["top1"] else "—"
        weights = "yes" if row and row["source_url"] else "no"
        family = "FF" if dims["family"] == "ffvit" else "attention"
        lines.append(f"| `{name}` | {family} | {dims['patch_size']} | {dims['embed_dim']} | "
                     f"{dims['depth']} | {tokens} | {count_params(name):,} | "
                     f"{count_flops(name) / 1e9:.2f} | {top1} | {weights} |")
    return "\n".join(lines)

