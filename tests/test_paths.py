"""Advertised paths that had no test: `ffzoo convert --ema`, `file://` mirrors, host
sharding of TFRecord and TFDS sources, the `tfds:` / `tfrecord:` prefixes, and the
`ValueError` branches of the argument checks (each asserted on its message).

Models are FF-Micro (32 x 32 images); data are 8 x 8 images in tmp_path. Nothing
touches the network: the mirror is a folder, TFDS datasets are built locally or mocked.
"""

import io
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
import torch
from PIL import Image

import ffzoo
import ffzoo.data as fd
from ffzoo import cli
from ffzoo.weights import download, presets
from references import torch_ffvit

MICRO = "ffvit_micro_patch4_32"
MICRO_DIMS = dict(patch_size=4, embed_dim=128, depth=6, image_size=32, pos_grid=8)


def _micro_state(seed):
    model = torch_ffvit.perturb(torch_ffvit.FFViT(**MICRO_DIMS), seed=seed)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# A few source tensors and where they land, with the layout written out here (PyTorch's
# Linear is (out, in), Keras' Dense (in, out); Conv2d (out, in, kh, kw) -> (kh, kw, in, out)).
_EXPECTED_LAYOUT = [
    ("patch_embed.proj.weight", "patch_embed/kernel", lambda w: w.transpose(2, 3, 1, 0)),
    ("patch_embed.proj.bias", "patch_embed/bias", lambda w: w),
    ("cls_token", "pos_embed/class_token", lambda w: w.reshape(-1)),
    ("blocks.0.norm1.weight", "block_0/feature_ff/norm/gamma", lambda w: w),
    ("blocks.2.mlp1.fc2.weight", "block_2/feature_ff/ff/fc2/kernel", lambda w: w.T),
    ("blocks.5.mlp2.fc1.weight", "block_5/token_ff/ff/fc1/kernel", lambda w: w.T),
    ("blocks.5.mlp2.fc1.bias", "block_5/token_ff/ff/fc1/bias", lambda w: w),
    ("norm.bias", "norm/beta", lambda w: w),
    ("head.weight", "head/kernel", lambda w: w.T),
]


def _assert_holds(model, state, other):
    """The model's weights are `state`'s tensors (laid out), and not `other`'s."""
    weights = {w.path: np.asarray(w.numpy()) for w in model.weights}
    for key, path, layout in _EXPECTED_LAYOUT:
        want = layout(state[key].numpy())
        np.testing.assert_array_equal(weights[path], want, err_msg=key)
        assert not np.array_equal(weights[path], layout(other[key].numpy())), key


@pytest.fixture(scope="module")
def ema_checkpoint(tmp_path_factory):
    """A DeiT-style checkpoint whose `model` and `model_ema` entries differ everywhere."""
    raw, ema = _micro_state(0), _micro_state(1)
    path = tmp_path_factory.mktemp("ema") / "micro-ema.pth"
    torch.save({"model": raw, "model_ema": ema, "epoch": 3}, path)
    return path, raw, ema


# ---------------------------------------------------------------------------------------
# ffzoo convert --ema (builds FF-Micro: every backend)


def test_convert_takes_the_ema_entry_only_with_ema(ema_checkpoint, tmp_path, capsys):
    path, raw, ema = ema_checkpoint
    for flags, entry, want, other in [([], "model", raw, ema), (["--ema"], "model_ema", ema, raw)]:
        target = tmp_path / f"{entry}.weights.h5"
        assert cli.main(["convert", str(path), str(target), "--model", MICRO, *flags]) == 0
        assert f"entry '{entry}'" in capsys.readouterr().out
        model = ffzoo.create_model(MICRO, weights=str(target), classifier_activation=None)
        _assert_holds(model, want, other)


# ---------------------------------------------------------------------------------------
# file:// mirrors. tests/test_weights_trust.py already downloads through a file:// mirror
# (hash recording, pins, bad files); missing there: that the values converted from the
# mirror are the source's (and the preset's `source_entry`), and a file the mirror lacks.


@pytest.fixture
def micro_preset(monkeypatch, tmp_path):
    row = presets.preset_for_model(MICRO)
    for key, value in dict(source_url="http://127.0.0.1:9/unreachable/micro-ema.pth",
                           file_name="micro-ema.pth", classes=1000, sha256=None).items():
        monkeypatch.setitem(row, key, value)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.delenv(download.pin_variable(row), raising=False)
    return row


