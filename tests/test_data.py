"""ffzoo.data: sources, transforms against NumPy / PIL, robustness, and feeding fit."""

import dataclasses
import io
import math
import os

import keras
import numpy as np
import pytest
import skimage.data
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image, ImageEnhance, ImageOps

import ffzoo
import ffzoo.data as fd
from ffzoo.data import ops, randaugment
from ffzoo.imagenet import imagenet_classes
from ffzoo.preprocessing import IMAGENET_MEAN, IMAGENET_STD

WNIDS = ["n01440764", "n01443537", "n01484850"]


def _jpeg(array, quality=90, mode=None):
    buffer = io.BytesIO()
    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def make_folder(root, split, per_class, rng, classes=WNIDS, size=(48, 64)):
    """`root/split/<wnid>/<i>.JPEG` of random pictures; returns {path: label}."""
    labels = {}
    for k, wnid in enumerate(classes):
        os.makedirs(os.path.join(root, split, wnid), exist_ok=True)
        for i in range(per_class):
            h, w = rng.integers(size[0], size[1], 2)
            path = os.path.join(root, split, wnid, f"{wnid}_{i}.JPEG")
            with open(path, "wb") as f:
                f.write(_jpeg(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)))
            labels[path] = k
    return labels


def make_tfrecords(folder_labels, path, label_base=1, shards=2):
    """The common layout (build_imagenet_data.py): 1-based labels in sorted-wnid order."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    items = sorted(folder_labels.items())
    writers = [tf.io.TFRecordWriter(f"{path}-{i:05d}-of-{shards:05d}") for i in range(shards)]
    for n, (file, label) in enumerate(items):
        with open(file, "rb") as f:
            data = f.read()
        feature = {
            "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[data])),
            "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label + label_base])),
            "image/filename": tf.train.Feature(bytes_list=tf.train.BytesList(value=[os.path.basename(file).encode()])),
        }
        example = tf.train.Example(features=tf.train.Features(feature=feature))
        writers[n % shards].write(example.SerializeToString())
    for w in writers:
        w.close()


def collect(pipeline):
    images, labels = [], []
    for x, y in pipeline.dataset:
        images.append(x.numpy())
        labels.append(y.numpy())
    return np.concatenate(images), np.concatenate(labels)


NO_AUGMENT = fd.Augment.off()

# ----------------------------------------------------------------------------- sources


def test_image_folder_classes_counts_and_labels(tmp_path, rng):
    labels = make_folder(tmp_path, "train", 4, rng)
    pipe = fd.load(str(tmp_path), "train", batch_size=5, image_size=32, training=False)
    assert pipe.class_names == WNIDS and pipe.num_examples == 12 and pipe.steps_per_epoch == 3
    _, got = collect(pipe)
    assert sorted(got.tolist()) == sorted(labels.values())


def test_flat_validation_folder_with_label_files(tmp_path, rng):
    make_folder(tmp_path, "train", 1, rng)
    flat = tmp_path / "val"
    flat.mkdir()
    truth = {}
    for i in range(7):
        name = f"ILSVRC2012_val_{i + 1:08d}.JPEG"
        (flat / name).write_bytes(_jpeg(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)))
        truth[name] = WNIDS[i % 3]
    csv = tmp_path / "LOC_val_solution.csv"  # Kaggle's format: ImageId,PredictionString
    csv.write_text("ImageId,PredictionString\n" + "".join(
        f"{n[:-5]},{w} 10 20 30 40\n" for n, w in reversed(truth.items())))
    tfds_style = tmp_path / "validation_labels.txt"  # one wnid per line, sorted file order
    tfds_style.write_text("".join(f"{truth[n]}\n" for n in sorted(truth)))
    want = sorted(WNIDS.index(w) for w in truth.values())
    for labels_file in (csv, tfds_style):
        pipe = fd.load(str(tmp_path), "val", batch_size=3, image_size=32, labels_file=str(labels_file))
        assert pipe.class_names == WNIDS  # the train folder's order
        assert sorted(collect(pipe)[1].tolist()) == want


def test_tfrecords_common_layout_and_label_offset(tmp_path, rng):
    labels = make_folder(tmp_path / "folder", "train", 3, rng)
    make_tfrecords(labels, str(tmp_path / "train"), label_base=1)
    pipe = fd.load(str(tmp_path), "train", training=False, batch_size=4, image_size=32)
    assert pipe.source.kind == "TFRecord shards" and pipe.num_examples == 9
    assert pipe.class_names == [w for w, _ in imagenet_classes()]
    assert sorted(collect(pipe)[1].tolist()) == sorted(labels.values())
    with pytest.raises(tf.errors.InvalidArgumentError, match="negative label: check label_offset"):
        collect(fd.load(str(tmp_path / "train-*"), "train", training=False, batch_size=4,
                        image_size=32, label_offset=-2))


def test_class_order_agrees_across_sources(tmp_path, rng):
    """Folder, TFRecords and TFDS imagenet2012 all index classes by sorted WordNet id."""
    labels = make_folder(tmp_path / "folder", "train", 2, rng, classes=WNIDS)
    make_tfrecords(labels, str(tmp_path / "records" / "train"))
    folder = fd.load(str(tmp_path / "folder"), "train", training=False, batch_size=6, image_size=32,
                     shuffle=False)
    records = fd.load(str(tmp_path / "records"), "train", training=False, batch_size=6, image_size=32,
                      shuffle=False)
    fx, fy = collect(folder)
    rx, ry = collect(records)
    by_image = lambda x, y: sorted(zip(np.round(x.mean((1, 2, 3)), 4).tolist(), y.tolist()))
    assert by_image(fx, fy) == by_image(rx, ry)  # same images, same class indices
    tfds_names = tfds.builder("imagenet2012").info.features["label"].names
    assert tfds_names == [w for w, _ in imagenet_classes()] == sorted(tfds_names)
    assert [tfds_names[i] for i in sorted(set(fy.tolist()))] == folder.class_names


def test_tfds_mock_imagenet2012(tmp_path):
    with tfds.testing.mock_data(num_examples=9):
        train = fd.load("imagenet2012", "train", batch_size=4, image_size=32, seed=0,
                        data_dir=str(tmp_path))
        x, y = next(iter(train.dataset))
        assert x.shape == (4, 32, 32, 3) and y.shape == (4, 1000)
        np.testing.assert_allclose(y.numpy().sum(1), 1, atol=1e-5)
        val = fd.load("imagenet2012", "validation", batch_size=4, image_size=32, data_dir=str(tmp_path))
        images, labels = collect(val)
        assert images.shape == (9, 32, 32, 3) and labels.min() >= 0 and labels.max() < 1000
        assert val.class_names[:3] == WNIDS


def test_other_tfds_dataset_by_name(tmp_path):
    with tfds.testing.mock_data(num_examples=6):
        pipe = fd.load("cifar10", "test", batch_size=4, image_size=32, data_dir=str(tmp_path))
        images, labels = collect(pipe)
        assert images.shape == (6, 32, 32, 3) and pipe.num_classes == 10


@pytest.mark.parametrize("source,message", [
    ("/no/such/folder", "does not exist"),
    ("/no/such/shards-*", "No TFRecord files match"),
    ("no_such_tfds_dataset_xyz", "TFDS has no dataset"),
])
def test_missing_sources_are_clear_errors(source, message):
    with pytest.raises(fd.DataSourceError, match=message):
        fd.load(source, "train")


def test_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(fd.DataSourceError, match=r"train holds no images"):
        fd.load(str(tmp_path), "train")
    (tmp_path / "train" / "n01").mkdir()
    with pytest.raises(fd.DataSourceError, match="class folders but no images"):
        fd.load(str(tmp_path), "train")

# --------------------------------------------------------------- evaluation, order, scale


def test_evaluation_sees_every_example_exactly_once(tmp_path, rng):
    names = [f"c{i:02d}" for i in range(23)]  # one image per class: labels identify examples
    make_folder(tmp_path, "val", 1, rng, classes=names)
    pipe = fd.load(str(tmp_path), "val", batch_size=5, image_size=32)
    sizes = [int(x.shape[0]) for x, _ in pipe.dataset]
    assert sizes == [5, 5, 5, 5, 3] and pipe.steps_per_epoch == 5
    assert sorted(collect(pipe)[1].tolist()) == list(range(23))
    padded = fd.load(str(tmp_path), "val", batch_size=5, image_size=32, pad_final_batch=True)
    batches = list(padded.dataset)
    assert all(x.shape[0] == 5 for x, _, _ in batches)
    weights = np.concatenate([w.numpy() for _, _, w in batches])
    labels = np.concatenate([y.numpy() for _, y, _ in batches])
    assert weights.sum() == 23 and sorted(labels[weights > 0].tolist()) == list(range(23))


# Real JPEGs as ImageNet holds them: baseline and progressive, chroma subsampled
# 4:2:0 (most of ImageNet), 4:2:2 and 4:4:4, at several qualities.
JPEG_KINDS = {
    "q90_420": dict(quality=90, subsampling=2),
    "q75_422_progressive": dict(quality=75, subsampling=1, progressive=True),
    "q95_444": dict(quality=95, subsampling=0),
    "q60_420_progressive": dict(quality=60, subsampling=2, progressive=True),
}


def _encode(photo, **options):
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, format="JPEG" if options else "PNG", **options)
    return buffer.getvalue()


def _pil_decode(data):
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.mark.once
@pytest.mark.parametrize("name", ["chelsea", "coffee", "astronaut"])
def test_eval_transform_is_preprocess_image(name, tmp_path, record):
    """The same code and the same integer sums: equal up to float32 normalization, on
    a lossless PNG and on JPEGs, which take the window-decoding path (only the pixels
    the resize reads are decoded) and must decode to PIL's full decode of the file."""
    photo = getattr(skimage.data, name)()
    kinds = {"png": {}, **JPEG_KINDS}
    expected = []
    for label, kind in enumerate(sorted(kinds)):  # one class per encoding, in label order
        data = _encode(photo, **kinds[kind])
        (tmp_path / "val" / kind).mkdir(parents=True)
        (tmp_path / "val" / kind / "photo.JPEG").write_bytes(data)
        expected.append(ffzoo.preprocess_image(_pil_decode(data) if kinds[kind] else photo))
    images, labels = collect(fd.load(str(tmp_path), "val", batch_size=2))
    assert sorted(labels.tolist()) == list(range(len(kinds)))
    for image, label in zip(images, labels):
        levels = np.abs(image - expected[label]) * np.array(IMAGENET_STD) * 255
        record(f"tf.data eval vs preprocess_image of PIL's decode ({name}, {sorted(kinds)[label]}): "
               "max |diff| in 1/255 units", f"{levels.max():.1e}")
        assert levels.max() < 1e-3, sorted(kinds)[label]


