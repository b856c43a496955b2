"""The command line and the weights tooling."""

import os

import numpy as np
import pytest
import torch

import ffzoo
from ffzoo import cli
from tests.conftest import ROOT
from references import torch_ffvit
from weights import tools


@pytest.fixture(scope="module")
def finetuned_checkpoint(tmp_path_factory):
    """A FF-Tiny fine-tuned to 10 classes, saved by DeiT with an EMA copy."""
    reference = torch_ffvit.perturb(torch_ffvit.FFViT(num_classes=10), seed=5).eval()
    path = tmp_path_factory.mktemp("cli") / "finetuned.pth"
    torch_ffvit.save_deit_checkpoint(reference, path)
    return path, reference


def test_convert_command(finetuned_checkpoint, tmp_path, capsys, rng):
    path, reference = finetuned_checkpoint
    target = tmp_path / "tiny10.weights.h5"
    assert cli.main(["convert", str(path), str(target), "--model", "ffvit_tiny_patch16_224"]) == 0
    params = ffzoo.count_params("ffvit_tiny_patch16_224", classes=10)
    assert f"converted 153 tensors ({params:,} parameters, entry 'model')" in capsys.readouterr().out
    model = ffzoo.FFViTTiny(weights=str(target), classes=10, classifier_activation=None)
    images = rng.standard_normal((2, 224, 224, 3)).astype("float32")
    with torch.no_grad():
        want = reference(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
    np.testing.assert_allclose(model.predict(images, verbose=0), want, atol=1e-4)


def test_convert_command_errors(finetuned_checkpoint, tmp_path, capsys):
    path, _ = finetuned_checkpoint
    assert cli.main(["convert", str(path), str(tmp_path / "x.weights.h5"),
                     "--model", "ffvit_base_patch16_224"]) == 2
    assert "shape mismatches" in capsys.readouterr().err
    assert not (tmp_path / "x.weights.h5").exists()
    with pytest.raises(SystemExit, match="must end in .weights.h5"):
        cli.main(["convert", str(path), str(tmp_path / "x.h5"), "--model", "ffvit_tiny_patch16_224"])


def test_models_command(capsys):
    assert cli.main(["models", "ffvit_*"]) == 0
    out = capsys.readouterr().out
    assert "ffvit_base_patch16_224" in out and "61,943,020" in out and "74.9% top-1" in out
    assert "ffvit_large_patch32_224" in out and "none" in out


@pytest.mark.once
def test_weights_readme_table_is_generated_from_the_pretrained_configs():
    current = tools.README.read_text()
    assert tools.readme_with_table(current, ffzoo.weights.list_presets()) == current, (
        "weights/README.md is stale: run python -m weights.tools table")
    for row in ffzoo.weights.list_presets():
        assert f"| `{row['name']}` | `{row['model']}` | `{row['source_format']}` | {row['top1'] or '—'}" in current


def test_hash_and_verify_tools(finetuned_checkpoint, tmp_path, monkeypatch, capsys):
    path, reference = finetuned_checkpoint
    monkeypatch.setitem(ffzoo.weights.preset_for_model("ffvit_tiny_patch16_224"), "classes", 10)
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    original = (tools.MODELS_DIR / "ffvit.py").read_text()
    (models_dir / "ffvit.py").write_text(original)
    monkeypatch.setattr(tools, "MODELS_DIR", models_dir)
    monkeypatch.setattr(tools, "README", tmp_path / "README.md")
    tools.README.write_text(f"x\n{tools.BEGIN}\n{tools.END}\ny\n")
    tools.main(["hash", "ffvit_tiny_patch16_224.in1k", str(path)])
    digest = ffzoo.weights.download.sha256_of(path)
    written = (models_dir / "ffvit.py").read_text()
    assert written.count(f'sha256="{digest}"') == 1 and written.count("sha256=None") == original.count("sha256=None") - 1
    tiny_row = written[written.index('name="ffvit_tiny_patch16_224.in1k"'):written.index('name="ffvit_base_patch16_224.in1k"')]
    assert f'sha256="{digest}"' in tiny_row
    assert f"`{digest[:16]}…`" in tools.README.read_text()
    tools.main(["verify", "ffvit_tiny_patch16_224.in1k", str(path)])
    assert "max |logit difference| vs the reference" in capsys.readouterr().out


def test_readme_model_table_is_generated_from_the_counters():
    import ffzoo

    readme = open(os.path.join(ROOT, "README.md")).read()
    section = readme.split("<!-- models table: begin -->")[1].split("<!-- models table: end -->")[0]
    assert section.strip() == ffzoo.complexity.model_table().strip(), (
        "README.md's model table is stale: run ffzoo models --markdown")
    for name in ffzoo.list_models():
        assert f"| `{name}` |" in section
