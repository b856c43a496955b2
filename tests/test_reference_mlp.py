"""The MLP references (numpy_mixer, torch_resmlp, torch_gmlp) against formulations written
here another way, the published parameter counts and the authors' file layouts."""

import zipfile

import numpy as np
import pytest
import torch
from scipy.special import erf
from torch.nn import functional as F

from references import numpy_mixer, torch_gmlp, torch_resmlp

pytestmark = pytest.mark.once  # NumPy and PyTorch only: the Keras backend plays no part


def _images(seed, size, batch=3, layout="nhwc"):
    images = np.random.default_rng(seed).standard_normal((batch, size, size, 3))
    return images if layout == "nhwc" else images.transpose(0, 3, 1, 2)


def _state_numpy(model):
    return {k: v.detach().cpu().numpy().astype(np.float64) for k, v in model.state_dict().items()}


def _patches_nhwc(images, p):
    """(B, H, W, C) -> (B, N, p * p * C), each patch flattened as (row, column, channel)."""
    b, h, w, c = images.shape
    x = images.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def _patches_nchw(images, p):
    """(B, C, H, W) -> (B, N, C * p * p), each patch flattened as (channel, row, column)."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // p, p, w // p, p).transpose(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // p) * (w // p), c * p * p)


def _norm(x, eps):
    return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)


def _gelu_erf(x):
    return x * 0.5 * (1.0 + erf(x * 0.7071067811865476))


# ---------------------------------------------------------------- MLP-Mixer (Google, Flax)


def _mixer_tiny_params(seed=0, **overrides):
    cfg = dict(numpy_mixer.TINY_TEST, **overrides)
    cfg.pop("image_size")
    return numpy_mixer.random_params(seed, image_size=numpy_mixer.TINY_TEST["image_size"], **cfg)


def _mixer_einsum(params, images):
    """Mixer written from the paper's equations: patches as one matrix product, the token
    MLP as einsums over the token axis (no transposes), the tanh GELU as
    x * sigmoid(2 sqrt(2 / pi) (x + 0.044715 x^3))."""
    def gelu(x):
        return x / (1.0 + np.exp(-1.5957691216057308 * (x + 0.044715 * x ** 3)))

    def ln(x, name):
        return _norm(x, 1e-6) * params[name + "/scale"] + params[name + "/bias"]

    kernel = params["stem/kernel"]
    p, e = kernel.shape[0], kernel.shape[-1]
    x = _patches_nhwc(images, p) @ kernel.reshape(-1, e) + params["stem/bias"]
    i = 0
    while f"MixerBlock_{i}/LayerNorm_0/scale" in params:
        t = f"MixerBlock_{i}/token_mixing/"
        h = np.einsum("bnc,nk->bkc", ln(x, f"MixerBlock_{i}/LayerNorm_0"), params[t + "Dense_0/kernel"])
        h = gelu(h + params[t + "Dense_0/bias"][:, None])
        x = x + np.einsum("bkc,kn->bnc", h, params[t + "Dense_1/kernel"]) + params[t + "Dense_1/bias"][:, None]
        c = f"MixerBlock_{i}/channel_mixing/"
        h = gelu(ln(x, f"MixerBlock_{i}/LayerNorm_1") @ params[c + "Dense_0/kernel"] + params[c + "Dense_0/bias"])
        x = x + h @ params[c + "Dense_1/kernel"] + params[c + "Dense_1/bias"]
        i += 1
    pooled = ln(x, "pre_head_layer_norm").sum(axis=1) / x.shape[1]
    return pooled @ params["head/kernel"] + params["head/bias"]


def test_mixer_matches_an_einsum_formulation(record):
    params = {k: v.astype(np.float64) for k, v in _mixer_tiny_params(seed=1).items()}
    images = _images(0, numpy_mixer.TINY_TEST["image_size"])
    logits = numpy_mixer.forward(params, images)
    assert logits.shape == (3, numpy_mixer.TINY_TEST["num_classes"])
    assert logits.std() > 0.1 and np.abs(logits[0] - logits[1]).max() > 0.1  # not trivial
    difference = np.abs(logits - _mixer_einsum(params, images)).max()
    record("numpy_mixer vs einsum Mixer, max logit difference (float64)", difference)
    assert difference < 1e-12
    # The float32 file parameters give the same logits (the reference computes in float64).
    float32 = numpy_mixer.forward(_mixer_tiny_params(seed=1), images)
    assert np.abs(float32 - logits).max() < 1e-12


def test_mixer_gelu_is_jax_default_tanh_form(record):
    x = np.linspace(-6, 6, 2001)
    tanh = numpy_mixer.jax_gelu(x)
    exact = numpy_mixer.jax_gelu(x, approximate=False)
    t = torch.from_numpy(x)
    assert np.abs(tanh - F.gelu(t, approximate="tanh").numpy()).max() < 1e-14
    assert np.abs(exact - F.gelu(t).numpy()).max() < 1e-14
    assert np.abs(tanh - exact).max() > 1e-4  # the two forms really differ
    # ... and enough to show in the logits of a tiny model: the choice must be Flax's.
    params = _mixer_tiny_params(seed=2)
    images = _images(1, numpy_mixer.TINY_TEST["image_size"])
    gap = np.abs(numpy_mixer.forward(params, images) -
                 numpy_mixer.forward(params, images, gelu="erf")).max()
    record("numpy_mixer tiny, max logit difference tanh vs erf GELU", gap)
    assert gap > 1e-5


def _mixer_keys_written_out(blocks, n, c, dt, dc, classes, p):
    """Google's Linen parameter paths, written out by hand."""
    keys = [("stem/kernel", (p, p, 3, c)), ("stem/bias", (c,))]
    for i in range(blocks):
        keys += [
            (f"MixerBlock_{i}/LayerNorm_0/scale", (c,)),
            (f"MixerBlock_{i}/LayerNorm_0/bias", (c,)),
            (f"MixerBlock_{i}/token_mixing/Dense_0/kernel", (n, dt)),
            (f"MixerBlock_{i}/token_mixing/Dense_0/bias", (dt,)),
            (f"MixerBlock_{i}/token_mixing/Dense_1/kernel", (dt, n)),
            (f"MixerBlock_{i}/token_mixing/Dense_1/bias", (n,)),
            (f"MixerBlock_{i}/LayerNorm_1/scale", (c,)),
            (f"MixerBlock_{i}/LayerNorm_1/bias", (c,)),
            (f"MixerBlock_{i}/channel_mixing/Dense_0/kernel", (c, dc)),
            (f"MixerBlock_{i}/channel_mixing/Dense_0/bias", (dc,)),
            (f"MixerBlock_{i}/channel_mixing/Dense_1/kernel", (dc, c)),
            (f"MixerBlock_{i}/channel_mixing/Dense_1/bias", (c,)),
        ]
    return keys + [("pre_head_layer_norm/scale", (c,)), ("pre_head_layer_norm/bias", (c,)),
                   ("head/kernel", (c, classes)), ("head/bias", (classes,))]