@pytest.mark.once
def test_jpeg_decoding_is_pils(record):
    """Every JPEG window the pipelines decode holds the pixels of PIL's (libjpeg-turbo's
    default) full decode exactly: whole images and windows that start on and off a
    chroma block, reach the right edge or not, on real photos in every encoding."""
    from ffzoo.data import pipeline

    window_rng = np.random.default_rng(3)
    fast_off = []
    for name in ["astronaut", "coffee", "rocket", "camera"]:
        photo = getattr(skimage.data, name)()
        height, width = photo.shape[:2]
        for kind in sorted(JPEG_KINDS):
            data = _encode(photo, **JPEG_KINDS[kind])
            pil = _pil_decode(data)
            windows = [(0, 0, height, width), (3, 16, 90, 64), (height - 50, width - 77, 50, 77)]
            for _ in range(3):
                h, w = (int(window_rng.integers(1, n + 1)) for n in (height, width))
                windows.append((int(window_rng.integers(0, height - h + 1)), int(window_rng.integers(0, width - w + 1)), h, w))
            for top, left, h, w in windows:
                got, _ = pipeline._decode_window(tf.constant(data), lambda *_: ((top, left, h, w), ()))
                np.testing.assert_array_equal(got.numpy(), pil[top:top + h, left:left + w],
                                              err_msg=f"{name} {kind} window {(top, left, h, w)}")
            fast = tf.io.decode_jpeg(data, channels=3).numpy().astype(int)  # TensorFlow's default IDCT
            fast_off.append(np.abs(fast - pil).ravel())
    fast_off = np.concatenate(fast_off)
    record("TensorFlow's default JPEG decode (fast IDCT) vs PIL: max, share > 0, share > 2 levels",
           f"{fast_off.max()}, {(fast_off > 0).mean():.2f}, {(fast_off > 2).mean():.3f}")


