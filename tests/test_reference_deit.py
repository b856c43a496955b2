"""references/torch_deit against the NumPy DeiT, the published counts and timm's layout."""

import numpy as np
import pytest
import torch

from references import numpy_deit, torch_deit

pytestmark = pytest.mark.once  # PyTorch and NumPy only: the Keras backend plays no part


def _state_numpy(model):
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def _images(seed, size, batch=3):
    return np.random.default_rng(seed).standard_normal((batch, size, size, 3))


def _timm_layout(embed_dim, depth, grid, classes, patch, mlp_ratio=4):
    """The keys and shapes of FAIR's DeiT files (timm's VisionTransformer), in order."""
    e, h = embed_dim, int(embed_dim * mlp_ratio)
    layout = [("cls_token", (1, 1, e)), ("pos_embed", (1, 1 + grid * grid, e)),
              ("patch_embed.proj.weight", (e, 3, patch, patch)), ("patch_embed.proj.bias", (e,))]
    for i in range(depth):
        layout += [(f"blocks.{i}.{name}", shape) for name, shape in [
            ("norm1.weight", (e,)), ("norm1.bias", (e,)),
            ("attn.qkv.weight", (3 * e, e)), ("attn.qkv.bias", (3 * e,)),
            ("attn.proj.weight", (e, e)), ("attn.proj.bias", (e,)),
            ("norm2.weight", (e,)), ("norm2.bias", (e,)),
            ("mlp.fc1.weight", (h, e)), ("mlp.fc1.bias", (h,)),
            ("mlp.fc2.weight", (e, h)), ("mlp.fc2.bias", (e,))]]
    return layout + [("norm.weight", (e,)), ("norm.bias", (e,)),
                     ("head.weight", (classes, e)), ("head.bias", (classes,))]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_logits_match_numpy_deit(dtype, record):
    cfg = torch_deit.TINY_TEST
    model = torch_deit.randomize(torch_deit.tiny_test_model(), seed=3).to(dtype).eval()
    images = _images(0, cfg["image_size"])
    with torch.no_grad():
        x = torch.from_numpy(images.transpose(0, 3, 1, 2)).to(dtype)
        logits = model(x).double().numpy()
        tokens = model.forward_features(x).double().numpy()
    state = _state_numpy(model)
    expected = numpy_deit.forward(state, images, cfg["patch_size"], cfg["num_heads"])
    expected_tokens = numpy_deit.forward_tokens(state, images, cfg["patch_size"], cfg["num_heads"])
    assert expected.std() > 0.3 and np.abs(expected[0] - expected[1]).max() > 0.1  # not trivial
    difference = np.abs(logits - expected).max()
    record(f"torch_deit vs numpy_deit, max logit difference ({dtype})", difference)
    tolerance = 1e-10 if dtype == torch.float64 else 1e-5
    assert difference < tolerance
    assert np.abs(tokens - expected_tokens).max() < tolerance * 10


def test_parameter_counts_are_the_published_ones():
    for name, published in torch_deit.PUBLISHED_PARAMS.items():
        with torch.device("meta"):  # no memory, no init cost
            model = torch_deit.deit(name)
        assert sum(p.numel() for p in model.parameters()) == published, name
        assert torch_deit.parameter_count(**torch_deit.VARIANTS[name]) == published, name


def test_state_dict_has_timm_layout():
    with torch.device("meta"):
        model = torch_deit.deit_tiny_patch16_224()
    got = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert got == _timm_layout(192, 12, 14, 1000, 16)
    assert len(got) == 152
    # The NumPy reference (written separately) names the same tensors with the same shapes.
    cfg = torch_deit.TINY_TEST
    grid = cfg["image_size"] // cfg["patch_size"]
    numpy_state = numpy_deit.random_state_dict(
        np.random.default_rng(0), patch_size=cfg["patch_size"], embed_dim=cfg["embed_dim"],
        depth=cfg["depth"], num_heads=cfg["num_heads"], grid=grid, classes=cfg["num_classes"])
    tiny = torch_deit.tiny_test_model()
    assert {k: tuple(v.shape) for k, v in tiny.state_dict().items()} == {
        k: v.shape for k, v in numpy_state.items()}