def test_mixer_layout_and_counts_are_googles():
    layout = numpy_mixer.param_layout(**numpy_mixer.config("mixer_b16_224"))
    assert layout == _mixer_keys_written_out(12, 196, 768, 384, 3072, 1000, 16)
    assert len(layout) == 2 + 12 * 12 + 4
    large = numpy_mixer.param_layout(**numpy_mixer.VARIANTS["mixer_l16_224"])
    assert large == _mixer_keys_written_out(24, 196, 1024, 512, 4096, 1000, 16)
    for name, published in numpy_mixer.PUBLISHED_PARAMS.items():
        cfg = numpy_mixer.VARIANTS[name]
        assert numpy_mixer.parameter_count(**cfg) == published, name
        assert sum(int(np.prod(s)) for _, s in numpy_mixer.param_layout(**cfg)) == published, name
    # The ImageNet-21k heads (21,843 classes) change only the head.
    assert numpy_mixer.parameter_count(**numpy_mixer.VARIANTS["mixer_b16_224"], num_classes=21843) \
        == 59_880_472 + 768 * 20843 + 20843
    params = _mixer_tiny_params()
    assert [(k, v.shape) for k, v in params.items()] == _mixer_keys_written_out(2, 16, 24, 12, 40, 10, 8)
    assert all(v.dtype == np.float32 for v in params.values())