def _train_crops(name, augment, encode, count=6):
    """`(got, crop)` pairs: `_train_crop` of an encoded photo (mirrored every other
    time, unmirrored here) and the window of the photo it should have resized."""
    from ffzoo.data import pipeline

    photo = getattr(skimage.data, name)()
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, format=encode, quality=95)
    data = tf.constant(buffer.getvalue())
    decoded = _pil_decode(buffer.getvalue())  # JPEG windows decode to PIL's full decode
    pairs = []
    for i in range(count):
        seed = tf.constant([i, 5])
        top, left, h, w = (int(v) for v in ops.random_resized_crop_window(
            seed, photo.shape[0], photo.shape[1], augment.crop_scale, augment.crop_ratio))
        flip = i % 2 == 1
        got = pipeline._train_crop(data, seed, 224, augment, tf.constant(flip)).numpy()
        pairs.append((got[:, ::-1] if flip else got, decoded[top:top + h, left:left + w]))
    assert min(min(c.shape[:2]) for _, c in pairs) < 224 < max(min(c.shape[:2]) for _, c in pairs)
    return pairs


def _float_bicubic(crop, size=224):
    """NumPy reference of one float pass of the antialiased bicubic: Pillow's taps as
    real-valued weights (no rounding or clipping between the passes), rounded once."""
    from ffzoo import preprocessing

    def dense(n, taps, weights):  # (size, n): output pixel <- input pixels
        matrix = np.zeros((size, n))
        np.add.at(matrix, (np.arange(size)[:, None], taps), weights / 2.0 ** 22)
        return matrix

    rows, row_weights, cols, col_weights = preprocessing.resize_taps(
        preprocessing._NumPyOps, crop.shape[0], crop.shape[1], size, size)
    tall = np.einsum("ij,jkc->ikc", dense(crop.shape[0], rows, row_weights), crop.astype(np.float64))
    out = np.einsum("ikc,lk->ilc", tall, dense(crop.shape[1], cols, col_weights))
    return np.clip(np.round(out), 0, 255)