@pytest.mark.parametrize("entry,slash", [("model", "/"), ("model_ema", "")])
def test_file_mirror_is_read_and_converted(ema_checkpoint, micro_preset, tmp_path, monkeypatch,
                                           entry, slash):
    path, raw, ema = ema_checkpoint
    monkeypatch.setitem(micro_preset, "source_entry", entry)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    os.link(path, mirror / "micro-ema.pth")
    monkeypatch.setenv(download.MIRROR_ENV, mirror.as_uri() + slash)
    model = ffzoo.create_model(MICRO, weights="imagenet", classifier_activation=None)
    want, other = (ema, raw) if entry == "model_ema" else (raw, ema)
    _assert_holds(model, want, other)
    cache = tmp_path / "keras_home" / "models" / "ffzoo"
    assert download.sha256_of(cache / "micro-ema.pth") == download.sha256_of(path)


@pytest.mark.once
def test_file_mirror_without_the_file_says_what_to_do(micro_preset, tmp_path, monkeypatch):
    mirror = tmp_path / "empty mirror"
    mirror.mkdir()
    monkeypatch.setenv(download.MIRROR_ENV, mirror.as_uri())
    with pytest.raises(download.DownloadError) as error:
        download.fetch(micro_preset, read=lambda path, digest: pytest.fail("read"))
    message = str(error.value)
    assert message.startswith(f"Cannot download {mirror.as_uri()}/micro-ema.pth: ")
    assert "FFZOO_WEIGHTS_MIRROR" in message and "\n" not in message
    assert os.listdir(tmp_path / "keras_home" / "models" / "ffzoo") == []


# ---------------------------------------------------------------------------------------
# Host sharding and source prefixes (tf.data only: once)

EXAMPLES = 11
FILE_SIZES = (4, 3, 2, 2)  # examples per TFRecord file


def _png(value):
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _write_tfrecords(folder, prefix="data"):
    """EXAMPLES examples over len(FILE_SIZES) files; example i has label i (0-based)."""
    os.makedirs(folder, exist_ok=True)
    i = 0
    for n, size in enumerate(FILE_SIZES):
        with tf.io.TFRecordWriter(os.path.join(folder, f"{prefix}-{n:05d}-of-{len(FILE_SIZES):05d}")) as w:
            for _ in range(size):
                feature = {
                    "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[_png(20 * i)])),
                    "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[i])),
                }
                w.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
                i += 1
    return folder


def _labels(pipeline):
    return [int(y) for _, labels in pipeline.dataset for y in labels.numpy()]


def _assert_partition(shards):
    """Every example in exactly one shard, and no shard empty."""
    everything = [y for shard in shards for y in shard]
    assert sorted(everything) == list(range(EXAMPLES)), shards
    assert all(shards), shards


_RECORD_OPTIONS = dict(training=False, batch_size=4, image_size=8, label_offset=0,
                       num_classes=EXAMPLES)


@pytest.mark.once
@pytest.mark.parametrize("hosts,shuffle", [(3, False), (2, True)])
def test_tfrecord_host_shards_partition_the_examples(tmp_path, hosts, shuffle):
    _write_tfrecords(tmp_path)
    shards = [_labels(fd.load(f"{tmp_path}/data-*", shard=(i, hosts), shuffle=shuffle,
                              **_RECORD_OPTIONS))
              for i in range(hosts)]
    _assert_partition(shards)


@pytest.mark.once
def test_tfrecord_prefix_forces_tfrecords(tmp_path, monkeypatch):
    _write_tfrecords(tmp_path / "records")
    single = tmp_path / "records" / "data-00000-of-00004"  # one file: no glob characters
    with pytest.raises(fd.DataSourceError, match="does not exist"):
        fd.load(str(single), **_RECORD_OPTIONS)
    pipe = fd.load(f"tfrecord:{single}", **_RECORD_OPTIONS)
    assert pipe.source.kind == "TFRecord shards" and sorted(_labels(pipe)) == [0, 1, 2, 3]
    # A folder holding both a `validation/` image folder and `validation-*` shards.
    _write_tfrecords(tmp_path / "both", prefix="validation")
    os.makedirs(tmp_path / "both" / "validation" / "c0")
    (tmp_path / "both" / "validation" / "c0" / "a.png").write_bytes(_png(0))
    assert fd.load(str(tmp_path / "both"), "validation", **_RECORD_OPTIONS).source.kind == "image folder"
    pipe = fd.load(f"tfrecord:{tmp_path / 'both'}", "validation", **_RECORD_OPTIONS)
    assert pipe.source.kind == "TFRecord shards" and sorted(_labels(pipe)) == list(range(EXAMPLES))