def test_mixer_npz_round_trip(tmp_path):
    params = _mixer_tiny_params(seed=3)
    path = tmp_path / "Mixer-tiny.npz"
    numpy_mixer.save_npz(params, path)
    with zipfile.ZipFile(path) as archive:  # one .npy member per "/"-joined path
        assert sorted(archive.namelist()) == sorted(k + ".npy" for k in params)
    loaded = numpy_mixer.load_npz(path)
    assert list(loaded) == list(params)
    assert all(loaded[k].dtype == np.float32 and np.array_equal(loaded[k], v) for k, v in params.items())
    images = _images(2, numpy_mixer.TINY_TEST["image_size"], batch=2)
    assert np.array_equal(numpy_mixer.forward(loaded, images), numpy_mixer.forward(params, images))


def test_mixer_random_params_are_seeded():
    a, b, c = _mixer_tiny_params(seed=4), _mixer_tiny_params(seed=4), _mixer_tiny_params(seed=5)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert all(not np.array_equal(a[k], c[k]) for k in a)
    assert np.abs(a["MixerBlock_1/LayerNorm_1/scale"] - 1).max() > 0.05
    assert np.abs(a["head/bias"]).max() > 0.05


def test_mixer_bad_input_is_a_clear_error():
    params = _mixer_tiny_params()
    with pytest.raises(ValueError, match="not a multiple of the patch size"):
        numpy_mixer.forward(params, np.zeros((1, 36, 36, 3)))
    with pytest.raises(ValueError, match="token-mixing weights take 16"):
        numpy_mixer.forward(params, np.zeros((1, 40, 40, 3)))
    with pytest.raises(ValueError, match="gelu must be"):
        numpy_mixer.forward(params, np.zeros((1, 32, 32, 3)), gelu="relu")
    with pytest.raises(ValueError, match=r"\(batch, height, width, 3\)"):
        numpy_mixer.forward(params, np.zeros((1, 32, 32)))
    with pytest.raises(ValueError, match="Unknown Mixer variant"):
        numpy_mixer.config("mixer_h14_224")
    del params["MixerBlock_1/LayerNorm_0/bias"]
    with pytest.raises(KeyError, match="MixerBlock_1/LayerNorm_0/bias"):
        numpy_mixer.forward(params, np.zeros((1, 32, 32, 3)))


# ---------------------------------------------------------------- ResMLP (FAIR)


def _resmlp_numpy(sd, images):
    """ResMLP from the paper's equations on FAIR's state dict: the token mixer as
    A @ X over the patch axis, Affine as a broadcast multiply-add."""
    w = sd["patch_embed.proj.weight"]
    x = _patches_nchw(images, w.shape[-1]) @ w.reshape(w.shape[0], -1).T + sd["patch_embed.proj.bias"]
    i = 0
    while f"blocks.{i}.gamma_1" in sd:
        b = f"blocks.{i}."
        h = x * sd[b + "norm1.alpha"] + sd[b + "norm1.beta"]
        mixed = np.einsum("mn,bnc->bmc", sd[b + "attn.weight"], h) + sd[b + "attn.bias"][:, None]
        x = x + sd[b + "gamma_1"] * mixed
        h = x * sd[b + "norm2.alpha"] + sd[b + "norm2.beta"]
        h = _gelu_erf(h @ sd[b + "mlp.fc1.weight"].T + sd[b + "mlp.fc1.bias"])
        x = x + sd[b + "gamma_2"] * (h @ sd[b + "mlp.fc2.weight"].T + sd[b + "mlp.fc2.bias"])
        i += 1
    pooled = (x * sd["norm.alpha"] + sd["norm.beta"]).mean(axis=1)
    return pooled @ sd["head.weight"].T + sd["head.bias"]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_resmlp_matches_numpy(dtype, record):
    model = torch_resmlp.randomize(torch_resmlp.tiny_test_model(), seed=1).to(dtype).eval()
    images = _images(0, torch_resmlp.TINY_TEST["image_size"], layout="nchw")
    with torch.no_grad():
        logits = model(torch.from_numpy(images).to(dtype)).double().numpy()
    expected = _resmlp_numpy(_state_numpy(model), images)
    assert expected.std() > 0.3 and np.abs(expected[0] - expected[1]).max() > 0.1  # not trivial
    difference = np.abs(logits - expected).max()
    record(f"torch_resmlp vs numpy ResMLP, max logit difference ({dtype})", difference)
    assert difference < (1e-11 if dtype == torch.float64 else 1e-5)