@pytest.mark.once
@pytest.mark.parametrize("encode", ["PNG", "JPEG"])
@pytest.mark.parametrize("name", ["chelsea", "coffee"])
def test_exact_train_crop_is_pil_crop_and_bicubic_resize(name, encode):
    """With `pil_exact_resize`, random resized crops (shrinking and enlarging, mirrored
    or not) equal PIL's `open(file).crop(box).resize((224, 224), BICUBIC)` pixel for
    pixel, also for JPEGs, of which only the window is decoded."""
    augment = fd.Augment(crop_scale=(0.02, 1.0), pil_exact_resize=True)
    for got, crop in _train_crops(name, augment, encode):
        np.testing.assert_array_equal(got, np.asarray(Image.fromarray(crop).resize((224, 224), Image.BICUBIC)))


@pytest.mark.once
@pytest.mark.parametrize("encode", ["PNG", "JPEG"])
@pytest.mark.parametrize("name", ["chelsea", "coffee"])
def test_fast_train_crop_is_one_float_bicubic_pass_close_to_pil(name, encode, record):
    """The default resize: a float NumPy bicubic pass to within rounding; within a
    fraction of a level of PIL on average (PIL rounds and clips between its passes).
    JPEGs take the fused `decode_and_crop_jpeg` path, PNGs the decode-then-slice one."""
    augment = fd.Augment(crop_scale=(0.02, 1.0))
    off_reference, off_pil = [], []
    for got, crop in _train_crops(name, augment, encode):
        off_reference.append(np.abs(got - _float_bicubic(crop)).max())
        pil = np.asarray(Image.fromarray(crop).resize((224, 224), Image.BICUBIC))
        off_pil.append(np.abs(got.astype(int) - pil))
    off_pil = np.stack(off_pil)
    record(f"fast train resize ({name}, {encode}): max vs float reference / vs PIL mean, max, share > 1",
           f"{max(off_reference):.0f} / {off_pil.mean():.2f}, {off_pil.max()}, {(off_pil > 1).mean():.1e}")
    assert max(off_reference) <= 1
    assert off_pil.mean() < 0.3 and (off_pil > 1).mean() < 2e-3


