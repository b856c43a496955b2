"""Image folders as a user has them: `train/` + `val/` or `validation/` folders, or one
folder of class folders (split off a seeded validation part); a missing split, a name
that is neither a folder nor a TFDS dataset, skipped-file reports, hidden files,
upper-case extensions and empty class folders. Folders of small generated JPEGs in
tmp_path; nothing touches the network. The data pipeline is TensorFlow whatever the
Keras backend, so every test runs once.
"""

import io
import os
import warnings

import keras
import numpy as np
import pytest
from PIL import Image

import ffzoo.data as fd

pytestmark = pytest.mark.once


def _jpeg(rng, size=(12, 16)):
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _folder(root, counts, rng, split=None):
    """`root[/split]/<class>/<class>_<i>.jpg` for `counts = {class: images}`; the paths."""
    paths = []
    for name, count in counts.items():
        folder = os.path.join(root, *([split] if split else []), name)
        os.makedirs(folder, exist_ok=True)
        for i in range(count):
            paths.append(os.path.join(folder, f"{name}_{i}.jpg"))
            with open(paths[-1], "wb") as f:
                f.write(_jpeg(rng))
    return paths


def _labels(pipeline):
    return np.concatenate([y.numpy() for _, y in pipeline.dataset])


def _one_line_error(call, error=fd.DataSourceError):
    with pytest.raises(error) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message and len(message) < 400, message
    return message


# ------------------------------------------------------------------------- split folders


@pytest.mark.parametrize("train_folder,val_folder", [("train", "val"), ("train", "validation"),
                                                     ("Train", "Valid")])
def test_val_and_validation_name_the_same_folder(tmp_path, rng, train_folder, val_folder):
    train = _folder(tmp_path, {"a": 3, "b": 2}, rng, train_folder)
    val = _folder(tmp_path, {"a": 1, "b": 2}, rng, val_folder)
    assert fd.load(str(tmp_path), "train", training=False, batch_size=4, image_size=8).source.files == train
    for split in ("val", "validation", "valid"):  # training evaluates "validation" by default
        pipe = fd.load(str(tmp_path), split, batch_size=4, image_size=8, seed=0)
        assert pipe.source.files == val and pipe.source.part is None
        assert pipe.class_names == ["a", "b"] and _labels(pipe).tolist() == [0, 1, 1]
    # the split folder itself, named as the split
    assert fd.ImageFolder(tmp_path / val_folder, "validation").files == val


# ------------------------------------------------------------- a folder of class folders


COUNTS = {"a": 10, "b": 5, "c": 1, "d": 2, "e": 0}
# round(n * 0.2) of each class, at least 1 of two or more, never the last: a 2, b 1, c 0, d 1
HELD_OUT = {"a": 2, "b": 1, "c": 0, "d": 1, "e": 0}


def test_class_folders_split_off_a_seeded_stratified_val_part(tmp_path, rng, capsys):
    files = _folder(tmp_path, COUNTS, rng)
    with pytest.warns(UserWarning, match=r"1 class folder\(s\) of .* hold no images: e"):
        train = fd.load(str(tmp_path), "train", training=False, batch_size=4, image_size=8, seed=3)
    with pytest.warns(UserWarning, match="hold no images: e"):
        val = fd.load(str(tmp_path), "validation", batch_size=4, image_size=8)
    line = (f"ffzoo.data: {tmp_path} has class folders but no train/ or val/ folder: split per class "
            "into 14 train and 4 val images (val_fraction 0.2, split_seed 0).")
    assert capsys.readouterr().out.splitlines() == [line]  # said once for both pipelines
    assert train.class_names == val.class_names == list(COUNTS)
    train_files, val_files = set(train.source.files), set(val.source.files)
    assert not train_files & val_files and train_files | val_files == set(files)
    for k, name in enumerate(COUNTS):
        in_val = sum(os.path.basename(os.path.dirname(f)) == name for f in val_files)
        assert in_val == HELD_OUT[name], name
        assert (_labels(val) == k).sum() == HELD_OUT[name]
        assert (_labels(train) == k).sum() == COUNTS[name] - HELD_OUT[name]
    assert train.num_examples == 14 and val.num_examples == 4
    assert val.source.description == f"{tmp_path}[val]"

    # The same split_seed gives the same parts (whatever the pipeline's seed), another
    # seed other files of the same counts, another fraction other counts.
    def held_out(**options):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fd.ImageFolder(tmp_path, "val", **options).files
    assert held_out() == held_out(split_seed=0) == sorted(val_files)
    assert held_out(split_seed=1) != held_out() and len(held_out(split_seed=1)) == 4
    assert len(held_out(val_fraction=0.5)) == 5 + 3 + 0 + 1  # round half up: 2.5 -> 3
    capsys.readouterr()
    message = _one_line_error(lambda: fd.ImageFolder(tmp_path, "val", val_fraction=1.0), ValueError)
    assert message == "val_fraction must be a number between 0 and 1 (exclusive); got 1.0."