def _fair_resmlp_layout(e, depth, n, classes, p):
    layout = [("patch_embed.proj.weight", (e, 3, p, p)), ("patch_embed.proj.bias", (e,))]
    for i in range(depth):
        layout += [(f"blocks.{i}.{name}", shape) for name, shape in [
            ("gamma_1", (e,)), ("gamma_2", (e,)),
            ("norm1.alpha", (e,)), ("norm1.beta", (e,)),
            ("attn.weight", (n, n)), ("attn.bias", (n,)),
            ("norm2.alpha", (e,)), ("norm2.beta", (e,)),
            ("mlp.fc1.weight", (4 * e, e)), ("mlp.fc1.bias", (4 * e,)),
            ("mlp.fc2.weight", (e, 4 * e)), ("mlp.fc2.bias", (e,))]]
    return layout + [("norm.alpha", (e,)), ("norm.beta", (e,)),
                     ("head.weight", (classes, e)), ("head.bias", (classes,))]


def test_resmlp_layout_and_counts_are_fairs():
    with torch.device("meta"):
        s12, big = torch_resmlp.resmlp("resmlp_12_224"), torch_resmlp.resmlp("resmlp_big_24_224")
    assert [(k, tuple(v.shape)) for k, v in s12.state_dict().items()] == _fair_resmlp_layout(384, 12, 196, 1000, 16)
    assert [(k, tuple(v.shape)) for k, v in big.state_dict().items()] == _fair_resmlp_layout(768, 24, 784, 1000, 8)
    for name, published in torch_resmlp.PUBLISHED_PARAMS.items():
        with torch.device("meta"):
            model = torch_resmlp.resmlp(name)
        assert sum(p.numel() for p in model.parameters()) == published, name
        assert torch_resmlp.parameter_count(**torch_resmlp.VARIANTS[name]) == published, name


def test_resmlp_init_is_fairs():
    model = torch_resmlp.tiny_test_model(init_scale=1e-5)
    block = model.blocks[1]
    assert torch.equal(block.gamma_1, torch.full((24,), 1e-5)) and torch.equal(block.gamma_2, block.gamma_1)
    assert torch.equal(block.norm1.alpha, torch.ones(24)) and torch.equal(model.norm.beta, torch.zeros(24))
    assert torch.equal(block.attn.bias, torch.zeros(16))
    assert 0.015 < block.mlp.fc1.weight.std().item() < 0.025  # truncated normal std 0.02
    rates = [b.drop_path.rate for b in torch_resmlp.tiny_test_model(drop_path_rate=0.1).blocks]
    assert rates == [0.1, 0.1]  # FAIR: the same rate in every block


def test_resmlp_checkpoint_is_a_bare_state_dict(tmp_path):
    model = torch_resmlp.randomize(torch_resmlp.tiny_test_model(), seed=2).eval()
    path = tmp_path / "resmlp_tiny_no_dist.pth"
    torch_resmlp.save_checkpoint(model, path)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert list(raw) == [k for k, _ in _fair_resmlp_layout(24, 2, 16, 10, 8)]
    state = torch_resmlp.load_checkpoint(path)
    fresh = torch_resmlp.tiny_test_model().eval()
    fresh.load_state_dict(state)  # strict
    x = torch.from_numpy(_images(3, 32, batch=2, layout="nchw")).float()
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))
    torch.save({"model": model.state_dict()}, path)  # DeiT's container is not ResMLP's
    with pytest.raises(ValueError, match="not a FAIR ResMLP state dict"):
        torch_resmlp.load_checkpoint(path)