def test_resize_bicubic_is_tensorflows_one_call_resize(rng):
    """`ops.resize_bicubic` (one axis at a time, as one-row images) equals
    `tf.image.resize(..., "bicubic", antialias=True)` bit for bit: shrinking,
    enlarging, 1-pixel sides, noise and a photo; eagerly and traced with the
    dynamic image shapes of a tf.data map."""
    photo = skimage.data.coffee()
    traced = tf.function(ops.resize_bicubic, input_signature=[
        tf.TensorSpec([None, None, 3], tf.uint8), (tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32))])
    shapes = [((375, 500), (224, 224)), ((1, 7), (224, 224)), ((300, 1), (5, 9)), ((90, 130), (224, 160))]
    shapes += [(tuple(rng.integers(1, 400, 2)), tuple(int(n) for n in rng.integers(1, 300, 2))) for _ in range(6)]
    for i, ((h, w), size) in enumerate(shapes):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8) if i % 2 else photo[:h, :w]
        expected = tf.image.resize(image, size, "bicubic", antialias=True).numpy()
        np.testing.assert_array_equal(ops.resize_bicubic(tf.constant(image), size), expected)
        np.testing.assert_array_equal(traced(tf.constant(image), size), expected)


def test_pipeline_flip_mirrors_the_same_crop(tmp_path, rng):
    make_folder(tmp_path, "train", 2, rng)
    base = dict(randaugment=None, random_erasing=0.0, mixup_alpha=0.0, cutmix_alpha=0.0, label_smoothing=0.0)
    run = lambda hflip: _batches(fd.load(str(tmp_path), "train", batch_size=6, image_size=32, seed=3,
                                         augment=fd.Augment(hflip=hflip, **base)), 1)[0][0]
    np.testing.assert_array_equal(run(1.0), run(0.0)[:, :, ::-1])


def _batches(pipe, count=3):
    return [(x.numpy(), y.numpy()) for x, y in pipe.dataset.take(count)]


@pytest.mark.once
def test_seed_makes_the_training_pipeline_reproducible(tmp_path, rng):
    make_folder(tmp_path, "train", 8, rng)
    run = lambda seed: _batches(fd.load(str(tmp_path), "train", batch_size=4, image_size=32, seed=seed))
    first, again, other = run(7), run(7), run(8)
    for (a, la), (b, lb) in zip(first, again):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(first[0][0], other[0][0])
    pipe = fd.load(str(tmp_path), "train", batch_size=4, image_size=32, seed=7)
    epoch1 = [x.numpy() for x, _ in pipe.dataset]
    epoch2 = [x.numpy() for x, _ in pipe.dataset]
    assert not np.array_equal(epoch1[0], epoch2[0])  # new shuffling and augmentation each epoch