def test_class_folders_with_single_images_hold_nothing_out(tmp_path, rng):
    _folder(tmp_path, {"a": 1, "b": 1}, rng)
    assert fd.ImageFolder(tmp_path, "train").num_examples == 2
    message = _one_line_error(lambda: fd.ImageFolder(tmp_path, "val"))
    assert message.endswith("no class folder holds two images, so nothing is held out for "
                            "validation; add images, or give it train/ and val/ folders.")


# --------------------------------------------------------------------------- clear errors


def test_a_missing_split_names_the_folders_found(tmp_path, rng):
    _folder(tmp_path, {"a": 2}, rng, "train")
    _folder(tmp_path, {"a": 2}, rng, "test")
    message = _one_line_error(lambda: fd.load(str(tmp_path), "validation"))
    assert message == f"{tmp_path} has no val/, validation/ or valid/ folder (found: test/, train/)."
    message = _one_line_error(lambda: fd.load(str(tmp_path), "extra"))
    assert message == f"{tmp_path} has no extra/ folder (found: test/, train/)."
    # a split folder asked for another split: its class folders are not split up
    message = _one_line_error(lambda: fd.load(str(tmp_path / "train"), "val"))
    assert message == (f"{tmp_path / 'train'} is a train/ split folder, not a val/, validation/ or valid/ one: "
                       "pass the folder holding both, or the val folder itself.")
    # a folder of class folders knows train, val / validation and all
    _folder(tmp_path / "pets", {"cat": 2, "dog": 3}, rng)
    message = _one_line_error(lambda: fd.load(str(tmp_path / "pets"), "holdout"))
    assert message == (f"{tmp_path / 'pets'} has no holdout/ folder: it is a folder of class folders, "
                       "split per class into 'train' and 'val' (or 'validation'); split 'all' reads "
                       "every image.")
    assert fd.ImageFolder(tmp_path / "pets", "all").num_examples == 5