def test_resmlp_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="does not match the model"):
        torch_resmlp.tiny_test_model()(torch.zeros(1, 3, 48, 48))
    with pytest.raises(ValueError, match="Unknown ResMLP variant"):
        torch_resmlp.resmlp("resmlp_48_224")
    with pytest.raises(ValueError, match="not a multiple of patch_size"):
        torch_resmlp.tiny_test_model(image_size=36)


# ---------------------------------------------------------------- gMLP (timm's weights)


def _gmlp_numpy(sd, images):
    """gMLP from the paper's equations on timm's state dict: Z = fc1 GELU, split
    Z = [U, V] at half the width, s(Z) = U * (W @ norm(V) + b) over the patch axis."""
    w = sd["stem.proj.weight"]
    x = _patches_nchw(images, w.shape[-1]) @ w.reshape(w.shape[0], -1).T + sd["stem.proj.bias"]
    i = 0
    while f"blocks.{i}.norm.weight" in sd:
        b = f"blocks.{i}."
        m = b + "mlp_channels."
        z = _norm(x, 1e-6) * sd[b + "norm.weight"] + sd[b + "norm.bias"]
        z = _gelu_erf(z @ sd[m + "fc1.weight"].T + sd[m + "fc1.bias"])
        half = z.shape[-1] // 2
        u, v = z[..., :half], z[..., half:]
        v = _norm(v, 1e-5) * sd[m + "gate.norm.weight"] + sd[m + "gate.norm.bias"]
        v = np.einsum("mn,bnc->bmc", sd[m + "gate.proj.weight"], v) + sd[m + "gate.proj.bias"][:, None]
        x = x + (u * v) @ sd[m + "fc2.weight"].T + sd[m + "fc2.bias"]
        i += 1
    pooled = (_norm(x, 1e-6) * sd["norm.weight"] + sd["norm.bias"]).mean(axis=1)
    return pooled @ sd["head.weight"].T + sd["head.bias"]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gmlp_matches_numpy(dtype, record):
    model = torch_gmlp.randomize(torch_gmlp.tiny_test_model(), seed=1).to(dtype).eval()
    images = _images(0, torch_gmlp.TINY_TEST["image_size"], layout="nchw")
    with torch.no_grad():
        logits = model(torch.from_numpy(images).to(dtype)).double().numpy()
    expected = _gmlp_numpy(_state_numpy(model), images)
    assert expected.std() > 0.3 and np.abs(expected[0] - expected[1]).max() > 0.1  # not trivial
    difference = np.abs(logits - expected).max()
    record(f"torch_gmlp vs numpy gMLP, max logit difference ({dtype})", difference)
    assert difference < (1e-11 if dtype == torch.float64 else 1e-5)


