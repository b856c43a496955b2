"""ImageNet class names shipped in the package, `decode_predictions`, and `ffzoo predict`."""

import os

import numpy as np
import pytest
import skimage.data
import tensorflow_datasets
from PIL import Image

import ffzoo
from ffzoo import cli
from ffzoo.imagenet import imagenet_classes


def test_class_ids_are_tfds_imagenet2012_order():
    labels = os.path.join(os.path.dirname(tensorflow_datasets.__file__),
                          "datasets", "imagenet2012", "labels.txt")
    with open(labels) as f:
        tfds_ids = f.read().split()
    ours = [wnid for wnid, _ in imagenet_classes()]
    assert ours == tfds_ids == sorted(tfds_ids)
    assert all(name.strip() for _, name in imagenet_classes())
    assert dict(imagenet_classes())["n02123045"] == "tabby cat"


def test_decode_predictions(rng):
    scores = rng.random((3, 1000))
    decoded = ffzoo.decode_predictions(scores, top=4)
    names = imagenet_classes()
    for row, result in zip(scores, decoded):
        best = np.argsort(-row)[:4]
        assert [r[0] for r in result] == [names[i][0] for i in best]
        assert [r[1] for r in result] == [names[i][1] for i in best]
        np.testing.assert_allclose([r[2] for r in result], row[best])


@pytest.mark.parametrize("scores,top,message", [
    (np.zeros((2, 10)), 5, r"shape \(batch, 1000\); got shape \(2, 10\)"),
    (np.zeros(1000), 5, "got shape"),
    (np.zeros((1, 1000)), 0, "top must be in 1..1000"),
])
def test_decode_predictions_errors(scores, top, message):
    with pytest.raises(ValueError, match=message):
        ffzoo.decode_predictions(scores, top=top)


def test_predict_command(tmp_path, capsys):
    model = ffzoo.FFViTTiny()
    rng = np.random.default_rng(3)
    model.set_weights([rng.standard_normal(w.shape).astype("float32") * 0.05 for w in model.weights])
    weights = tmp_path / "tiny.weights.h5"
    model.save_weights(str(weights))
    photo = tmp_path / "cat.jpg"
    Image.fromarray(skimage.data.chelsea()).save(photo, quality=92)
    assert cli.main(["predict", str(photo), "--model", "ffvit_tiny_patch16_224",
                     "--weights", str(weights), "--top", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == str(photo) and len(lines) == 4
    pixels = np.asarray(Image.open(photo).convert("RGB"))
    probabilities = model.predict(ffzoo.preprocess_image(pixels)[None], verbose=0)
    want = ffzoo.decode_predictions(probabilities, top=3)[0]
    for line, (wnid, name, score) in zip(lines[1:], want):
        assert wnid in line and name in line and f"{score:.4f}" in line


def test_predict_command_unreadable_image(tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    assert cli.main(["predict", str(bad), "--model", "ffvit_tiny_patch16_224", "--weights",
                     str(tmp_path / "missing.weights.h5")]) == 2
    assert "cannot read" in capsys.readouterr().err