def test_a_name_neither_folder_nor_tfds_dataset_is_one_line(tmp_path, rng, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _folder(tmp_path / "flowers", {"a": 1}, rng)
    message = _one_line_error(lambda: fd.load("flowrs", "train"))
    assert message == (f"No folder 'flowrs' in {tmp_path}, and TFDS has no dataset 'flowrs'; "
                       "close names: flowers/ (a folder here), 'flores', 'tf_flowers'.")
    message = _one_line_error(lambda: fd.load("tfds:cifar_10", "train"))
    assert message.startswith("TFDS has no dataset 'cifar_10'; close names: 'cifar10'")
    message = _one_line_error(lambda: fd.load("qqqqqqqq", "train"))
    assert message == f"No folder 'qqqqqqqq' in {tmp_path}, and TFDS has no dataset 'qqqqqqqq'."


# ------------------------------------------------------------------------- skipped files


def _skip_warnings(caught):
    return [str(w.message) for w in caught if "unreadable file" in str(w.message)]


def test_skipped_files_are_reported_once_under_their_split(tmp_path, rng):
    _folder(tmp_path, {"a": 2, "b": 2}, rng, "train")
    _folder(tmp_path, {"a": 1, "b": 1}, rng, "val")
    (tmp_path / "train" / "a" / "bad_train.jpg").write_bytes(b"")
    (tmp_path / "val" / "b" / "bad_val.jpg").write_bytes(b"not an image")
    train = fd.load(str(tmp_path), "train", batch_size=2, image_size=8, seed=0, augment=fd.Augment.off())
    val = fd.load(str(tmp_path), "val", batch_size=2, image_size=8, one_hot_labels=True)
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(train.dataset, validation_data=val.dataset, epochs=3, verbose=0,
                  callbacks=[train.callback(), val.callback()])
    assert _skip_warnings(caught) == [
        f"ffzoo.data: skipped 1 unreadable file(s) of the 'val' split ({tmp_path / 'val'}) in evaluation: "
        f"{tmp_path / 'val' / 'b' / 'bad_val.jpg'} (not a JPEG, PNG, GIF, BMP or WebP)",
        f"ffzoo.data: skipped 1 unreadable file(s) of the 'train' split ({tmp_path / 'train'}) in epoch 1: "
        f"{tmp_path / 'train' / 'a' / 'bad_train.jpg'} (empty)",
    ]
    assert train.skipped.names == [str(tmp_path / "train" / "a" / "bad_train.jpg")]


def test_a_file_skipped_in_every_copy_is_listed_once(tmp_path, rng):
    folder = tmp_path / "train" / "a"
    _folder(tmp_path, {"a": 1}, rng, "train")
    (folder / "_bad.jpg").write_bytes(b"")  # first in file order: the one image of the epoch
    pipe = fd.load(str(tmp_path), "train", batch_size=1, image_size=8, seed=0, shuffle=False,
                   augment=fd.Augment.off(), repeats=2, drop_remainder=False)
    assert sum(1 for _ in pipe.dataset) == 0  # two copies of the bad file, nothing else
    assert pipe.skipped.names == [str(folder / "_bad.jpg")]
    with pytest.warns(UserWarning) as caught:
        pipe.report_skipped("in epoch 1")
    assert _skip_warnings(caught) == [
        f"ffzoo.data: skipped 1 unreadable file(s) of the 'train' split ({tmp_path / 'train'}) in epoch 1: "
        f"{folder / '_bad.jpg'} (empty)"]


# ------------------------------------------ hidden files, extensions, empty class folders


def test_hidden_entries_upper_case_extensions_and_empty_class_folders(tmp_path, rng):
    root = tmp_path / "train"
    pixels = {}
    for name, fmt in (("a/x.JPG", "JPEG"), ("a/y.JPEG", "JPEG"), ("a/z.PNG", "PNG"), ("c/w.Jpg", "JPEG")):
        (root / os.path.dirname(name)).mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buffer, format=fmt)
        (root / name).write_bytes(buffer.getvalue())
        pixels[name] = np.asarray(Image.open(root / name).convert("RGB"))
    (root / "b").mkdir()  # a class without images
    (root / "a" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "a" / "._x.JPG").write_bytes(b"\0\5\26\7 AppleDouble")  # macOS resource fork
    (root / ".ipynb_checkpoints").mkdir()
    (root / ".ipynb_checkpoints" / "q.jpg").write_bytes(_jpeg(rng))
    (root / "c" / ".thumbnails").mkdir()
    (root / "c" / ".thumbnails" / "w.jpg").write_bytes(_jpeg(rng))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe = fd.load(str(tmp_path), "train", training=False, batch_size=8, image_size=8, crop_pct=1.0,
                       mean=(0, 0, 0), std=(1, 1, 1), seed=0)
        images, labels = next(iter(pipe.dataset))
        pipe.report_skipped()
    assert [str(w.message) for w in caught] == [
        f"ffzoo.data: 1 class folder(s) of {root} hold no images: b (their classes keep their index; "
        "no example has them)."]
    assert pipe.class_names == ["a", "b", "c"]
    assert pipe.source.files == [str(root / n) for n in pixels] and labels.numpy().tolist() == [0, 0, 0, 2]
    np.testing.assert_allclose(images.numpy() * 255, np.stack(list(pixels.values())), atol=1e-3)