def _timm_gmlp_layout(e, depth, n, classes, p, ratio=6):
    h = e * ratio
    layout = [("stem.proj.weight", (e, 3, p, p)), ("stem.proj.bias", (e,))]
    for i in range(depth):
        layout += [(f"blocks.{i}.{name}", shape) for name, shape in [
            ("norm.weight", (e,)), ("norm.bias", (e,)),
            ("mlp_channels.fc1.weight", (h, e)), ("mlp_channels.fc1.bias", (h,)),
            ("mlp_channels.gate.norm.weight", (h // 2,)), ("mlp_channels.gate.norm.bias", (h // 2,)),
            ("mlp_channels.gate.proj.weight", (n, n)), ("mlp_channels.gate.proj.bias", (n,)),
            ("mlp_channels.fc2.weight", (e, h // 2)), ("mlp_channels.fc2.bias", (e,))]]
    return layout + [("norm.weight", (e,)), ("norm.bias", (e,)),
                     ("head.weight", (classes, e)), ("head.bias", (classes,))]


def test_gmlp_layout_and_counts_are_timms():
    with torch.device("meta"):
        small = torch_gmlp.gmlp("gmlp_s16_224")
    assert [(k, tuple(v.shape)) for k, v in small.state_dict().items()] == _timm_gmlp_layout(256, 30, 196, 1000, 16)
    for name, published in torch_gmlp.PUBLISHED_PARAMS.items():
        with torch.device("meta"):
            model = torch_gmlp.gmlp(name)
        assert sum(p.numel() for p in model.parameters()) == published, name
        assert torch_gmlp.parameter_count(**torch_gmlp.VARIANTS[name]) == published, name


def test_gmlp_init_and_epsilons_are_timms():
    torch.manual_seed(0)
    model = torch_gmlp.gmlp("gmlp_ti16_224", depth=2)
    block = model.blocks[0]
    gate = block.mlp_channels.gate
    assert 0.9e-6 < gate.proj.weight.std().item() < 1.1e-6  # normal, std 1e-6
    assert torch.equal(gate.proj.bias, torch.ones(196))
    assert 0 < block.mlp_channels.fc1.bias.abs().max().item() < 1e-5  # normal, std 1e-6
    assert not model.head.weight.any() and not model.head.bias.any()
    bound = (6 / (128 + 768)) ** 0.5  # xavier-uniform on fc1 (768 x 128)
    assert 0.9 * bound < block.mlp_channels.fc1.weight.abs().max().item() <= bound
    stem = model.stem.proj.weight
    assert stem.abs().max().item() <= 2 * (1 / 768) ** 0.5 / 0.87962566103423978 + 1e-7
    assert abs(stem.std().item() - (1 / 768) ** 0.5) < 0.1 * (1 / 768) ** 0.5  # lecun normal
    assert (block.norm.eps, gate.norm.eps, model.norm.eps) == (1e-6, 1e-5, 1e-6)


def test_gmlp_safetensors_round_trip_reads_without_torch(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    from safetensors.torch import load_file

    model = torch_gmlp.randomize(torch_gmlp.tiny_test_model(), seed=2).eval()
    path = tmp_path / "model.safetensors"
    torch_gmlp.save_safetensors(model, path)
    arrays = safetensors_numpy.load_file(str(path))  # NumPy only
    expected = _timm_gmlp_layout(24, 2, 16, 10, 8)
    assert sorted((k, v.shape) for k, v in arrays.items()) == sorted(expected)
    state = model.state_dict()
    assert all(v.dtype == np.float32 and np.array_equal(v, state[k].numpy()) for k, v in arrays.items())
    fresh = torch_gmlp.tiny_test_model().eval()
    fresh.load_state_dict(load_file(str(path)))  # strict
    x = torch.from_numpy(_images(3, 32, batch=2, layout="nchw")).float()
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))


def test_gmlp_pth_is_a_bare_state_dict(tmp_path):
    model = torch_gmlp.randomize(torch_gmlp.tiny_test_model(), seed=3)
    path = tmp_path / "gmlp_tiny.pth"
    torch_gmlp.save_checkpoint(model, path)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert list(raw) == [k for k, _ in _timm_gmlp_layout(24, 2, 16, 10, 8)]
    assert torch.equal(raw["blocks.1.mlp_channels.gate.proj.weight"],
                       model.blocks[1].mlp_channels.gate.proj.weight)


def test_randomize_is_seeded_for_both_torch_references():
    for module in (torch_resmlp, torch_gmlp):
        a = module.randomize(module.tiny_test_model(), seed=1).state_dict()
        b = module.randomize(module.tiny_test_model(), seed=1).state_dict()
        c = module.randomize(module.tiny_test_model(), seed=2).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), module.__name__
        assert all(not torch.equal(a[k], c[k]) for k in a), module.__name__


def test_gmlp_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="does not match the model"):
        torch_gmlp.tiny_test_model()(torch.zeros(1, 3, 48, 48))
    with pytest.raises(ValueError, match="Unknown gMLP variant"):
        torch_gmlp.gmlp("gmlp_l16_224")
    with pytest.raises(ValueError, match="must be even"):
        torch_gmlp.tiny_test_model(embed_dim=5, mlp_ratio=3)
