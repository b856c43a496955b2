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


MLP_FAMILIES = ("mixer", "resmlp", "gmlp")


def _mlp_counts(dims, image_size, classes, include_top):
    """(parameters, forward multiply-accumulates) of an all-MLP model (no class token)."""
    e, p = dims["embed_dim"], dims["patch_size"]
    size = dims["image_size"] if image_size is None else image_size
    n = (size // p) ** 2
    params = p * p * 3 * e + e
    macs = n * p * p * 3 * e
    family = dims["family"]
    if family == "mixer":
        dt, dc = dims["tokens_mlp_dim"], dims["channels_mlp_dim"]
        block = 4 * e + (n * dt + dt + dt * n + n) + (e * dc + dc + dc * e + e)
        block_macs = e * 2 * n * dt + n * 2 * e * dc
    elif family == "resmlp":
        h = int(e * dims["mlp_ratio"])
        block = 2 * e + 4 * e + (n * n + n) + (e * h + h + h * e + e)
        block_macs = e * n * n + n * 2 * e * h
    else:  # gmlp
        h = int(e * dims["mlp_ratio"])
        block = 2 * e + (e * h + h) + h + (n * n + n) + (h // 2 * e + e)
        block_macs = n * e * h + (h // 2) * n * n + n * (h // 2) * e
    params += dims["depth"] * block + 2 * e
    macs += dims["depth"] * block_macs
    if include_top:
        params += e * classes + classes
        macs += e * classes
    return params, macs


def count_params(name, classes=1000, include_top=True, image_size=None, token_mlp_dim=None):
    """Trainable parameters of `create_model(name, ...)` with these arguments."""
    if model_dims(name)["family"] in MLP_FAMILIES:
        return _mlp_counts(model_dims(name), image_size, classes, include_top)[0]
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
    if model_dims(name)["family"] in MLP_FAMILIES:
        return 2 * _mlp_counts(model_dims(name), image_size, classes, include_top)[1]
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


FAMILY_LABELS = {"ffvit": "FF", "deit": "attention", "mixer": "MLP-Mixer", "resmlp": "ResMLP",
                 "gmlp": "gMLP"}


def model_table(names=None):
    """The README's model table (markdown): dims, parameters, GFLOPs, the top-1 that the
    authors of each model's weights report (weights/README.md has the sources)."""
    from ffzoo.models.registry import list_models
    from ffzoo.weights.presets import preset_for_model

    lines = ["| model | family | patch | width | depth | tokens | parameters | GFLOPs / image "
             "| ImageNet top-1 (authors) | published weights |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name in names or list_models():
        dims = model_dims(name)
        if dims["family"] in MLP_FAMILIES:
            tokens = (dims["image_size"] // dims["patch_size"]) ** 2
        else:
            dims, _, tokens, _, _ = _shape(name, None, None)
        row = preset_for_model(name)
        top1 = row["top1"] if row and row["top1"] else "—"
        weights = "yes" if row and row["source_url"] else "no"
        family = FAMILY_LABELS[dims["family"]]
        lines.append(f"| `{name}` | {family} | {dims['patch_size']} | {dims['embed_dim']} | "
                     f"{dims['depth']} | {tokens} | {count_params(name):,} | "
                     f"{count_flops(name) / 1e9:.2f} | {top1} | {weights} |")
    return "\n".join(lines)