def test_randomize_is_seeded_and_moves_every_parameter():
    a = torch_deit.randomize(torch_deit.tiny_test_model(), seed=1).state_dict()
    b = torch_deit.randomize(torch_deit.tiny_test_model(), seed=1).state_dict()
    c = torch_deit.randomize(torch_deit.tiny_test_model(), seed=2).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(not torch.equal(a[k], c[k]) for k in a)
    assert (a["blocks.0.norm1.weight"] - 1).abs().max() > 0.05
    assert a["blocks.1.mlp.fc2.bias"].abs().max() > 0.05


def _cubic_matrix(size_in, size_out, a=-0.75):
    """`F.interpolate(mode="bicubic", align_corners=False)` as a matrix: source
    `(i + 0.5) * in / out - 0.5` (unclamped), 4 taps clamped to the edges."""
    def near(t):  # |t| <= 1
        return ((a + 2) * t - (a + 3)) * t * t + 1

    def far(t):  # 1 < |t| < 2
        return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a

    matrix = np.zeros((size_out, size_in))
    for i in range(size_out):
        src = (i + 0.5) * size_in / size_out - 0.5
        base = int(np.floor(src))
        t = src - base
        for offset, w in zip((-1, 0, 1, 2), (far(t + 1), near(t), near(1 - t), far(2 - t))):
            matrix[i, min(max(base + offset, 0), size_in - 1)] += w
    return matrix


@pytest.mark.parametrize("new_grid", [6, 3])
def test_pos_embed_resampled_bicubically_as_deit_finetunes(new_grid):
    cfg = torch_deit.TINY_TEST
    source = torch_deit.randomize(torch_deit.tiny_test_model(), seed=4).double()
    table = source.pos_embed.detach().numpy()  # (1, 1 + 16, E)
    e = table.shape[-1]
    grid = table[0, 1:].reshape(4, 4, e)
    m = _cubic_matrix(4, new_grid)
    expected_grid = np.einsum("yi,ije,xj->yxe", m, grid, m).reshape(1, new_grid * new_grid, e)
    expected = np.concatenate([table[:, :1], expected_grid], axis=1)
    got = torch_deit.resample_pos_embed(source.pos_embed.detach(), (new_grid, new_grid))
    assert np.abs(got.numpy() - expected).max() < 1e-5  # F.interpolate computes in float32

    # A model built for the new size loads the checkpoint and runs as NumPy DeiT does on it.
    size = new_grid * cfg["patch_size"]
    target = torch_deit.tiny_test_model(image_size=size).double().eval()
    torch_deit.load_state_dict_resampled(target, source.state_dict())
    state = dict(_state_numpy(source), pos_embed=got.numpy())
    images = _images(1, size, batch=2)
    with torch.no_grad():
        logits = target(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
    assert np.abs(logits - numpy_deit.forward(state, images, cfg["patch_size"],
                                              cfg["num_heads"])).max() < 1e-10


def test_checkpoint_has_fair_layout(tmp_path):
    model = torch_deit.randomize(torch_deit.tiny_test_model(), seed=5)
    ema = torch_deit.randomize(torch_deit.tiny_test_model(), seed=6)
    path = tmp_path / "deit.pth"
    torch_deit.save_checkpoint(model, path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert list(checkpoint) == ["model"]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in checkpoint["model"].items())
    torch_deit.save_checkpoint(model, path, ema_model=ema)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert list(checkpoint) == ["model", "model_ema"]
    assert torch.equal(checkpoint["model_ema"]["head.bias"], ema.head.bias)


def test_bad_input_is_a_clear_error():
    model = torch_deit.tiny_test_model()
    with pytest.raises(ValueError, match="does not match the model"):
        model(torch.zeros(1, 3, 48, 48))
    with pytest.raises(ValueError, match="Unknown DeiT variant"):
        torch_deit.deit("deit_huge")
    with pytest.raises(ValueError, match="multiple of num_heads"):
        torch_deit.tiny_test_model(num_heads=5)