class FfzooShardProbe(tfds.core.GeneratorBasedBuilder):
    """A tiny TFDS image dataset written locally: example i is label i."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(8, 8, 3), encoding_format="png"),
                "label": tfds.features.ClassLabel(num_classes=EXAMPLES)}),
            supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i in range(EXAMPLES):
            yield i, {"image": np.full((8, 8, 3), 20 * i, np.uint8), "label": i}


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    """FfzooShardProbe prepared in four files. (`tfds.testing.mock_data` ignores the
    read config's input context, so a mocked dataset cannot show sharding.)"""
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    builder = tfds.builder("ffzoo_shard_probe", data_dir=data_dir)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(num_shards=len(FILE_SIZES)))
    assert builder.info.splits["train"].num_shards == len(FILE_SIZES)
    return data_dir


@pytest.mark.once
@pytest.mark.parametrize("hosts", [3])
def test_tfds_host_shards_partition_the_examples(tfds_dir, hosts):
    shards = [_labels(fd.load("ffzoo_shard_probe", "train", training=False, batch_size=4,
                              image_size=8, data_dir=tfds_dir, shard=(i, hosts), shuffle=True))
              for i in range(hosts)]
    _assert_partition(shards)


@pytest.mark.once
def test_tfds_prefix_forces_tfds(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.makedirs("cifar10/test/c0")  # a folder of the dataset's name in the working directory
    (tmp_path / "cifar10" / "test" / "c0" / "a.png").write_bytes(_png(0))
    assert fd.load("cifar10", "test", batch_size=2, image_size=8).source.kind == "image folder"
    with tfds.testing.mock_data(num_examples=5):
        pipe = fd.load("tfds:cifar10", "test", batch_size=2, image_size=8,
                       data_dir=str(tmp_path / "tfds"))
        assert pipe.source.kind == "TFDS dataset" and pipe.source.description == "tfds:cifar10[test]"
        assert pipe.num_classes == 10 and len(_labels(pipe)) == 5


# ---------------------------------------------------------------------------------------
# ValueError branches, each with its message (they raise before any model is built: once)


@pytest.mark.once
def test_more_hosts_than_tfrecord_files_is_an_error(tmp_path):
    _write_tfrecords(tmp_path)
    with pytest.raises(fd.DataSourceError, match=r"Cannot shard 4 files of .*data-\* over 5 hosts\."):
        fd.load(f"{tmp_path}/data-*", shard=(0, 5), **_RECORD_OPTIONS)


def _image_folder(root, classes=("c0", "c1")):
    for name in classes:
        os.makedirs(os.path.join(root, "val", name))
        with open(os.path.join(root, "val", name, "a.png"), "wb") as f:
            f.write(_png(0))


def _flat_folder(root, names=("a", "b", "c")):
    os.makedirs(os.path.join(root, "val"))
    for name in names:
        with open(os.path.join(root, "val", f"{name}.png"), "wb") as f:
            f.write(_png(0))


def _labels_file(root, text):
    path = os.path.join(root, "labels.txt")
    with open(path, "w") as f:
        f.write(text)
    return path


SOURCE_ERRORS = {
    "no folder": (lambda root: fd.ImageFolder(os.path.join(root, "absent")),
                  r"Image folder '.*absent' does not exist\."),
    "class not listed": (lambda root: (_image_folder(root, ("c0", "c9")),
                                       fd.ImageFolder(root, "val", class_names=["c0", "c1"])),
                         r"val has class folders not among the 2 classes: \['c9'\]"),
    "flat, no labels": (lambda root: (_flat_folder(root), fd.ImageFolder(root, "val")),
                        r"val is a flat folder of 3 images: pass labels_file="),
    "label not listed": (lambda root: (_flat_folder(root), fd.ImageFolder(
                             root, "val", class_names=["x"],
                             labels_file=_labels_file(root, "a x\nb x\nc y\n"))),
                         r"labels\.txt names classes not in the class list: \['y'\]"),
    "no label file": (lambda root: (_flat_folder(root), fd.ImageFolder(
                          root, "val", labels_file=os.path.join(root, "absent.txt"))),
                      r"Label file '.*absent\.txt' does not exist\."),
    "image unlabelled": (lambda root: (_flat_folder(root), fd.ImageFolder(
                             root, "val", labels_file=_labels_file(root, "a x\nc y\n"))),
                         r"labels\.txt has no label for 1 images, e\.g\. \['.*b\.png'\]"),
    "count differs": (lambda root: (_flat_folder(root), fd.ImageFolder(
                          root, "val", labels_file=_labels_file(root, "x\ny\n"))),
                      r"labels\.txt: 2 labels for 3 images, and no line names a file"),
}


@pytest.mark.once
@pytest.mark.parametrize("case", SOURCE_ERRORS)
def test_source_errors(tmp_path, case):
    make, message = SOURCE_ERRORS[case]
    with pytest.raises(fd.DataSourceError, match=message):
        make(str(tmp_path))


class FfzooProbeWithoutKeys(tfds.core.GeneratorBasedBuilder):
    """A TFDS dataset without supervised keys (never prepared)."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
            {"image": tfds.features.Image(shape=(8, 8, 3))}))

    def _split_generators(self, dl_manager):
        raise AssertionError("never prepared")

    def _generate_examples(self):
        raise AssertionError("never prepared")


class FfzooProbeManual(FfzooShardProbe):
    """A dataset TFDS prepares from files the user downloads by hand."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = "Put the files in the manual folder."

    def _split_generators(self, dl_manager):
        raise AssertionError("never prepared")


@pytest.mark.once
def test_tfds_without_supervised_keys_or_manual_files(tmp_path):
    with pytest.raises(fd.DataSourceError, match=r"TFDS dataset 'ffzoo_probe_without_keys' has no "
                                                  r"\(image, label\) supervised keys\."):
        fd.load("tfds:ffzoo_probe_without_keys", data_dir=str(tmp_path))
    with pytest.raises(fd.DataSourceError, match=r"tfds:ffzoo_probe_manual\[train\] is not prepared in "
                                                  r".* manual directory .*downloads/manual lacks its "
                                                  r"files: put the files its TFDS instructions name"):
        fd.load("tfds:ffzoo_probe_manual", data_dir=str(tmp_path))


PIPELINE_ERRORS = [
    (dict(augment={"hflip": 0.0, "mixup": 0.8}), r"Unknown augmentation settings \['mixup'\]; known: "
                                                  r"\[.*'hflip'.*\]"),
    (dict(training=True, pad_final_batch=True), r"pad_final_batch is for evaluation pipelines"),
    (dict(batch_size=0), r"batch_size must be >= 1; got 0\."),
    (dict(max_image_pixels=0), r"max_image_pixels must be a positive integer or None; got 0\."),
    (dict(max_image_pixels=1.5e6), r"max_image_pixels must be a positive integer or None; got 1500000\.0"),
    (dict(training=False, repeats=3), r"repeats \(repeated augmentation\) is for training pipelines"),
]


@pytest.mark.once
@pytest.mark.parametrize("kwargs,message", PIPELINE_ERRORS, ids=[str(sorted(k)) for k, _ in PIPELINE_ERRORS])
def test_pipeline_argument_errors(tmp_path, kwargs, message):
    _image_folder(str(tmp_path))
    with pytest.raises(ValueError, match=message):
        fd.load(str(tmp_path), "val", image_size=8, **kwargs)


@pytest.mark.once
def test_augment_settings_from_a_dict():
    augment = fd.Augment.from_dict({"hflip": 0.0, "randaugment": None})
    assert augment.hflip == 0.0 and augment.randaugment is None and augment.mixup_alpha == 0.8


@pytest.mark.once
@pytest.mark.parametrize("policy,message", [
    ("auto-m9-inc1", r"Unknown RandAugment policy 'auto-m9-inc1': it must start with 'rand-'\."),
    ("rand-m9-w3-inc1", r"Unknown RandAugment option 'w3' in 'rand-m9-w3-inc1'\."),
    ("rand-m9-inc0", r"'rand-m9-inc0': only the increasing op set \('inc1', DeiT's\) is implemented\."),
], ids=["not rand", "unknown option", "inc0"])
def test_randaugment_policy_errors(policy, message):
    from ffzoo.data import randaugment

    with pytest.raises(ValueError, match=message):
        randaugment.parse_policy(policy)


@pytest.mark.once
def test_randaugment_policy_number_of_ops():
    from ffzoo.data import randaugment

    assert randaugment.parse_policy("rand-n3-m5-inc1") == dict(num_ops=3, magnitude=5.0, magnitude_std=0.0)


def _save(path, obj):
    torch.save(obj, path)
    return path


def _damaged_zip(path):
    """A zip checkpoint whose pickle holds an opcode no unpickler knows."""
    import zipfile

    torch.save({"model": {"a": torch.zeros(2)}}, path.with_suffix(".good"))
    with zipfile.ZipFile(path.with_suffix(".good")) as source, zipfile.ZipFile(path, "w") as out:
        for info in source.infolist():
            data = source.read(info)
            out.writestr(info, b"\x80\x02X\x01\x00\x00\x00a\x85\xff." if info.filename.endswith("data.pkl") else data)
    return path


PTH_ERRORS = {
    "a list": (lambda p: _save(p, [torch.zeros(2)]), {}, r"holds a list, not a checkpoint dict\."),
    "no ema": (lambda p: _save(p, {"model": {"a": torch.zeros(2)}}), dict(ema=True),
               r"has no 'model_ema' entry \(keys: \['model'\]\); it was saved without EMA"),
    "neither": (lambda p: _save(p, {"weights": {"a": torch.zeros(2)}, "epoch": 3}), {},
                r"is neither a DeiT checkpoint \(no 'model' entry\) nor a bare state dict; its keys: "
                r"\['epoch', 'weights'\]"),
    "empty": (lambda p: _save(p, {"model": {}}), {}, r"x\.pth: the state dict is empty \(no tensors\)\."),
    "not a tensor": (lambda p: _save(p, {"model": {"a": 3}}), {},
                     r"x\.pth: entry 'a' of the state dict is a int, not a tensor\."),
    "not a pth": (lambda p: p.write_bytes(b"\x80\x02}q\x00.") and p, {},
                  r"Cannot read .*x\.pth as a PyTorch checkpoint \(truncated or not a checkpoint\?\): "
                  r"Invalid magic number"),
    "damaged pickle": (_damaged_zip, {}, r"Cannot read .*x\.pth as a PyTorch checkpoint: damaged or not a "
                                         r"checkpoint \(Unsupported operand 255\)\.$"),
}


@pytest.mark.once
@pytest.mark.parametrize("case", PTH_ERRORS)
def test_checkpoint_errors(tmp_path, case):
    from ffzoo.weights import pth

    make, kwargs, message = PTH_ERRORS[case]
    path = make(tmp_path / "x.pth")
    with pytest.raises(ValueError, match=message) as error:
        pth.read_state_dict(path, **kwargs)
    assert "\n" not in str(error.value) and "weights_only" not in str(error.value)


@pytest.mark.once
def test_bfloat16_checkpoint_reads_its_values(tmp_path):
    from ffzoo.weights import pth

    values = torch.tensor([1.0, -2.5, 3.140625, 1e-3]).to(torch.bfloat16)
    torch.save({"model": {"w": values}}, tmp_path / "bf16.pth")
    got = pth.read_state_dict(tmp_path / "bf16.pth")["w"]
    assert got.dtype.name == "bfloat16"
    np.testing.assert_array_equal(got.astype(np.float32), values.float().numpy())


class _KerasLike:
    shape = (None, 32, 32, 3)


MODEL_ERRORS = [
    ("FFViT", dict(input_tensor=_KerasLike()), r"input_tensor must be a Keras tensor .*got _KerasLike\."),
    ("FFViT", dict(input_shape=(32, 32, 3), input_tensor="keras.Input((40, 40, 3))"),
     r"input_shape \(32, 32, 3\) does not match input_tensor's shape \(40, 40, 3\); pass one of them\."),
    ("FFViT", dict(image_size=2), r"image_size must be an integer >= patch size 4; got 2\."),
    ("FFViT", dict(image_size=32.0), r"image_size must be an integer >= patch size 4; got 32\.0\."),
    ("FFViT", dict(input_shape=(32, 32, 0)), r"input_shape \(32, 32, 0\) has no channels\."),
    ("DeiT", dict(attention_dropout_rate=1.0), r"attention_dropout_rate must be a number in \[0, 1\); got 1\.0\."),
    ("DeiT", dict(attention_dropout_rate=False), r"attention_dropout_rate must be a number in \[0, 1\); got False\."),
    ("DeiT", dict(input_shape=(64, 3, 3)), r"input_shape \(64, 3, 3\) is smaller than one 4 x 4 patch\."),
    ("DeiT", dict(pooling="avg"), r"pooling='avg' needs include_top=False"),
    ("DeiT", dict(drop_path_rate=-0.5), r"drop_path_rate must be a number in \[0, 1\)"),
]
_TINY = {"FFViT": dict(patch_size=4, embed_dim=8, depth=1, image_size=32, pos_grid_size=8),
         "DeiT": dict(patch_size=4, embed_dim=8, depth=1, num_heads=2, image_size=32, pos_grid_size=8)}


@pytest.mark.once
@pytest.mark.parametrize("family,kwargs,message", MODEL_ERRORS,
                         ids=[f"{f}-{sorted(k)}" for f, k, _ in MODEL_ERRORS])
def test_model_argument_errors_before_building(family, kwargs, message, monkeypatch):
    import keras

    if kwargs.get("input_tensor") == "keras.Input((40, 40, 3))":
        kwargs = dict(kwargs, input_tensor=keras.Input((40, 40, 3)))

    def spy(self, *args, **kw):
        raise AssertionError("a layer was built before the arguments were checked")

    monkeypatch.setattr(ffzoo.layers.PatchEmbedding, "__init__", spy)
    builder = getattr(ffzoo, family)
    with pytest.raises(ValueError, match=message):
        builder(**dict(_TINY[family], **kwargs))


# ---------------------------------------------------------------------------------------
# weights/tools.py: its failures are one line (SystemExit with the message)


@pytest.fixture
def tools_files(tmp_path, monkeypatch):
    """weights.tools on a copy of the FF model file (FF-Micro given 1000 classes) and a README."""
    from weights import tools

    monkeypatch.setitem(presets.preset_for_model(MICRO), "classes", 1000)
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    (models_dir / "ffvit.py").write_text((tools.MODELS_DIR / "ffvit.py").read_text())
    monkeypatch.setattr(tools, "MODELS_DIR", models_dir)
    monkeypatch.setattr(tools, "README", tmp_path / "README.md")
    tools.README.write_text(f"x\n{tools.BEGIN}\n{tools.END}\ny\n")
    return tools


@pytest.mark.once
def test_tools_unknown_preset_and_readme_without_markers(tools_files, ema_checkpoint):
    tools = tools_files
    with pytest.raises(SystemExit, match=r"no preset 'ffvit_nano' among the models' pretrained configs"):
        tools.main(["hash", "ffvit_nano", str(ema_checkpoint[0])])
    model_file = (tools.MODELS_DIR / "ffvit.py").read_text()
    tools.README.write_text("a README whose table markers were deleted\n")
    with pytest.raises(SystemExit, match=r"README\.md has no presets table: put the lines "
                                         r"'<!-- presets table: begin -->' and '<!-- presets "
                                         r"table: end -->' where it goes"):
        tools.main(["hash", MICRO, str(ema_checkpoint[0])])
    assert (tools.MODELS_DIR / "ffvit.py").read_text() == model_file  # nothing half-written


def test_tools_verify_passes_and_fails(tools_files, ema_checkpoint, monkeypatch, capsys):
    tools = tools_files
    path, raw, _ = ema_checkpoint
    tools.main(["verify", MICRO, str(path)])
    assert "ffvit_micro_patch4_32.none: max |logit difference| vs the reference = " in capsys.readouterr().out

    class Shifted(torch_ffvit.FFViT):  # a reference that disagrees by 1e-3
        def forward(self, images):
            return super().forward(images) + 1e-3

    monkeypatch.setattr(torch_ffvit, "FFViT", Shifted)
    with pytest.raises(SystemExit, match=r"verification FAILED \(bound 1e-4\)"):
        tools.main(["verify", MICRO, str(path)])