def test_host_shards_partition_the_data(tmp_path, rng):
    names = [f"c{i:02d}" for i in range(10)]
    make_folder(tmp_path, "val", 1, rng, classes=names)
    parts = [collect(fd.load(str(tmp_path), "val", batch_size=3, image_size=32, shard=(i, 3)))[1]
             for i in range(3)]
    assert sorted(np.concatenate(parts).tolist()) == list(range(10))
    assert [len(p) for p in parts] == [4, 3, 3]


def test_training_pipeline_drops_the_remainder(tmp_path, rng):
    make_folder(tmp_path, "train", 5, rng)  # 15 examples
    pipe = fd.load(str(tmp_path), "train", batch_size=4, image_size=32, seed=0)
    assert [x.shape[0] for x, _ in pipe.dataset] == [4, 4, 4] and pipe.steps_per_epoch == 3

# ---------------------------------------------------------------------- bad-file zoo


def test_bad_file_zoo(tmp_path, rng):
    photo = skimage.data.coffee()[::4, ::4]
    good = tmp_path / "val" / "n01"
    good.mkdir(parents=True)
    (good / "rgb.JPEG").write_bytes(_jpeg(photo))
    (good / "cmyk.JPEG").write_bytes(_jpeg(photo, mode="CMYK"))
    (good / "gray.JPEG").write_bytes(_jpeg(photo, mode="L"))
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, format="PNG")
    (good / "png_named.JPEG").write_bytes(buffer.getvalue())
    whole = _jpeg(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8))
    (good / "truncated.JPEG").write_bytes(whole[: len(whole) // 2])
    (good / "empty.JPEG").write_bytes(b"")
    (good / "garbage.JPEG").write_bytes(b"this is not an image at all" * 10)
    evaluation = fd.load(str(tmp_path), "val", batch_size=3, image_size=64)
    with pytest.warns(UserWarning, match=r"skipped 3 unreadable file\(s\) of .* in the test"):
        images, _ = collect(evaluation)
        reported = evaluation.report_skipped("in the test")
    assert len(images) == 4
    assert sorted(os.path.basename(n) for n in reported) == ["empty.JPEG", "garbage.JPEG", "truncated.JPEG"]
    # Training decodes only a random window: a truncated JPEG is usable when the window
    # lies in its intact rows. Empty and garbage files are always skipped; nothing is lost.
    crop_only = fd.Augment(randaugment=None, random_erasing=0.0, mixup_alpha=0.0, cutmix_alpha=0.0)
    for seed in range(3):
        training = fd.load(str(tmp_path), "val", training=True, batch_size=1, image_size=64,
                           seed=seed, augment=crop_only, num_classes=1)
        images, _ = collect(training)
        names = {os.path.basename(n) for n in training.skipped.names}
        assert {"empty.JPEG", "garbage.JPEG"} <= names <= {"empty.JPEG", "garbage.JPEG", "truncated.JPEG"}
        assert len(images) + len(names) == 7
    # CMYK and grayscale decode to RGB close to PIL's own conversion
    decoded = lambda name: tf.io.decode_image((good / name).read_bytes(), channels=3).numpy().astype(int)
    pil = lambda name: np.asarray(Image.open(good / name).convert("RGB")).astype(int)
    cmyk_error = np.abs(decoded("cmyk.JPEG") - pil("cmyk.JPEG"))
    assert cmyk_error.mean() < 1 and cmyk_error.max() <= 8  # two CMYK->RGB conversions
    np.testing.assert_array_equal(decoded("gray.JPEG")[..., 0], decoded("gray.JPEG")[..., 2])


def test_bad_files_raise_when_not_skipped(tmp_path, rng):
    folder = tmp_path / "val" / "n01"
    folder.mkdir(parents=True)
    (folder / "empty.JPEG").write_bytes(b"")
    pipe = fd.load(str(tmp_path), "val", batch_size=2, image_size=32, skip_bad_files=False)
    with pytest.raises(tf.errors.InvalidArgumentError):
        collect(pipe)

# ------------------------------------------------------------------ augmentation stages


def _torchvision_crop_areas(rng, height, width, count, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """NumPy transcription of torchvision's RandomResizedCrop.get_params (area fractions)."""
    areas = []
    for _ in range(count):
        for _ in range(10):
            target = height * width * rng.uniform(*scale)
            aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
            w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                areas.append(h * w / (height * width))
                break
        else:
            areas.append(1.0)
    return np.array(areas)


def test_random_resized_crop_windows_respect_scale_and_ratio():
    areas, ratios = [], []
    for i in range(400):
        top, left, h, w = (int(v) for v in ops.random_resized_crop_window(
            tf.constant([i, 1]), 300, 400))
        assert 0 <= top and top + h <= 300 and 0 <= left and left + w <= 400
        areas.append(h * w / (300 * 400))
        ratios.append(w / h)
    assert min(areas) >= 0.08 - 0.01 and max(areas) <= 1.0
    assert min(ratios) >= 0.75 * 0.97 and max(ratios) <= 4 / 3 * 1.03  # rounding to pixels
    reference = _torchvision_crop_areas(np.random.default_rng(0), 300, 400, 20000)
    assert abs(np.mean(areas) - reference.mean()) < 3 * reference.std() / math.sqrt(400)
    # a strip no window fits: torchvision's fallback, the ratio-clamped central crop
    top, left, h, w = (int(v) for v in ops.random_resized_crop_window(tf.constant([0, 0]), 10, 400))
    assert (h, w) == (10, round(10 * 4 / 3)) and left == (400 - w) // 2


def test_flip_and_normalization(rng):
    image = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    flips = [ops.random_flip(tf.constant(image), tf.constant([s, 0])).numpy() for s in range(40)]
    assert all(np.array_equal(f, image) or np.array_equal(f, image[:, ::-1]) for f in flips)
    assert 8 < sum(np.array_equal(f, image[:, ::-1]) for f in flips) < 32
    want = (image / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(ops.normalize(tf.constant(image)).numpy(), want, atol=1e-6)


def test_random_erasing_area_aspect_and_probability():
    image = tf.fill((100, 80, 3), 7.0)
    erased_fractions, boxes = [], 0
    for s in range(400):
        out = ops.random_erasing(image, tf.constant([s, 3]), probability=0.25).numpy()
        changed = np.any(out != 7.0, axis=-1)
        if changed.any():
            boxes += 1
            rows, cols = np.where(changed)
            h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
            assert changed.sum() == h * w  # one rectangle
            assert 0.02 * 0.9 <= h * w / 8000 <= 1 / 3 * 1.1
            assert 0.3 * 0.8 <= h / w <= 1 / 0.3 * 1.25
            erased_fractions.append(out[changed].std())
    assert abs(boxes / 400 - 0.25) < 0.06
    assert abs(np.mean(erased_fractions) - 1.0) < 0.1  # per-pixel N(0, 1) noise


# RandAugment ops against PIL's own implementations (what timm calls).
PHOTO = skimage.data.astronaut()[::8, ::8]  # 64 x 64
PIL_OPS = [
    ("auto_contrast", lambda x: randaugment.auto_contrast(x), lambda p: ImageOps.autocontrast(p), 0),
    ("equalize", lambda x: randaugment.equalize(x), lambda p: ImageOps.equalize(p), 0),
    ("invert", lambda x: randaugment.invert(x), lambda p: ImageOps.invert(p), 0),
    ("posterize_1", lambda x: randaugment.posterize(x, 1), lambda p: ImageOps.posterize(p, 1), 0),
    # timm reaches 0 bits at magnitude 10; Pillow no longer accepts it. The definition:
    ("posterize_0", lambda x: randaugment.posterize(x, 0), lambda p: p.point(lambda v: 0), 0),
    ("solarize_26", lambda x: randaugment.solarize(x, 26), lambda p: ImageOps.solarize(p, 26), 0),
    ("solarize_add_99", lambda x: randaugment.solarize_add(x, 99),
     lambda p: p.point(lambda v: min(255, v + 99) if v < 128 else v), 0),
    ("color_0.3", lambda x: randaugment.color(x, 0.3), lambda p: ImageEnhance.Color(p).enhance(0.3), 1),
    ("contrast_1.8", lambda x: randaugment.contrast(x, 1.8), lambda p: ImageEnhance.Contrast(p).enhance(1.8), 1),
    ("brightness_0.4", lambda x: randaugment.brightness(x, 0.4), lambda p: ImageEnhance.Brightness(p).enhance(0.4), 1),
    ("sharpness_1.8", lambda x: randaugment.sharpness(x, 1.8), lambda p: ImageEnhance.Sharpness(p).enhance(1.8), 2),
]


@pytest.mark.parametrize("name,ours,pil,tolerance", PIL_OPS, ids=[o[0] for o in PIL_OPS])
def test_randaugment_ops_match_pil(name, ours, pil, tolerance):
    got = ours(tf.constant(PHOTO)).numpy().astype(int)
    want = np.asarray(pil(Image.fromarray(PHOTO))).astype(int)
    assert np.abs(got - want).max() <= tolerance


def test_rand_augment_policy_and_application_rate():
    assert randaugment.parse_policy("rand-m9-mstd0.5-inc1") == dict(num_ops=2, magnitude=9.0, magnitude_std=0.5)
    with pytest.raises(ValueError, match="only the increasing op set"):
        randaugment.parse_policy("rand-m9-mstd0.5")
    image = tf.constant(PHOTO)
    unchanged = sum(np.array_equal(randaugment.rand_augment(image, tf.constant([s, 5])).numpy(), PHOTO)
                    for s in range(200))
    assert 0.15 < unchanged / 200 < 0.35  # both ops skipped: 0.5 ** 2

# ---------------------------------------------------------------------------- with fit


def test_pipeline_feeds_fit_and_evaluate(tmp_path, rng):
    make_folder(tmp_path, "train", 6, rng)
    make_folder(tmp_path, "val", 2, rng)
    train = fd.load(str(tmp_path), "train", batch_size=6, image_size=32, seed=0)
    val = fd.load(str(tmp_path), "val", batch_size=4, image_size=32, one_hot_labels=True)
    model = ffzoo.FFViT(patch_size=8, embed_dim=16, depth=1, image_size=32, pos_grid_size=4,
                        classes=3, classifier_activation=None)
    model.compile(optimizer="adamw", loss=keras.losses.CategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    history = model.fit(train.dataset, validation_data=val.dataset, epochs=2, verbose=0, shuffle=False,
                        callbacks=[train.callback(), val.callback()])
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["val_loss"]).all()
    # (random pictures: no accuracy to expect, only that evaluate runs on the pipeline)
    assert np.isfinite(model.evaluate(val.dataset, verbose=0, return_dict=True)["loss"])


def test_repeated_augmentation_keeps_the_epoch_length(tmp_path, rng):
    make_folder(tmp_path, "train", 4, rng)  # 12 images
    plain = fd.load(str(tmp_path), "train", batch_size=3, image_size=32, seed=1, augment=NO_AUGMENT,
                    repeats=3)
    images, labels = collect(plain)
    assert len(images) == 12 and plain.steps_per_epoch == 4
    # Without augmentation the copies are identical: 4 distinct images, 3 times each.
    distinct, counts = np.unique(images.reshape(12, -1), axis=0, return_counts=True)
    assert len(distinct) == 4 and counts.tolist() == [3, 3, 3, 3]
    # With augmentation the copies of an image differ.
    augmented = fd.load(str(tmp_path), "train", batch_size=3, image_size=32, seed=1, repeats=3,
                        augment=dataclasses.replace(NO_AUGMENT, random_resized_crop=True))
    assert len(np.unique(collect(augmented)[0].reshape(12, -1), axis=0)) == 12
    with pytest.raises(ValueError, match="repeated augmentation"):
        fd.load(str(tmp_path), "train", training=False, repeats=3)
